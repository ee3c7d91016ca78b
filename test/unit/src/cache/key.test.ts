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

  it('the model is part of the entry id, not of the digest', () => {
    const d = requestDigest(imagine('fox'))!;
    expect(entryId('model-a', d)).not.toBe(entryId('model-b', d));
    expect(entryId('model-a', d)).toMatch(/^[0-9a-f]{40}$/);
  });
});
