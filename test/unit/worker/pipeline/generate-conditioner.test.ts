// The conditioning sequence (spec §3.1–3.2, pitfalls 1–2): embed(prompt ids ++ [IMG]) ++ the raw latent queries (never
// looked up in embed_tokens), one causal pass (KvDecoder.hiddenStates: 1-D positions, hidden states only), and the hidden states of the LAST n_query rows.
import { describe, expect, it } from 'vitest';
import { TextConditioner } from '../../../../worker/pipeline/blip3o.ts';
import { IMAGE_PAD, IMG_TOKEN } from '../../../../worker/pipeline/generate.ts';
import type { KvDecoder } from '../../../../worker/pipeline/sampling.ts';
import type { QwenTokenizer } from '../../../../worker/pipeline/tokenizer.ts';
import type { TextModel } from '../../../../worker/pipeline/understand.ts';

const H = 2;
function fakeText(): TextModel & { prefills: { seq: Float32Array; positions: unknown }[]; embedded: number[][] } {
  const prefills: { seq: Float32Array; positions: unknown }[] = [];
  const embedded: number[][] = [];
  return {
    prefills,
    embedded,
    hiddenSize: H,
    tokenizer: { encode: (t: string) => [...t].map((c) => c.charCodeAt(0)) } as unknown as QwenTokenizer,
    async embed(ids) {
      embedded.push([...ids]);
      return Float32Array.from(ids.flatMap((id) => [id, -id]));
    },
    // a decoder whose "hidden state" at each position is 10 × its input row, so the test can see which rows come back
    decoder: {
      async hiddenStates(seq: Float32Array) {
        prefills.push({ seq, positions: undefined });
        return seq.map((v) => 10 * v);
      },
    } as unknown as KvDecoder,
    batch: undefined,
    exclusive: (fn) => fn(),
    async close() {},
  };
}

describe('TextConditioner', () => {
  it('appends [IMG] and the raw queries, prefills once with 1-D positions, returns the last n_query rows', async () => {
    const text = fakeText();
    const queries = Float32Array.from([0.5, 0.25, 0.125, 0.0625, 7, 8]); // n_query 3, H 2
    const c = new TextConditioner(text, queries, 3);
    const out = await c.latentHiddenStates([5, 6]);
    expect(text.embedded).toEqual([[5, 6, IMG_TOKEN]]);
    expect([...text.prefills[0]!.seq]).toEqual([5, -5, 6, -6, IMG_TOKEN, -IMG_TOKEN, ...queries]);
    expect([...out]).toEqual([...queries].map((v) => 10 * v));
  });

  it('scatters vision tokens into the <|image_pad|> rows in order', async () => {
    const text = fakeText();
    const c = new TextConditioner(text, new Float32Array(2), 1);
    await c.latentHiddenStates([1, IMAGE_PAD, IMAGE_PAD, 2], Float32Array.from([100, 101, 200, 201]));
    expect([...text.prefills[0]!.seq]).toEqual([1, -1, 100, 101, 200, 201, 2, -2, IMG_TOKEN, -IMG_TOKEN, 0, 0]);
  });
});
