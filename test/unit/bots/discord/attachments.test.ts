import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkBeforeDownload, downloadImage, hostAllowed, isImageAttachment, sniffImage } from '../../../../bots/discord/attachments.ts';
import { FakeDiscord } from '../../../fakes/discord/server.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { collectGarbage } from '../../../doubles/collect-garbage.ts';

let fake: FakeDiscord;
let policy: { allowedHosts: string[]; maxBytes: number };
beforeAll(async () => {
  fake = await FakeDiscord.start();
  policy = { allowedHosts: [new URL(fake.origin).host], maxBytes: 4096 };
});
afterAll(() => fake.close());

const meta = (over: Partial<Parameters<typeof checkBeforeDownload>[0]> = {}) => ({
  url: 'https://cdn.discordapp.com/attachments/1/2/a.png',
  filename: 'a.png',
  size: 100,
  contentType: 'image/png',
  ...over,
});

describe('attachment checks before download', () => {
  const prod = { allowedHosts: ['cdn.discordapp.com', 'media.discordapp.net'], maxBytes: 1000 };
  it('accepts an image on an allowed host', () => {
    expect(checkBeforeDownload(meta(), prod).hostname).toBe('cdn.discordapp.com');
  });
  it('refuses each bad case with its own message', () => {
    expect(() => checkBeforeDownload(meta({ url: 'https://evil.example/a.png' }), prod)).toThrow(/only read images uploaded to Discord.*evil\.example/);
    expect(() => checkBeforeDownload(meta({ size: 5000 }), prod)).toThrow('a.png is 5 KiB; the limit is 1000 bytes.');
    expect(() => checkBeforeDownload(meta({ contentType: 'text/plain', filename: 'notes.txt' }), prod)).toThrow(/notes\.txt isn't an image \(text\/plain\)/);
    expect(() => checkBeforeDownload(meta({ url: 'file:///etc/passwd' }), prod)).toThrow(/only read images/);
  });
  it('matches host:port entries exactly and bare hosts on any port', () => {
    expect(hostAllowed(new URL('http://127.0.0.1:5/x'), ['127.0.0.1:5'])).toBe(true);
    expect(hostAllowed(new URL('http://127.0.0.1:6/x'), ['127.0.0.1:5'])).toBe(false);
    expect(hostAllowed(new URL('http://localhost:6/x'), ['127.0.0.1'])).toBe(false);
    expect(hostAllowed(new URL('https://CDN.discordapp.com/x'), ['cdn.discordapp.com'])).toBe(true);
  });
  it('sniffs PNG, JPEG, GIF, WebP and nothing else', async () => {
    expect(sniffImage(await samplePng(4))).toBe('png');
    expect(sniffImage(Uint8Array.from([0xff, 0xd8, 0xff, 0xe0]))).toBe('jpeg');
    expect(sniffImage(new TextEncoder().encode('GIF89a'))).toBe('gif');
    expect(sniffImage(new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 '))).toBe('webp');
    expect(sniffImage(new TextEncoder().encode('<html>'))).toBeUndefined();
  });
});

describe('downloadImage (from the fake CDN)', () => {
  it('downloads and sniffs an image without sending credentials', async () => {
    const png = await samplePng(8);
    const a = fake.addAttachment({ bytes: png, filename: 'p.png', contentType: 'image/png' });
    const got = await downloadImage({ url: a.url, filename: a.filename, size: a.size, contentType: a.content_type }, policy);
    expect(got.format).toBe('png');
    expect(got.bytes.byteLength).toBe(png.byteLength);
    expect(fake.cdnAuthLeaks).toEqual([]);
  });
  it('re-checks what arrives: a lie about the type, a lie about the size', async () => {
    const html = fake.addAttachment({ bytes: new TextEncoder().encode('<html>login</html>'), filename: 'x.png', contentType: 'image/png' });
    await expect(downloadImage({ url: html.url, filename: 'x.png', size: html.size, contentType: 'image/png' }, policy)).rejects.toThrow(/doesn't look like an image/);
    const big = fake.addAttachment({ bytes: new Uint8Array(10_000), filename: 'big.png', contentType: 'image/png', size: 10 });
    await expect(downloadImage({ url: big.url, filename: 'big.png', size: 10, contentType: 'image/png' }, policy)).rejects.toThrow(/the limit is/);
  });
  it('says so when the file is gone', async () => {
    await expect(downloadImage({ url: `${fake.origin}/attachments/1/2/gone.png`, filename: 'gone.png', size: 10, contentType: 'image/png' }, policy)).rejects.toThrow(/HTTP 404/);
  });

  it('refuses a redirect (it could leave the allow-list), a server that does not answer in time, and a declared size over the cap; exactly the cap passes', async () => {
    const png = await samplePng(8);
    const server = createServer((req, res) => {
      if (req.url === '/redirect.png') return void res.writeHead(302, { location: '/img.png' }).end();
      if (req.url === '/img.png') return void res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(png.byteLength) }).end(png);
      if (req.url === '/silent.png') return; // never answers
      if (req.url === '/chunked.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.concat([Buffer.from(png), Buffer.alloc(10)])); // no Content-Length
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const local = { allowedHosts: [new URL(base).host], maxBytes: png.byteLength, timeoutMs: 300 };
    const at = (name: string) => ({ url: `${base}/${name}`, filename: name, size: 10, contentType: 'image/png' });
    try {
      expect((await downloadImage(at('img.png'), local)).bytes.byteLength).toBe(png.byteLength); // exactly maxBytes, declared and read
      const redirected = await downloadImage(at('redirect.png'), local).then(() => undefined, (e: unknown) => e as Error);
      expect(redirected?.message).toBe("I couldn't download redirect.png; please try again.");
      expect(redirected?.cause).toBeInstanceOf(Error); // the operator's log gets fetch's own reason
      await expect(downloadImage(at('chunked.png'), local)).rejects.toThrow(/^chunked\.png is larger than the \d+ bytes limit\.$/);
      await expect(downloadImage(at('img.png'), { ...local, maxBytes: png.byteLength - 1 })).rejects.toThrow(/^img\.png is (\d+) bytes; the limit is (?!\1 )\d+ bytes\.$/);
      const started = Date.now();
      await expect(downloadImage(at('silent.png'), local)).rejects.toThrow("I couldn't download silent.png; please try again.");
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('a server that stops sending mid-body', () => {
  let server: ReturnType<typeof createServer>;
  let local: { allowedHosts: string[]; maxBytes: number; timeoutMs: number };
  let base: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'image/png' });
      res.write(Buffer.alloc(16)); // then nothing more
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    local = { allowedHosts: [new URL(base).host], maxBytes: 4096, timeoutMs: 500 };
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });
  const at = (name: string) => ({ url: `${base}/${name}`, filename: name, size: 16, contentType: 'image/png' });
  const outcome = (p: Promise<unknown>) =>
    Promise.race([p.then(() => 'downloaded', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('still waiting after 4 s'), 4_000))]);

  it('is given up on at the timeout, and the user told to try again', async () => {
    expect(await outcome(downloadImage(at('stalled.png'), local))).toBe("I couldn't download stalled.png; please try again.");
  });

  // Before 2026-12-07 the deadline was `AbortSignal.timeout` on fetch: with `redirect: 'error'` undici holds the
  // request that passes an abort on to the body only weakly, so after a garbage collection the download (and the
  // user's /ask) waited for ever.
  it('is given up on at the timeout after a garbage collection too', async () => {
    const started = Date.now();
    const collected = downloadImage(at('collected.png'), local);
    setTimeout(collectGarbage, 200); // after the headers came, before the deadline
    expect(await outcome(collected)).toBe("I couldn't download collected.png; please try again.");
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});

describe('what counts as an image, and sizes', () => {
  const prod = { allowedHosts: ['cdn.discordapp.com'], maxBytes: 3 * 2 ** 20 };
  it('by its declared type (parameters and case ignored), else by its name', () => {
    expect(isImageAttachment({ contentType: 'IMAGE/PNG; charset=binary', filename: 'x' })).toBe(true);
    expect(isImageAttachment({ contentType: ' image/webp ;q=1', filename: 'x' })).toBe(true);
    expect(isImageAttachment({ contentType: 'image/svg+xml', filename: 'x.png' })).toBe(false); // the type wins
    for (const name of ['a.png', 'a.JPG', 'a.jpeg', 'a.gif', 'a.webp']) expect(isImageAttachment({ contentType: null, filename: name }), name).toBe(true);
    for (const name of ['a.png.exe', 'a.jpgx', 'a.jpeeg', 'png', 'a.svg']) expect(isImageAttachment({ contentType: null, filename: name }), name).toBe(false);
  });

  it('says sizes as formatBytes does ("larger than" where the size rounds to the limit), accepts exactly the limit, and refuses links it cannot read or other schemes', () => {
    expect(() => checkBeforeDownload(meta({ size: 3 * 2 ** 20 }), prod)).not.toThrow();
    expect(() => checkBeforeDownload(meta({ size: 3 * 2 ** 20 + 1 }), prod)).toThrow('a.png is larger than the 3 MiB limit.');
    expect(() => checkBeforeDownload(meta({ size: 5 * 2 ** 20 }), { ...prod, maxBytes: 2 ** 19 })).toThrow('a.png is 5 MiB; the limit is 512 KiB.');
    expect(() => checkBeforeDownload(meta({ size: 2 ** 20 + 1 }), { ...prod, maxBytes: 2 ** 20 })).toThrow('a.png is larger than the 1 MiB limit.');
    expect(() => checkBeforeDownload(meta({ url: 'not a url' }), prod)).toThrow("I couldn't read the link of a.png.");
    expect(() => checkBeforeDownload(meta({ url: 'ftp://cdn.discordapp.com/a.png' }), prod)).toThrow('I only read images uploaded to Discord; a.png is hosted on cdn.discordapp.com.');
    expect(() => checkBeforeDownload(meta({ contentType: null, filename: 'notes.txt' }), prod)).toThrow("notes.txt isn't an image. Please attach a PNG, JPEG, WebP or GIF.");
    // A phone's photo is an image, just not one the bot reads: before 2026-12-07 "IMG_1.HEIC isn't an image (image/heic)"
    expect(() => checkBeforeDownload(meta({ contentType: 'image/heic', filename: 'IMG_1.HEIC' }), prod)).toThrow("IMG_1.HEIC is an image in HEIC format, which I can't read. Please attach a PNG, JPEG, WebP or GIF.");
    expect(() => checkBeforeDownload(meta({ contentType: 'image/svg+xml', filename: 'logo.svg' }), prod)).toThrow("logo.svg is an image in SVG format, which I can't read. Please attach a PNG, JPEG, WebP or GIF.");
    // only a type that is image/… is an image: one naming an image further on (a parameter) is not
    expect(() => checkBeforeDownload(meta({ contentType: 'application/octet-stream; name=image/heic', filename: 'x.bin' }), prod)).toThrow("x.bin isn't an image (application/octet-stream; name=image/heic). Please attach a PNG, JPEG, WebP or GIF.");
    // JPEG under the names some clients give it: downloaded and read by its bytes, as on Slack
    for (const contentType of ['image/jpg', 'image/pjpeg', 'IMAGE/JPG; charset=binary']) expect(() => checkBeforeDownload(meta({ contentType, filename: 'photo.jpg' }), prod)).not.toThrow();
  });
});

