// Preprocessing (spec §2.1) on real sharp decoding: grid, patch count, first/last values, patch order, the error
// cases (corrupt, 1×10000, a 30000×30000 PNG header, empty), EXIF orientation, alpha on white, GIF first frame.
import sharp, { type SharpOptions } from 'sharp';
import { describe, expect, it } from 'vitest';
import { UserError } from '../../../../src/errors.ts';
import { pngHeaderOnly } from '../../../doubles/png-header.ts';
import {
  patchify,
  patchPermutation,
  patchPositions,
  preprocessImage,
  preprocessSquare,
  readHeader,
  roundHalfEven,
  smartResize,
  visionRotaryTable,
  visionFeeds,
  windowOrder,
  type ImageLimits,
} from '../../../../worker/pipeline/image.ts';

const limits: ImageLimits = { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 };
const geometry = { patchSize: 14, temporalPatchSize: 2, mergeSize: 2 };
const MEAN = [0.48145466, 0.4578275, 0.40821073];
const STD = [0.26862954, 0.26130258, 0.27577711];
const norm = (v: number, c: number) => (v / 255 - (MEAN[c] as number)) / (STD[c] as number);

/** width×height RGB where R = x mod 256, G = y mod 256, B = (x + 2y) mod 256: every pixel says where it came from. */
function coordinateImage(width: number, height: number): Buffer {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      px[i] = x % 256;
      px[i + 1] = y % 256;
      px[i + 2] = (x + 2 * y) % 256;
    }
  }
  return px;
}
const png = (raw: Buffer, width: number, height: number, channels: 3 | 4 = 3) =>
  sharp(raw, { raw: { width, height, channels } }).png().toBuffer();

async function userError(p: Promise<unknown>): Promise<UserError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(UserError);
  expect((e as UserError).code).toBe('bad_image');
  return e as UserError;
}

describe('smartResize', () => {
  it('rounds to multiples of 28 with Python rounding and keeps within the pixel budget', () => {
    expect(roundHalfEven(2.5)).toBe(2);
    expect(roundHalfEven(3.5)).toBe(4);
    expect(roundHalfEven(-2.5)).toBe(-2);
    expect(smartResize(60, 100, 28, limits)).toEqual({ height: 56, width: 112 });
    expect(smartResize(70, 70, 28, limits)).toEqual({ height: 56, width: 56 }); // 70/28 = 2.5 → 2 (half to even)
    expect(smartResize(448, 448, 28, limits)).toEqual({ height: 448, width: 448 });
    // over the max: β = √(4000·3000 / 1003520) = 3.458…; floor(3000/β/28)·28 = 840, floor(4000/β/28)·28 = 1148
    expect(smartResize(3000, 4000, 28, limits)).toEqual({ height: 840, width: 1148 });
    // under the min: 10×10 → β = √(3136/100) = 5.6 → ceil(56/28)·28 = 56
    expect(smartResize(10, 10, 28, limits)).toEqual({ height: 56, width: 56 });
  });
});

describe('preprocessImage', () => {
  it('gives grid (1, 4, 8), 32 patch rows of 1176 and the expected first and last values for a 112×56 image', async () => {
    const raw = coordinateImage(112, 56);
    const out = await preprocessImage(await png(raw, 112, 56), limits, geometry);
    expect(out.grid).toEqual({ t: 1, h: 4, w: 8 });
    expect(out.pixelValues.length).toBe(32 * 1176);
    // first value: channel R, frame 0, py 0, px 0 of patch (0,0) = R(0,0) = 0
    expect(out.pixelValues[0]).toBeCloseTo(norm(0, 0), 5);
    // last value: last row = merge block (1,3), inner (1,1) = patch (3,7); channel B, frame 1, py 13, px 13 = pixel (111, 55)
    expect(out.pixelValues[32 * 1176 - 1]).toBeCloseTo(norm((111 + 2 * 55) % 256, 2), 5);
  });

  it('orders rows merge-block first and columns (channel, frame, py, px)', async () => {
    const raw = coordinateImage(112, 56);
    const { pixelValues } = await preprocessImage(await png(raw, 112, 56), limits, geometry);
    const at = (row: number, c: number, f: number, py: number, px: number) => pixelValues[row * 1176 + c * 392 + f * 196 + py * 14 + px] as number;
    // row 1 = block (0,0) inner (0,1) = patch (0,1): pixel x = 14 + px
    expect(at(1, 0, 0, 0, 3)).toBeCloseTo(norm(17, 0), 5);
    // row 2 = block (0,0) inner (1,0) = patch (1,0): pixel y = 14 + py
    expect(at(2, 1, 0, 5, 0)).toBeCloseTo(norm(19, 1), 5);
    // row 4 = block (0,1) inner (0,0) = patch (0,2): pixel x = 28 + px; both frames equal
    expect(at(4, 0, 1, 0, 2)).toBeCloseTo(norm(30, 0), 5);
    expect(at(4, 0, 0, 0, 2)).toBe(at(4, 0, 1, 0, 2));
  });

  it('resizes an off-grid image to multiples of 28 (100×60 → 112×56)', async () => {
    const out = await preprocessImage(await png(coordinateImage(100, 60), 100, 60), limits, geometry);
    expect({ w: out.width, h: out.height, grid: out.grid }).toEqual({ w: 112, h: 56, grid: { t: 1, h: 4, w: 8 } });
  });

  it('squash-resizes to 448×448 for image variations: grid (1, 32, 32)', async () => {
    const out = await preprocessSquare(await png(coordinateImage(200, 100), 200, 100), 448, limits, geometry);
    expect(out.grid).toEqual({ t: 1, h: 32, w: 32 });
    expect(out.pixelValues.length).toBe(1024 * 1176);
  });

  it('applies the EXIF orientation before resizing', async () => {
    // stored 56 wide × 112 high: top half red, bottom half blue; orientation 6 = rotate 90° clockwise to display
    const raw = Buffer.alloc(56 * 112 * 3);
    for (let i = 0; i < 56 * 112; i++) raw.set(i < 56 * 56 ? [255, 0, 0] : [0, 0, 255], i * 3);
    const jpeg = await sharp(raw, { raw: { width: 56, height: 112, channels: 3 } }).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
    const out = await preprocessImage(jpeg, limits, geometry);
    expect(out.grid).toEqual({ t: 1, h: 4, w: 8 }); // displayed 112 wide × 56 high
    // after rotating clockwise the red top ends up on the right: patch (0,0) is blue, patch (0,7) red
    const red = (row: number) => (out.pixelValues[row * 1176 + 6 * 14 + 6] as number) > 0; // channel R, frame 0, centre
    expect(red(0)).toBe(false);
    expect(red(3 * 4 + 1)).toBe(true); // block (0,3) inner (0,1) = patch (0,7)
  });

  it('flattens transparency on white', async () => {
    const rgba = Buffer.alloc(56 * 56 * 4); // fully transparent black
    const out = await preprocessImage(await png(rgba, 56, 56, 4), limits, geometry);
    for (const c of [0, 1, 2]) expect(out.pixelValues[c * 392]).toBeCloseTo(norm(255, c), 5);
  });

  it('uses the first frame of an animated GIF', async () => {
    const frames = Buffer.alloc(56 * 112 * 3);
    for (let i = 0; i < 56 * 112; i++) frames.set(i < 56 * 56 ? [0, 200, 0] : [200, 0, 0], i * 3); // green, then red
    const gif = await sharp(frames, { raw: { width: 56, height: 112, channels: 3, pageHeight: 56 } } as SharpOptions).gif().toBuffer();
    expect((await sharp(gif).metadata()).pages).toBe(2);
    const out = await preprocessImage(gif, limits, geometry);
    expect(out.grid).toEqual({ t: 1, h: 4, w: 4 });
    expect(out.pixelValues[392]! > 0 && out.pixelValues[0]! < 0).toBe(true); // green high, red low
  });

  it('decodes WebP and JPEG too', async () => {
    const raw = coordinateImage(56, 56);
    for (const buf of [await sharp(raw, { raw: { width: 56, height: 56, channels: 3 } }).webp({ lossless: true }).toBuffer()]) {
      const out = await preprocessImage(buf, limits, geometry);
      expect(out.pixelValues[1 * 392 + 14 * 5]).toBeCloseTo(norm(5, 1), 5); // G of pixel (0,5) = 5
    }
  });
});

describe('preprocessImage errors (each its own clear UserError)', () => {
  it('a corrupt file', async () => {
    const e = await userError(preprocessImage(Buffer.from('this is not an image at all, just text'), limits, geometry));
    expect(e.message).toMatch(/couldn't read that file as an image/);
  });

  it("a truncated PNG whose header is fine, with the decoder's error kept as the cause (for the logs)", async () => {
    const full = await png(coordinateImage(112, 112), 112, 112);
    const e = await userError(preprocessImage(full.subarray(0, Math.floor(full.length / 2)), limits, geometry));
    expect(e.message).toMatch(/damaged or truncated/);
    expect(e.cause).toBeInstanceOf(Error);
  });

  it('an empty file', async () => {
    expect((await userError(preprocessImage(new Uint8Array(0), limits, geometry))).message).toMatch(/empty/);
  });

  it('a 1×10000 image (absurd aspect ratio)', async () => {
    const strip = await sharp({ create: { width: 1, height: 10000, channels: 3, background: '#808080' } }).png().toBuffer();
    const e = await userError(preprocessImage(strip, limits, geometry));
    expect(e.message).toMatch(/aspect ratio of 10000:1/);
  });

  it('a 30000×30000 PNG header: refused from the header, before decoding', async () => {
    const bomb = pngHeaderOnly(30000, 30000);
    expect(bomb.length).toBeLessThan(100);
    const e = await userError(readHeader(bomb, limits));
    expect(e.message).toMatch(/30000×30000 pixels \(900 megapixels\); the limit is 50 megapixels/);
    await userError(preprocessImage(bomb, limits, geometry));
  });

  it('an unsupported format', async () => {
    const tiff = await sharp({ create: { width: 56, height: 56, channels: 3, background: '#fff' } }).tiff().toBuffer();
    expect((await userError(preprocessImage(tiff, limits, geometry))).message).toMatch(/TIFF images are not supported/);
  });
});

describe('patch order inside the tower', () => {
  it('window order for a 448×448 image: 16 windows of 64 patches, no padding', () => {
    const order = windowOrder({ t: 1, h: 32, w: 32 }, geometry, 112);
    expect(order.cuWindowSeqlens).toEqual(Array.from({ length: 17 }, (_, i) => i * 64));
    // window 0 holds merged rows 0..3, cols 0..3 row-major; window 1 starts at merged col 4
    expect(Array.from(order.windowIndex.slice(0, 6))).toEqual([0, 1, 2, 3, 16, 17]);
    expect(order.windowIndex[16]).toBe(4);
  });

  it('edge windows are smaller when the merged grid is not a multiple of 4 (6×5 merged)', () => {
    const order = windowOrder({ t: 1, h: 12, w: 10 }, geometry, 112);
    // windows: (0,0) 4×4, (0,1) 4×1, (1,0) 2×4, (1,1) 2×1 merged tokens; ×4 patches each
    expect(order.cuWindowSeqlens).toEqual([0, 64, 80, 112, 120]);
    expect(Array.from(order.windowIndex.slice(16, 20))).toEqual([4, 9, 14, 19]);
    expect(Array.from(order.windowIndex.slice(20, 28))).toEqual([20, 21, 22, 23, 25, 26, 27, 28]);
    // reverse is the inverse permutation
    order.windowIndex.forEach((src, k) => expect(order.reverseIndex[src]).toBe(k));
    expect(Array.from(patchPermutation(order.windowIndex.slice(16, 17), 4))).toEqual([16, 17, 18, 19]);
  });

  it('pads ragged windows to 64 slots for the windowed blocks (6×5 merged: windows of 64, 16, 32 and 8 patches)', () => {
    const image = { pixelValues: new Float32Array(120 * 1176), grid: { t: 1, h: 12, w: 10 }, width: 140, height: 168 };
    const f = visionFeeds(image, geometry, 112, 16);
    expect(f.window_key_mask.dims).toEqual([4, 64]);
    const real = (w: number) => f.window_key_mask.data.slice(w * 64, (w + 1) * 64).filter((v) => v === 0).length;
    expect([0, 1, 2, 3].map(real)).toEqual([64, 16, 32, 8]);
    // window 1's first slot holds window-order row 64; row 64 is found again through unpad
    expect(f.window_slots.data[64]).toBe(64n);
    expect(f.window_unpad.data[64]).toBe(64n);
    expect(f.window_unpad.data[80]).toBe(128n); // first row of window 2
    // padded slots point at row 0 and are masked
    expect([f.window_slots.data[64 + 16], f.window_key_mask.data[64 + 16]]).toEqual([0n, -Infinity]);
    // every row sits in exactly one slot
    expect(new Set(Array.from(f.window_unpad.data)).size).toBe(120);
  });

  it('patch positions follow the merge-block row order and feed the rotary table', () => {
    const pos = patchPositions({ t: 1, h: 4, w: 4 }, geometry);
    expect(Array.from(pos.slice(0, 10))).toEqual([0, 0, 0, 1, 1, 0, 1, 1, 0, 2]);
    const { cos, sin } = visionRotaryTable(pos, 80);
    // patch 3 = (row 1, col 1): slot 0 angle = 1·inv_freq_0 = 1 rad; slot 20 angle = col·inv_freq_0 = 1; duplicated at +40
    expect(cos[3 * 80]).toBeCloseTo(Math.cos(1), 6);
    expect(sin[3 * 80 + 40]).toBeCloseTo(Math.sin(1), 6);
    // patch 4 = (row 0, col 2): slot 21 angle = col·inv_freq_1 = 2·10000^(−2/40)
    expect(sin[4 * 80 + 21]).toBeCloseTo(Math.sin(2 * 10000 ** -0.05), 6);
    expect(sin[4 * 80 + 1]).toBe(0);
  });

  it('patchify rejects sizes that are not multiples of 28', () => {
    expect(() => patchify(new Float32Array(3 * 30 * 30), 30, 30, geometry)).toThrow(/multiple of 28/);
  });
});

// Boundaries of the image checks, each at exactly the limit and one past it (mutation testing, docs/mutation.md).
describe('image checks at their limits', () => {
  it('roundHalfEven rounds halves to the even neighbour and everything else to the nearest', () => {
    expect([0.5, 1.5, 2.5, 3.5, -2.5].map(roundHalfEven)).toEqual([0, 2, 2, 4, -2]);
    expect([2.4, 2.6, 3, 0.49].map(roundHalfEven)).toEqual([2, 3, 3, 0]);
  });

  it('smartResize keeps a rounded area of exactly maxPixels or minPixels as it is', () => {
    // 900×1110 rounds to 896×1120 = 1003520 = maxPixels: no rescale (rescaling would give 896×1092)
    expect(smartResize(900, 1110, 28, limits)).toEqual({ height: 896, width: 1120 });
    // 60×52 rounds to 56×56 = 3136 = minPixels: no rescale (rescaling would give 84×56)
    expect(smartResize(60, 52, 28, limits)).toEqual({ height: 56, width: 56 });
  });

  it('an image without pixels is refused, whichever side is zero', () => {
    for (const [h, w] of [[0, 10], [10, 0], [0, 0], [-5, 10]] as const) {
      expect(() => smartResize(h, w, 28, limits)).toThrow(/That image has no pixels/);
    }
  });

  it('refuses an aspect ratio of exactly maxAspectRatio, accepts one just below, and names the size in the error', () => {
    let error: unknown;
    try {
      smartResize(1, 200, 28, limits);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toMatch(/1×200|200×1/);
    expect((error as UserError).context).toEqual({ width: 200, height: 1 });
    expect(() => smartResize(1, 199, 28, limits)).not.toThrow();
  });

  it('readHeader accepts exactly maxInputPixels and refuses one row more, in megapixels with one decimal below 10', async () => {
    const tight = { ...limits, maxInputPixels: 2000 * 1500 };
    expect(await readHeader(pngHeaderOnly(2000, 1500), tight)).toEqual({ width: 2000, height: 1500 });
    let error: unknown;
    try {
      await readHeader(pngHeaderOnly(2000, 1501), tight);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toMatch(/2000×1501 pixels \(3\.0 megapixels\); the limit is 3\.0 megapixels/);
    expect((error as UserError).context).toEqual({ width: 2000, height: 1501 });
  });

  it('says whole megapixels from 10 up: a limit of exactly 10 is "10 megapixels", not "10.0"', async () => {
    const e = await userError(readHeader(pngHeaderOnly(4000, 2501), { ...limits, maxInputPixels: 10_000_000 }));
    expect(e.message).toMatch(/4000×2501 pixels \(10 megapixels\); the limit is 10 megapixels\./);
  });

  it("reads an animated GIF's size as one frame's, and keeps the decoder's error as the cause of an unreadable file", async () => {
    const frames = Buffer.alloc(56 * 112 * 3, 90);
    const gif = await sharp(frames, { raw: { width: 56, height: 112, channels: 3, pageHeight: 56 } } as SharpOptions).gif().toBuffer();
    expect(await readHeader(gif, limits)).toEqual({ width: 56, height: 56 });
    const e = await userError(readHeader(Buffer.from('not an image'), limits));
    expect(e.cause).toBeInstanceOf(Error);
  });

  it('squash-resizes (fill), never crops: a red left quarter stays the left quarter of a 448×448 variation input', async () => {
    const raw = Buffer.alloc(200 * 100 * 3);
    for (let y = 0; y < 100; y++) for (let x = 0; x < 200; x++) raw.set(x < 50 ? [255, 0, 0] : [0, 0, 255], (y * 200 + x) * 3);
    const out = await preprocessSquare(await png(raw, 200, 100), 448, limits, geometry);
    // patch (0,0)'s first value is R of pixel (0,0); with a centre crop (fit 'cover') that pixel would be blue
    expect(out.pixelValues[0]).toBeCloseTo(norm(255, 0), 2);
  });
});
