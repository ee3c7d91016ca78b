// The two samplers of BLIP3-o's text-to-image path, rebuilt in TypeScript (spec §3.4 and §4; pitfalls 3, 8, 10).
// Both are tiny formulas; the graphs only ever see one model call per step.
//
// 1. Flow matching (DiT stage): diffusers@05c8b42 schedulers/scheduling_flow_match_euler_discrete.py
//    `set_timesteps(sigmas=…)` + `step`, as called by BLIP3o's `sample_images` (blip3o_qwen_inference.py @798b206).
// 2. Euler discrete, "leading" spacing (decoder UNet stage): diffusers@05c8b42 schedulers/scheduling_euler_discrete.py
//    `__init__` (scaled_linear betas), `set_timesteps`, `scale_model_input`, `step` (s_churn 0, epsilon prediction).
import { z } from 'zod';
import { AppError } from '../../src/errors.ts';

// ---- flow matching -------------------------------------------------------------------------------------

export interface FlowMatchSchedule {
  /** σ_0 … σ_{N-1} as float32 values, then the terminal 0: length N+1. The Euler update uses these exact values. */
  sigmas: Float32Array;
  /** The DiT's timestep per step: trunc(float32(σ_i · 1000)), 1000 = pure noise (pitfall 3). Length N. */
  timesteps: Int32Array;
}

/**
 * σ = linspace(1, 1/N, N) (numpy float64, cast to float32), shifted by s·σ/(1+(s−1)·σ) (identity for shift 1,
 * which the spec takes as the Lumina-Next-SFT value), then 0 appended. Timesteps are σ·1000 in float32, truncated.
 */
export function flowMatchSchedule(steps: number, shift = 1, numTrainTimesteps = 1000): FlowMatchSchedule {
  if (!Number.isInteger(steps) || steps < 1) throw new AppError('bad_request', `flow-matching steps must be a positive integer, got ${steps}`);
  const sigmas = new Float32Array(steps + 1);
  const timesteps = new Int32Array(steps);
  const start = 1;
  const stop = 1 / steps;
  const delta = steps > 1 ? (stop - start) / (steps - 1) : 0;
  for (let i = 0; i < steps; i++) {
    // numpy.linspace: start + i·step, and the last sample set to `stop` exactly
    const lin = Math.fround(i === steps - 1 ? stop : start + i * delta);
    const shifted = Math.fround((shift * lin) / (1 + (shift - 1) * lin));
    sigmas[i] = shifted;
    timesteps[i] = Math.trunc(Math.fround(shifted * numTrainTimesteps));
  }
  sigmas[steps] = 0;
  return { sigmas, timesteps };
}

/** σ_{i+1} − σ_i of step i, float32 (the flow-matching step's dt; negative: σ falls towards 0). */
export function flowMatchDt(schedule: FlowMatchSchedule, i: number): number {
  return Math.fround((schedule.sigmas[i + 1] ?? 0) - (schedule.sigmas[i] ?? 0));
}

/** x ← x + dt·v, in place, float32 (the flow-matching Euler update; v ≈ noise − x₀). */
export function flowMatchUpdate(x: Float32Array, velocity: Float32Array, dt: number): void {
  for (let k = 0; k < x.length; k++) x[k] = Math.fround((x[k] ?? 0) + dt * (velocity[k] ?? 0));
}

/** x ← x + (σ_{i+1} − σ_i)·v, in place, float32 (the flow-matching Euler step). */
export function flowMatchStep(x: Float32Array, velocity: Float32Array, schedule: FlowMatchSchedule, i: number): void {
  flowMatchUpdate(x, velocity, flowMatchDt(schedule, i));
}

/**
 * The whole flow-matching sampler: `steps` Euler steps from x (noise at σ = 1) towards σ = 0. `velocity(x, t, i)`
 * returns the model's (already guided) velocity; `beforeStep` runs first each step (cancellation, progress).
 */
export async function sampleFlowMatching(
  x: Float32Array,
  schedule: FlowMatchSchedule,
  velocity: (x: Float32Array, timestep: number, step: number) => Promise<Float32Array>,
  beforeStep: (step: number, total: number) => void = () => {},
): Promise<Float32Array> {
  const total = schedule.timesteps.length;
  for (let i = 0; i < total; i++) {
    beforeStep(i, total);
    const v = await velocity(x, schedule.timesteps[i] ?? 0, i);
    flowMatchStep(x, v, schedule, i);
  }
  return x;
}

// ---- Euler discrete (leading) ----------------------------------------------------------------------------

/** diffusion-decoder/scheduler/scheduler_config.json: the keys this scheduler reads (others are ignored). */
export const EulerDiscreteConfig = z.object({
  num_train_timesteps: z.number().int().positive().default(1000),
  beta_start: z.number().positive().default(0.0001),
  beta_end: z.number().positive().default(0.02),
  beta_schedule: z.enum(['linear', 'scaled_linear']).default('linear'),
  prediction_type: z.literal('epsilon').default('epsilon'),
  timestep_spacing: z.enum(['leading', 'linspace', 'trailing']).default('linspace'),
  steps_offset: z.number().int().nonnegative().default(0),
  interpolation_type: z.literal('linear').default('linear'),
  use_karras_sigmas: z.literal(false).nullish(),
  timestep_type: z.literal('discrete').default('discrete'),
  final_sigmas_type: z.literal('zero').default('zero'),
  rescale_betas_zero_snr: z.literal(false).default(false),
});
export type EulerDiscreteConfig = z.infer<typeof EulerDiscreteConfig>;

export interface EulerSchedule {
  /** Integer-valued timesteps given to the UNet as floats, e.g. 981 … 1 for 50 leading steps. Length N. */
  timesteps: Float32Array;
  /** σ(t_i) then the final 0: length N+1 (float32). */
  sigmas: Float32Array;
  /** The initial latent scale: √(σ_max²+1) for "leading" (read after set_timesteps, pitfall 10). */
  initNoiseSigma: number;
}

/** σ(t) = √((1−ᾱ_t)/ᾱ_t) for t = 0 … T−1, from the betas as torch computes them in float32. */
function trainingSigmas(cfg: EulerDiscreteConfig): Float32Array {
  const n = cfg.num_train_timesteps;
  const betas = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = n > 1 ? i / (n - 1) : 0;
    if (cfg.beta_schedule === 'scaled_linear') {
      // torch.linspace(β_start^0.5, β_end^0.5, T, dtype=float32) ** 2
      const a = Math.fround(Math.sqrt(cfg.beta_start));
      const b = Math.fround(Math.sqrt(cfg.beta_end));
      const r = Math.fround(a + (b - a) * u);
      betas[i] = Math.fround(r * r);
    } else {
      betas[i] = Math.fround(cfg.beta_start + (cfg.beta_end - cfg.beta_start) * u);
    }
  }
  const sigmas = new Float32Array(n);
  let cumprod = 1;
  for (let i = 0; i < n; i++) {
    cumprod = Math.fround(cumprod * Math.fround(1 - (betas[i] ?? 0)));
    sigmas[i] = Math.fround(Math.sqrt(Math.fround(Math.fround(1 - cumprod) / cumprod)));
  }
  return sigmas;
}

export function eulerDiscreteSchedule(config: Partial<EulerDiscreteConfig> | unknown, steps: number): EulerSchedule {
  const parsed = EulerDiscreteConfig.safeParse(config);
  if (!parsed.success) throw new AppError('model', `unsupported EulerDiscreteScheduler config: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const cfg = parsed.data;
  const T = cfg.num_train_timesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > T) throw new AppError('bad_request', `decoder steps must be 1…${T}, got ${steps}`);
  const all = trainingSigmas(cfg);
  const ts = new Float64Array(steps);
  if (cfg.timestep_spacing === 'leading') {
    const ratio = Math.floor(T / steps);
    for (let i = 0; i < steps; i++) ts[i] = (steps - 1 - i) * ratio + cfg.steps_offset;
  } else if (cfg.timestep_spacing === 'trailing') {
    const ratio = T / steps;
    for (let i = 0; i < steps; i++) ts[i] = Math.round(T - i * ratio) - 1;
  } else {
    const d = steps > 1 ? (T - 1) / (steps - 1) : 0;
    for (let i = 0; i < steps; i++) ts[i] = T - 1 - i * d;
  }
  const timesteps = new Float32Array(steps);
  const sigmas = new Float32Array(steps + 1);
  for (let i = 0; i < steps; i++) {
    const t = ts[i] ?? 0;
    timesteps[i] = t;
    // np.interp over the integer grid 0 … T−1 (exact at integer timesteps)
    const lo = Math.min(Math.floor(t), T - 1);
    const hi = Math.min(lo + 1, T - 1);
    const f = t - lo;
    sigmas[i] = (all[lo] ?? 0) * (1 - f) + (all[hi] ?? 0) * f;
  }
  sigmas[steps] = 0;
  let max = 0;
  for (const s of sigmas) max = Math.max(max, s);
  const initNoiseSigma = cfg.timestep_spacing === 'leading' ? Math.sqrt(max * max + 1) : max;
  return { timesteps, sigmas, initNoiseSigma };
}

/** The UNet input scale at step i: 1/√(σ_i²+1) (`scale_model_input`). */
export function eulerInputScale(schedule: EulerSchedule, i: number): number {
  const s = schedule.sigmas[i] ?? 0;
  return 1 / Math.sqrt(s * s + 1);
}

/** σ_{i+1} − σ_i of step i (float64 here, as the update has always computed it; the scheduler graph takes it as float32). */
export function eulerDt(schedule: EulerSchedule, i: number): number {
  return (schedule.sigmas[i + 1] ?? 0) - (schedule.sigmas[i] ?? 0);
}

/** Epsilon-prediction Euler update with s_churn 0, in place, float32: x ← x + ε̂·dt. */
export function eulerUpdate(x: Float32Array, eps: Float32Array, dt: number): void {
  for (let k = 0; k < x.length; k++) x[k] = Math.fround((x[k] ?? 0) + (eps[k] ?? 0) * dt);
}

/** Epsilon-prediction Euler step with s_churn 0, in place, float32: x ← x + ε̂·(σ_{i+1} − σ_i). */
export function eulerStep(x: Float32Array, eps: Float32Array, schedule: EulerSchedule, i: number): void {
  eulerUpdate(x, eps, eulerDt(schedule, i));
}
