// M-RoPE position ids for the understanding prompt (spec §2.4, pitfall 18): transformers
// Qwen2_5_VLForConditionalGeneration.get_rope_index for images (second_per_grid_t = 0), batch 1, no padding.
// Generation (§3.2) does NOT use this: it runs 1-D positions, see `textPositions`.
//
//   text  tokens: t = h = w = running index
//   image tokens: t = s, h = s + row, w = s + col over the merged grid (s = index right after the preceding text)
//   text after an image resumes at max(previous ids) + 1
//   decoding:     token at cache position p gets p + ropeDelta in all three rows,
//                 ropeDelta = (max prefill id + 1) − prefill length
import type { Grid } from './image.ts';

export interface RopeIndex {
  /** (3, 1, L) int64 laid out row-major: L t-ids, then L h-ids, then L w-ids. */
  positionIds: BigInt64Array;
  /** Added to the cache position of every decoded token. */
  ropeDelta: number;
}

export interface RopeTokens {
  /** `image_token_id` (<|image_pad|>, 151655). */
  imageTokenId: number;
  /** `vision_config.spatial_merge_size`. */
  mergeSize: number;
}

/**
 * Position ids for `inputIds`, where image k's placeholders are (grid.t·grid.h·grid.w)/merge² consecutive
 * `imageTokenId`s, in the order of `grids` (patch grids, as the preprocessor returns them).
 */
export function ropeIndex(inputIds: ArrayLike<number>, grids: Grid[], tokens: RopeTokens): RopeIndex {
  const n = inputIds.length;
  const t = new Array<number>(n);
  const h = new Array<number>(n);
  const w = new Array<number>(n);
  let next = 0; // the id the next text token gets (max so far + 1)
  let i = 0;
  const text = (end: number) => {
    for (; i < end; i++) t[i] = h[i] = w[i] = next++;
  };
  for (const grid of grids) {
    let start = i;
    while (start < n && inputIds[start] !== tokens.imageTokenId) start++;
    const mh = grid.h / tokens.mergeSize;
    const mw = grid.w / tokens.mergeSize;
    const count = grid.t * mh * mw;
    if (start + count > n) throw new Error(`ropeIndex: the prompt has fewer image placeholders than ${grids.length} image(s) of ${count} tokens need`);
    text(start);
    const s = next;
    for (let f = 0; f < grid.t; f++) {
      for (let r = 0; r < mh; r++) {
        for (let c = 0; c < mw; c++, i++) {
          t[i] = s; // still images: temporal id stays s (second_per_grid_t = 0)
          h[i] = s + r;
          w[i] = s + c;
        }
      }
    }
    next = s + Math.max(mh, mw); // max(t, h, w ids) + 1
  }
  text(n);
  const positionIds = new BigInt64Array(3 * n);
  for (let k = 0; k < n; k++) {
    positionIds[k] = BigInt(t[k] as number);
    positionIds[n + k] = BigInt(h[k] as number);
    positionIds[2 * n + k] = BigInt(w[k] as number);
  }
  return { positionIds, ropeDelta: next - n };
}

/** Position ids for `count` tokens starting at cache position `start`: (p + ropeDelta) in all three rows. */
export function decodePositions(start: number, count: number, ropeDelta: number): BigInt64Array {
  const out = new BigInt64Array(3 * count);
  for (let r = 0; r < 3; r++) for (let k = 0; k < count; k++) out[r * count + k] = BigInt(start + k + ropeDelta);
  return out;
}

/** 1-D positions 0..L−1 in all three rows: what generation (§3.2, pitfall 2) and pure-text prompts use. */
export function textPositions(length: number): BigInt64Array {
  return decodePositions(0, length, 0);
}
