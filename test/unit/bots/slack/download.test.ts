// url_private downloads against the fake Slack's file routes over loopback, and against a scripted server for the
// answers the fake does not give.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../../../../src/errors.ts';
import { checkDeclared, DownloadFailed, downloadSlackFile, isAllowedHost, sniffImage, type DownloadPolicy } from '../../../../bots/slack/download.ts';
import { FakeSlack } from '../../../fakes/slack/server.ts';
import { collectGarbage } from '../../../doubles/collect-garbage.ts';

let fake: FakeSlack;
let png: Uint8Array;
let policy: DownloadPolicy;

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  png = new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c33' } }).png().toBuffer());
  policy = { token: fake.botToken, allowedHosts: [fake.host], maxBytes: 10_000 };
});
afterAll(() => fake.stop());

async function refusal(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(UserError);
  return (e as UserError).message;
}

describe('downloadSlackFile', () => {
  it('fetches url_private with the bot token and sniffs the type', async () => {
    const f = fake.seedFile(png, 'red.png', 'image/png');
    const got = await downloadSlackFile({ url: f.url_private, name: f.name, mimetype: f.mimetype, size: f.size }, policy);
    expect(got.contentType).toBe('image/png');
    expect(Buffer.from(got.bytes)).toEqual(Buffer.from(png));
    expect(fake.calls.at(-1)).toMatchObject({ kind: 'download', token: fake.botToken, status: 200 });
  });

  it('refuses an HTML sign-in page: as a redirect, as text/html, and disguised as image/png', async () => {
    const wrongToken = { ...policy, token: 'xoxb-revoked' };
    const f = fake.seedFile(png, 'red.png', 'image/png');
    expect(await refusal(downloadSlackFile({ url: f.url_private }, wrongToken))).toMatch(/sign-in page/);
    expect(fake.calls.some((c) => c.method === '/signin')).toBe(false); // the redirect was not followed
    const html = fake.seedFile(png, 'cat.png', 'image/png', 'html-login');
    expect(await refusal(downloadSlackFile({ url: html.url_private }, policy))).toMatch(/sign-in page/);
    const disguised = fake.seedFile(new TextEncoder().encode('<!DOCTYPE html><html>sign in</html>'), 'x.png', 'image/png', 'bytes', 'image/png');
    expect(await refusal(downloadSlackFile({ url: disguised.url_private }, policy))).toMatch(/sign-in page/);
  });

  it('refuses non-images by declared type and by content', async () => {
    const pdf = fake.seedFile(new TextEncoder().encode('%PDF-1.4'), 'doc.pdf', 'application/pdf');
    expect(await refusal(downloadSlackFile({ url: pdf.url_private, name: 'doc.pdf', mimetype: 'application/pdf' }, policy))).toMatch(/`doc.pdf` is a PDF, not an image/);
    expect(fake.calls.filter((c) => c.kind === 'download' && c.method.includes(pdf.id))).toHaveLength(0); // refused before fetching
    const lying = fake.seedFile(new TextEncoder().encode('%PDF-1.4 not really'), 'x.png', 'image/png');
    expect(await refusal(downloadSlackFile({ url: lying.url_private, name: 'x.png' }, policy))).toMatch(/not an image I can read/);
  });

  it('never sends the token to a host off the allow-list, or over plain http to a remote host', async () => {
    const f = fake.seedFile(png, 'red.png', 'image/png');
    const before = fake.calls.length;
    expect(await refusal(downloadSlackFile({ url: f.url_private }, { ...policy, allowedHosts: ['files.slack.com'] }))).toMatch(/only read images uploaded to Slack/);
    expect(await refusal(downloadSlackFile({ url: 'http://files.slack.com/files-pri/x/y.png' }, { ...policy, allowedHosts: ['files.slack.com'] }))).toMatch(/only read images/);
    expect(fake.calls.length).toBe(before);
    expect(isAllowedHost(new URL('https://files.slack.com/x'), ['files.slack.com'])).toBe(true);
    expect(isAllowedHost(new URL('https://files.slack.com.evil.example/x'), ['files.slack.com'])).toBe(false);
  });

  it('enforces the size limit from the declared size and from the bytes', async () => {
    const big = fake.seedFile(new Uint8Array(20_000).fill(1), 'big.png', 'image/png');
    expect(await refusal(downloadSlackFile({ url: big.url_private, name: 'big.png', size: 20_000 }, policy))).toMatch(/limit/);
    expect(await refusal(downloadSlackFile({ url: big.url_private, name: 'big.png' }, policy))).toMatch(/^`big\.png` is 20 KiB; the limit is \d+ KiB\.$/); // the declared Content-Length
  });

  it('sniffs PNG, JPEG, GIF and WebP', () => {
    expect(sniffImage(png)).toBe('image/png');
    expect(sniffImage(Uint8Array.from([0xff, 0xd8, 0xff, 0xe0]))).toBe('image/jpeg');
    expect(sniffImage(new TextEncoder().encode('GIF89a...'))).toBe('image/gif');
    expect(sniffImage(new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 '))).toBe('image/webp');
    expect(sniffImage(new TextEncoder().encode('<html>'))).toBeUndefined();
  });
});

// What a server can answer besides the image, from a scripted server on loopback: each status class, a declared
// Content-Length over the cap (refused before reading a byte), HTML by header or by its first bytes, a server
// that never answers, one that is not there. And what checkDeclared refuses from Slack's description alone.
describe('downloadSlackFile against a scripted server', () => {
  const MAX = 3 * 2 ** 20;
  let server: Server;
  let base: string;
  let headersOnlyClosed = false;
  const pngOf = (n: number) => {
    const b = Buffer.alloc(n, 7);
    b.set(png.subarray(0, 8));
    return b;
  };
  beforeAll(async () => {
    server = createServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      const [, route, arg] = u.pathname.split('/');
      if (route === 'status') {
        const status = Number(arg);
        res.writeHead(status, status >= 300 && status < 400 ? { location: '/signin' } : { 'content-type': 'image/png' });
        return void res.end(pngOf(100));
      }
      if (route === 'content-type') {
        res.writeHead(200, { 'content-type': decodeURIComponent(arg!) });
        return void res.end(pngOf(100));
      }
      if (route === 'body') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        return void res.end(Buffer.from(decodeURIComponent(arg!)));
      }
      if (route === 'declared') {
        // The headers say how long the body is; the body never comes, so only the header can refuse it in time.
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': arg });
        res.flushHeaders();
        res.on('close', () => void (headersOnlyClosed = true));
        return;
      }
      if (route === 'exact') {
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(MAX) });
        return void res.end(pngOf(MAX));
      }
      if (route === 'silent') return; // never answers
      if (route === 'stalled') {
        res.writeHead(200, { 'content-type': 'image/png' });
        return void res.write(pngOf(16)); // then nothing more
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const local = (timeoutMs?: number): DownloadPolicy => ({ token: 'xoxb-t', allowedHosts: ['127.0.0.1'], maxBytes: MAX, ...(timeoutMs ? { timeoutMs } : {}) });
  const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error & { code?: string });

  it('treats every 3xx as the sign-in page, 404 and 410 as a deleted file, other non-2xx as a failed download, any 2xx as an answer', async () => {
    for (const status of [300, 302, 304, 399]) expect(await refusal(downloadSlackFile({ url: `${base}/status/${status}` }, local()))).toMatch(/sign-in page/);
    for (const status of [400, 403, 404, 410, 500, 503]) {
      const e = await failure(downloadSlackFile({ url: `${base}/status/${status}?t=secret`, name: 'a.png' }, local()));
      expect(e).toBeInstanceOf(DownloadFailed);
      expect(e).toMatchObject({
        code: 'bad_image',
        message: status === 404 || status === 410 ? '`a.png` is no longer on Slack (it may have been deleted); please upload it again.' : `I couldn't download \`a.png\` from Slack (HTTP ${status}); please try again.`,
        detail: `HTTP ${status}`,
        url: `${base}/status/${status}`, // no query string: it may carry a token
      });
    }
    expect((await downloadSlackFile({ url: `${base}/status/203`, name: 'a.png' }, local())).contentType).toBe('image/png');
  });

  it('refuses text/html whatever its case and parameters, before looking at the bytes', async () => {
    expect(await refusal(downloadSlackFile({ url: `${base}/content-type/${encodeURIComponent('Text/HTML; charset=utf-8')}` }, local()))).toMatch(/sign-in page/);
    expect((await downloadSlackFile({ url: `${base}/content-type/${encodeURIComponent('text/plain')}` }, local())).contentType).toBe('image/png');
  });

  it('recognises an HTML page by its first bytes (leading space, any case) and calls anything else unreadable', async () => {
    for (const html of ['  \n<!DOCTYPE HTML><html>', '<HTML lang="en">', '<head><title>Slack</title>']) {
      expect(await refusal(downloadSlackFile({ url: `${base}/body/${encodeURIComponent(html)}` }, local()))).toBe(
        'Slack sent me its sign-in page instead of the image. An admin should check that the bot is in this channel and has the `files:read` scope.',
      );
    }
    expect(await refusal(downloadSlackFile({ url: `${base}/body/${encodeURIComponent('<body>hi</body>')}` }, local()))).toBe(
      '`image` is not an image I can read. Try a PNG, JPEG, GIF or WebP.',
    );
  });

  it('refuses a declared Content-Length over the cap without reading the body; exactly the cap is fine', async () => {
    const started = Date.now();
    expect(await refusal(downloadSlackFile({ url: `${base}/declared/${MAX + 1}`, name: 'big.png' }, local(5_000)))).toBe('`big.png` is larger than the 3 MiB limit.');
    expect(Date.now() - started).toBeLessThan(4_000); // not the timeout
    for (let i = 0; i < 100 && !headersOnlyClosed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(headersOnlyClosed).toBe(true); // the body was cancelled
    expect((await downloadSlackFile({ url: `${base}/exact` }, local())).bytes.byteLength).toBe(MAX);
  });

  it('gives up on a server that never answers after timeoutMs, and names the URL when the request fails', async () => {
    const started = Date.now();
    const slow = await failure(downloadSlackFile({ url: `${base}/silent/x?token=secret` }, local(300)));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(slow).toBeInstanceOf(DownloadFailed);
    expect(slow).toMatchObject({ code: 'bad_image', message: "I couldn't download `image` from Slack; please try again.", url: `${base}/silent/x` }); // no query string
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const refused = await failure(downloadSlackFile({ url: `http://127.0.0.1:${port}/f` }, local()));
    expect(refused).toMatchObject({ code: 'bad_image', message: "I couldn't download `image` from Slack; please try again.", url: `http://127.0.0.1:${port}/f`, detail: expect.any(String) });
  });

  // Before 2026-12-07 a server that stopped mid-body was given up on by the fetch's AbortSignal.timeout with a bare
  // DOMException (the user was told "Something went wrong" rather than that Slack's download failed), and only while the
  // collector kept that signal.
  it('gives up on a server that stops mid-body at timeoutMs, a garbage collection or not, as a failed download', async () => {
    for (const collect of [false, true]) {
      const started = Date.now();
      const stalled = failure(downloadSlackFile({ url: `${base}/stalled/x.png` }, local(400)));
      if (collect) setTimeout(collectGarbage, 150); // after the headers came, before the deadline
      const outcome = await Promise.race([stalled, new Promise((r) => setTimeout(() => r('still waiting after 4 s'), 4_000))]);
      expect(outcome).toMatchObject({ code: 'bad_image', message: "I couldn't download `image` from Slack; please try again.", url: `${base}/stalled/x.png` });
      expect(Date.now() - started).toBeLessThan(2_000);
    }
  });
});

describe('checkDeclared', () => {
  const p = { allowedHosts: ['files.slack.com', 'localhost', '[::1]', '127.0.0.1'], maxBytes: 2 * 2 ** 20 };
  it('allows https to an allowed host, and plain http only to loopback', () => {
    expect(checkDeclared({ url: 'https://files.slack.com/a.png' }, p).host).toBe('files.slack.com');
    for (const url of ['http://localhost:9/a.png', 'http://[::1]:9/a.png', 'http://127.0.0.1:9/a.png']) expect(checkDeclared({ url }, p).href).toBe(url);
    expect(() => checkDeclared({ url: 'http://files.slack.com/a.png' }, p)).toThrow('I only read images uploaded to Slack itself, not from files.slack.com.');
    expect(() => checkDeclared({ url: 'ftp://127.0.0.1/a.png' }, p)).toThrow(/only read images/);
    expect(() => checkDeclared({ url: 'not a url' }, p)).toThrow('That file has no usable download link.');
  });

  it('names what a declared non-image is', () => {
    const kind = (mimetype: string) => {
      try {
        checkDeclared({ url: 'https://files.slack.com/f', name: 'f', mimetype }, p);
        return 'accepted';
      } catch (e) {
        expect(e).toBeInstanceOf(UserError);
        return (e as Error).message;
      }
    };
    expect(kind('application/pdf')).toBe('`f` is a PDF, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(kind('video/mp4')).toBe('`f` is a video, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(kind('text/plain')).toBe('`f` is a text file, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(kind('application/zip')).toBe('`f` is a application/zip file, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(kind('image/png')).toBe('accepted');
    expect(kind('')).toBe('accepted'); // Slack did not say
  });

  it('refuses a declared size over the cap, in MiB; exactly the cap is fine', () => {
    expect(() => checkDeclared({ url: 'https://files.slack.com/f', size: 3.5 * 2 ** 20 }, p)).toThrow('`image` is 3.5 MiB; the limit is 2 MiB.');
    // a limit that is no whole number of MiB, as it is (before 2026-12-07: "the limit is 0 MiB")
    expect(() => checkDeclared({ url: 'https://files.slack.com/f', size: 2 ** 20 }, { ...p, maxBytes: 300 * 1024 })).toThrow('`image` is 1 MiB; the limit is 300 KiB.');
    expect(checkDeclared({ url: 'https://files.slack.com/f', size: 2 * 2 ** 20 }, p)).toBeInstanceOf(URL);
  });
});

// What an operator reads in the log next to a refusal: the error's context and cause.
describe('refusals carry their context and cause', () => {
  const p = { allowedHosts: ['files.slack.com'], maxBytes: 2 * 2 ** 20 };
  const caught = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return e as UserError;
    }
    throw new Error('no refusal');
  };

  it('names the refused origin, and keeps the URL parser\'s error', () => {
    expect(caught(() => checkDeclared({ url: 'https://evil.example/a.png?x=1' }, p)).context).toEqual({ url: 'https://evil.example' });
    expect(caught(() => checkDeclared({ url: 'not a url' }, p)).cause).toBeInstanceOf(TypeError);
  });

  it('records the redirect\'s status and target, and keeps the network error', async () => {
    const wrongToken = { ...policy, token: 'xoxb-revoked' };
    const f = fake.seedFile(png, 'red.png', 'image/png');
    const e = (await downloadSlackFile({ url: f.url_private }, wrongToken).then(() => undefined, (x: unknown) => x)) as UserError;
    expect(e.context).toMatchObject({ status: 302, location: expect.stringContaining('/signin') });
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const failed = (await downloadSlackFile({ url: `http://127.0.0.1:${port}/f` }, { ...policy, allowedHosts: ['127.0.0.1'] }).then(() => undefined, (x: unknown) => x)) as Error;
    expect(failed.cause).toBeInstanceOf(Error);
  });
});

describe('downloadSlackFile: answers without a body', () => {
  let server: Server;
  let base: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      const length = u.searchParams.get('length');
      const type = u.searchParams.get('type') ?? 'image/png';
      res.writeHead(Number(u.pathname.slice(1)), { ...(type !== 'none' ? { 'content-type': type } : {}), ...(length ? { 'content-length': length } : {}) });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));
  const local: DownloadPolicy = { token: 'xoxb-t', allowedHosts: ['127.0.0.1'], maxBytes: 10_000 };

  it('refuses a 204 or 205 as no image (or as the sign-in page when it says text/html), without crashing on the missing body', async () => {
    for (const status of [204, 205]) {
      expect(await refusal(downloadSlackFile({ url: `${base}/${status}`, name: 'x.png' }, local))).toBe('`x.png` is not an image I can read. Try a PNG, JPEG, GIF or WebP.');
      expect(await refusal(downloadSlackFile({ url: `${base}/${status}?type=text/html` }, local))).toMatch(/sign-in page/);
      expect(await refusal(downloadSlackFile({ url: `${base}/${status}?length=20000` }, local))).toBe('`image` is 20 KiB; the limit is 10 KiB.');
    }
  });
});

describe('downloadSlackFile: an answer without a Content-Type', () => {
  it('reads the bytes and goes by their magic numbers', async () => {
    const server = createServer((req, res) => res.writeHead(200).end(Buffer.from(png))); // no content-type
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const got = await downloadSlackFile({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/f` }, { token: 't', allowedHosts: ['127.0.0.1'], maxBytes: 10_000 });
      expect(got.contentType).toBe('image/png');
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

