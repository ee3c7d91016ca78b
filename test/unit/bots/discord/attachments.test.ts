import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkBeforeDownload, downloadImage, hostAllowed, sniffImage } from '../../../../bots/discord/attachments.ts';
import { FakeDiscord } from '../../../fakes/discord/server.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';

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
    expect(() => checkBeforeDownload(meta({ size: 5000 }), prod)).toThrow(/a\.png is .* MiB; the limit is/);
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
});
