// The sampling state of one image between steps, and one model call for the DiT, UNet or VAE step of several images
// at once (issue 18): samples at different step indices share a graph run, each with its own timestep, conditioning
// and guidance scale. A `DitSample` / `UnetSample` holds a sample's latent, step index and schedule; generate.ts asks a
// `DiffusionStepper` for one step at a time, which either runs it alone (`soloStepper`) or hands it to the worker's
// step batcher, which calls `runDitSteps` & co. with the steps of every request that is ready. A sample joins a
// batch at any step and leaves after its last one.
//
// Batch layout: each sample keeps its classifier-free-guidance pair together, in the order the solo run uses
// (spec §3.4, §4, pitfall 8):
//   DiT   x [2B, T, C], timestep [2B], z [2B, tokens, H]       rows 2i, 2i+1 = (uncond zeros, cond) of sample i
//   UNet  sample [2B, 4, h, w], timestep [2B], …               rows 2i, 2i+1 = (cond, negative) of sample i
//   VAE   latents [B, 4, h, w]                                 row i = sample i
// Every graph takes a dynamic batch and a [batch] timestep (worker/builder/architectures/{diffusion_transformer,
// sdxl_unet,vae_decoder}.ts), so nothing in the builder changes.
//
// Batch companions and bit-equality: every op of the three graphs works per batch row (no op reduces over the batch),
// so row i's arithmetic is the same whatever sits in the other rows. On the CPU provider the output is bit-identical
// alone or in any batch: onnxruntime's MLAS SGEMM (sgemm.cpp MlasGemmBatch) splits a GEMM between threads along M or
// N only, never along K, and walks K in fixed-size blocks, so a row's dot products are summed in the same order
// whatever M (= batch × rows) is; convolutions, norms and softmax run per image or per row. Batching changes M, never
// K (unlike ragged LLM decoding, where padding changes the attention's K). Checked bit for bit on the tiny checkpoint
// (test/unit/worker/pipeline/diffusion-steps.test.ts, generate-batch.test.ts) and once at the real layer widths
// (docs/generation.md "Batching across jobs"). A GPU provider may pick another GEMM/conv kernel for another batch size
// (cuBLAS/cuDNN choose by shape), which can change the rounding of a sum: there the same seed gives the same image
// within rounding, not necessarily the same bytes (not measured here).
//
// Where the latents live: a sample's latent is a `Latent`, host memory or a DeviceTensor. In host memory (the CPU
// provider) the CFG combine and the scheduler update run in TypeScript (schedulers.ts), as they always have. As a
// DeviceTensor (opened with `latentsOnDevice`, the default under WebGPU) they run as the small graphs of
// scheduler-graphs.ts on the models' provider, and the model's output never leaves the GPU: one call's path follows
// its samples' latents, which are all of one kind within one GenerationModels.
import { AppError } from '../../src/errors.ts';
import { DeviceTensor, toHost, type ModelSession, type TensorInput } from '../runtime/session.ts';
import { StepBatcher, type BatcherStats } from './batch.ts';
import type { PairOrder, SchedulerGraphs } from './scheduler-graphs.ts';
import { eulerDt, eulerInputScale, eulerUpdate, flowMatchDt, flowMatchUpdate, type EulerSchedule, type FlowMatchSchedule } from './schedulers.ts';

/** A sample's latent: host memory, or a [1, …dims] tensor left where its session computes (a GPU buffer on WebGPU). */
export type Latent = Float32Array | DeviceTensor;

/** A sample's conditioning that stays the same at every step: host data (for batches), and where its session computes. */
export interface Conditioning {
  /** The CFG pair of this sample, row-major, two rows. */
  host: Float32Array;
  /** The same, uploaded once (GPU providers; the host tensor itself on the CPU): fed as is when the sample runs alone. */
  device?: DeviceTensor;
  /** Row shape after the batch dimension (e.g. [tokens, H]). */
  dims: readonly number[];
}

/** One DiT step of one sample: x at its own step, its timestep, its condition pair and guidance scale. */
export interface DitStep {
  /** x_t (read, not written). */
  x: Latent;
  /** [T, C] of `x`: DiT tokens (grid side²) × latent channels. */
  dims: readonly [number, number];
  /** trunc(σ_i·1000) of this sample's step. */
  timestep: number;
  /** σ_{i+1} − σ_i (flowMatchDt). */
  dt: number;
  /** [zeros, z] as [2, tokens, H]. */
  z: Conditioning;
  guidance: number;
}

/** UNet conditioning of one sample: [cond, negative] feature tokens, their means and the size ids, two rows each. */
export interface UnetConditioning {
  encoderHiddenStates: Conditioning;
  textEmbeds: Conditioning;
  timeIds: Conditioning;
}

/** One UNet step of one sample: the latent at its own step and how to scale it for the model. */
export interface UnetStep {
  /** x_t [channels, h, w] (read, not written). */
  x: Latent;
  /** [channels, h, w] of `x`. */
  dims: readonly [number, number, number];
  timestep: number;
  /** scale_model_input's factor 1/√(σ_i²+1): the UNet sees x·scale. */
  scale: number;
  /** σ_{i+1} − σ_i (eulerDt). */
  dt: number;
  cond: UnetConditioning;
  guidance: number;
}

/** One VAE decode: a final latent [channels, h, w]. */
export interface VaeDecode {
  latents: Latent;
  dims: readonly [number, number, number];
}

/**
 * What a sample asks for one step at a time: run alone or batched with other requests' samples. `signal` is the
 * request's own: aborted while its step still waits for a batch, the step leaves it and rejects with the reason.
 */
export interface DiffusionStepper {
  /** x at the next step, x + dt·(v_u + g·(v_c − v_u)), [T, C]; where `step.x` lives. */
  dit(step: DitStep, signal?: AbortSignal): Promise<Latent>;
  /** x at the next step, x + dt·(ε_neg + g·(ε_cond − ε_neg)), [channels, h, w]; where `step.x` lives. */
  unet(step: UnetStep, signal?: AbortSignal): Promise<Latent>;
  /** The decoded image [3, H, W] in [−1, 1]. */
  vae(decode: VaeDecode, signal?: AbortSignal): Promise<Float32Array>;
}

export interface DiffusionSessions {
  dit: ModelSession;
  unet: ModelSession;
  vae: ModelSession;
  /** The CFG combine and scheduler update as graphs: present when the latents stay with the sessions (device latents). */
  schedulerGraphs?: SchedulerGraphs;
}

/**
 * Which steps may share one run: the same graph input shapes apart from the batch. DiT steps all match (64 query
 * tokens); UNet steps and VAE decodes of different aspect ratios do not.
 */
export const ditBatchKey = (s: DitStep): string => `dit ${s.dims.join('x')} ${s.z.dims.join('x')}`;
export const unetBatchKey = (s: UnetStep): string => `unet ${s.dims.join('x')} ${s.cond.encoderHiddenStates.dims.join('x')}`;
export const vaeBatchKey = (d: VaeDecode): string => `vae ${d.dims.join('x')}`;

/** Rows of every step's `pick`, in step order: [2B, …rows] (the device copy when one sample runs alone). */
function stacked(items: readonly Conditioning[]): TensorInput | DeviceTensor {
  const first = items[0]!;
  if (items.length === 1 && first.device) return first.device;
  const data = new Float32Array(items.length * first.host.length);
  items.forEach((c, i) => {
    if (c.host.length !== first.host.length) throw new AppError('internal', `batched conditioning of ${c.host.length} values next to ${first.host.length}`);
    data.set(c.host, i * first.host.length);
  });
  return { data, dims: [2 * items.length, ...first.dims] };
}

/** Each sample's x written twice (its CFG pair), samples one after another: [2B, …]. */
function paired(xs: readonly Float32Array[]): Float32Array {
  const n = xs[0]!.length;
  const out = new Float32Array(2 * n * xs.length);
  xs.forEach((x, i) => {
    if (x.length !== n) throw new AppError('internal', `batched latent of ${x.length} values next to ${n}`);
    out.set(x, 2 * i * n);
    out.set(x, (2 * i + 1) * n);
  });
  return out;
}

const timesteps = (ts: readonly number[]) => ({ data: Float32Array.from(ts.flatMap((t) => [t, t])), dims: [2 * ts.length] });

/** Per-sample guidance on the pair rows (a, b) of sample i: a + g·(b − a), float32 as the solo loop computes it. */
function guide(out: Float32Array, steps: readonly { guidance: number }[], n: number, first: 'a' | 'b'): Float32Array[] {
  return steps.map((s, i) => {
    const base = 2 * i * n;
    const g = new Float32Array(n);
    // DiT rows (uncond, cond): v_u + g·(v_c − v_u); UNet rows (cond, neg): ε_neg + g·(ε_cond − ε_neg)
    const [lo, hi] = first === 'a' ? [base, base + n] : [base + n, base];
    // Stryker disable next-line EqualityOperator: one more pass writes past the typed array's end, which JavaScript ignores
    for (let k = 0; k < n; k++) g[k] = out[lo + k]! + s.guidance * (out[hi + k]! - out[lo + k]!);
    return g;
  });
}

/** The steps' latents, all in host memory or all device tensors (one GenerationModels never mixes them). */
function latentsOf(steps: readonly { x: Latent }[]): { host: Float32Array[] } | { device: DeviceTensor[] } {
  const xs = steps.map((s) => s.x);
  if (xs.every((x) => x instanceof Float32Array)) return { host: xs };
  if (xs.every((x) => x instanceof DeviceTensor)) return { device: xs };
  throw new AppError('internal', 'a diffusion batch mixes host and device latents');
}

/**
 * One model run on device latents: the CFG pair input made on the device, the model, the guided update on the device.
 * The model's output (`output`, kept on the device by the session) is freed here; the samples' own latents are not.
 */
async function deviceStep(
  graphs: SchedulerGraphs | undefined,
  session: ModelSession,
  output: string,
  order: PairOrder,
  steps: readonly { x: Latent; dims: readonly number[]; guidance: number; dt: number }[],
  xs: DeviceTensor[],
  scales: readonly number[],
  feeds: (input: DeviceTensor) => Parameters<ModelSession['runOnDevice']>[0],
): Promise<DeviceTensor[]> {
  if (!graphs) throw new AppError('internal', 'device latents need the scheduler graphs (openGenerationModels latentsOnDevice)');
  const dims = steps[0]!.dims;
  const input = await graphs.cfgPair(xs, scales, dims);
  let out: DeviceTensor | undefined;
  try {
    const res = await session.runOnDevice(feeds(input));
    out = res.device[output];
    if (!out) throw new AppError('internal', `the session does not keep \`${output}\` on the device (openGenerationModels latentsOnDevice)`);
    return await graphs.guidedStep(order, out, xs, steps.map((s) => s.guidance), steps.map((s) => s.dt), dims);
  } finally {
    input.dispose();
    out?.dispose();
  }
}

/** Each DiT sample's x at its next step, several samples (any step indices) in one run. All must share `ditBatchKey`. */
export async function runDitSteps(dit: ModelSession, steps: readonly DitStep[], graphs?: SchedulerGraphs): Promise<Latent[]> {
  if (steps.length === 0) return [];
  const dims = steps[0]!.dims;
  const conditioning = { timestep: timesteps(steps.map((s) => s.timestep)), z: stacked(steps.map((s) => s.z)) };
  const latents = latentsOf(steps);
  if ('device' in latents) return deviceStep(graphs, dit, 'velocity', 'uncond-first', steps, latents.device, steps.map(() => 1), (x) => ({ x, ...conditioning }));
  const xs = latents.host;
  const out = await dit.run({ x: { data: paired(xs), dims: [2 * steps.length, ...dims] }, ...conditioning });
  const v = out.velocity?.data as Float32Array | undefined;
  if (!v) throw new AppError('model', 'the DiT graph has no `velocity` output');
  return guide(v, steps, xs[0]!.length, 'a').map((guided, i) => {
    const next = Float32Array.from(xs[i]!);
    flowMatchUpdate(next, guided, steps[i]!.dt);
    return next;
  });
}

/** Each UNet sample's x at its next step, several samples (any step indices) in one run. All must share `unetBatchKey`. */
export async function runUnetSteps(unet: ModelSession, steps: readonly UnetStep[], graphs?: SchedulerGraphs): Promise<Latent[]> {
  if (steps.length === 0) return [];
  const dims = steps[0]!.dims;
  const n = dims[0] * dims[1] * dims[2];
  const conditioning = {
    timestep: timesteps(steps.map((s) => s.timestep)),
    encoder_hidden_states: stacked(steps.map((s) => s.cond.encoderHiddenStates)),
    text_embeds: stacked(steps.map((s) => s.cond.textEmbeds)),
    time_ids: stacked(steps.map((s) => s.cond.timeIds)),
  };
  const latents = latentsOf(steps);
  const scales = steps.map((s) => s.scale);
  if ('device' in latents) return deviceStep(graphs, unet, 'noise_pred', 'cond-first', steps, latents.device, scales, (sample) => ({ sample, ...conditioning }));
  const xs = latents.host;
  const samples = xs.map((x, i) => {
    const sample = new Float32Array(x.length); // scale_model_input
    // Stryker disable next-line EqualityOperator: one more pass writes past the typed array's end, which JavaScript ignores
    for (let k = 0; k < sample.length; k++) sample[k] = x[k]! * scales[i]!;
    return sample;
  });
  const out = await unet.run({ sample: { data: paired(samples), dims: [2 * steps.length, ...dims] }, ...conditioning });
  const e = out.noise_pred?.data as Float32Array | undefined;
  if (!e) throw new AppError('model', 'the UNet graph has no `noise_pred` output');
  return guide(e, steps, n, 'b').map((guided, i) => {
    const next = Float32Array.from(xs[i]!);
    eulerUpdate(next, guided, steps[i]!.dt);
    return next;
  });
}

/** VAE decodes of several final latents in one run. All must share `vaeBatchKey`. */
export async function runVaeDecodes(vae: ModelSession, decodes: readonly VaeDecode[]): Promise<Float32Array[]> {
  if (decodes.length === 0) return [];
  const dims = decodes[0]!.dims;
  const n = dims[0] * dims[1] * dims[2];
  const only = decodes[0]!.latents;
  let latents: TensorInput | DeviceTensor;
  if (decodes.length === 1 && only instanceof DeviceTensor) latents = only; // [1, …dims] already where the VAE runs
  else {
    const data = new Float32Array(decodes.length * n);
    for (const [i, d] of decodes.entries()) {
      const x = d.latents instanceof DeviceTensor ? ((await toHost(d.latents)).data as Float32Array) : d.latents;
      if (x.length !== n) throw new AppError('internal', `batched VAE latent of ${x.length} values next to ${n}`);
      data.set(x, i * n);
    }
    latents = { data, dims: [decodes.length, ...dims] };
  }
  const out = await vae.run({ latents });
  const image = out.image?.data as Float32Array | undefined;
  if (!image) throw new AppError('model', 'the VAE graph has no `image` output');
  const per = image.length / decodes.length;
  return decodes.map((_, i) => image.slice(i * per, (i + 1) * per));
}

/** Every step in its own run, as it comes (no batcher): tools and tests that drive one request. */
export function soloStepper(m: DiffusionSessions): DiffusionStepper {
  return {
    dit: async (s) => (await runDitSteps(m.dit, [s], m.schedulerGraphs))[0]!,
    unet: async (s) => (await runUnetSteps(m.unet, [s], m.schedulerGraphs))[0]!,
    vae: async (d) => (await runVaeDecodes(m.vae, [d]))[0]!,
  };
}

/**
 * The worker's stepper (`worker.maxBatch.diffusion`): each graph has a StepBatcher (worker/pipeline/batch.ts) that runs
 * the steps of every concurrent request waiting at that moment, up to `maxBatch` samples (each a CFG pair, so up to
 * 2·maxBatch rows), only samples of one shape together. A call that throws is re-run sample by sample, so a request
 * whose input breaks the graph fails alone. maxBatch 1: every step alone, one request's steps at a time.
 */
export function batchedStepper(m: DiffusionSessions, maxBatch: number): DiffusionStepper & { stats: Record<'dit' | 'unet' | 'vae', BatcherStats> } {
  const dit = new StepBatcher<DitStep, Latent>({ maxBatch, run: (s) => runDitSteps(m.dit, s, m.schedulerGraphs), key: ditBatchKey });
  const unet = new StepBatcher<UnetStep, Latent>({ maxBatch, run: (s) => runUnetSteps(m.unet, s, m.schedulerGraphs), key: unetBatchKey });
  const vae = new StepBatcher<VaeDecode, Float32Array>({ maxBatch, run: (d) => runVaeDecodes(m.vae, d), key: vaeBatchKey });
  return {
    dit: (s, signal) => dit.step(s, signal),
    unet: (s, signal) => unet.step(s, signal),
    vae: (d, signal) => vae.step(d, signal),
    stats: { dit: dit.stats, unet: unet.stats, vae: vae.stats },
  };
}

// ---- per-sample state --------------------------------------------------------------------------------------------

/** Frees a latent's GPU buffer (host arrays are left to the GC). */
export function freeLatent(x: Latent): void {
  if (x instanceof DeviceTensor) x.dispose();
}

/** What a DiT and a UNet sample share: the latent, replaced by each step's result, and the step it is at. */
abstract class SteppedSample {
  /** Index of the next step. */
  step = 0;
  constructor(
    /** x_t: replaced by each step's result. */
    public x: Latent,
    /** Steps of the schedule. */
    readonly total: number,
  ) {}
  get done(): boolean {
    return this.step >= this.total;
  }
  /** Takes the step's result, x at the next step, freeing the GPU buffer of the latent it leaves behind. */
  advance(next: Latent): void {
    if (next !== this.x) freeLatent(this.x);
    this.x = next;
    this.step++;
  }
}

/** One image's flow-matching state (spec §3.4): x moves from noise at σ = 1 to the feature at σ = 0, one step a call. */
export class DitSample extends SteppedSample {
  constructor(
    x: Latent,
    /** [T, C] of x. */
    readonly dims: readonly [number, number],
    readonly schedule: FlowMatchSchedule,
    readonly z: Conditioning,
    readonly guidance: number,
  ) {
    super(x, schedule.timesteps.length);
  }
  /** The model call of the next step. */
  next(): DitStep {
    const i = this.step;
    return { x: this.x, dims: this.dims, timestep: this.schedule.timesteps[i]!, dt: flowMatchDt(this.schedule, i), z: this.z, guidance: this.guidance };
  }
}

/** One image's Euler-discrete state in the UNet stage (spec §4, pitfall 10); x starts as σ_init-scaled noise [channels, h, w]. */
export class UnetSample extends SteppedSample {
  constructor(
    x: Latent,
    readonly dims: readonly [number, number, number],
    readonly schedule: EulerSchedule,
    readonly cond: UnetConditioning,
    readonly guidance: number,
  ) {
    super(x, schedule.timesteps.length);
  }
  next(): UnetStep {
    const i = this.step;
    const { schedule } = this;
    return { x: this.x, dims: this.dims, timestep: schedule.timesteps[i]!, scale: eulerInputScale(schedule, i), dt: eulerDt(schedule, i), cond: this.cond, guidance: this.guidance };
  }
}
