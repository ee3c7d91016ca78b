// The content address of a result (src/cache/key.ts): what counts as "the same request" and what does not.
import { describe, expect, it } from 'vitest';
import { entryId, normaliseText, requestDigest } from '../../../../src/cache/key.ts';
import type { AskRequest, ImagineRequest } from '../../../../src/jobs/contract.ts';

const destination = { platform: 'cli', clientId: 'c', channelId: 'local', userId: 'u' } as const;
const imagine = (prompt: string, options: Partial<ImagineRequest['options']> = {}): ImagineRequest => ({
  v: 1, id: 'j1', destination, submittedAt: 0, kind: 'imagine', prompt,
  options: { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1', ...options },
});
const ask = (options: Partial<AskRequest['options']> = {}, question = 'what is this?'): AskRequest => ({
  v: 1, id: 'j2', destination, submittedAt: 0, kind: 'ask', imageKey: 'k', question, history: [],
  options: { maxNewTokens: 512, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1.05, seed: 1, ...options },
});

describe('requestDigest', () => {
  it('normalises the prompt (NFC, trimmed, whitespace runs) but keeps case', () => {
    expect(normaliseText('  a  red\n\tfox ')).toBe('a red fox');
    expect(normaliseText('cafe\u0301')).toBe('caf\u00e9');
    expect(requestDigest(imagine(' a  red fox'))).toBe(requestDigest(imagine('a red fox')));
    expect(requestDigest(imagine('A red fox'))).not.toBe(requestDigest(imagine('a red fox')));
  });

  it('every option is part of the address, the seed included; key order is not', () => {
    const base = requestDigest(imagine('fox'));
    for (const change of [{ seed: 8 }, { ditSteps: 31 }, { decoderSteps: 49 }, { guidance: 3.5 }, { aspect: '16:9' as const }])
      expect(requestDigest(imagine('fox', change)), JSON.stringify(change)).not.toBe(base);
    const r = imagine('fox');
    const reordered = { ...r, options: { aspect: '1:1' as const, guidance: 3, decoderSteps: 50, ditSteps: 30, seed: 7 } };
    expect(requestDigest(reordered)).toBe(base);
  });

  it('the input image is part of the address; without its hash an image request has none', () => {
    expect(requestDigest(ask(), 'aa')).not.toBe(requestDigest(ask(), 'bb'));
    expect(requestDigest(ask())).toBeUndefined();
  });

  it('greedy /ask ignores seed, topP and topK; sampled /ask is never cached', () => {
    expect(requestDigest(ask({ seed: 2, topK: 5, topP: 0.5 }), 'aa')).toBe(requestDigest(ask(), 'aa'));
    expect(requestDigest(ask({ maxNewTokens: 10 }), 'aa')).not.toBe(requestDigest(ask(), 'aa'));
    expect(requestDigest(ask({ temperature: 0.7 }), 'aa')).toBeUndefined();
  });

  it("an /ask's earlier turns are part of its address, normalised like the question", () => {
    const withHistory = (history: AskRequest['history']) => requestDigest({ ...ask(), history }, 'aa');
    const one = withHistory([{ role: 'user', text: 'what is it?' }, { role: 'assistant', text: 'a fox' }]);
    expect(one).not.toBe(requestDigest(ask(), 'aa'));
    expect(withHistory([{ role: 'user', text: 'what is it?' }, { role: 'assistant', text: 'a cat' }])).not.toBe(one);
    expect(withHistory([{ role: 'assistant', text: 'what is it?' }, { role: 'user', text: 'a fox' }])).not.toBe(one);
    expect(withHistory([{ role: 'user', text: ' what  is it?' }, { role: 'assistant', text: 'a fox\n' }])).toBe(one);
    expect(requestDigest(ask({}, 'what is that?'), 'aa')).not.toBe(requestDigest(ask(), 'aa'));
    expect(requestDigest(ask({ repetitionPenalty: 1.2 }), 'aa')).not.toBe(requestDigest(ask(), 'aa'));
  });

  it('/vary is addressed by its input image, prompt and options, never the same as an /imagine; without the image hash it has none', () => {
    const vary = (prompt: string, sha?: string) => requestDigest({ ...imagine(prompt), kind: 'vary', imageKey: 'k' }, sha);
    expect(vary('fox')).toBeUndefined();
    expect(vary('fox', 'aa')).toMatch(/^[0-9a-f]{64}$/);
    expect(vary('fox', 'aa')).not.toBe(vary('fox', 'bb'));
    expect(vary('fox', 'aa')).not.toBe(vary('wolf', 'aa'));
    expect(vary(' fox ', 'aa')).toBe(vary('fox', 'aa'));
    expect(vary('fox', 'aa')).not.toBe(requestDigest(imagine('fox'), 'aa'));
    // The image hash is where the prompt would be: ['vary', sha, prompt, …] must not equal ['vary', prompt, sha, …].
    expect(vary('bb', 'aa')).not.toBe(vary('aa', 'bb'));
  });

  it('several images per request are not cached (an entry holds one PNG); one image is', () => {
    expect(requestDigest(imagine('fox', { count: 2 }))).toBeUndefined();
    expect(requestDigest({ ...imagine('fox', { count: 4 }), kind: 'vary', imageKey: 'k' }, 'aa')).toBeUndefined();
    expect(requestDigest(imagine('fox', { count: 1 }))).toMatch(/^[0-9a-f]{64}$/);
  });

  it('the model is part of the entry id, not of the digest', () => {
    const d = requestDigest(imagine('fox'))!;
    expect(entryId('model-a', d)).not.toBe(entryId('model-b', d));
    expect(entryId('model-a', d)).toMatch(/^[0-9a-f]{40}$/);
  });
});
