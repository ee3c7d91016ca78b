// The tiny HTTP server every bot and worker runs (http.botPort / worker.healthPort, bound to http.host):
//   GET /healthz  200 while the process is alive and its event loop turns (container liveness)
//   GET /readyz   200 when every readiness check passes (Redis reachable, model loaded…), else 503 naming the failing ones
//   GET /metrics  Prometheus text format from the process's registry
// Readiness is separate from liveness so a worker that is still downloading the model on first start is
// healthy (not restarted) but not ready.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log.ts';

/** Resolves true when ready, or a string saying what is missing. */
export type ReadinessCheck = () => Promise<true | string> | true | string;

export interface HealthServerOptions {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  registry: Registry;
  /** Named checks for /readyz; each gets `checkTimeoutMs` before it counts as failed. */
  readiness?: Record<string, ReadinessCheck>;
  /** @defaultValue 2000 */
  checkTimeoutMs?: number;
}

export interface HealthServer {
  url: string;
  port: number;
  /** Adds or replaces a readiness check (e.g. 'model' once the worker has set up). */
  setCheck(name: string, check: ReadinessCheck): void;
  close(): Promise<void>;
}

export async function startHealthServer(o: HealthServerOptions): Promise<HealthServer> {
  const checks = new Map(Object.entries(o.readiness ?? {}));
  const timeoutMs = o.checkTimeoutMs ?? 2000;

  async function readiness(): Promise<{ ready: boolean; checks: Record<string, string> }> {
    const results = await Promise.all(
      [...checks].map(async ([name, check]): Promise<[string, string]> => {
        let timer: NodeJS.Timeout | undefined;
        try {
          const r = await Promise.race([
            Promise.resolve().then(check),
            new Promise<string>((resolveTimeout) => (timer = setTimeout(() => resolveTimeout(`no answer within ${timeoutMs} ms`), timeoutMs))),
          ]);
          return [name, r === true ? 'ok' : r];
        } catch (e) {
          return [name, e instanceof Error ? e.message : String(e)];
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    return { ready: results.every(([, r]) => r === 'ok'), checks: Object.fromEntries(results) };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const r = await readiness();
      res.writeHead(r.ready ? 200 : 503, { 'Content-Type': 'application/json' }).end(`${JSON.stringify(r)}\n`);
    } else if (path === '/metrics') {
      const body = await o.registry.metrics();
      res.writeHead(200, { 'Content-Type': o.registry.contentType }).end(body);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(`${e instanceof Error ? e.message : String(e)}\n`);
    });
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  const { port } = server.address() as AddressInfo;
  const shownHost = o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host;
  return {
    url: `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`,
    port,
    setCheck: (name, check) => void checks.set(name, check),
    close: () =>
      new Promise<void>((resolveClose, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolveClose()));
      }),
  };
}

/**
 * What bots/main.ts and worker/main.ts call: port 0 in config means "off"; a port already taken (several workers
 * started by hand on one host with the same worker.healthPort) is logged and the process runs on without it.
 */
export async function serveHealth(o: HealthServerOptions, log: Logger): Promise<HealthServer | undefined> {
  if (o.port === 0) return undefined;
  try {
    const server = await startHealthServer(o);
    log.info({ url: server.url, host: o.host, port: server.port }, 'serving /healthz, /readyz and /metrics');
    return server;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
    log.warn({ host: o.host, port: o.port }, 'health/metrics port already in use: not serving /healthz, /readyz, /metrics from this process (give each process its own port)');
    return undefined;
  }
}
