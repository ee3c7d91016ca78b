// Fetch a Slack file's `url_private` with the bot token, and nothing else. The token only goes to hosts on the
// configured allow-list (production: files.slack.com), redirects are never followed (a redirect means Slack is
// sending us to its sign-in page, and following it would hand the bytes of an HTML page to the model), and the
// bytes must be an image by their magic numbers, whatever the Content-Type says.
import { UserError } from '../../src/errors.ts';
import { clipText } from '../../src/text.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { tooLargeText } from '../core/requests.ts';
import { escapeMrkdwn } from './blocks.ts';
import { hostAllowed, readCapped, sniffImageMime, withDeadline, type ImageMime } from '../core/image-bytes.ts';

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
  contentType: ImageMime;
  name: string;
}

const LOGIN_PAGE_HINT =
  'Slack sent me its sign-in page instead of the image. An admin should check that the bot is in this channel and has the `files:read` scope.';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** Image type from the first bytes, or undefined. */
export const sniffImage = sniffImageMime;

function looksLikeHtml(b: Uint8Array): boolean {
  const head = new TextDecoder().decode(b.subarray(0, 512)).trimStart().toLowerCase();
  return head.startsWith('<!doctype html') || head.startsWith('<html') || head.startsWith('<head');
}

export const isAllowedHost = hostAllowed;

function describeType(mimetype: string): string {
  if (mimetype === 'application/pdf') return 'a PDF';
  if (mimetype.startsWith('video/')) return 'a video';
  if (mimetype.startsWith('text/')) return 'a text file';
  return `a ${mimetype} file`;
}

/**
 * A file's name as a refusal quotes it, in a code span. The message shortcut asks about anyone's file, so the name can
 * be someone else's text: no control characters (a U+202E showed `invoice\u202Egnp.exe` as "invoiceexe.png"), no
 * backtick to end the span early, Slack's `<…>` markup escaped, and at most 100 characters, cut between whole ones.
 */
const quoted = (name: string): string => `\`${escapeMrkdwn(clipText(stripControlChars(name).replace(/`/g, "'"), 100))}\``;

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
    throw new UserError('bad_image', `${quoted(name)} is ${describeType(file.mimetype)}, not an image. Try a PNG, JPEG, GIF or WebP.`);
  }
  if (file.size !== undefined && file.size > policy.maxBytes) {
    throw new UserError('bad_image', tooLargeText(quoted(name), file.size, policy.maxBytes));
  }
  return url;
}

/**
 * A download that failed on the way (a timeout, a refused connection, an HTTP error): the user reads what to do (try
 * again, or upload it again); `detail` says to the operator what happened, and `url` where (no query string).
 */
export class DownloadFailed extends UserError {
  readonly detail: string;
  readonly url: string;
  constructor(message: string, detail: string, url: string, cause?: unknown) {
    super('bad_image', message, { cause });
    this.detail = detail;
    this.url = url;
  }
}

/** The deadline (withDeadline) reaches the body too: a server that stops mid-body is a failed download, not a hang. */
export async function downloadSlackFile(file: SlackFileRef, policy: DownloadPolicy): Promise<DownloadedImage> {
  const name = file.name ?? 'image';
  const url = checkDeclared(file, policy);
  const where = `${url.origin}${url.pathname}`;
  const failed = (e: unknown) => new DownloadFailed(`I couldn't download ${quoted(name)} from Slack; please try again.`, (e as Error).message, where, e);
  const bytes = await withDeadline(policy.timeoutMs ?? 30_000, async (signal) => {
    let res: Response;
    try {
      res = await fetch(url, { headers: { authorization: `Bearer ${policy.token}` }, redirect: 'manual', signal });
    } catch (e) {
      throw failed(e);
    }
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel();
      throw new UserError('bad_image', LOGIN_PAGE_HINT, { context: { status: res.status, location: res.headers.get('location') } });
    }
    if (!res.ok) {
      // Stryker disable next-line OptionalChaining: equivalent, only 1xx, 204, 205 and 304 answers have no body, and none of them is here
      await res.body?.cancel();
      // 404/410: the file was deleted (or its message) since it was posted; another answer may pass
      const gone = res.status === 404 || res.status === 410;
      throw new DownloadFailed(
        gone ? `${quoted(name)} is no longer on Slack (it may have been deleted); please upload it again.` : `I couldn't download ${quoted(name)} from Slack (HTTP ${res.status}); please try again.`,
        `HTTP ${res.status}`,
        where,
      );
    }
    // Stryker disable next-line StringLiteral: equivalent, any text but one starting with text/html is let through like ''
    if ((res.headers.get('content-type') ?? '').toLowerCase().startsWith('text/html')) {
      await res.body?.cancel();
      throw new UserError('bad_image', LOGIN_PAGE_HINT);
    }
    const tooLarge = (size?: number) => new UserError('bad_image', tooLargeText(quoted(name), size, policy.maxBytes));
    const declaredLength = Number(res.headers.get('content-length') ?? NaN);
    if (declaredLength > policy.maxBytes) {
      await res.body?.cancel();
      throw tooLarge(declaredLength);
    }
    // A 204 or 205 has no body at all: nothing to read, so "not an image" below.
    if (!res.body) return new Uint8Array(0);
    return readCapped(res.body, policy.maxBytes, () => tooLarge(), signal).catch((e: unknown) => {
      throw signal.aborted ? failed(e) : e;
    });
  });
  const contentType = sniffImage(bytes);
  if (!contentType) {
    if (looksLikeHtml(bytes)) throw new UserError('bad_image', LOGIN_PAGE_HINT);
    throw new UserError('bad_image', `${quoted(name)} is not an image I can read. Try a PNG, JPEG, GIF or WebP.`);
  }
  return { bytes, contentType, name };
}

