// The worker's own configured limits (worker/limits.ts): a job that a bot with a looser config (or anyone who can
// write to Redis) queued is refused before any model runs, with a sentence the chat user can read. Each bound is
// tested at the limit (accepted) and one past it (refused with its exact text).
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/load.ts';
import { isUserError } from '../../../src/errors.ts';
import { CONTRACT_VERSION, type AskRequest, type ImagineRequest, type VaryRequest } from '../../../src/jobs/contract.ts';
import { enforceConfiguredLimits, enforceImageBytes } from '../../../worker/limits.ts';

const config = loadConfig({
  env: {},
  overrides: {
    generation: { maxPromptChars: 20, maxDitSteps: 30, defaultDecoderSteps: 40, maxDecoderSteps: 40, maxGuidance: 9, maxImagesPerRequest: 2, maxNegativeChars: 10 },
    understanding: { maxQuestionChars: 15, maxHistoryTurns: 2, maxNewTokens: 64, maxInputImageBytes: 3 * 2 ** 20 },
  },
});
const destination = { platform: 'cli', clientId: 'test', channelId: 'c', userId: 'u' } as const;
const common = { v: CONTRACT_VERSION, id: 'j1', destination, submittedAt: 1 };
const options = { seed: 1, ditSteps: 30, decoderSteps: 40, guidance: 9, aspect: '1:1' as const };

const imagine = (o: Partial<ImagineRequest['options']> = {}, prompt = 'x'.repeat(20)): ImagineRequest => ({ ...common, kind: 'imagine', prompt, options: { ...options, ...o } });
const vary = (o: Partial<VaryRequest['options']> = {}, prompt = ''): VaryRequest => ({ ...common, kind: 'vary', imageKey: 'blip3o:blob:k', prompt, options: { ...options, ...o } });
const ask = (over: Partial<AskRequest> = {}): AskRequest => ({
  ...common, kind: 'ask', imageKey: 'blip3o:blob:k', question: 'q'.repeat(15), history: [{ role: 'user', text: 'h'.repeat(15) }, { role: 'assistant', text: 'a' }],
  options: { maxNewTokens: 64, temperature: 0.7, topP: 0.9, topK: 0, repetitionPenalty: 1, seed: 1 }, ...over,
});

/** The refusal's text, or undefined when the request passes; anything but a bad_request UserError fails the test. */
function refusal(check: () => void): string | undefined {
  try {
    check();
    return undefined;
  } catch (e) {
    if (!isUserError(e) || e.code !== 'bad_request') throw e;
    return e.message;
  }
}
const SUFFIX = ' This worker does not run requests past its configured limits.';

describe('enforceConfiguredLimits', () => {
  it('accepts an /imagine, a vary and an /ask exactly at every limit', () => {
    expect(refusal(() => enforceConfiguredLimits(config, imagine({ count: 2, negative: 'n'.repeat(10) })))).toBeUndefined();
    expect(refusal(() => enforceConfiguredLimits(config, vary({ count: 2 })))).toBeUndefined();
    expect(refusal(() => enforceConfiguredLimits(config, ask()))).toBeUndefined();
  });

  it.each([
    ['the prompt', imagine({}, 'x'.repeat(21)), 'Your prompt is 21 characters; the limit is 20.'],
    ['the steps', imagine({ ditSteps: 31 }), 'steps is 31; the limit is 30.'],
    ['the decoder steps', imagine({ decoderSteps: 41 }), 'decoder steps is 41; the limit is 40.'],
    ['the guidance', imagine({ guidance: 9.5 }), 'guidance is 9.5; the limit is 9.'],
    // GPU time a worker's owner caps: each image is a full generation, each negative text one more LLM + DiT pass
    ['the number of images', imagine({ count: 3 }), '3 images were asked for; the limit is 2.'],
    ['the negative prompt', imagine({ negative: 'n'.repeat(11) }), 'Your negative prompt is 11 characters; the limit is 10.'],
    ['a vary\'s images', vary({ count: 3 }), '3 images were asked for; the limit is 2.'],
    ['a vary\'s steps', vary({ ditSteps: 31 }), 'steps is 31; the limit is 30.'],
  ])('refuses an image request past %s', (_what, request, text) => {
    expect(refusal(() => enforceConfiguredLimits(config, request))).toBe(text + SUFFIX);
  });

  it.each([
    ['the question', ask({ question: 'q'.repeat(16) }), 'Your question is 16 characters; the limit is 15.'],
    ['the turns', ask({ history: [{ role: 'user', text: 'a' }, { role: 'assistant', text: 'b' }, { role: 'user', text: 'c' }] }), 'The conversation carries 3 earlier turns; the limit is 2.'],
    ['an earlier turn', ask({ history: [{ role: 'user', text: 'a' }, { role: 'assistant', text: 'b'.repeat(16) }] }), 'An earlier turn is 16 characters; the limit is 15.'],
    ['the answer length', ask({ options: { ...ask().options, maxNewTokens: 65 } }), 'An answer of up to 65 tokens was asked for; the limit is 64.'],
  ])('refuses an /ask past %s', (_what, request, text) => {
    expect(refusal(() => enforceConfiguredLimits(config, request))).toBe(text + SUFFIX);
  });

  it('checks an /ask by its own limits only (its options have no steps or images)', () => {
    const long = { ...config, generation: { ...config.generation, maxPromptChars: 1 } };
    expect(refusal(() => enforceConfiguredLimits(long, ask()))).toBeUndefined();
  });
});

describe('enforceImageBytes', () => {
  const bytes = (n: number) => new Uint8Array(n);
  it('accepts an image of exactly the limit and refuses one byte more, in MiB', () => {
    expect(() => enforceImageBytes(config, bytes(3 * 2 ** 20))).not.toThrow();
    expect(() => enforceImageBytes(config, bytes(3 * 2 ** 20 + 1))).toThrow(expect.objectContaining({ code: 'bad_image', message: 'That image is 3 MiB; the limit is 3 MiB.' }));
    expect(() => enforceImageBytes(config, bytes(3.5 * 2 ** 20))).toThrow('That image is 3.5 MiB; the limit is 3 MiB.');
  });
  it('says KiB under a MiB', () => {
    const small = { ...config, understanding: { ...config.understanding, maxInputImageBytes: 300 * 1024 } };
    expect(() => enforceImageBytes(small, bytes(512 * 1024))).toThrow('That image is 512 KiB; the limit is 300 KiB.');
    expect(() => enforceImageBytes(small, bytes(2 ** 20))).toThrow('That image is 1 MiB; the limit is 300 KiB.');
  });
});
