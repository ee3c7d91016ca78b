// Logit agreement between a graph variant (int4, fp16) and the fp32 original over P positions of V logits each:
// shared by `npm run bench -- llm --quant …` and test/models/quant-fidelity.test.ts.
import type { ModelSession } from '../worker/runtime/session.ts';

export interface Fidelity {
  positions: number;
  maxAbs: number;
  /** Cosine similarity of each position's logit vector: the mean and the worst. */
  meanCosine: number;
  minCosine: number;
  /** Share of positions whose argmax is the same. */
  top1: number;
}

export function compareLogits(ref: Float32Array, got: Float32Array, V: number): Fidelity {
  if (ref.length !== got.length || ref.length % V) throw new Error(`compareLogits: ${ref.length} vs ${got.length} values, V ${V}`);
  const P = ref.length / V;
  let maxAbs = 0;
  let cosSum = 0;
  let minCos = 1;
  let agree = 0;
  for (let p = 0; p < P; p++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    let ia = 0;
    let ib = 0;
    for (let v = 0; v < V; v++) {
      const a = ref[p * V + v]!;
      const b = got[p * V + v]!;
      maxAbs = Math.max(maxAbs, Math.abs(a - b));
      dot += a * b;
      na += a * a;
      nb += b * b;
      if (a > ref[p * V + ia]!) ia = v;
      if (b > got[p * V + ib]!) ib = v;
    }
    const cos = dot / Math.sqrt(na * nb);
    cosSum += cos;
    minCos = Math.min(minCos, cos);
    if (ia === ib) agree++;
  }
  return { positions: P, maxAbs, meanCosine: cosSum / P, minCosine: minCos, top1: agree / P };
}

export const describeFidelity = (f: Fidelity) =>
  `max abs ${f.maxAbs.toExponential(2)}, cosine mean ${f.meanCosine.toFixed(6)} (min ${f.minCosine.toFixed(6)}), top-1 agreement ${(100 * f.top1).toFixed(1)} % of ${f.positions} positions`;

/** Logits at every position of one causal prefill over `embeds` (S × H), 1-D positions, empty cache. */
export async function prefillLogits(session: ModelSession, embeds: Float32Array, dims: { hiddenSize: number; numLayers: number; numKvHeads: number; headDim: number }): Promise<Float32Array> {
  const S = embeds.length / dims.hiddenSize;
  const feeds: Parameters<ModelSession['run']>[0] = {
    inputs_embeds: { data: embeds, dims: [1, S, dims.hiddenSize] },
    attention_mask: { data: new BigInt64Array(S).fill(1n), dims: [1, S] },
    position_ids: { data: BigInt64Array.from({ length: 3 * S }, (_, i) => BigInt(i % S)), dims: [3, 1, S] },
  };
  for (let i = 0; i < dims.numLayers; i++)
    for (const kv of ['key', 'value']) feeds[`past_key_values.${i}.${kv}`] = { data: new Float32Array(0), dims: [1, dims.numKvHeads, 0, dims.headDim] };
  return (await session.run(feeds, ['logits'])).logits!.data as Float32Array;
}
