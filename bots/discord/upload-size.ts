// Discord refuses a message whose attachments together pass its upload limit (10 MiB in a server without boosts) with
// 413 / 40005, and refuses it the same way on every retry: a gallery of four photographic 1024² PNGs (≈ 2–3 MB each)
// was never delivered, its user left at "Drawing: step 10/10" (found by an audit, 2026-12-07). Images that do not fit
// as PNG go as JPEG, at the best quality that fits.
import sharp from 'sharp';

/** What a result's attachments may weigh together: the limit without boosts, less room for the message around them. */
export const UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024 - 256 * 1024;

/** JPEG qualities tried in turn, best first (mozjpeg at 85 is hard to tell from the PNG at chat sizes). */
const QUALITIES = [92, 85, 75, 60, 45];

const total = (images: Uint8Array[]) => images.reduce((n, i) => n + i.byteLength, 0);

/** `images` as they are when they fit together, else as JPEGs at the best quality that fits (the last one tried, if none). */
export async function withinUploadLimit(images: Uint8Array[], limit = UPLOAD_LIMIT_BYTES): Promise<Uint8Array[]> {
  if (total(images) <= limit) return images;
  let jpegs = images;
  for (const quality of QUALITIES) {
    jpegs = await Promise.all(images.map(async (png) => new Uint8Array(await sharp(png).jpeg({ quality, mozjpeg: true }).toBuffer())));
    if (total(jpegs) <= limit) break;
  }
  return jpegs;
}

/** Whether `bytes` are a JPEG (its SOI marker): its file is named and typed so. */
export const isJpeg = (bytes: Uint8Array): boolean => bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
