// url_private downloads against the fake Slack's file routes over loopback.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '../../../../src/errors.ts';
import { downloadSlackFile, isAllowedHost, sniffImage, type DownloadPolicy } from '../../../../bots/slack/download.ts';
import { FakeSlack } from '../../../fakes/slack/server.ts';

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
    expect(await refusal(downloadSlackFile({ url: big.url_private, name: 'big.png' }, policy))).toMatch(/larger than/);
  });

  it('sniffs PNG, JPEG, GIF and WebP', () => {
    expect(sniffImage(png)).toBe('image/png');
    expect(sniffImage(Uint8Array.from([0xff, 0xd8, 0xff, 0xe0]))).toBe('image/jpeg');
    expect(sniffImage(new TextEncoder().encode('GIF89a...'))).toBe('image/gif');
    expect(sniffImage(new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 '))).toBe('image/webp');
    expect(sniffImage(new TextEncoder().encode('<html>'))).toBeUndefined();
  });
});
