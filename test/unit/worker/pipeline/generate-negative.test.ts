// Negative prompts (`--no`): the user's text replaces " " as the decoder's negative condition, goes through the same
// LLM → DiT path, and is computed once per distinct text. The UNet session is wrapped to record the negative half
// of every `encoder_hidden_states` batch ([cond, neg], spec §3.5), so the test sees what the decoder really got.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImagineOptions } from '../../../../src/jobs/contract.ts';
import { Generator, NEGATIVE_TEXT, negativeTextOf, openGenerationModels, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import type { ProgressReport, RunContext } from '../../../../worker/pipeline/types.ts';
import { buildTinyGenerationGraphs, fakeConditioner } from './generate-harness.ts';

const options: ImagineOptions = { seed: 11, ditSteps: 3, decoderSteps: 2, guidance: 3, aspect: '1:1' };
let graphs: ReturnType<typeof buildTinyGenerationGraphs>;
let models: GenerationModels;
/** The negative half of the UNet's encoder_hidden_states, one entry per UNet call. */
const negSeen: Float32Array[] = [];

const ctx = (onProgress: (p: ProgressReport) => void = () => {}): RunContext => ({ signal: new AbortController().signal, onProgress });

beforeAll(async () => {
  graphs = buildTinyGenerationGraphs();
  models = await openGenerationModels(graphs, { executionProvider: 'cpu' });
  const run = models.unet.run.bind(models.unet);
  models.unet.run = async (inputs, outputs) => {
    // a host array, or (since conditioning is uploaded once per decode) a DeviceTensor wrapping a CPU ort.Tensor
    const given = inputs.encoder_hidden_states as { data?: Float32Array; tensor?: { data: Float32Array } };
    const enc = given.data ?? given.tensor!.data;
    negSeen.push(enc.slice(enc.length / 2));
    return run(inputs, outputs);
  };
});
afterAll(async () => {
  await Promise.all([models?.dit.release(), models?.unet.release(), models?.vae.release()]);
  rmSync(graphs.dir, { recursive: true, force: true });
});

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => v === b[i]);

describe('negative prompts', () => {
  it('negativeTextOf: blank or absent → " ", else the trimmed text', () => {
    expect(negativeTextOf({})).toBe(NEGATIVE_TEXT);
    expect(negativeTextOf({ negative: '   ' })).toBe(NEGATIVE_TEXT);
    expect(negativeTextOf({ negative: ' blurry ' })).toBe('blurry');
  });

  it('--no changes the decoder negative (the " " features are not used), and one text is computed once for every job', async () => {
    const llm = fakeConditioner();
    const gen = new Generator(models, llm, { negativeDitSteps: 4, negativeGuidance: 3, software: 'test' });
    const countCalls = (text: string) => llm.calls.filter((c) => c.join() === llm.encodePrompt([{ text, trusted: false }]).join()).length; // user text

    negSeen.length = 0;
    const seen: ProgressReport[] = [];
    const withNo = await gen.generate({ prompt: 'a red fox', options: { ...options, negative: 'blurry, text' } }, ctx((p) => seen.push(p)));
    const negA = negSeen.slice();
    expect(negA).toHaveLength(options.decoderSteps);
    expect(countCalls('blurry, text')).toBe(1); // the user's negative went through the LLM, raw (no template)
    expect(countCalls(NEGATIVE_TEXT)).toBe(0); // the " " features were never computed nor used for this job
    expect(seen.filter((p) => p.stage === 'features').at(-1)).toEqual({ stage: 'features', step: 7, total: 7 }); // 4 negative + 3

    // A second job with the same negative (another seed, another prompt): no second LLM/DiT computation of it.
    negSeen.length = 0;
    const again: ProgressReport[] = [];
    await gen.generate({ prompt: 'a blue bird', options: { ...options, seed: 12, negative: 'blurry, text' } }, ctx((p) => again.push(p)));
    expect(countCalls('blurry, text')).toBe(1);
    expect(again.filter((p) => p.stage === 'features').at(-1)).toEqual({ stage: 'features', step: 3, total: 3 });
    expect(same(negSeen[0]!, negA[0]!)).toBe(true); // the very same features

    // The same prompt and seed without --no: the " " negative, different features, a different image.
    negSeen.length = 0;
    const plain = await gen.generate({ prompt: 'a red fox', options }, ctx());
    expect(countCalls(NEGATIVE_TEXT)).toBe(1);
    expect(same(negSeen[0]!, negA[0]!)).toBe(false);
    expect(Buffer.from(plain.png).equals(Buffer.from(withNo.png))).toBe(false);
    expect(gen.cachedNegatives).toBe(2);

    // Reproducible: a fresh pipeline (nothing cached) gives the same bytes for the same prompt, seed and negative.
    const fresh = new Generator(models, fakeConditioner(), { negativeDitSteps: 4, negativeGuidance: 3, software: 'test' });
    const again2 = await fresh.generate({ prompt: 'a red fox', options: { ...options, negative: 'blurry, text' } }, ctx());
    expect(Buffer.from(again2.png).equals(Buffer.from(withNo.png))).toBe(true);
  }, 120_000);

  it('keeps at most negativeCacheSize user texts (least recently used dropped), never dropping " "', async () => {
    const llm = fakeConditioner();
    const gen = new Generator(models, llm, { negativeDitSteps: 1, negativeGuidance: 3, software: 'test', negativeCacheSize: 2 });
    const tiny = { ...options, ditSteps: 1, decoderSteps: 1 };
    for (const negative of [undefined, 'a', 'b', 'a', 'c']) await gen.generate({ prompt: 'x', options: { ...tiny, negative } }, ctx());
    expect(gen.cachedNegatives).toBe(3); // " ", 'a' (used again), 'c'; 'b' dropped
    const before = llm.calls.length;
    await gen.generate({ prompt: 'x', options: { ...tiny, negative: 'a' } }, ctx());
    await gen.generate({ prompt: 'x', options: tiny }, ctx());
    expect(llm.calls.length - before).toBe(2); // only the two prompts: 'a' and " " were still cached
    await gen.generate({ prompt: 'x', options: { ...tiny, negative: 'b' } }, ctx());
    expect(llm.calls.length - before).toBe(4); // 'b' had to be computed again
  }, 120_000);
});
