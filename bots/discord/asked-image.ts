// The image an /ask (or Ask form) answer is about, carried on the answer itself. An interaction response replies to
// no message, so a mention-reply to it ("@bot and what colour is it?") found no image up its chain and was told to
// attach one. The answer now carries a copy of the image, its alt text the question: walkChain (conversation.ts)
// finds both on the answer, in any bot process and after any restart, and nothing of the image is kept in Redis.
//
//   /ask ──► job queued ──► PATCH @original: asked-about.jpg, alt "Image asked about: <question>" (attachments only)
//   the answer's later edits (progress, the answer) name no `attachments`, so Discord keeps the copy under the text
import sharp from 'sharp';
import { stripControlChars } from '../core/plain-text.ts';
import { clipText } from '../../src/text.ts';
import { MAX_ALT_TEXT_CHARS, type RenderedFile } from './render.ts';

/** The copy's file name: how a reply chain tells an answer's copy from a generated image (whose message is no turn). */
export const ASKED_IMAGE_FILE = 'asked-about.jpg';
/** The copy's alt text is this, then the question (cut to Discord's 1,024 characters). */
const ALT_TEXT_PREFIX = 'Image asked about: ';
/** mozjpeg at 85 is hard to tell from the original at chat sizes (as upload-size.ts). */
const JPEG_QUALITY = 85;

export interface AskedImageFile extends RenderedFile {
  description: string;
}

/**
 * The copy of `bytes`: what the model read of it (the first frame, EXIF orientation applied, alpha flattened on white,
 * as worker/pipeline/image.ts reads it), within `maxPixels` (understanding.maxPixels: the model reads no more, so a
 * follow-up sees what the first answer saw), never enlarged, as JPEG without metadata (no EXIF location goes public).
 */
export async function askedImageFile(bytes: Uint8Array, question: string, maxPixels: number): Promise<AskedImageFile> {
  const image = sharp(bytes).autoOrient();
  const meta = await image.metadata();
  const { width, height } = meta.autoOrient ?? { width: meta.width, height: meta.height };
  const scale = Math.min(1, Math.sqrt(maxPixels / (width * height)));
  const data = await image
    .resize({ width: Math.max(1, Math.floor(width * scale)), height: Math.max(1, Math.floor(height * scale)), fit: 'inside', withoutEnlargement: true })
    .flatten({ background: '#ffffff' })
    .jpeg({ quality: JPEG_QUALITY, mozjpeg: true })
    .toBuffer();
  const alt = ALT_TEXT_PREFIX + stripControlChars(question);
  const description = clipText(alt, MAX_ALT_TEXT_CHARS); // cut between whole characters (src/text.ts)
  return { name: ASKED_IMAGE_FILE, data, contentType: 'image/jpeg', description };
}

/** The question a copy's alt text carries; '' for an alt text without one. */
export function questionOf(description: string | null | undefined): string {
  return description?.startsWith(ALT_TEXT_PREFIX) ? description.slice(ALT_TEXT_PREFIX.length).trim() : '';
}
