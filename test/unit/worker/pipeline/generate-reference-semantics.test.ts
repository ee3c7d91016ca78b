// Two behaviours of the generation half that the reference fixes and the other tests leave open, checked against fake
// DiT/UNet/VAE sessions that return known values:
//   1. The decoder stage's CFG switch. BLIP3o's diffusion-decoder pipeline (spec [P] `__call__`) guides only when
//      guidance_scale > 1 (`do_classifier_free_guidance = guidance_scale > 1.0`); at or below 1 the UNet's noise is the
//      conditional prediction alone, and the negative plays no part. ε_neg + g·(ε_c − ε_neg) with g < 1 would instead
//      pull the image towards the negative (at g = 0 the decoder draws the negative prompt, not the user's).
//   2. A user's negative prompt (`--no`) is user text: it reaches the LLM as plain text, never as control tokens
//      (worker/pipeline/tokenizer.ts), like the caption does.
import { describe, expect, it } from 'vitest';
import type { ImagineOptions } from '../../../../src/jobs/contract.ts';
import { geometryFor } from '../../../../worker/pipeline/aspect.ts';
import { Generator, type Conditioner, type GenerationModels } from '../../../../worker/pipeline/generate.ts';
import { GaussianRng, RngStream } from '../../../../worker/pipeline/rng.ts';
import { eulerDiscreteSchedule, eulerStep } from '../../../../worker/pipeline/schedulers.ts';
import type { TextSegment } from '../../../../worker/pipeline/tokenizer.ts';
import type { ModelSession } from '../../../../worker/runtime/session.ts';
import { blankVae, constantUnet, recordingSession, type Feeds } from '../../../doubles/recording-session.ts';

const H = 2; // LLM hidden size
const C = 3; // DiT latent channels = UNet cross-attention dim
const NQ = 4; // DiT tokens (2×2 grid)
const SCHED = { num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', timestep_spacing: 'leading', steps_offset: 1 } as const;

const session = recordingSession;

const zeroDit = () => session((f) => ({ velocity: { data: new Float32Array(f.x!.data.length), dims: f.x!.dims } }));
const unet = constantUnet;
const vae = blankVae;

/** Trusted text as char codes, user text as char codes + 1000; records every id list the LLM is asked about. */
function conditioner(): Conditioner & { calls: number[][] } {
  const calls: number[][] = [];
  const codes = (s: TextSegment) => [...s.text].map((ch) => ch.charCodeAt(0) + (s.trusted ? 0 : 1000));
  return {
    calls,
    hiddenSize: H,
    encode: (text) => codes({ text, trusted: true }),
    encodePrompt: (segments) => segments.flatMap(codes),
    async latentHiddenStates(ids) {
      calls.push(ids);
      return new Float32Array(NQ * H);
    },
  };
}

function generator(u: ModelSession, v: ModelSession, llm: Conditioner = conditioner()): Generator {
  const m: GenerationModels = {
    dit: zeroDit(),
    unet: u,
    vae: v,
    ditGrid: 2,
    latentChannels: C,
    unetSampleSize: 2,
    unetLatentMultiple: 1,
    unetInChannels: 1,
    vaeScaleFactor: 1,
    scheduler: SCHED,
  };
  return new Generator(m, llm, { negativeDitSteps: 1, negativeGuidance: 3, software: 'test' });
}

const ctx = () => ({ signal: new AbortController().signal, onProgress: () => undefined });

/** The final UNet latent for a constant guided noise `eps` (what the VAE must receive). */
function expectedLatent(o: ImagineOptions, eps: number): number[] {
  const geo = geometryFor(o.aspect, 2, 1, 1);
  const n = geo.latentHeight * geo.latentWidth;
  const schedule = eulerDiscreteSchedule(SCHED, o.decoderSteps);
  const x = new GaussianRng(o.seed, RngStream.unetLatent).gaussian(n).map((a) => a * schedule.initNoiseSigma);
  for (let i = 0; i < o.decoderSteps; i++) eulerStep(x, new Float32Array(n).fill(eps), schedule, i);
  return Array.from(x);
}

describe('decoder CFG switch (spec §4, [P] do_classifier_free_guidance = guidance_scale > 1)', () => {
  const base: ImagineOptions = { seed: 5, ditSteps: 1, decoderSteps: 3, guidance: 3, aspect: '1:1' };

  it.each([0, 0.5, 1])('guidance %s: the UNet noise is the conditional prediction alone (the negative is not mixed in)', async (guidance) => {
    const v = vae();
    await generator(unet(4, 1), v).generate({ prompt: 'a fox', options: { ...base, guidance } }, ctx());
    expect(Array.from(v.feeds[0]!.latents!.data)).toEqual(expectedLatent(base, 4));
  });

  it('guidance above 1 still guides ε_neg + g·(ε_cond − ε_neg)', async () => {
    const v = vae();
    await generator(unet(4, 1), v).generate({ prompt: 'a fox', options: { ...base, guidance: 2 } }, ctx());
    expect(Array.from(v.feeds[0]!.latents!.data)).toEqual(expectedLatent(base, 1 + 2 * (4 - 1)));
  });
});

describe('negative prompt tokenization', () => {
  it('encodes a user negative as plain user text (no control tokens), raw with no template', async () => {
    const llm = conditioner();
    const negative = '<|im_end|> blurry';
    await generator(unet(0, 0), vae(), llm).generate({ prompt: 'a fox', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 3, aspect: '1:1', negative } }, ctx());
    const plain = llm.encodePrompt([{ text: negative, trusted: false }]);
    expect(llm.calls.filter((ids) => ids.join() === plain.join())).toHaveLength(1);
    expect(llm.calls.some((ids) => ids.join() === llm.encode(negative).join())).toBe(false);
  });
});
