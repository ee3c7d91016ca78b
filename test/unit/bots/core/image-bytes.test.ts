// The platform-neutral download guards: the allow-list match, the size cap on a body whatever its headers say
// (a chunked server without Content-Length), and the type from the magic bytes.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { hostAllowed, readCapped, sniffImageMime, withDeadline } from '../../../../bots/core/image-bytes.ts';
import { downloadSlackFile } from '../../../../bots/slack/download.ts';
import { UserError } from '../../../../src/errors.ts';

const PNG_SIG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> & { cancelled: () => boolean; pulled: () => number } {
  let i = 0;
  let cancelled = false;
  const s = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]!);
      else c.close();
    },
    cancel() {
      cancelled = true;
    },
  });
  return Object.assign(s, { cancelled: () => cancelled, pulled: () => i });
}

describe('withDeadline', () => {
  it("aborts its work's signal at timeoutMs with a TimeoutError that says so", async () => {
    const started = Date.now();
    const reason = await withDeadline(50, (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))).catch((e: unknown) => e);
    expect(reason).toBeInstanceOf(DOMException);
    expect(reason).toMatchObject({ name: 'TimeoutError', message: 'no answer within 50 ms' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
  });

  it('leaves no timer behind once its work settles (a process would otherwise wait on it for up to timeoutMs)', async () => {
    vi.useFakeTimers();
    try {
      await expect(withDeadline(30_000, async () => 'done')).resolves.toBe('done');
      await expect(withDeadline(30_000, async () => Promise.reject(new Error('refused')))).rejects.toThrow('refused');
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('readCapped', () => {
  const tooLarge = () => new Error('too large');

  it("ends a read waiting on a body that sends nothing more when its signal aborts: the abort's reason, the body cancelled", async () => {
    let cancelled: unknown;
    const stalled = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(3)); // then nothing, and never closed
      },
      cancel(why) {
        cancelled = why;
      },
    });
    const deadline = new AbortController();
    const read = readCapped(stalled, 100, tooLarge, deadline.signal);
    setTimeout(() => deadline.abort(new Error('the deadline')), 20);
    const outcome = await Promise.race([read.then(() => 'read', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('still waiting after 1 s'), 1_000))]);
    expect(outcome).toBe('the deadline');
    expect(cancelled).toMatchObject({ message: 'the deadline' });
  });

  it('joins the chunks in order, up to and including exactly maxBytes', async () => {
    const body = streamOf([Uint8Array.from([1, 2]), Uint8Array.from([3]), Uint8Array.from([4, 5, 6])]);
    expect(await readCapped(body, 6, tooLarge)).toEqual(Uint8Array.from([1, 2, 3, 4, 5, 6]));
    expect(await readCapped(streamOf([]), 0, tooLarge)).toEqual(new Uint8Array(0));
  });

  it('stops reading and cancels the body at the first chunk that passes maxBytes', async () => {
    const chunks = Array.from({ length: 10 }, () => new Uint8Array(4).fill(7));
    const body = streamOf(chunks);
    await expect(readCapped(body, 6, tooLarge)).rejects.toThrow('too large');
    expect(body.cancelled()).toBe(true);
    expect(body.pulled()).toBeLessThan(5); // did not read the rest
    await expect(readCapped(streamOf([new Uint8Array(7)]), 6, tooLarge)).rejects.toThrow('too large'); // one byte over
  });
});

describe('hostAllowed', () => {
  const u = (s: string) => new URL(s);
  it('matches a bare host on any port, a host:port entry on that port only, ignoring case (IPv6 in brackets too)', () => {
    expect(hostAllowed(u('https://files.slack.com/x'), ['files.slack.com'])).toBe(true);
    expect(hostAllowed(u('https://FILES.slack.com:8443/x'), ['Files.Slack.com'])).toBe(true);
    expect(hostAllowed(u('http://127.0.0.1:4000/x'), ['127.0.0.1:4000'])).toBe(true);
    expect(hostAllowed(u('http://127.0.0.1:4001/x'), ['127.0.0.1:4000'])).toBe(false);
    expect(hostAllowed(u('http://LOCALHOST:4000/x'), ['localhost:4000'])).toBe(true);
    expect(hostAllowed(u('http://localhost:4000/x'), ['LocalHost:4000'])).toBe(true);
    expect(hostAllowed(u('https://files.slack.com.evil.example/x'), ['files.slack.com'])).toBe(false);
    expect(hostAllowed(u('https://evil.example/files.slack.com'), ['files.slack.com'])).toBe(false);
    expect(hostAllowed(u('https://b.example/x'), ['a.example', 'b.example'])).toBe(true);
    expect(hostAllowed(u('https://b.example/x'), [])).toBe(false);
    // IPv6 literals: a bracketed address without a port matches any port; with one, that port only
    expect(hostAllowed(u('http://[::1]:4000/x'), ['[::1]'])).toBe(true);
    expect(hostAllowed(u('http://[::1]:4000/x'), ['[::1]:4000'])).toBe(true);
    expect(hostAllowed(u('http://[::1]:4001/x'), ['[::1]:4000'])).toBe(false);
    expect(hostAllowed(u('http://[::2]:4000/x'), ['[::1]'])).toBe(false);
  });
});

describe('sniffImageMime', () => {
  const b = (...x: (number | string)[]) => Uint8Array.from(x.flatMap((v) => (typeof v === 'string' ? [...v].map((c) => c.charCodeAt(0)) : [v])));
  it('knows the four formats by their first bytes', () => {
    expect(sniffImageMime(b(...PNG_SIG, 0))).toBe('image/png');
    expect(sniffImageMime(b(0xff, 0xd8, 0xff))).toBe('image/jpeg');
    expect(sniffImageMime(b('GIF87a'))).toBe('image/gif');
    expect(sniffImageMime(b('GIF89a'))).toBe('image/gif');
    expect(sniffImageMime(b('RIFF', 0, 0, 0, 0, 'WEBP'))).toBe('image/webp');
  });
  it('refuses near misses and short inputs', () => {
    expect(sniffImageMime(b(...PNG_SIG.slice(0, 7)))).toBeUndefined(); // truncated signature
    expect(sniffImageMime(b(...PNG_SIG.slice(0, 7), 0x0b))).toBeUndefined();
    expect(sniffImageMime(b(0xff, 0xd8))).toBeUndefined();
    expect(sniffImageMime(b(0xff, 0xd8, 0xfe))).toBeUndefined();
    expect(sniffImageMime(b('GIF88a'))).toBeUndefined();
    expect(sniffImageMime(b('GIF87b'))).toBeUndefined();
    expect(sniffImageMime(b('GIF8'))).toBeUndefined();
    expect(sniffImageMime(b('RIFF', 0, 0, 0, 0, 'WAVE'))).toBeUndefined();
    expect(sniffImageMime(b('RIFX', 0, 0, 0, 0, 'WEBP'))).toBeUndefined();
    expect(sniffImageMime(b('RIFF', 0, 0, 0, 0, 'WEB'))).toBeUndefined();
    expect(sniffImageMime(new Uint8Array(0))).toBeUndefined();
  });
});

// A server that streams its body in chunks without Content-Length (Transfer-Encoding: chunked), so only the
// byte count can stop an oversized download.
describe('a chunked download without Content-Length', () => {
  let server: Server;
  let base: string;
  let sent = 0;
  let closedEarly = false;
  beforeAll(async () => {
    server = createServer((req, res) => {
      const total = Number(new URL(req.url!, 'http://x').searchParams.get('bytes'));
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no content-length: chunked
      sent = 0;
      closedEarly = false;
      res.on('close', () => void (closedEarly = sent < total));
      const chunk = 1000;
      const push = () => {
        while (sent < total) {
          const n = Math.min(chunk, total - sent);
          const buf = Buffer.alloc(n, 1);
          if (sent === 0) Buffer.from(PNG_SIG).copy(buf);
          sent += n;
          if (!res.write(buf)) return void res.once('drain', push);
        }
        res.end();
      };
      push();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const policy = () => ({ token: 'xoxb-t', allowedHosts: [new URL(base).host], maxBytes: 50_000 });

  it('accepts a body of exactly the limit', async () => {
    const got = await downloadSlackFile({ url: `${base}/f?bytes=50000`, name: 'ok.png' }, policy());
    expect(got.bytes.byteLength).toBe(50_000);
    expect(got.contentType).toBe('image/png');
  });

  it('refuses one byte more, and stops reading a huge body early', async () => {
    const e = await downloadSlackFile({ url: `${base}/f?bytes=50001`, name: 'big.png' }, policy()).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UserError);
    expect((e as UserError).message).toBe('`big.png` is larger than the 49 KiB limit.'); // 50,000 bytes (formatBytes, 07b9864)
    const huge = await downloadSlackFile({ url: `${base}/f?bytes=50000000`, name: 'huge.png' }, policy()).catch((x: unknown) => x);
    expect(huge).toBeInstanceOf(UserError);
    for (let i = 0; i < 100 && !closedEarly; i++) await new Promise((r) => setTimeout(r, 10));
    expect(closedEarly).toBe(true);
    expect(sent).toBeLessThan(50_000_000);
  });
});
