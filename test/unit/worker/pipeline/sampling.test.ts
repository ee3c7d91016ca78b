import { describe, expect, it } from 'vitest';
import { isUserError } from '../../../../src/errors.ts';
import { applyRepetitionPenalty, generateTokens, GREEDY, sampleToken, seededRandom } from '../../../../worker/pipeline/sampling.ts';

const logits = (...v: number[]) => Float32Array.from(v);

describe('sampleToken', () => {
  it('greedy picks the argmax; top_k 1 is greedy whatever the temperature', () => {
    expect(sampleToken(logits(0, 3, 1), [], GREEDY, Math.random)).toBe(1);
    expect(sampleToken(logits(0, 3, 1), [], { ...GREEDY, temperature: 5, topK: 1 }, Math.random)).toBe(1);
  });

  it('applies the transformers repetition penalty: divide positive, multiply negative, once per token', () => {
    const l = logits(2, -2, 1);
    applyRepetitionPenalty(l, [0, 1, 1], 2);
    expect([...l]).toEqual([1, -4, 1]);
    expect(sampleToken(logits(2, 1.5, 0), [0], { ...GREEDY, repetitionPenalty: 2 }, Math.random)).toBe(1);
  });

  it('top-k and top-p restrict the candidates; temperature sampling follows the softmax', () => {
    const rnd = seededRandom(1);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[sampleToken(logits(2, 1, 0, -1), [], { temperature: 1, topP: 1, topK: 2, repetitionPenalty: 1 }, rnd)]!++;
    expect(counts[2]! + counts[3]!).toBe(0);
    expect(counts[0]! / 4000).toBeCloseTo(Math.E / (Math.E + 1), 1); // e²/(e²+e¹)
    // p = softmax(3, 2, 0) ≈ 0.705, 0.259, 0.035: top_p 0.9 keeps the first two
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sampleToken(logits(3, 2, 0), [], { temperature: 1, topP: 0.9, topK: 0, repetitionPenalty: 1 }, rnd));
    expect([...seen].sort()).toEqual([0, 1]);
  });
});

describe('generateTokens', () => {
  // a toy "model": the next logits favour (last token + 1) mod 5
  const toy = () => {
    const calls: number[] = [];
    const next = (t: number) => Float32Array.from({ length: 5 }, (_, i) => (i === (t + 1) % 5 ? 1 : 0));
    return { calls, prefill: async () => next(0), step: async (t: number) => (calls.push(t), next(t)) };
  };

  it('streams each token, stops on a stop id (not emitted) or at maxNewTokens', async () => {
    const m = toy();
    const streamed: number[] = [];
    const r = await generateTokens({ ...m, promptIds: [0], maxNewTokens: 10, stopIds: [4], sampling: GREEDY, onToken: (id) => streamed.push(id) });
    expect(r).toEqual({ tokens: [1, 2, 3], stopReason: 'stop' });
    expect(streamed).toEqual([1, 2, 3]);
    const r2 = await generateTokens({ ...toy(), promptIds: [0], maxNewTokens: 2, stopIds: [4], sampling: GREEDY });
    expect(r2).toEqual({ tokens: [1, 2], stopReason: 'length' });
  });

  it('is cancelled by the AbortSignal between tokens with a UserError', async () => {
    const m = toy();
    const ac = new AbortController();
    const p = generateTokens({ ...m, promptIds: [], maxNewTokens: 100, stopIds: [], sampling: GREEDY, signal: ac.signal, onToken: (_id, i) => i === 2 && ac.abort() });
    await expect(p).rejects.toSatisfy((e: unknown) => isUserError(e) && (e as { code: string }).code === 'cancelled');
    expect(m.calls.length).toBe(2); // no model step after the abort
  });
});
