// Container healthcheck without curl: `node docker/healthcheck.mjs <port> <path>` exits 0 on HTTP 2xx.
const [port = '9100', path = '/healthz'] = process.argv.slice(2);
try {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(4000) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
