// npm run bench -- resize [--mp 12] [--runs 3]
//
// What the vision preprocessing's PIL-exact resize costs (worker/pipeline/image.ts resizeBicubic: PIL's BICUBIC byte
// for byte, which the reference's Qwen2-VL processor uses) against libvips' cubic resize (sharp; not PIL's: it
// differs by tens of levels whenever a side grows), on one `--mp` megapixel 4:3 photo resized to smart_resize's size
// under the default maxPixels, alternating the two in each round. Prints both times and the ratio.
import sharp from 'sharp';
import { loadConfig } from '../src/config/load.ts';
import { resizeBicubic, smartResize } from '../worker/pipeline/image.ts';

function arg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

export async function run(args: string[]): Promise<void> {
  const megapixels = arg(args, 'mp', 12);
  const runs = arg(args, 'runs', 3);
  const width = Math.round(Math.sqrt((megapixels * 1e6 * 4) / 3));
  const height = Math.round((width * 3) / 4);
  const { height: outHeight, width: outWidth } = smartResize(height, width, 28, loadConfig().understanding);
  // a photo-like input: noise over a gradient (a flat colour would let either side skip work)
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (((i / 3) % width) * 255) / width + ((i * 2654435761) >>> 27);
  console.log(`${width}×${height} (${megapixels} MP) → ${outWidth}×${outHeight}, ${runs} rounds`);
  for (let r = 1; r <= runs; r++) {
    let t = performance.now();
    resizeBicubic(rgb, width, height, outWidth, outHeight);
    const exact = performance.now() - t;
    t = performance.now();
    await sharp(rgb, { raw: { width, height, channels: 3 } }).resize(outWidth, outHeight, { fit: 'fill', kernel: 'cubic', fastShrinkOnLoad: false }).raw().toBuffer();
    const libvips = performance.now() - t;
    console.log(`round ${r}: resizeBicubic ${exact.toFixed(0)} ms, sharp cubic ${libvips.toFixed(0)} ms, ratio ${(exact / libvips).toFixed(1)}×`);
  }
}
