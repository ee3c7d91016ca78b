// The copy of the image an /ask answer carries (bots/discord/asked-image.ts): what the model read, within its pixel
// budget, as JPEG without metadata; the question in its alt text, read back by questionOf.
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ASKED_IMAGE_FILE, askedImageFile, questionOf } from '../../../../bots/discord/asked-image.ts';

const image = (width: number, height: number, channels: 3 | 4 = 3) =>
  sharp({ create: { width, height, channels, background: channels === 4 ? { r: 0, g: 0, b: 0, alpha: 0 } : { r: 200, g: 30, b: 30 } } });

describe('the copy of an asked-about image', () => {
  it('fits the pixel budget, keeping the aspect; a smaller image is never enlarged', async () => {
    const big = await askedImageFile(await image(2000, 1000).png().toBuffer(), 'what?', 500_000);
    const meta = await sharp(big.data).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width! * meta.height!).toBeLessThanOrEqual(500_000);
    expect(meta.width).toBe(1000);
    expect(meta.height).toBe(500);
    expect(await sharp((await askedImageFile(await image(30, 20).png().toBuffer(), 'what?', 500_000)).data).metadata()).toMatchObject({ width: 30, height: 20 });
  });

  it('as the worker reads it: EXIF orientation applied, transparency on white; no metadata kept', async () => {
    const rotated = await image(40, 20).jpeg().withMetadata({ orientation: 6, exif: { IFD0: { Copyright: 'someone' } } }).toBuffer();
    const copy = await askedImageFile(rotated, 'what?', 500_000);
    const meta = await sharp(copy.data).metadata();
    expect(meta).toMatchObject({ width: 20, height: 40 });
    expect(meta.exif).toBeUndefined();
    expect(meta.orientation).toBeUndefined();
    const clear = await askedImageFile(await image(8, 8, 4).png().toBuffer(), 'what?', 500_000);
    const { data } = await sharp(clear.data).raw().toBuffer({ resolveWithObject: true });
    expect(Math.min(...data)).toBeGreaterThan(240); // white, not black
  });

  it('its alt text carries the question, cut to 1,024 characters; questionOf reads it back', async () => {
    const png = await image(8, 8).png().toBuffer();
    const copy = await askedImageFile(png, 'what colour\u202E is it?', 500_000);
    expect(copy).toMatchObject({ name: ASKED_IMAGE_FILE, contentType: 'image/jpeg', description: 'Image asked about: what colour is it?' });
    expect(questionOf(copy.description)).toBe('what colour is it?');
    const long = await askedImageFile(png, 'x'.repeat(2000), 500_000);
    expect(long.description).toHaveLength(1024);
    expect(long.description.endsWith('x…')).toBe(true);
    expect([questionOf('a photo'), questionOf(null), questionOf(undefined), questionOf('Image asked about:  ')]).toEqual(['', '', '', '']);
  });
});
