// Image preprocessing for the Qwen2.5-VL vision tower (spec ../shared/docs/blip3o.md §2.1), done with sharp.
// Reference: transformers image_processing_qwen2_vl.py (`smart_resize`, `_preprocess`) and qwen_vl_utils
// `fetch_image`. Pipeline: header checks (before any pixel is decoded) → decode the first frame → EXIF orientation
// → alpha flattened on white → 8-bit RGB, ICC profile ignored → PIL-exact bicubic resize (resizeBicubic) to
// multiples of 28 → ×1/255 → CLIP mean/std → patch rows.
//
// Also here, because they are "patch order" too: the window permutation and the 2-D rotary position table that the
// vision graph takes as inputs (transformers Qwen2_5_VisionTransformerPretrainedModel.get_window_index / rot_pos_emb).
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { UserError } from '../../src/errors.ts';

// ---- geometry -----------------------------------------------------------------------------------------------

/** The vision config fields that fix the patch layout (HF `vision_config` keys, camelCased). */
export interface PatchGeometry {
  /** `patch_size`: pixels per patch side. @defaultValue 14 */
  patchSize: number;
  /** `temporal_patch_size`: frames per patch; a still image is repeated this many times. @defaultValue 2 */
  temporalPatchSize: number;
  /** `spatial_merge_size`: patches per merged-token side. @defaultValue 2 */
  mergeSize: number;
}

/** Pixel budgets and input guards (config `understanding`). */
export interface ImageLimits {
  /** smart_resize lower bound on h̄·w̄ (pixels). */
  minPixels: number;
  /** smart_resize upper bound on h̄·w̄ (pixels). */
  maxPixels: number;
  /** Decompression-bomb guard: width×height from the header, checked before decoding (pixels). */
  maxInputPixels: number;
  /** Longest side / shortest side must stay below this (Qwen's MAX_RATIO is 200). */
  maxAspectRatio: number;
}

/** grid_thw: (frames / temporal patch, patch rows, patch columns). */
export interface Grid {
  t: number;
  h: number;
  w: number;
}

export interface PreprocessedImage {
  /** [N, 3·tp·p·p] patch rows (N = t·h·w), row order merge-block-major, columns (channel, frame, py, px). */
  pixelValues: Float32Array;
  grid: Grid;
  /** Size after smart_resize, in pixels. */
  width: number;
  height: number;
}

// CLIP normalisation (OPENAI_CLIP_MEAN / OPENAI_CLIP_STD in transformers image_utils.py).
const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;
const ACCEPTED_FORMATS = new Set(['png', 'jpeg', 'webp', 'gif']);

/** Python's round(): halves go to the even neighbour (round(2.5) = 2), which smart_resize inherits. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * transformers smart_resize: both sides become multiples of `factor` (patch·merge = 28), the area stays within
 * [minPixels, maxPixels] and the aspect ratio is kept as closely as the rounding allows.
 */
export function smartResize(height: number, width: number, factor: number, limits: ImageLimits): { height: number; width: number } {
  checkShape(width, height, limits);
  let h = roundHalfEven(height / factor) * factor;
  let w = roundHalfEven(width / factor) * factor;
  if (h * w > limits.maxPixels) {
    const beta = Math.sqrt((height * width) / limits.maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < limits.minPixels) {
    const beta = Math.sqrt(limits.minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return { height: h, width: w };
}

function checkShape(width: number, height: number, limits: ImageLimits): void {
  if (!(width > 0 && height > 0)) throw new UserError('bad_image', `That image has no pixels (${width}×${height}).`);
  const ratio = Math.max(width, height) / Math.min(width, height);
  if (ratio >= limits.maxAspectRatio) {
    throw new UserError(
      'bad_image',
      `That image is ${width}×${height} pixels, an aspect ratio of ${Math.round(ratio)}:1; images must be less than ${limits.maxAspectRatio}:1. Crop it and try again.`,
      { context: { width, height } },
    );
  }
}

// ---- decode ---------------------------------------------------------------------------------------------------

interface Header {
  width: number;
  height: number;
}

/**
 * Reads only the header: the format must be one we accept and width×height must fit `maxInputPixels`,
 * so a 30000×30000 PNG is refused before a single pixel is inflated. Sizes are after EXIF orientation.
 */
export async function readHeader(bytes: Uint8Array, limits: ImageLimits): Promise<Header> {
  if (bytes.byteLength === 0) throw new UserError('bad_image', 'That file is empty.');
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new UserError('bad_image', "I couldn't read that file as an image. Send a PNG, JPEG, WebP or GIF.", { cause: e });
  }
  if (!ACCEPTED_FORMATS.has(meta.format)) {
    throw new UserError('bad_image', `${meta.format.toUpperCase()} images are not supported. Send a PNG, JPEG, WebP or GIF.`);
  }
  // Animated GIF/WebP: only the first frame is decoded, and sharp opened with its default `pages: 1` reports that
  // frame's size (pageHeight stays unset), already after EXIF orientation.
  const { width, height } = meta.autoOrient;
  if (width * height > limits.maxInputPixels) {
    const mp = (n: number) => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} megapixels`;
    throw new UserError(
      'bad_image',
      `That image is ${width}×${height} pixels (${mp(width * height)}); the limit is ${mp(limits.maxInputPixels)}. Send a smaller image.`,
      { context: { width, height } },
    );
  }
  checkShape(width, height, limits);
  return { width, height };
}

/** Decodes the first frame, applies EXIF orientation, flattens alpha on white and resizes (PIL bicubic) to width×height. */
async function decodeResized(bytes: Uint8Array, header: Header, width: number, height: number, limits: ImageLimits): Promise<Uint8Array> {
  let decoded: { data: Buffer; info: OutputInfo };
  try {
    // Equivalent mutants (docs/mutation.md): each of these options restates sharp 0.35's behaviour on every input we
    // could make (readHeader refused more than maxInputPixels already; pages: 1 is the default; failOn 'error' and
    // 'warning' decided alike on truncated and junk-padded JPEGs; the sRGB output is 8-bit). They are kept to pin that
    // behaviour if a later sharp changes a default.
    // (A mark inside the call chain below would reach nothing: Stryker reads them before statements.)
    // Stryker disable next-line ObjectLiteral,StringLiteral,BooleanLiteral
    const open = { limitInputPixels: limits.maxInputPixels, failOn: 'error', pages: 1 } as const;
    // Stryker disable next-line ObjectLiteral,StringLiteral
    const raw = { depth: 'uchar' } as const;
    // Decoded at full size: libvips' cubic resize is not PIL's (it differs by tens of levels when a side grows, which
    // smart_resize's rounding to 28 makes the common case), so the resize is resizeBicubic below.
    // ignoreIcc: the reference's PIL convert("RGB") takes the stored values and never colour-manages, so a Display P3
    // photo reaches the vision tower as its raw P3 values there (converting it to sRGB moved colours by up to ~100 levels).
    decoded = await sharp(bytes, { ...open, ignoreIcc: true }).autoOrient().flatten({ background: '#ffffff' }).toColourspace('srgb').raw(raw).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new UserError(
      'bad_image',
      `That ${header.width}×${header.height} image is damaged or truncated and could not be decoded. Send it again or try another file.`,
      { cause: e },
    );
  }
  const { data, info } = decoded;
  // A guard against a sharp that changes what flatten + sRGB return (3 channels): no input reaches it today, so its
  // mutants are equivalent.
  // Stryker disable all
  if (info.channels !== 3) throw new UserError('bad_image', `That ${header.width}×${header.height} image decoded to ${info.channels} channels; send it as an RGB PNG or JPEG.`);
  // Stryker restore all
  return resizeBicubic(data, info.width, info.height, width, height);
}

// ---- PIL's bicubic resampling -----------------------------------------------------------------------------------
//
// What Pillow's Image.resize(size, Image.BICUBIC) computes on an 8-bit RGB image (libImaging/Resample.c), which both
// qwen_vl_utils and transformers' Qwen2-VL image processor call (reducing_gap None, so no box pre-shrink):
//   - separable: a horizontal pass into an 8-bit intermediate, then a vertical pass; a side whose size does not change
//     is not resampled at all;
//   - output pixel i samples around centre (i + 0.5)·scale with the Keys cubic (a = −0.5), its support 2 widened by
//     scale when shrinking (antialiasing); the taps are [trunc(centre − support + 0.5), trunc(centre + support + 0.5))
//     clipped to the image, and their weights are normalised to sum 1;
//   - weights become 22-bit fixed point (rounded half away from zero), each sum starts at half a unit and is shifted
//     down and clamped to 0…255.

const RESAMPLE_BITS = 22;
const RESAMPLE_ONE = 2 ** RESAMPLE_BITS;

/** Keys' cubic convolution kernel with a = −0.5 (PIL BICUBIC), support 2. */
function keysCubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  // Stryker disable next-line EqualityOperator: at t = 1 both pieces are 0
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  // Stryker disable next-line ConditionalExpression,EqualityOperator: the piece is 0 at t = 2, and resampleTaps never asks past it (|x| ≤ 2)
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** One axis' taps: for each output index its first input index, tap count and fixed-point weights. */
function resampleTaps(inSize: number, outSize: number): { first: Int32Array; count: Int32Array; weights: Float64Array; stride: number } {
  const scale = inSize / outSize;
  const widen = Math.max(1, scale);
  const support = 2 * widen;
  const stride = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * stride);
  const w = new Float64Array(stride);
  // Equivalent mutants (docs/mutation.md, 2026-12-07 17:53): a loop that runs on past its end writes typed arrays past
  // their length (ignored) or into slots a later pass overwrites or never reads; a tap one further out (lo) has weight 0.
  // Stryker disable next-line EqualityOperator
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * scale;
    // Stryker disable next-line ArithmeticOperator
    const lo = Math.max(0, Math.trunc(centre - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(centre + support + 0.5));
    let sum = 0;
    for (let k = 0; k < hi - lo; k++) sum += w[k] = keysCubic((k + lo - centre + 0.5) / widen);
    // Stryker disable next-line EqualityOperator,ArithmeticOperator
    for (let k = 0; k < hi - lo; k++) {
      // Stryker disable next-line ConditionalExpression: PIL's guard; the taps' sum is never 0 (the centre tap weighs most)
      const f = sum !== 0 ? w[k]! / sum : w[k]!;
      // Stryker disable next-line EqualityOperator: f = 0 rounds to −0 or 0, the same in every sum
      weights[i * stride + k] = f < 0 ? Math.trunc(-0.5 + f * RESAMPLE_ONE) : Math.trunc(0.5 + f * RESAMPLE_ONE);
    }
    first[i] = lo;
    count[i] = hi - lo;
  }
  return { first, count, weights, stride };
}

/** A fixed-point sum back to a byte: shift down (floor), clamp to 0…255. */
const toByte = (acc: number): number => Math.min(255, Math.max(0, Math.floor(acc / RESAMPLE_ONE)));

/**
 * HWC RGB uint8 width×height → outWidth×outHeight, byte for byte what PIL's resize with BICUBIC gives (see above).
 * The sums are exact integers in float64 (|sum| < 2^40), so no 32-bit overflow question arises.
 */
export function resizeBicubic(rgb: Uint8Array, width: number, height: number, outWidth: number, outHeight: number): Uint8Array {
  let src = rgb;
  let w = width;
  // Stryker disable next-line ConditionalExpression: resampling a side to its own size gives its bytes back (taps 0, 1, 0, 0), which PIL skips as this does
  if (outWidth !== width) {
    const t = resampleTaps(width, outWidth);
    const out = new Uint8Array(outWidth * height * 3);
    // Stryker disable next-line EqualityOperator
    for (let y = 0; y < height; y++) {
      // Stryker disable next-line EqualityOperator: x = outWidth writes the next row's first pixel, which that row then writes
      for (let x = 0; x < outWidth; x++) {
        let r = RESAMPLE_ONE / 2;
        let g = r;
        let b = r;
        let at = (y * width + t.first[x]!) * 3;
        const wk = x * t.stride;
        for (let k = 0; k < t.count[x]!; k++, at += 3) {
          const f = t.weights[wk + k]!;
          r += src[at]! * f;
          g += src[at + 1]! * f;
          b += src[at + 2]! * f;
        }
        const o = (y * outWidth + x) * 3;
        out[o] = toByte(r);
        out[o + 1] = toByte(g);
        out[o + 2] = toByte(b);
      }
    }
    src = out;
    w = outWidth;
  }
  // Stryker disable next-line ConditionalExpression: as for the width
  if (outHeight !== height) {
    const t = resampleTaps(height, outHeight);
    const out = new Uint8Array(w * outHeight * 3);
    const row = w * 3;
    const acc = new Float64Array(row);
    // Stryker disable next-line EqualityOperator
    for (let y = 0; y < outHeight; y++) {
      acc.fill(RESAMPLE_ONE / 2);
      for (let k = 0; k < t.count[y]!; k++) {
        // whole source rows at a time (row-major reads)
        const f = t.weights[y * t.stride + k]!;
        const from = (t.first[y]! + k) * row;
        // Stryker disable next-line EqualityOperator
        for (let i = 0; i < row; i++) acc[i]! += src[from + i]! * f;
      }
      // Stryker disable next-line EqualityOperator
      for (let i = 0; i < row; i++) out[y * row + i] = toByte(acc[i]!);
    }
    src = out;
  }
  return src === rgb ? Uint8Array.from(rgb) : src;
}

// ---- normalise and patchify -----------------------------------------------------------------------------------

/** uint8 HWC RGB → float32 CHW with ×1/255 and CLIP mean/std (transformers rescale + normalize). */
export function normalize(rgb: Uint8Array, width: number, height: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) out[c * plane + i] = ((rgb[i * 3 + c] as number) / 255 - (CLIP_MEAN[c] as number)) / (CLIP_STD[c] as number);
  }
  return out;
}

/**
 * CHW image → patch rows, exactly transformers' view/permute (§2.1 step 6):
 *   (tp, c, gh/m, m, p, gw/m, m, p) → (gh/m, gw/m, m(row), m(col), c, tp, p, p) → [gh·gw, c·tp·p·p]
 * The still image is repeated over the tp frames.
 */
export function patchify(chw: Float32Array, width: number, height: number, g: PatchGeometry): { pixelValues: Float32Array; grid: Grid } {
  const { patchSize: p, temporalPatchSize: tp, mergeSize: m } = g;
  const gh = height / p;
  const gw = width / p;
  if (!Number.isInteger(gh / m) || !Number.isInteger(gw / m)) throw new Error(`patchify: ${width}×${height} is not a multiple of ${p * m}`);
  const cols = 3 * tp * p * p;
  const out = new Float32Array(gh * gw * cols);
  const plane = width * height;
  let row = 0;
  for (let bh = 0; bh < gh / m; bh++) {
    for (let bw = 0; bw < gw / m; bw++) {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < m; j++) {
          const y0 = (bh * m + i) * p;
          const x0 = (bw * m + j) * p;
          let o = row * cols;
          for (let c = 0; c < 3; c++) {
            for (let f = 0; f < tp; f++) {
              for (let py = 0; py < p; py++) {
                const src = c * plane + (y0 + py) * width + x0;
                for (let px = 0; px < p; px++) out[o++] = chw[src + px] as number;
              }
            }
          }
          row++;
        }
      }
    }
  }
  return { pixelValues: out, grid: { t: 1, h: gh, w: gw } };
}

/** The whole §2.1 path: bytes as uploaded → patch rows and grid_thw. Throws UserError('bad_image') on bad input. */
export async function preprocessImage(bytes: Uint8Array, limits: ImageLimits, g: PatchGeometry): Promise<PreprocessedImage> {
  const header = await readHeader(bytes, limits);
  const size = smartResize(header.height, header.width, g.patchSize * g.mergeSize, limits);
  const rgb = await decodeResized(bytes, header, size.width, size.height, limits);
  return { ...patchify(normalize(rgb, size.width, size.height), size.width, size.height, g), width: size.width, height: size.height };
}

/**
 * Image → image input (spec §3.7): squash-resize to side×side (aspect ratio not kept, as PIL's resize((448, 448))),
 * then the same normalisation and patch order. 448 px gives grid (1, 32, 32) → 256 merged tokens.
 */
export async function preprocessSquare(bytes: Uint8Array, side: number, limits: ImageLimits, g: PatchGeometry): Promise<PreprocessedImage> {
  if (side % (g.patchSize * g.mergeSize) !== 0) throw new Error(`preprocessSquare: ${side} is not a multiple of ${g.patchSize * g.mergeSize}`);
  const header = await readHeader(bytes, limits);
  const rgb = await decodeResized(bytes, header, side, side, limits);
  return { ...patchify(normalize(rgb, side, side), side, side, g), width: side, height: side };
}

// ---- patch order inside the vision tower ---------------------------------------------------------------------

export interface WindowOrder {
  /** Merged-token permutation: windowIndex[k] = the raster merged token placed at window-order slot k. */
  windowIndex: Int32Array;
  /** Its inverse (argsort), applied after the merger to restore raster order. */
  reverseIndex: Int32Array;
  /** Patch-level cumulative window lengths [0, …, N] (transformers cu_window_seqlens after unique_consecutive). */
  cuWindowSeqlens: number[];
}

/**
 * transformers get_window_index for one image: the merged grid (gh/m × gw/m) is padded up to a multiple of the
 * window side (window_size / m / p merged tokens, 4 for Qwen2.5-VL), windows are enumerated row-major and, inside each,
 * merged tokens row-major; padded slots are dropped, so edge windows are smaller.
 */
export function windowOrder(grid: Grid, g: PatchGeometry, windowSize: number): WindowOrder {
  const mh = grid.h / g.mergeSize;
  const mw = grid.w / g.mergeSize;
  const side = Math.floor(windowSize / g.mergeSize / g.patchSize);
  const unit = g.mergeSize * g.mergeSize;
  const index: number[] = [];
  const cu = [0];
  for (let t = 0; t < grid.t; t++) {
    for (let wy = 0; wy < Math.ceil(mh / side); wy++) {
      for (let wx = 0; wx < Math.ceil(mw / side); wx++) {
        let count = 0;
        for (let y = wy * side; y < Math.min(mh, (wy + 1) * side); y++) {
          for (let x = wx * side; x < Math.min(mw, (wx + 1) * side); x++, count++) index.push(t * mh * mw + y * mw + x);
        }
        cu.push((cu[cu.length - 1] as number) + count * unit);
      }
    }
  }
  const windowIndex = Int32Array.from(index);
  const reverseIndex = new Int32Array(windowIndex.length);
  windowIndex.forEach((src, k) => (reverseIndex[src] = k));
  return { windowIndex, reverseIndex, cuWindowSeqlens: cu };
}

/** Patch-level permutation: each merged token moves as its `unit` consecutive patches. */
export function patchPermutation(windowIndex: Int32Array, unit: number): Int32Array {
  const out = new Int32Array(windowIndex.length * unit);
  windowIndex.forEach((src, k) => {
    for (let u = 0; u < unit; u++) out[k * unit + u] = src * unit + u;
  });
  return out;
}

/**
 * transformers rot_pos_emb: (row, col) of each patch in merge-block order (the row order of `patchify`).
 * Returns [N, 2] int positions (row, col).
 */
export function patchPositions(grid: Grid, g: PatchGeometry): Int32Array {
  const m = g.mergeSize;
  const out = new Int32Array(grid.t * grid.h * grid.w * 2);
  let k = 0;
  for (let t = 0; t < grid.t; t++) {
    for (let bh = 0; bh < grid.h / m; bh++) {
      for (let bw = 0; bw < grid.w / m; bw++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < m; j++) {
            out[k++] = bh * m + i;
            out[k++] = bw * m + j;
          }
        }
      }
    }
  }
  return out;
}

/**
 * Qwen2_5_VisionRotaryEmbedding(headDim/2): inv_freq_j = θ^(−2j/(headDim/2)), angles concat(row·inv, col·inv) duplicated
 * to headDim as [a, a] (rotate_half layout). Computed in float32 like torch. Returns cos and sin, [N, headDim] each, in the
 * order of `positions` (pass window-ordered positions to get the table the blocks use).
 */
export function visionRotaryTable(positions: Int32Array, headDim: number, theta = 10000): { cos: Float32Array; sin: Float32Array } {
  const quarter = headDim / 4;
  const invFreq = new Float32Array(quarter);
  for (let j = 0; j < quarter; j++) invFreq[j] = 1 / Math.fround(theta ** Math.fround((2 * j) / (headDim / 2)));
  const n = positions.length / 2;
  const cos = new Float32Array(n * headDim);
  const sin = new Float32Array(n * headDim);
  for (let i = 0; i < n; i++) {
    for (let axis = 0; axis < 2; axis++) {
      const pos = positions[i * 2 + axis] as number;
      for (let j = 0; j < quarter; j++) {
        const angle = Math.fround(pos * (invFreq[j] as number));
        const d = axis * quarter + j;
        for (const half of [0, headDim / 2]) {
          cos[i * headDim + half + d] = Math.cos(angle);
          sin[i * headDim + half + d] = Math.sin(angle);
        }
      }
    }
  }
  return { cos, sin };
}

/** A typed array with its dims: what the vision graph takes for each input. */
export interface Feed<T> {
  data: T;
  dims: number[];
}
export interface VisionFeeds {
  pixel_values: Feed<Float32Array>;
  window_index: Feed<BigInt64Array>;
  cos: Feed<Float32Array>;
  sin: Feed<Float32Array>;
  window_slots: Feed<BigInt64Array>;
  window_key_mask: Feed<Float32Array>;
  window_unpad: Feed<BigInt64Array>;
  reverse_index: Feed<BigInt64Array>;
}

/**
 * The inputs of worker/builder/architectures/qwen2_5_vl_vision.ts for one preprocessed image: the patch rows, the
 * patch-level window permutation, the rotary table in window order, the padded-window layout the windowed blocks
 * use (each window padded to S = (window_size/patch_size)² slots; padding slots repeat row 0 and are masked as keys)
 * and the inverse merged-token permutation.
 */
export function visionFeeds(image: PreprocessedImage, g: PatchGeometry, windowSize: number, headDim: number): VisionFeeds {
  const unit = g.mergeSize * g.mergeSize;
  const n = image.grid.t * image.grid.h * image.grid.w;
  const order = windowOrder(image.grid, g, windowSize);
  const perm = patchPermutation(order.windowIndex, unit);
  const S = (Math.floor(windowSize / g.mergeSize / g.patchSize) * g.mergeSize) ** 2;
  const W = order.cuWindowSeqlens.length - 1;
  const slots = new BigInt64Array(W * S); // padding slots point at row 0
  const keyMask = new Float32Array(W * S).fill(-Infinity);
  const unpad = new BigInt64Array(n);
  for (let w = 0; w < W; w++) {
    const start = order.cuWindowSeqlens[w] as number;
    const end = order.cuWindowSeqlens[w + 1] as number;
    for (let r = start; r < end; r++) {
      slots[w * S + (r - start)] = BigInt(r);
      keyMask[w * S + (r - start)] = 0;
      unpad[r] = BigInt(w * S + (r - start));
    }
  }
  const positions = patchPositions(image.grid, g);
  const permuted = new Int32Array(n * 2);
  perm.forEach((src, k) => {
    permuted[2 * k] = positions[2 * src] as number;
    permuted[2 * k + 1] = positions[2 * src + 1] as number;
  });
  const { cos, sin } = visionRotaryTable(permuted, headDim);
  const i64 = (a: Int32Array) => BigInt64Array.from(a, (v) => BigInt(v));
  return {
    pixel_values: { data: image.pixelValues, dims: [n, image.pixelValues.length / n] },
    window_index: { data: i64(perm), dims: [n] },
    cos: { data: cos, dims: [n, headDim] },
    sin: { data: sin, dims: [n, headDim] },
    window_slots: { data: slots, dims: [W * S] },
    window_key_mask: { data: keyMask, dims: [W, S] },
    window_unpad: { data: unpad, dims: [n] },
    reverse_index: { data: i64(order.reverseIndex), dims: [order.reverseIndex.length] },
  };
}
