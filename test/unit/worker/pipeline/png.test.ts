import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { encodePng, toRgb8 } from '../../../../worker/pipeline/png.ts';

describe('encodePng', () => {
  it('writes pixels sharp decodes back and text metadata sharp reads back', async () => {
    const w = 5;
    const h = 3;
    const rgb = Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 37) % 256);
    const text = { prompt: 'a red fox in snow, 雪の狐 🦊', seed: '7', settings: JSON.stringify({ ditSteps: 30 }) };
    const png = await encodePng(rgb, w, h, text);
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', w, h]);
    expect(meta.comments).toEqual(Object.entries(text).map(([keyword, t]) => ({ keyword, text: t })));
    const { data } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect(new Uint8Array(data)).toEqual(rgb);
  });

  it('is byte-deterministic', async () => {
    const rgb = new Uint8Array(4 * 4 * 3).fill(9);
    expect(await encodePng(rgb, 4, 4, { seed: '1' })).toEqual(await encodePng(rgb, 4, 4, { seed: '1' }));
  });

  it('refuses a pixel buffer of the wrong size', async () => {
    await expect(encodePng(new Uint8Array(5), 2, 2, {})).rejects.toThrow(/2×2×3/);
  });
});

describe('toRgb8', () => {
  it('maps [−1, 1] CHW to clamped uint8 HWC', () => {
    const chw = Float32Array.from([-1, 1, 0, 2, /* g */ -2, 0.5, 0, 0, /* b */ 1, 1, 1, 1]);
    expect([...toRgb8(chw, 2, 2)]).toEqual([0, 0, 255, 255, 191, 255, 128, 128, 255, 255, 128, 255]);
  });
});
