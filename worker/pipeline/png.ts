// PNG out: sharp encodes the pixels; the prompt, seed and settings go into PNG text metadata (iTXt, UTF-8, so any
// prompt survives) inserted right after IHDR. sharp/libvips can read text chunks (metadata().comments) but not write
// them, so the chunks are framed here (PNG 1.2 §11.3.4.5: keyword, 0, compression flag 0, method 0, language "", 0,
// translated keyword "", 0, text), each with its CRC-32 over type + data.
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { AppError } from '../../src/errors.ts';

const SIGNATURE_BYTES = 8;

/** Encode HWC RGB uint8 pixels to PNG with `text` as iTXt chunks (keywords are 1–79 Latin-1 characters). */
export async function encodePng(rgb: Uint8Array, width: number, height: number, text: Record<string, string>): Promise<Uint8Array> {
  if (rgb.length !== width * height * 3) throw new AppError('internal', `encodePng: expected ${width}×${height}×3 bytes, got ${rgb.length}`);
  const png = await sharp(rgb, { raw: { width, height, channels: 3 } }).png({ compressionLevel: 6, adaptiveFiltering: false }).toBuffer();
  const ihdrEnd = SIGNATURE_BYTES + 8 + png.readUInt32BE(SIGNATURE_BYTES) + 4; // length, type, data, crc
  const chunks = Object.entries(text).map(([k, v]) => iTXt(k, v));
  return new Uint8Array(Buffer.concat([png.subarray(0, ihdrEnd), ...chunks, png.subarray(ihdrEnd)]));
}

/** `png` with `text` added as iTXt chunks right after IHDR (the pixels and every other chunk unchanged). */
export function addPngText(png: Uint8Array, text: Record<string, string>): Uint8Array {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (buf.length < SIGNATURE_BYTES + 8 || buf.toString('latin1', SIGNATURE_BYTES + 4, SIGNATURE_BYTES + 8) !== 'IHDR') throw new AppError('internal', 'addPngText: not a PNG');
  const ihdrEnd = SIGNATURE_BYTES + 8 + buf.readUInt32BE(SIGNATURE_BYTES) + 4;
  const chunks = Object.entries(text).map(([k, v]) => iTXt(k, v));
  return new Uint8Array(Buffer.concat([buf.subarray(0, ihdrEnd), ...chunks, buf.subarray(ihdrEnd)]));
}

function iTXt(keyword: string, value: string): Buffer {
  if (!/^[\x20-\x7e]{1,79}$/.test(keyword) || keyword.startsWith(' ') || keyword.endsWith(' ')) throw new AppError('internal', `bad PNG text keyword ${JSON.stringify(keyword)}`);
  const data = Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(value, 'utf8')]);
  const typed = Buffer.concat([Buffer.from('iTXt', 'latin1'), data]);
  const out = Buffer.alloc(4 + typed.length + 4);
  out.writeUInt32BE(data.length, 0);
  typed.copy(out, 4);
  out.writeUInt32BE(crc32(typed) >>> 0, 4 + typed.length);
  return out;
}

/** float image in [−1, 1], CHW → uint8 HWC: clamp(x/2 + 0.5, 0, 1)·255 rounded (diffusers VaeImageProcessor). */
export function toRgb8(chw: Float32Array, height: number, width: number): Uint8Array {
  const plane = height * width;
  const out = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      const v = Math.min(1, Math.max(0, (chw[c * plane + p] ?? 0) / 2 + 0.5));
      out[p * 3 + c] = Math.round(v * 255);
    }
  }
  return out;
}
