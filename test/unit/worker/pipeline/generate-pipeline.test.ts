// The real createPipeline end to end on the tiny checkpoint: make-tiny → convert → prompt through the real tokenizer and
// Qwen decoder (latent queries, post-norm hidden states) → DiT → UNet → VAE → PNG.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARCHITECTURES } from '../../../../worker/builder/architectures/index.ts';
import { diffusionTransformerComponent } from '../../../../worker/builder/architectures/diffusion_transformer.ts';
import { sdxlUNetComponent } from '../../../../worker/builder/architectures/sdxl_unet.ts';
import { vaeDecoderComponent } from '../../../../worker/builder/architectures/vae_decoder.ts';
import { convertSnapshot } from '../../../../worker/builder/convert.ts';
import { makeTiny } from '../../../../worker/builder/tiny/index.ts';
import { readManifest } from '../../../../worker/builder/manifest.ts';
import { createPipeline } from '../../../../worker/pipeline/blip3o.ts';
import { generationPrompt, IMG_TOKEN } from '../../../../worker/pipeline/generate.ts';
import { loadTokenizer } from '../../../../worker/pipeline/tokenizer.ts';
import { openTextModel } from '../../../../worker/pipeline/understand.ts';
import type { Pipeline, ProgressReport } from '../../../../worker/pipeline/types.ts';
import { ThreadHost } from '../../../../worker/thread-host.ts';
import { JobTimeLimit } from '../../../../worker/job-time-limit.ts';
import { createLogger } from '../../../../src/log.ts';

let dir: string;
let pipeline: Pipeline;
const options = { seed: 11, ditSteps: 12, decoderSteps: 12, guidance: 3, aspect: '1:1' as const };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'blip3o-gen-'));
  makeTiny(join(dir, 'snapshot'));
  // the generation components, whether or not the shared table lists them yet
  const base = ARCHITECTURES.blip3oQwenForCausalLM!;
  const mine = [diffusionTransformerComponent, sdxlUNetComponent, vaeDecoderComponent];
  const components = [...base.components.filter((c) => !mine.some((m) => m.name === c.name)), ...mine];
  await convertSnapshot(join(dir, 'snapshot'), join(dir, 'onnx'), { dtype: 'fp32', architectures: { blip3oQwenForCausalLM: { ...base, components } } });
  pipeline = await createPipeline({
    modelDir: join(dir, 'onnx'),
    dtype: 'fp32',
    executionProvider: 'cpu',
    intraOpThreads: 0,
    understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
  });
}, 180_000);
afterAll(async () => {
  await pipeline?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('createPipeline().generate on the tiny checkpoint', () => {
  it('conditions on the same hidden states a full prefill computes (hidden-only pass skips logits and KV outputs)', async () => {
    const onnx = join(dir, 'onnx');
    const manifest = readManifest(onnx)!;
    const text = await openTextModel(onnx, manifest, loadTokenizer(join(dir, 'snapshot')), { executionProvider: 'cpu' });
    try {
      const ids = text.tokenizer.encodePrompt(generationPrompt('a red fox')).concat(IMG_TOKEN);
      const seq = await text.embed(ids);
      const full = (await text.decoder.prefill(seq)).hidden;
      const only = await text.decoder.hiddenStates(seq);
      expect(only.length).toBe(full.length);
      let err = 0;
      for (let i = 0; i < full.length; i++) err = Math.max(err, Math.abs(full[i]! - only[i]!));
      expect(err).toBeLessThan(1e-5);
    } finally {
      await text.close();
    }
  });

  it('produces the same PNG bytes for the same prompt and seed, another image for another prompt', async () => {
    const seen: ProgressReport[] = [];
    const signal = new AbortController().signal;
    const a = await pipeline.generate({ prompt: 'a red fox in snow', options }, { signal, onProgress: (p) => seen.push(p) });
    expect([a.width, a.height]).toEqual([128, 128]);
    expect([...new Set(seen.map((p) => p.stage))]).toEqual(['conditioning', 'features', 'decoding']);
    const b = await pipeline.generate({ prompt: 'a red fox in snow', options }, { signal, onProgress: () => {} });
    expect(Buffer.from(b.png).equals(Buffer.from(a.png))).toBe(true);
    const c = await pipeline.generate({ prompt: 'a blue whale', options }, { signal, onProgress: () => {} });
    const [pa, pc] = await Promise.all([sharp(a.png).raw().toBuffer(), sharp(c.png).raw().toBuffer()]);
    expect(pa.equals(pc)).toBe(false);
    const meta = await sharp(a.png).metadata();
    expect(meta.comments?.find((x) => x.keyword === 'prompt')?.text).toBe('a red fox in snow');
  });

  it('varies an image (vision tower → reconstruction prompt) and refuses a broken one with a user-facing error', async () => {
    const signal = new AbortController().signal;
    const photo = await sharp({ create: { width: 300, height: 200, channels: 3, background: { r: 200, g: 40, b: 40 } } }).png().toBuffer();
    const v = await pipeline.generate({ prompt: '', options, image: new Uint8Array(photo) }, { signal, onProgress: () => {} });
    expect([v.width, v.height]).toEqual([128, 128]);
    const settings = (await sharp(v.png).metadata()).comments?.find((x) => x.keyword === 'settings')?.text;
    expect(JSON.parse(settings!)).toMatchObject({ mode: 'vary' });
    const plain = await pipeline.generate({ prompt: '', options }, { signal, onProgress: () => {} });
    expect(Buffer.from(v.png).equals(Buffer.from(plain.png))).toBe(false);
    await expect(pipeline.generate({ prompt: '', options, image: new Uint8Array([1, 2, 3, 4]) }, { signal, onProgress: () => {} })).rejects.toMatchObject({
      name: 'UserError',
      code: 'bad_image',
    });
  });

  it('with worker.maxBatch.diffusion 3, three concurrent requests (one a variation) give the bytes each gives alone', async () => {
    const batched = await createPipeline({
      modelDir: join(dir, 'onnx'),
      dtype: 'fp32',
      executionProvider: 'cpu',
      intraOpThreads: 0,
      understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
      maxBatch: { decode: 1, diffusion: 3 },
    });
    try {
      const ctx = () => ({ signal: new AbortController().signal, onProgress: () => {} });
      const photo = new Uint8Array(await sharp({ create: { width: 120, height: 90, channels: 3, background: { r: 20, g: 90, b: 200 } } }).png().toBuffer());
      const reqs = [
        { prompt: 'a red fox in snow', options },
        { prompt: 'a blue whale', options: { ...options, seed: 12, guidance: 5 } },
        { prompt: '', options: { ...options, seed: 13 }, image: photo },
      ];
      const want: Uint8Array[] = [];
      for (const r of reqs) want.push((await pipeline.generate(r, ctx())).png);
      const got = await Promise.all(reqs.map(async (r) => (await batched.generate(r, ctx())).png));
      got.forEach((png, i) => expect(Buffer.from(png).equals(Buffer.from(want[i]!))).toBe(true));
    } finally {
      await batched.close();
    }
  }, 120_000);

  it('through a model thread (ThreadHost, maxBatch.diffusion 3): imagines joined at different moments keep their solo bytes, a cancelled one alone fails', async () => {
    const maxBatch = { decode: 1, diffusion: 3 };
    const host = await ThreadHost.start({
      size: 1,
      maxBatch,
      pipelineModule: resolve(import.meta.dirname, '../../../../worker/pipeline/blip3o.ts'),
      pipelineOptions: {
        modelDir: join(dir, 'onnx'),
        dtype: 'fp32',
        executionProvider: 'cpu',
        intraOpThreads: 0,
        understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
        maxBatch,
      },
      abortGraceMs: 10_000,
      log: createLogger('test', 'silent'),
    });
    try {
      const reqs = [
        { prompt: 'a red fox in snow', options },
        { prompt: 'a blue whale', options: { ...options, seed: 21, guidance: 4 } },
        { prompt: 'a green tree', options: { ...options, seed: 22, negative: 'fog' } },
        { prompt: 'a lighthouse', options: { ...options, seed: 23 } },
      ];
      const want: Uint8Array[] = [];
      for (const r of reqs.slice(0, 3)) want.push((await pipeline.generate(r, { signal: new AbortController().signal, onProgress: () => {} })).png);
      const runs: Promise<Uint8Array>[] = [];
      const cancel = new AbortController();
      const go = (i: number, onProgress: (p: ProgressReport) => void = () => {}, signal = new AbortController().signal) => {
        runs[i] = host.generate(reqs[i]!, { signal, timeLimit: new JobTimeLimit(120_000), onProgress }).then((r) => r.png);
        runs[i].catch(() => {}); // settled below; not an unhandled rejection meanwhile
      };
      // B joins at A's 4th feature step, C at A's 2nd decoding step; D starts with B and is cancelled at its 3rd feature step
      go(0, (p) => {
        if (p.stage === 'features' && p.step === 3 && !runs[1]) {
          go(1);
          go(3, (q) => void (q.stage === 'features' && q.step === 2 && cancel.abort()), cancel.signal);
        }
        if (p.stage === 'decoding' && p.step === 1 && !runs[2]) go(2);
      });
      const first = await runs[0]!;
      const settled = await Promise.allSettled([runs[1]!, runs[2]!, runs[3]!]);
      const got = [first, ...settled.slice(0, 2).map((r) => (r.status === 'fulfilled' ? r.value : new Uint8Array()))];
      got.forEach((png, i) => expect(Buffer.from(png).equals(Buffer.from(want[i]!))).toBe(true));
      expect(settled[2]!.status).toBe('rejected');
      expect((settled[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'cancelled' });
    } finally {
      await host.close();
    }
  }, 180_000);
});
