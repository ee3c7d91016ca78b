// Platform-neutral pieces of fetching a user's image: which hosts we may fetch from, reading a body with a hard
// size cap (a missing or lying Content-Length cannot make us buffer more), and the format from magic bytes
// (whatever the platform or server declared). Discord's and Slack's download paths both build on these.

export type ImageMime = 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp';

/** The image type from the first bytes, or undefined: PNG signature, JPEG SOI, GIF87a/89a, RIFF….WEBP. */
export function sniffImageMime(b: Uint8Array): ImageMime | undefined {
  const at = (i: number, ...bytes: number[]) => b.length >= i + bytes.length && bytes.every((v, k) => b[i + k] === v);
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'image/png';
  if (at(0, 0xff, 0xd8, 0xff)) return 'image/jpeg';
  if (at(0, 0x47, 0x49, 0x46, 0x38) && (at(4, 0x37, 0x61) || at(4, 0x39, 0x61))) return 'image/gif';
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'image/webp';
  return undefined;
}

/**
 * Host allowed? Entries without a port match the hostname on any port; "host:port" entries match exactly.
 * Case-insensitive. An IPv6 literal is written in brackets, `[::1]` or `[::1]:4000`: its own colons are no port.
 */
export function hostAllowed(url: URL, allowedHosts: readonly string[]): boolean {
  const host = url.hostname.toLowerCase();
  return allowedHosts.some((entry) => {
    const e = entry.toLowerCase();
    const hasPort = e.lastIndexOf(':') > e.lastIndexOf(']');
    return hasPort ? e === url.host.toLowerCase() : e === host;
  });
}

/**
 * `work` under a deadline: its signal aborts after `timeoutMs`. A plain timer, cleared when `work` settles: Node holds
 * `AbortSignal.timeout` only weakly, and undici passes a fetch's abort on to its body only while the collector keeps
 * the request (downloadImage, downloadSlackFile).
 */
export async function withDeadline<T>(timeoutMs: number, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new DOMException(`no answer within ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
  try {
    return await work(deadline.signal);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Read a response body, cancelling it and throwing `tooLarge()` as soon as it passes maxBytes. `signal`'s abort
 * cancels the body here and throws its reason: a fetch's own signal may no longer reach its body (downloadImage).
 */
export async function readCapped(body: ReadableStream<Uint8Array>, maxBytes: number, tooLarge: () => Error, signal?: AbortSignal): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  const onAbort = () => void reader.cancel(signal!.reason).catch(() => undefined); // a pending read then ends as done
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      signal?.throwIfAborted();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge();
      }
      chunks.push(value);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}
