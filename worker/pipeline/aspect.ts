// Aspect-ratio buckets of about one megapixel, as SDXL trained them, scaled to whatever decoder is loaded
// (the tiny test checkpoint gives small images, the real Emu2 decoder ~1 MP) plus the SDXL size ids
// ("time_ids": original size, crop top-left, target size) that the UNet's text_time embedding reads (pitfall 9).
import type { AspectRatio } from '../../src/config/schema.ts';

/**
 * SDXL's training buckets in units of 64 px at a 1024 px base (= 8 latents at VAE factor 8): 1:1 is 1024×1024,
 * 4:3 is 1152×896, 3:2 is 1216×832, 16:9 is 1344×768, 21:9 is 1536×640; portrait buckets swap width and height.
 */
const BUCKETS: Record<AspectRatio, { w: number; h: number }> = {
  '1:1': { w: 16, h: 16 },
  '4:3': { w: 18, h: 14 },
  '3:4': { w: 14, h: 18 },
  '3:2': { w: 19, h: 13 },
  '2:3': { w: 13, h: 19 },
  '16:9': { w: 21, h: 12 },
  '9:16': { w: 12, h: 21 },
  '21:9': { w: 24, h: 10 },
  '9:21': { w: 10, h: 24 },
};

export interface ImageGeometry {
  /** Latent grid the UNet runs on. */
  latentHeight: number;
  latentWidth: number;
  /** Output pixels = latent × VAE scale factor. */
  height: number;
  width: number;
  /** SDXL add_time_ids: [orig_h, orig_w, crop_top, crop_left, target_h, target_w] in pixels. */
  sizeIds: [number, number, number, number, number, number];
}

/**
 * The bucket for `aspect` at a decoder whose square latent side is `sampleSize` (unet config `sample_size`: 128 for
 * the real model), whose VAE upsamples by `vaeScaleFactor` (2^(len(vae.block_out_channels)−1)) and whose UNet needs
 * latent sides divisible by `latentMultiple` (2^(number of downsamplers)). The real model gets SDXL's buckets exactly.
 */
export function geometryFor(aspect: AspectRatio, sampleSize: number, vaeScaleFactor: number, latentMultiple: number): ImageGeometry {
  const b = BUCKETS[aspect];
  const side = (units: number): number => Math.max(latentMultiple, Math.round((units * sampleSize) / 16 / latentMultiple) * latentMultiple);
  const latentWidth = side(b.w);
  const latentHeight = side(b.h);
  const width = latentWidth * vaeScaleFactor;
  const height = latentHeight * vaeScaleFactor;
  return { latentHeight, latentWidth, height, width, sizeIds: [height, width, 0, 0, height, width] };
}

export const ASPECT_RATIOS = Object.keys(BUCKETS) as AspectRatio[];
