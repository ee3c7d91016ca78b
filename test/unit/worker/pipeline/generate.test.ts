// End to end through the generation half on tiny graphs (LLM replaced by a deterministic double; the real LLM path
// is covered by the pipeline test): reproducibility, seeds, aspect sizes, progress, cancellation, the negative cache.
import { rmSync } from 'node:fs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImagineOptions } from '../../../../src/jobs/contract.ts';
import { generationPrompt, loadGeneration, NEGATIVE_TEXT, type Generator } from '../../../../worker/pipeline/generate.ts';
import type { ProgressReport, RunContext } from '../../../../worker/pipeline/types.ts';
import { buildTinyGenerationGraphs, fakeConditioner } from './generate-harness.ts';

const options: ImagineOptions = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' };
let graphs: ReturnType<typeof buildTinyGenerationGraphs>;
let gen: Generator;
const llm = fakeConditioner();

const ctx = (onProgress: (p: ProgressReport) => void = () => {}, signal = new AbortController().signal): RunContext => ({ signal, onProgress });

beforeAll(async () => {
  graphs = buildTinyGenerationGraphs();
  gen = await loadGeneration(graphs, { executionProvider: 'cpu' }, llm, { negativeDitSteps: 30, negativeGuidance: 3, software: 'test' });
});
afterAll(async () => {
  await gen?.close();
  rmSync(graphs.dir, { recursive: true, force: true });
});

describe('generate (tiny checkpoint)', () => {
  it('reports conditioning → features → decoding, and computes the " " negative once', async () => {
    const seen: ProgressReport[] = [];
    const first = await gen.generate({ prompt: 'a red fox', options }, ctx((p) => seen.push(p)));
    expect(first.width).toBe(128);
    expect(first.height).toBe(128);
    const stages = [...new Set(seen.map((p) => p.stage))];
    expect(stages).toEqual(['conditioning', 'features', 'decoding']);
    const features = seen.filter((p) => p.stage === 'features');
    expect(features.at(-1)).toEqual({ stage: 'features', step: 60, total: 60 }); // 30 negative + 30 prompt steps
    expect(seen.filter((p) => p.stage === 'decoding').at(-1)).toEqual({ stage: 'decoding', step: 51, total: 51 });
    const negIds = llm.encodePrompt([{ text: NEGATIVE_TEXT, trusted: false }]); // the negative is encoded as user text
    expect(llm.calls.filter((c) => c.join() === negIds.join())).toHaveLength(1);
    expect(llm.calls.some((c) => c.join() === llm.encodePrompt(generationPrompt('a red fox')).join())).toBe(true);

    const again: ProgressReport[] = [];
    const second = await gen.generate({ prompt: 'a red fox', options }, ctx((p) => again.push(p)));
    expect(llm.calls.filter((c) => c.join() === negIds.join())).toHaveLength(1); // cached
    expect(again.filter((p) => p.stage === 'features').at(-1)).toEqual({ stage: 'features', step: 30, total: 30 });
    // same prompt and seed → byte-identical PNG, although the first run computed the negative and the second did not
    expect(Buffer.from(second.png).equals(Buffer.from(first.png))).toBe(true);

    const meta = await sharp(first.png).metadata();
    const text = Object.fromEntries((meta.comments ?? []).map((c) => [c.keyword, c.text]));
    expect(text.prompt).toBe('a red fox');
    expect(text.seed).toBe('7');
    expect(JSON.parse(text.settings!)).toMatchObject({ ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' });
  });

  it('gives a different image for a different seed', async () => {
    const a = await gen.generate({ prompt: 'a red fox', options }, ctx());
    const b = await gen.generate({ prompt: 'a red fox', options: { ...options, seed: 8 } }, ctx());
    const pa = await sharp(a.png).raw().toBuffer();
    const pb = await sharp(b.png).raw().toBuffer();
    let diff = 0;
    for (let i = 0; i < pa.length; i++) diff += Math.abs(pa[i]! - pb[i]!);
    expect(diff / pa.length).toBeGreaterThan(1); // mean absolute pixel difference
  });

  it('gives the bucket size for the requested aspect', async () => {
    const wide = await gen.generate({ prompt: 'a red fox', options: { ...options, aspect: '16:9', decoderSteps: 2, ditSteps: 2 } }, ctx());
    expect([wide.width, wide.height]).toEqual([160, 96]);
    const tall = await gen.generate({ prompt: 'a red fox', options: { ...options, aspect: '2:3', decoderSteps: 2, ditSteps: 2 } }, ctx());
    expect([tall.width, tall.height]).toEqual([96, 160]);
    const meta = await sharp(wide.png).metadata();
    expect([meta.width, meta.height]).toEqual([160, 96]);
  });

  it('stops within one step of a cancel, in the DiT and in the UNet loop', async () => {
    for (const stage of ['features', 'decoding'] as const) {
      const ac = new AbortController();
      const seen: ProgressReport[] = [];
      const run = gen.generate(
        { prompt: 'a cancelled fox', options },
        ctx((p) => {
          seen.push(p);
          if (p.stage === stage && p.step === 3) ac.abort();
        }, ac.signal),
      );
      await expect(run).rejects.toMatchObject({ code: 'cancelled' });
      const last = seen.at(-1)!;
      expect([last.stage, last.step]).toEqual([stage, 3]); // step 3 ran; step 4 never started
    }
  });

  it('refuses out-of-range options with a user-facing error', async () => {
    await expect(gen.generate({ prompt: 'x', options: { ...options, ditSteps: 0 } }, ctx())).rejects.toMatchObject({ code: 'bad_request', name: 'UserError' });
  });
});
