// M-RoPE position ids (spec §2.4) for a fixed prompt with a 448×448 image, derived by hand.
import { describe, expect, it } from 'vitest';
import { decodePositions, ropeIndex, textPositions } from '../../../../worker/pipeline/mrope.ts';

const IMAGE = 151655;
const tokens = { imageTokenId: IMAGE, mergeSize: 2 };

// `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>` (15 ids, read
// from the Qwen2 tokenizer.json: "You" 2610, " are" 525, " a" 264, " helpful" 10950, " assistant" 17847, "." 13)
const before = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652];
// `<|vision_end|>What is in the image?<|im_end|>\n<|im_start|>assistant\n` (12 ids)
const after = [151653, 3838, 374, 304, 279, 2168, 30, 151645, 198, 151644, 77091, 198];

describe('ropeIndex', () => {
  // Derivation. 448×448 → smart_resize keeps 448 → patch grid (t, h, w) = (1, 32, 32) → merged 16×16 = 256 placeholders.
  //   text  0..14: ids 0..14 in all three rows (t = h = w = index).
  //   image 15..270: s = 15 (the index right after the text); token k = 16·row + col has t = 15, h = 15 + row, w = 15 + col,
  //         so h and w run 15..30 and the largest id used is 30.
  //   text after the image (<|vision_end|> at index 271) resumes at max + 1 = 31, NOT at 15 + 256 = 271;
  //         the last prompt token (index 282) gets 31 + 11 = 42.
  //   ropeDelta = (max id + 1) − length = 43 − 283 = −240 (= 16 − 256: the image spans 16 ids but 256 positions).
  //   The first decoded token sits at cache position 283 and gets 283 − 240 = 43 in all three rows.
  const ids = [...before, ...Array<number>(256).fill(IMAGE), ...after];
  const { positionIds, ropeDelta } = ropeIndex(ids, [{ t: 1, h: 32, w: 32 }], tokens);
  const L = ids.length;
  const row = (r: number) => Array.from(positionIds.slice(r * L, (r + 1) * L), Number);
  const [t, h, w] = [row(0), row(1), row(2)];

  it('has the hand-derived length and delta', () => {
    expect(L).toBe(283);
    expect(ropeDelta).toBe(-240);
  });

  it('numbers the leading text 0..14 in all three rows', () => {
    for (const r of [t, h, w]) expect(r.slice(0, 15)).toEqual(Array.from({ length: 15 }, (_, i) => i));
  });

  it('gives image tokens t = 15, h = 15 + row, w = 15 + col', () => {
    expect(t.slice(15, 271)).toEqual(Array<number>(256).fill(15));
    for (let k = 0; k < 256; k++) {
      expect(h[15 + k]).toBe(15 + Math.floor(k / 16));
      expect(w[15 + k]).toBe(15 + (k % 16));
    }
    expect([h[15], w[15], h[30], w[30], h[31], w[31], h[270], w[270]]).toEqual([15, 15, 15, 30, 16, 15, 30, 30]);
  });

  it('resumes text after the image at max + 1 = 31', () => {
    for (const r of [t, h, w]) expect(r.slice(271)).toEqual(Array.from({ length: 12 }, (_, i) => 31 + i));
  });

  it('decodes at cache position + delta', () => {
    expect(Array.from(decodePositions(283, 2, ropeDelta), Number)).toEqual([43, 44, 43, 44, 43, 44]);
  });
});

describe('ropeIndex edge cases', () => {
  it('a non-square merged grid uses max(rows, cols) for the jump (6×5 merged)', () => {
    const ids = [1, 2, ...Array<number>(30).fill(IMAGE), 3];
    const { positionIds, ropeDelta } = ropeIndex(ids, [{ t: 1, h: 12, w: 10 }], tokens);
    const L = ids.length;
    expect(Number(positionIds[L + 2 + 29])).toBe(2 + 5); // last image token: row 5
    expect(Number(positionIds[2 * L + 2 + 29])).toBe(2 + 4); // col 4
    expect(Number(positionIds[L - 1])).toBe(2 + 6); // text resumes at 2 + max(6, 5)
    expect(ropeDelta).toBe(9 - 33);
  });

  it('pure text reduces to 1-D positions with delta 0', () => {
    const r = ropeIndex([5, 6, 7], [], tokens);
    expect(r.positionIds).toEqual(textPositions(3));
    expect(r.ropeDelta).toBe(0);
  });

  it('refuses a prompt with too few placeholders', () => {
    expect(() => ropeIndex([1, IMAGE, IMAGE], [{ t: 1, h: 4, w: 4 }], tokens)).toThrow(/fewer image placeholders/);
  });

  it('accepts placeholders that end the prompt (no text after the image)', () => {
    const r = ropeIndex([1, IMAGE, IMAGE, IMAGE, IMAGE], [{ t: 1, h: 4, w: 4 }], tokens);
    expect(Array.from(r.positionIds, Number)).toEqual([0, 1, 1, 1, 1, 0, 1, 1, 2, 2, 0, 1, 2, 1, 2]);
    expect(r.ropeDelta).toBe(3 - 5);
  });

  it('refuses an image grid when the prompt has no placeholder at all', () => {
    expect(() => ropeIndex([1, 2, 3], [{ t: 1, h: 2, w: 2 }], tokens)).toThrow(/fewer image placeholders/);
  });
});
