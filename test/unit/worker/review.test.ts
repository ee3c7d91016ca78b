// worker/review.ts: draw, check what was drawn, re-roll on a poor match with the next seeds, withhold what the
// channel's moderation questions flag. The host is scripted here (each try's match score and answers), so every
// decision of the loop is pinned: which image is delivered, how many tries, which seeds, what was asked.
import { describe, expect, it } from 'vitest';
import type { CheckPolicy } from '../../../src/checks/policy.ts';
import { isUserError } from '../../../src/errors.ts';
import type { ImagineOptions } from '../../../src/jobs/contract.ts';
import type { CheckRequest, CheckResult, GenerateRequest } from '../../../worker/pipeline/types.ts';
import { generateReviewed, inputWithheld, moderateInput, rerollSeed, withheldError, type ReviewHost } from '../../../worker/review.ts';
import type { RunOptions } from '../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../worker/job-time-limit.ts';

const options: ImagineOptions = { seed: 4_294_967_294, ditSteps: 2, decoderSteps: 2, guidance: 3, aspect: '1:1' };

/** One scripted check per try: its match score and its answers (P(yes) per question id). */
type Script = { match?: number; answers?: Record<string, number> }[];

function scriptedHost(script: Script) {
  const generated: GenerateRequest[] = [];
  const checked: CheckRequest[] = [];
  const host: ReviewHost = {
    async generate(req) {
      generated.push(req);
      return { png: Uint8Array.of(generated.length), width: 8, height: 8 };
    },
    async check(req) {
      checked.push(req);
      const s = script[checked.length - 1] ?? {};
      const result: CheckResult = { answers: s.answers ?? {}, counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 1, captionTokens: 0 }, ...(s.match === undefined ? {} : { match: s.match }) };
      return result;
    },
  };
  return { host, generated, checked };
}

function runRecorder() {
  const progress: unknown[] = [];
  const run: RunOptions = { signal: new AbortController().signal, timeLimit: new JobTimeLimit(1000), onProgress: (p) => void progress.push(p) };
  return { run, progress };
}

function policy(p: { altText?: boolean; match?: boolean; threshold?: number; maxRerolls?: number; moderation?: boolean; checkInputs?: boolean; questions?: CheckPolicy['moderation']['questions'] } = {}): CheckPolicy {
  return {
    altText: p.altText ?? false,
    captionMaxTokens: 24,
    match: { enabled: p.match ?? false, threshold: p.threshold ?? 0.5, maxRerolls: p.maxRerolls ?? 2 },
    moderation: { enabled: p.moderation ?? false, checkInputs: p.checkInputs ?? true, questions: p.questions ?? [{ id: 'gore', question: 'Is it gory?', threshold: 0.6 }] },
  };
}

const tryNumber = (png: Uint8Array) => png[0];

describe('generateReviewed', () => {
  it('draws once and checks nothing when no check is on', async () => {
    const { host, generated, checked } = scriptedHost([]);
    const { run, progress } = runRecorder();
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ questions: [] }), run);
    expect([generated.length, checked.length, r.tries, r.scores]).toEqual([1, 0, 1, [undefined]]);
    expect(r.best.check).toBeUndefined();
    expect(r.best.options).toBe(options);
    expect(progress).toEqual([]);
  });

  it('asks for a caption only when alt text is on, with its token budget', async () => {
    const { host, checked } = scriptedHost([{}]);
    const r = await generateReviewed(host, { prompt: ' a fox ', options }, policy({ altText: true }), runRecorder().run);
    expect(checked).toEqual([{ image: Uint8Array.of(1), prompt: 'a fox', match: false, questions: [], captionMaxTokens: 24 }]);
    expect(r.best.check).toBeDefined();
  });

  it('stops at the first image that matches at the threshold', async () => {
    const { host, generated } = scriptedHost([{ match: 0.5 }]);
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ match: true }), runRecorder().run);
    expect([generated.length, r.tries, r.scores]).toEqual([1, 1, [0.5]]);
  });

  it('re-rolls a poor match with the next seeds (wrapping at 2³²) and reports each re-roll', async () => {
    const { host, generated, checked } = scriptedHost([{ match: 0.1 }, { match: 0.3 }, { match: 0.2 }]);
    const { run, progress } = runRecorder();
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ match: true, maxRerolls: 2 }), run);
    expect(generated.map((g) => g.options.seed)).toEqual([4_294_967_294, 4_294_967_295, 0]);
    expect(generated.map((g) => g.prompt)).toEqual(['a fox', 'a fox', 'a fox']);
    expect(checked.every((c) => c.match && c.prompt === 'a fox' && c.captionMaxTokens === undefined)).toBe(true);
    expect(progress).toEqual([{ stage: 'retrying', step: 1, total: 2 }, { stage: 'retrying', step: 2, total: 2 }]);
    // the best of the three is delivered, with the seed that reproduces it
    expect([tryNumber(r.best.image.png), r.best.options.seed, r.tries, r.scores]).toEqual([2, 4_294_967_295, 3, [0.1, 0.3, 0.2]]);
  });

  it('keeps the earlier image when a later one only ties it', async () => {
    const { host } = scriptedHost([{ match: 0.3 }, { match: 0.3 }]);
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ match: true, maxRerolls: 1 }), runRecorder().run);
    expect(tryNumber(r.best.image.png)).toBe(1);
  });

  it('does not score a blank prompt (a vary) and so never re-rolls it', async () => {
    const { host, generated, checked } = scriptedHost([{ match: 0 }]);
    const r = await generateReviewed(host, { prompt: '  ', options }, policy({ match: true, altText: true }), runRecorder().run);
    expect([generated.length, r.tries]).toEqual([1, 1]);
    expect(checked[0]).toMatchObject({ match: false, prompt: '' });
  });

  it('withholds an image its moderation questions flag, naming the questions', async () => {
    const questions = [{ id: 'gore', question: 'Is it gory?', threshold: 0.6 }, { id: 'weapons', question: 'Weapons?', threshold: 0.5 }];
    const { host, generated, checked } = scriptedHost([{ match: 0.9, answers: { gore: 0.61, weapons: 0.9 } }]);
    const err = await generateReviewed(host, { prompt: 'a fox', options }, policy({ match: true, moderation: true, questions }), runRecorder().run).catch((e: unknown) => e);
    expect(isUserError(err) && err.code).toBe('withheld');
    expect((err as Error).message).toBe('I made an image but did not post it: this channel\'s content checks flagged it (gore, weapons). Try a different prompt.');
    expect(checked[0]!.questions).toEqual([{ id: 'gore', question: 'Is it gory?' }, { id: 'weapons', question: 'Weapons?' }]);
    expect(generated).toHaveLength(1); // a flag is not re-rolled away
  });

  it('moderation alone (no match, no alt text) still checks the image and withholds what it flags', async () => {
    const { host, checked } = scriptedHost([{ answers: { gore: 0.9 } }]);
    await expect(generateReviewed(host, { prompt: 'a fox', options }, policy({ moderation: true }), runRecorder().run)).rejects.toMatchObject({ code: 'withheld' });
    expect(checked[0]).toEqual({ image: Uint8Array.of(1), prompt: 'a fox', match: false, questions: [{ id: 'gore', question: 'Is it gory?' }] });
  });

  it('an answer exactly at a threshold is not flagged', async () => {
    const { host } = scriptedHost([{ answers: { gore: 0.6 } }]);
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ moderation: true }), runRecorder().run);
    expect(r.tries).toBe(1);
  });

  it('a flag after a re-roll stops there and delivers the best earlier image', async () => {
    const { host, generated } = scriptedHost([{ match: 0.2, answers: {} }, { match: 0.9, answers: { gore: 0.99 } }, { match: 0.9 }]);
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ match: true, moderation: true, maxRerolls: 2 }), runRecorder().run);
    expect([generated.length, r.tries, tryNumber(r.best.image.png), r.scores]).toEqual([2, 2, 1, [0.2, 0.9]]);
  });

  it('moderation off asks no questions however many are configured', async () => {
    const { host, checked } = scriptedHost([{ match: 0.9, answers: { gore: 1 } }]);
    const r = await generateReviewed(host, { prompt: 'a fox', options }, policy({ match: true, moderation: false }), runRecorder().run);
    expect(checked[0]!.questions).toEqual([]);
    expect(r.tries).toBe(1);
  });
});

describe('moderateInput', () => {
  const questions = [{ id: 'gore', question: 'Is it gory?', threshold: 0.6 }];
  it('asks the moderation questions of a user\'s image and returns the flagged ids', async () => {
    const { host, checked } = scriptedHost([{ answers: { gore: 0.7 } }]);
    expect(await moderateInput(host, Uint8Array.of(9), policy({ moderation: true, questions }), runRecorder().run)).toEqual(['gore']);
    expect(checked).toEqual([{ image: Uint8Array.of(9), match: false, questions: [{ id: 'gore', question: 'Is it gory?' }] }]);
  });
  it.each([
    ['moderation is off', policy({ moderation: false, questions })],
    ['inputs are not checked', policy({ moderation: true, checkInputs: false, questions })],
    ['there are no questions', policy({ moderation: true, questions: [] })],
  ])('asks nothing when %s', async (_what, p) => {
    const { host, checked } = scriptedHost([{ answers: { gore: 1 } }]);
    expect(await moderateInput(host, Uint8Array.of(9), p, runRecorder().run)).toEqual([]);
    expect(checked).toEqual([]);
  });
});

describe('withheldError and rerollSeed', () => {
  it('tells a user whose own image was flagged that it cannot be used here', () => {
    const e = withheldError(['gore'], true);
    expect([e.code, e.message, e.context]).toEqual(['input_withheld', "I can't work with that image here: this channel's content checks flagged it (gore).", { flagged: ['gore'] }]);
  });
  it("tells a flagged input from a flagged output by the error's code, whatever its words say", () => {
    // What reaches afterHandOver is the code and the text the worker handed over; the text may be reworded at any time.
    const reworded = (input: boolean) => ({ code: withheldError(['gore'], input).code, message: 'Reworded: this image was flagged here.' });
    expect([inputWithheld(reworded(true)), inputWithheld(reworded(false))]).toEqual([true, false]);
    const outputInInputsWords = { code: withheldError(['gore'], false).code, message: withheldError(['gore'], true).message };
    expect(inputWithheld(outputInInputsWords)).toBe(false);
    expect(inputWithheld(undefined)).toBe(false);
  });
  it('gives re-roll k the seed k after the first, modulo 2³²', () => {
    expect([rerollSeed(5, 1), rerollSeed(5, 3), rerollSeed(2 ** 32 - 1, 1)]).toEqual([6, 8, 0]);
  });
});
