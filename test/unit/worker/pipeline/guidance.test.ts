// Classifier-free guidance and the two sampling loops of generation, against fake models that return known values:
// the DiT's batch is [uncond (zeros), cond] and the guided velocity is v_u + g·(v_c − v_u); the UNet's batch is
// [cond, neg] and the guided noise is ε_neg + g·(ε_cond − ε_neg) (spec §3.4, §4, pitfall 8). Swapping either order,
// or the batch halves, changes the numbers these tests check.
import { describe, expect, it } from 'vitest';
import type { ImagineOptions } from '../../../../src/jobs/contract.ts';
import { geometryFor } from '../../../../worker/pipeline/aspect.ts';
import { Generator, type Conditioner, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import { GaussianRng, RngStream } from '../../../../worker/pipeline/rng.ts';
import { eulerDiscreteSchedule, eulerInputScale, eulerStep, flowMatchSchedule } from '../../../../worker/pipeline/schedulers.ts';
import type { ModelSession } from '../../../../worker/runtime/session.ts';
import { blankVae, constantUnet, recordingSession, type Feeds } from '../../../doubles/recording-session.ts';

const H = 2; // LLM hidden size
const C = 3; // DiT latent channels = UNet cross-attention dim
const NQ = 4; // DiT tokens (2×2 grid)
const UNET = { sampleSize: 2, latentMultiple: 1, inChannels: 1, vaeScaleFactor: 1 }; // 1:1 → 2×2 latent, 2×2 image
const SCHED = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', timestep_spacing: 'leading', steps_offset: 1 } as const;

const session = recordingSession;

/** Velocity: batch 0 (uncond) all `u`, batch 1 (cond) all `c`. */
const dit = (u: number, c: number) =>
  session((f) => {
    const half = f.x!.data.length / 2;
    const v = new Float32Array(2 * half);
    v.fill(u, 0, half);
    v.fill(c, half);
    return { velocity: { data: v, dims: f.x!.dims } };
  });
const unet = constantUnet;
const vae = blankVae;

function conditioner(): Conditioner {
  return {
    hiddenSize: H,
    encode: (text) => [...text].map((ch) => ch.charCodeAt(0)),
    encodePrompt: (segments) => segments.flatMap((s) => [...s.text].map((ch) => ch.charCodeAt(0))),
    // the prompt's hidden states: 1, 2, 3, …; the " " negative's: all −1
    async latentHiddenStates(ids) {
      const negative = ids.length === 1 && ids[0] === 32;
      return Float32Array.from({ length: NQ * H }, (_, i) => (negative ? -1 : i + 1));
    },
  };
}

function generator(models: { dit: ModelSession; unet: ModelSession; vae: ModelSession }, negativeGuidance = 3): Generator {
  const m: GenerationModels = {
    ...models,
    ditGrid: 2,
    latentChannels: C,
    unetSampleSize: UNET.sampleSize,
    unetLatentMultiple: UNET.latentMultiple,
    unetInChannels: UNET.inChannels,
    vaeScaleFactor: UNET.vaeScaleFactor,
    scheduler: SCHED,
  };
  return new Generator(m, conditioner(), { negativeDitSteps: 2, negativeGuidance, software: 'test' });
}

/** What flow matching gives for a constant guided velocity. */
function flowExpected(seed: number, stream: number, steps: number, guided: number): Float32Array {
  const x = new GaussianRng(seed, stream).gaussian(NQ * C);
  const s = flowMatchSchedule(steps);
  for (let i = 0; i < steps; i++) {
    const dt = Math.fround(s.sigmas[i + 1]! - s.sigmas[i]!);
    for (let k = 0; k < x.length; k++) x[k] = Math.fround(x[k]! + dt * guided);
  }
  return x;
}

const ctx = () => ({ signal: new AbortController().signal, onProgress: () => undefined });

describe('DiT flow matching with CFG', () => {
  it('guides v_u + g·(v_c − v_u) over the batch [zeros, z]', async () => {
    const d = dit(1, 3);
    const g = generator({ dit: d, unet: unet(0, 0), vae: vae() });
    const z = Float32Array.from({ length: NQ * H }, (_, i) => i + 1);
    const steps: number[] = [];
    const out = await g.sampleFeatures(z, 3, 2, new GaussianRng(7, RngStream.ditNoise), () => steps.push(steps.length));
    expect(steps).toEqual([0, 1, 2]); // beforeStep runs once per step
    expect(Array.from(out)).toEqual(Array.from(flowExpected(7, RngStream.ditNoise, 3, 1 + 2 * (3 - 1)))); // guided = 5
    expect(d.feeds).toHaveLength(3);
    const first = d.feeds[0]!;
    expect(first.z!.dims).toEqual([2, NQ, H]);
    expect(Array.from(first.z!.data.subarray(0, NQ * H))).toEqual(new Array(NQ * H).fill(0)); // batch 0: the null condition
    expect(Array.from(first.z!.data.subarray(NQ * H))).toEqual(Array.from(z)); // batch 1: the prompt
    expect(first.x!.dims).toEqual([2, NQ, C]);
    expect(Array.from(first.x!.data.subarray(0, NQ * C))).toEqual(Array.from(first.x!.data.subarray(NQ * C))); // same x twice
    expect(Array.from(first.x!.data.subarray(0, NQ * C))).toEqual(Array.from(new GaussianRng(7, RngStream.ditNoise).gaussian(NQ * C)));
    const ts = flowMatchSchedule(3).timesteps;
    expect(d.feeds.map((f) => Array.from(f.timestep!.data))).toEqual(Array.from(ts).map((t) => [t, t]));
    expect(first.timestep!.dims).toEqual([2]);
    // guidance 0 is the unconditional velocity, 1 the conditional one
    expect(Array.from(await generator({ dit: dit(1, 3), unet: unet(0, 0), vae: vae() }).sampleFeatures(z, 1, 0, new GaussianRng(7, 1), () => {}))).toEqual(
      Array.from(flowExpected(7, 1, 1, 1)),
    );
    expect(Array.from(await generator({ dit: dit(1, 3), unet: unet(0, 0), vae: vae() }).sampleFeatures(z, 1, 1, new GaussianRng(7, 1), () => {}))).toEqual(
      Array.from(flowExpected(7, 1, 1, 3)),
    );
  });

  it('says so when the DiT graph has no velocity output', async () => {
    const g = generator({ dit: session(() => ({})), unet: unet(0, 0), vae: vae() });
    await expect(g.sampleFeatures(new Float32Array(NQ * H), 1, 1, new GaussianRng(1, 1), () => {})).rejects.toThrow(/no `velocity` output/);
  });
});

describe('UNet Euler loop with CFG', () => {
  const options: ImagineOptions = { seed: 11, ditSteps: 1, decoderSteps: 3, guidance: 2.5, aspect: '1:1' };

  it('guides ε_neg + g·(ε_cond − ε_neg) over the batch [cond, neg], from σ_init-scaled noise', async () => {
    const u = unet(4, 1);
    const v = vae();
    const g = generator({ dit: dit(0.5, 0.25), unet: u, vae: v });
    const decoding: number[] = [];
    await g.generate({ prompt: 'a fox', options }, { signal: new AbortController().signal, onProgress: (p) => void (p.stage === 'decoding' && decoding.push(p.step)) });

    const geo = geometryFor('1:1', UNET.sampleSize, UNET.vaeScaleFactor, UNET.latentMultiple);
    const n = UNET.inChannels * geo.latentHeight * geo.latentWidth;
    const schedule = eulerDiscreteSchedule(SCHED, options.decoderSteps);
    const x = new GaussianRng(options.seed, RngStream.unetLatent).gaussian(n).map((a) => a * schedule.initNoiseSigma);
    const inputs: number[][] = [];
    for (let i = 0; i < options.decoderSteps; i++) {
      inputs.push(Array.from(x, (a) => Math.fround(a * eulerInputScale(schedule, i))));
      eulerStep(x, new Float32Array(n).fill(1 + 2.5 * (4 - 1)), schedule, i); // guided = 8.5
    }
    expect(u.feeds).toHaveLength(3);
    u.feeds.forEach((f, i) => {
      expect(Array.from(f.sample!.data.subarray(0, n))).toEqual(inputs[i]);
      expect(Array.from(f.sample!.data.subarray(n))).toEqual(inputs[i]);
      expect(Array.from(f.timestep!.data)).toEqual([schedule.timesteps[i], schedule.timesteps[i]]);
    });
    expect(u.feeds[0]!.sample!.dims).toEqual([2, UNET.inChannels, geo.latentHeight, geo.latentWidth]);
    expect(Array.from(v.feeds[0]!.latents!.data)).toEqual(Array.from(x));
    expect(v.feeds[0]!.latents!.dims).toEqual([1, UNET.inChannels, geo.latentHeight, geo.latentWidth]);
    expect(decoding.slice(0, 3)).toEqual([0, 1, 2]);
  });

  it('conditions the UNet on [prompt feature, " " feature]: token states, their means, and the size ids twice', async () => {
    const u = unet(0, 0);
    const g = generator({ dit: dit(0, 0), unet: u, vae: vae() });
    await g.generate({ prompt: 'a fox', options: { ...options, decoderSteps: 1 } }, ctx());
    const f = u.feeds[0]!;
    // velocity 0 everywhere: each feature is its own starting noise (prompt: ditNoise stream; negative: fixed seed 0)
    const cond = new GaussianRng(options.seed, RngStream.ditNoise).gaussian(NQ * C);
    const neg = new GaussianRng(0, RngStream.negativeDitNoise).gaussian(NQ * C);
    expect(f.encoder_hidden_states!.dims).toEqual([2, NQ, C]);
    expect(Array.from(f.encoder_hidden_states!.data)).toEqual([...cond, ...neg]);
    const mean = (a: Float32Array) => Array.from({ length: C }, (_, j) => Array.from({ length: NQ }, (_, i) => a[i * C + j]!).reduce((s, v) => s + v / NQ, 0));
    expect(f.text_embeds!.dims).toEqual([2, C]);
    Array.from(f.text_embeds!.data).forEach((v, i) => expect(v).toBeCloseTo([...mean(cond), ...mean(neg)][i]!, 5));
    const geo = geometryFor('1:1', UNET.sampleSize, UNET.vaeScaleFactor, UNET.latentMultiple);
    expect(f.time_ids!.dims).toEqual([2, 6]);
    expect(Array.from(f.time_ids!.data)).toEqual([...geo.sizeIds, ...geo.sizeIds]);
  });

  it('says so when the UNet graph has no noise_pred output', async () => {
    const g = generator({ dit: dit(0, 0), unet: session(() => ({})), vae: vae() });
    await expect(g.generate({ prompt: 'x', options }, ctx())).rejects.toThrow(/no `noise_pred` output/);
  });
});
