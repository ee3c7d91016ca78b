// Attachment checks, in the order that costs least: host, declared size and declared type before any byte is
// fetched; then a capped download (no redirects, no auth header) and a magic-byte sniff of what arrived. Each
// failure is a UserError with its own sentence, and nothing is enqueued for it.
import { hostAllowed, readCapped, sniffImageMime, withDeadline } from '../core/image-bytes.ts';
import { UserError } from '../../src/errors.ts';
import { tooLargeText } from '../core/requests.ts';

export interface AttachmentMeta {
  /** Discord's id of the attachment, where it was read from a message: what an Ask form's copy follows (asked-copies.ts). */
  id?: string;
  url: string;
  filename: string;
  /** As Discord declared it. */
  size: number;
  /** As Discord declared it; may be missing or wrong. */
  contentType?: string | null;
}

export interface DownloadPolicy {
  /** Hostnames (or host:port) attachments may come from. */
  allowedHosts: readonly string[];
  maxBytes: number;
  timeoutMs?: number;
}

export { hostAllowed };

export type ImageFormat = 'png' | 'jpeg' | 'gif' | 'webp';
const MIME: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp' };
/** The types sent for the formats we read; `image/jpg` and `image/pjpeg` are JPEG as some clients name it. */
const ACCEPTED = new Set([...Object.values(MIME), 'image/jpg', 'image/pjpeg']);
const FORMATS_TEXT = 'a PNG, JPEG, WebP or GIF';

export function isImageAttachment(a: { contentType?: string | null; filename: string }): boolean {
  if (a.contentType) return ACCEPTED.has(a.contentType.split(';')[0]!.trim().toLowerCase());
  return /\.(png|jpe?g|gif|webp)$/i.test(a.filename);
}

/** Everything we can check without downloading. Throws UserError with a specific message. */
export function checkBeforeDownload(a: AttachmentMeta, policy: DownloadPolicy): URL {
  let url: URL;
  try {
    url = new URL(a.url);
  } catch {
    throw new UserError('bad_image', `I couldn't read the link of ${a.filename}.`);
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || !hostAllowed(url, policy.allowedHosts)) {
    throw new UserError('bad_image', `I only read images uploaded to Discord; ${a.filename} is hosted on ${url.hostname}.`);
  }
  if (!isImageAttachment(a)) {
    // An image of a kind the bot cannot read (a phone's HEIC, an SVG) is still an image to the user who sent it
    const kind = /^image\/([a-z0-9.-]+)/i.exec(a.contentType ?? '')?.[1]?.toUpperCase();
    if (kind) throw new UserError('bad_image', `${a.filename} is an image in ${kind} format, which I can't read. Please attach ${FORMATS_TEXT}.`);
    const declared = a.contentType ? ` (${a.contentType})` : '';
    throw new UserError('bad_image', `${a.filename} isn't an image${declared}. Please attach ${FORMATS_TEXT}.`);
  }
  if (a.size > policy.maxBytes) {
    throw new UserError('bad_image', tooLargeText(a.filename, a.size, policy.maxBytes));
  }
  return url;
}

/** The format from the first bytes, or undefined. */
export function sniffImage(bytes: Uint8Array): ImageFormat | undefined {
  const mime = sniffImageMime(bytes);
  return mime && (mime.slice('image/'.length) as ImageFormat);
}

export interface DownloadedImage {
  bytes: Uint8Array;
  format: ImageFormat;
  contentType: string;
}

/**
 * Check, download (capped) and sniff. Never sends credentials; refuses redirects (they could leave the allow-list).
 * The deadline cancels the body itself: with `redirect: 'error'` undici holds what passes a fetch's abort on to its
 * body only weakly, so after a garbage collection `AbortSignal.timeout` on fetch ended nothing, and a server that
 * stopped mid-body held the download for ever (Node 20.20, found 2026-12-07).
 */
export async function downloadImage(a: AttachmentMeta, policy: DownloadPolicy): Promise<DownloadedImage> {
  const url = checkBeforeDownload(a, policy);
  const retry = (cause?: unknown) => new UserError('bad_image', `I couldn't download ${a.filename}; please try again.`, { cause });
  const bytes = await withDeadline(policy.timeoutMs ?? 30_000, async (signal) => {
    let response: Response;
    try {
      response = await fetch(url, { redirect: 'error', signal });
    } catch (e) {
      throw retry(e);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new UserError('bad_image', `I couldn't download ${a.filename} (HTTP ${response.status}); it may have expired. Please upload it again.`, { context: { status: response.status } });
    }
    const declared = Number(response.headers.get('content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > policy.maxBytes) {
      await response.body.cancel();
      throw new UserError('bad_image', tooLargeText(a.filename, declared, policy.maxBytes));
    }
    const tooLarge = () => new UserError('bad_image', tooLargeText(a.filename, undefined, policy.maxBytes));
    return readCapped(response.body, policy.maxBytes, tooLarge, signal).catch((e: unknown) => {
      throw signal.aborted ? retry(e) : e;
    });
  });
  const format = sniffImage(bytes);
  if (!format) throw new UserError('bad_image', `${a.filename} doesn't look like an image file. Please attach ${FORMATS_TEXT}.`);
  return { bytes, format, contentType: MIME[format] };
}
