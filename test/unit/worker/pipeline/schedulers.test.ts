import { describe, expect, it } from 'vitest';
import { eulerDiscreteSchedule, eulerInputScale, eulerStep, flowMatchSchedule, sampleFlowMatching } from '../../../../worker/pipeline/schedulers.ts';

// Emu2's diffusion-decoder/scheduler/scheduler_config.json values (spec §1.4).
const emu2Scheduler = {
  _class_name: 'EulerDiscreteScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  interpolation_type: 'linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
  use_karras_sigmas: false,
};

describe('flow-matching schedule (spec §3.4)', () => {
  it('gives the DiT timesteps of the spec for 30 steps', () => {
    const { timesteps, sigmas } = flowMatchSchedule(30);
    expect([...timesteps]).toEqual([
      1000, 966, 933, 900, 866, 833, 800, 766, 733, 700, 666, 633, 600, 566, 533, 500, 466, 433, 400, 366, 333, 300, 266, 233, 200, 166,
      133, 100, 66, 33,
    ]);
    expect(sigmas.length).toBe(31);
    expect(sigmas[0]).toBe(1);
    expect(sigmas[29]).toBe(Math.fround(1 / 30));
    expect(sigmas[30]).toBe(0);
  });

  it('lands where the closed form says on a known linear velocity field', async () => {
    // The field v(x) = x − a is linear in x; each Euler step maps x − a to (x − a)(1 + Δσ_i), so after all steps
    // x = a + (x0 − a)·Π(1 + Δσ_i): the closed form of the discrete scheme.
    const a = Float32Array.from([0.5, -2, 3]);
    const x0 = Float32Array.from([1, 1, -1]);
    const schedule = flowMatchSchedule(30);
    const x = await sampleFlowMatching(Float32Array.from(x0), schedule, async (xi) => xi.map((v, k) => v - (a[k] ?? 0)));
    let factor = 1;
    for (let i = 0; i < 30; i++) factor *= 1 + ((schedule.sigmas[i + 1] ?? 0) - (schedule.sigmas[i] ?? 0));
    for (let k = 0; k < 3; k++) expect(x[k]).toBeCloseTo((a[k] ?? 0) + ((x0[k] ?? 0) - (a[k] ?? 0)) * factor, 5);
  });

  it('turns the rectified-flow velocity noise − x0 into x0 exactly', async () => {
    // For x_σ = (1−σ)x0 + σn the true velocity is n − x0 everywhere, so any schedule ending at σ = 0 lands on x0.
    const x0 = Float32Array.from([0.25, -1.5, 2]);
    const n = Float32Array.from([1, 0.5, -0.75]);
    const out = await sampleFlowMatching(Float32Array.from(n), flowMatchSchedule(7), async () => n.map((v, k) => v - (x0[k] ?? 0)));
    for (let k = 0; k < 3; k++) expect(out[k]).toBeCloseTo(x0[k] ?? 0, 5);
  });

  it('applies the time shift s·σ/(1+(s−1)·σ) (numpy reference: diffusers set_timesteps with shift 3, 4 steps)', () => {
    const { sigmas, timesteps } = flowMatchSchedule(4, 3);
    expect([...sigmas]).toEqual([1, Math.fround(0.9), 0.75, 0.5, 0]);
    expect([...timesteps]).toEqual([1000, 900, 750, 500]);
    expect([...flowMatchSchedule(1, 3).sigmas]).toEqual([1, 0]);
    expect([...flowMatchSchedule(3).timesteps]).toEqual([1000, 666, 333]);
  });

  it('refuses a step count that is not a positive integer, saying so', () => {
    for (const steps of [0, -1, 2.5, Number.NaN]) expect(() => flowMatchSchedule(steps)).toThrow(/flow-matching steps must be a positive integer/);
  });

  it('reports every step before running it', async () => {
    const seen: number[] = [];
    await sampleFlowMatching(new Float32Array(1), flowMatchSchedule(4), async () => new Float32Array(1), (i, total) => seen.push(i, total));
    expect(seen).toEqual([0, 4, 1, 4, 2, 4, 3, 4]);
  });
});

describe('Euler discrete leading schedule (spec §4, pitfall 10)', () => {
  it('gives timesteps 981 … 1 for 50 steps and init noise sigma ≈ 13.158', () => {
    const s = eulerDiscreteSchedule(emu2Scheduler, 50);
    expect([...s.timesteps]).toEqual(Array.from({ length: 50 }, (_, i) => 981 - 20 * i));
    expect(s.initNoiseSigma).toBeCloseTo(13.158, 3);
    expect(s.sigmas[0]).toBeCloseTo(13.1204, 3);
    expect(s.sigmas[1]).toBeCloseTo(11.6761, 3);
    expect(s.sigmas[2]).toBeCloseTo(10.4251, 3);
    expect(s.sigmas[48]).toBeCloseTo(0.1415, 3);
    expect(s.sigmas[49]).toBeCloseTo(0.0413, 3);
    expect(s.sigmas[50]).toBe(0);
  });

  it('scales the input by 1/√(σ²+1) and steps x + ε(σ_next − σ)', () => {
    const s = eulerDiscreteSchedule(emu2Scheduler, 50);
    expect(eulerInputScale(s, 0)).toBeCloseTo(1 / Math.sqrt(13.1204 ** 2 + 1), 5);
    const x = Float32Array.from([1, 2]);
    eulerStep(x, Float32Array.from([1, -1]), s, 49);
    expect(x[0]).toBeCloseTo(1 - 0.0413, 3);
    expect(x[1]).toBeCloseTo(2 + 0.0413, 3);
  });

  it('refuses configs it does not implement, and step counts outside 1…T', () => {
    expect(() => eulerDiscreteSchedule({ ...emu2Scheduler, prediction_type: 'v_prediction' }, 50)).toThrow(/unsupported EulerDiscreteScheduler config: prediction_type: /);
    expect(() => eulerDiscreteSchedule(emu2Scheduler, 0)).toThrow(/decoder steps must be 1…1000, got 0/);
    expect(() => eulerDiscreteSchedule(emu2Scheduler, 1001)).toThrow(/decoder steps/);
    expect(() => eulerDiscreteSchedule(emu2Scheduler, 2.5)).toThrow(/decoder steps/);
    expect(eulerDiscreteSchedule(emu2Scheduler, 1000).timesteps.length).toBe(1000);
  });
});

// The other spacings and the linear beta schedule: references from numpy following diffusers' EulerDiscreteScheduler
// (betas = linspace(β0, β1, T) float32; ᾱ = cumprod(1 − β); σ = √((1−ᾱ)/ᾱ); np.interp at the timesteps).
describe('Euler discrete, other configs', () => {
  const linear = { num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear' };
  const close = (actual: Float32Array, expected: number[]) => {
    expect(actual.length).toBe(expected.length);
    expected.forEach((e, i) => expect(actual[i]! / e, `index ${i}`).toBeCloseTo(1, 5));
  };

  it('trailing: timesteps round(T − i·T/N) − 1, and the initial noise scale is σ_max itself', () => {
    const s = eulerDiscreteSchedule({ ...linear, timestep_spacing: 'trailing' }, 4);
    expect([...s.timesteps]).toEqual([999, 749, 499, 249]);
    close(s.sigmas.subarray(0, 4), [157.4072265625, 17.246980667114258, 3.4241366386413574, 0.9529355764389038]);
    expect(s.initNoiseSigma).toBeCloseTo(157.4072265625, 3);
  });

  it('linspace: timesteps T−1 … 0, a fractional timestep interpolating σ between its neighbours', () => {
    const s = eulerDiscreteSchedule({ ...linear, timestep_spacing: 'linspace' }, 3);
    expect([...s.timesteps]).toEqual([999, 499.5, 0]);
    close(s.sigmas.subarray(0, 3), [157.4072265625, 3.433551788330078, 0.010001329705119133]);
    expect(s.sigmas[3]).toBe(0);
    expect(s.initNoiseSigma).toBeCloseTo(157.4072265625, 3);
    const four = eulerDiscreteSchedule({ ...linear, timestep_spacing: 'linspace' }, 4);
    expect([...four.timesteps]).toEqual([999, 666, 333, 0]);
    close(four.sigmas.subarray(0, 4), [157.4072265625, 9.488919258117676, 1.4623571634292603, 0.010001329705119133]);
  });

  it('a single training timestep: β = β_start, σ finite', () => {
    const s = eulerDiscreteSchedule({ ...linear, num_train_timesteps: 1, timestep_spacing: 'linspace' }, 1);
    expect([...s.timesteps]).toEqual([0]);
    close(s.sigmas.subarray(0, 1), [0.01000133]);
  });
});
