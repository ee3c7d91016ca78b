// Fetch a Slack file's `url_private` with the bot token, and nothing else. The token only goes to hosts on the
// configured allow-list (production: files.slack.com), redirects are never followed (a redirect means Slack is
// sending us to its sign-in page, and following it would hand the bytes of an HTML page to the model), and the
// bytes must be an image by their magic numbers, whatever the Content-Type says.
import { AppError, UserError } from '../../src/errors.ts';

export interface SlackFileRef {
  url: string;
  name?: string;
  /** As Slack declared it (files[].mimetype); checked before downloading. */
  mimetype?: string;
  /** As Slack declared it (files[].size); checked before downloading. */
  size?: number;
}

export interface DownloadPolicy {
  token: string;
  /** `host` or `host:port` entries; a bare host matches any port. */
  allowedHosts: readonly string[];
  maxBytes: number;
  /** @defaultValue 30000 */
  timeoutMs?: number;
}

export interface DownloadedImage {
  bytes: Uint8Array;
  /** From the magic bytes, not from the server. */
  contentType: 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp';
  name: string;
}

const LOGIN_PAGE_HINT =
  'Slack sent me its sign-in page instead of the image. An admin should check that the bot is in this channel and has the `files:read` scope.';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Image type from the first bytes, or undefined. */
export function sniffImage(b: Uint8Array): DownloadedImage['contentType'] | undefined {
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && b[4] === 0x0d && b[5] === 0x0a && b[6] === 0x1a && b[7] === 0x0a) return 'image/png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.length >= 6 && String.fromCharCode(...b.subarray(0, 6)).match(/^GIF8[79]a$/)) return 'image/gif';
  if (b.length >= 12 && String.fromCharCode(...b.subarray(0, 4)) === 'RIFF' && String.fromCharCode(...b.subarray(8, 12)) === 'WEBP') return 'image/webp';
  return undefined;
}

function looksLikeHtml(b: Uint8Array): boolean {
  const head = new TextDecoder().decode(b.subarray(0, 512)).trimStart().toLowerCase();
  return head.startsWith('<!doctype html') || head.startsWith('<html') || head.startsWith('<head');
}

export function isAllowedHost(url: URL, allowedHosts: readonly string[]): boolean {
  return allowedHosts.some((entry) => (entry.includes(':') ? url.host === entry : url.hostname === entry));
}

function describeType(mimetype: string): string {
  if (mimetype === 'application/pdf') return 'a PDF';
  if (mimetype.startsWith('video/')) return 'a video';
  if (mimetype.startsWith('text/')) return 'a text file';
  return `a ${mimetype} file`;
}

/**
 * What can be refused from Slack's own description of the file, before any request: the URL's host and scheme,
 * the declared type and size. Handlers call it before posting a status message; the download calls it again.
 */
export function checkDeclared(file: SlackFileRef, policy: Pick<DownloadPolicy, 'allowedHosts' | 'maxBytes'>): URL {
  const name = file.name ?? 'image';
  let url: URL;
  try {
    url = new URL(file.url);
  } catch (e) {
    throw new UserError('bad_image', 'That file has no usable download link.', { cause: e });
  }
  const secure = url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK.has(url.hostname));
  if (!secure || !isAllowedHost(url, policy.allowedHosts)) {
    throw new UserError('bad_image', `I only read images uploaded to Slack itself, not from ${url.host}.`, { context: { url: url.origin } });
  }
  if (file.mimetype && !file.mimetype.startsWith('image/')) {
    throw new UserError('bad_image', `\`${name}\` is ${describeType(file.mimetype)}, not an image. Try a PNG, JPEG, GIF or WebP.`);
  }
  const limitMiB = Math.round(policy.maxBytes / 2 ** 20);
  if (file.size !== undefined && file.size > policy.maxBytes) {
    throw new UserError('bad_image', `\`${name}\` is ${(file.size / 2 ** 20).toFixed(1)} MiB; the limit is ${limitMiB} MiB.`);
  }
  return url;
}

export async function downloadSlackFile(file: SlackFileRef, policy: DownloadPolicy): Promise<DownloadedImage> {
  const name = file.name ?? 'image';
  const url = checkDeclared(file, policy);
  const limitMiB = Math.round(policy.maxBytes / 2 ** 20);

  let res: Response;
  try {
    res = await fetch(url, {
      headers: { authorization: `Bearer ${policy.token}` },
      redirect: 'manual',
      signal: AbortSignal.timeout(policy.timeoutMs ?? 30_000),
    });
  } catch (e) {
    throw new AppError('platform', `downloading ${url.origin}${url.pathname} failed: ${(e as Error).message}`, { cause: e });
  }
  if (res.status >= 300 && res.status < 400) {
    await res.body?.cancel();
    throw new UserError('bad_image', LOGIN_PAGE_HINT, { context: { status: res.status, location: res.headers.get('location') } });
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new AppError('platform', `downloading ${url.pathname} answered HTTP ${res.status}`);
  }
  if ((res.headers.get('content-type') ?? '').toLowerCase().startsWith('text/html')) {
    await res.body?.cancel();
    throw new UserError('bad_image', LOGIN_PAGE_HINT);
  }
  const declaredLength = Number(res.headers.get('content-length') ?? NaN);
  if (declaredLength > policy.maxBytes) {
    await res.body?.cancel();
    throw new UserError('bad_image', `\`${name}\` is larger than the ${limitMiB} MiB limit.`);
  }
  const bytes = await readCapped(res, policy.maxBytes, name, limitMiB);
  const contentType = sniffImage(bytes);
  if (!contentType) {
    if (looksLikeHtml(bytes)) throw new UserError('bad_image', LOGIN_PAGE_HINT);
    throw new UserError('bad_image', `\`${name}\` is not an image I can read. Try a PNG, JPEG, GIF or WebP.`);
  }
  return { bytes, contentType, name };
}

/** Read the body, failing as soon as it passes maxBytes (a lying or missing Content-Length). */
async function readCapped(res: Response, maxBytes: number, name: string, limitMiB: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new UserError('bad_image', `\`${name}\` is larger than the ${limitMiB} MiB limit.`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}
