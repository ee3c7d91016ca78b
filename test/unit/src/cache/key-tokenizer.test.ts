// The result cache folds two prompts together only where the model's tokenizer does (src/cache/key.ts normaliseText):
// Qwen2's tokenizer.json normalises with NFC, so an NFC fold is the same token ids and so the same result; what NFKC
// would fold on top (full-width letters, ligatures, superscripts, circled digits) is other ids, and a result the model
// would not have given the request as typed. Whitespace runs are the one fold past the tokenizer's, kept on purpose.
import { describe, expect, it } from 'vitest';
import { requestDigest } from '../../../../src/cache/key.ts';
import type { ImagineRequest } from '../../../../src/jobs/contract.ts';
import { useTinyTokenizer } from '../../../doubles/tiny-tokenizer.ts';

const tokenizer = useTinyTokenizer('key-tok-');
const imagine = (prompt: string): ImagineRequest => ({
  v: 1, id: 'j1', destination: { platform: 'cli', clientId: 'c', channelId: 'local', userId: 'u' }, submittedAt: 0, kind: 'imagine', prompt,
  options: { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' },
});

describe('the cache key folds what the tokenizer folds, and nothing it tells apart', () => {
  it.each([
    ['e and a combining acute', 'cafe\u0301', 'caf\u00e9'],
    ['the Angstrom sign', '\u212b', '\u00c5'],
  ])('%s: the same ids, one cache entry', (_what, typed, composed) => {
    expect(tokenizer().encodeText(typed)).toEqual(tokenizer().encodeText(composed));
    expect(requestDigest(imagine(typed))).toBe(requestDigest(imagine(composed)));
  });

  it.each([
    ['full-width letters', 'ｒｅｄ ｆｏｘ', 'red fox'],
    ['an ideographic space too', 'ｒｅｄ\u3000ｆｏｘ', 'red fox'],
    ['a ligature', 'ﬁre', 'fire'],
    ['a superscript', 'x²', 'x2'],
    ['a circled digit', '①', '1'],
    ['half-width katakana', 'ｶ', 'カ'],
  ])('%s (NFKC would fold it): other ids, other cache entries', (_what, typed, folded) => {
    expect(typed.normalize('NFKC')).toBe(folded);
    expect(tokenizer().encodeText(typed)).not.toEqual(tokenizer().encodeText(folded));
    expect(requestDigest(imagine(typed))).not.toBe(requestDigest(imagine(folded)));
  });
});
