// The classifier-free-guidance combine and the scheduler update of schedulers.ts as two small ONNX graphs, run on the
// DiT/UNet's own provider, so that under WebGPU a sample's latent stays a GPU buffer from the first step to the last
// (docs/gpu.md "Tensors that stay on the GPU"). Per step the host then sends only the per-sample scalars (timestep,
// input scale, guidance, dt). The math is schedulers.ts's, op for op, in float32:
//
//   cfg pair      input = [x·s, x·s] per sample                          (UNet scale_model_input; the DiT uses s = 1)
//   guided step   x' = x + dt·(lo + g·(hi − lo))                         lo/hi = the model's unguided/guided rows
//
// The TypeScript loop rounds once per element from float64 and these graphs round after every op: the two agree
// within a few float32 ulps per step (test/unit/worker/pipeline/scheduler-graphs.test.ts). The CPU provider keeps the
// TypeScript loop, whose PNG bytes the tests pin; these graphs run on CPU only when a test asks for them.
//
// Both graphs take the samples of one batched call as separate [1, …dims] tensors (each sample owns its latent and
// joins or leaves the step batcher between steps), so a graph exists per (batch size, latent dims); each is a few
// nodes, built and opened the first time its key is seen.
import { Graph } from '../builder/onnx/graph.ts';
import { concat, split, type Tensor } from '../builder/onnx/ops.ts';
import { openSession, type DeviceTensor, type ModelSession, type ResolvedProvider } from '../runtime/session.ts';

/** Which row of a sample's CFG pair is the one guidance moves away from (spec §3.4, §4; pitfall 8). */
export type PairOrder =
  /** DiT: rows (uncond, cond); guided = v_u + g·(v_c − v_u). */
  | 'uncond-first'
  /** UNet: rows (cond, negative); guided = ε_neg + g·(ε_cond − ε_neg). */
  | 'cond-first';

const per = (b: number, rank: number) => [b, ...Array<number>(rank).fill(1)]; // [B, 1, …, 1]: one scalar per sample

/**
 *   x_0 … x_{B−1} [1, …d] ─Concat→ [B, …d] ─Mul scale [B, 1…]→ ─Unsqueeze(1)→ [B, 1, …d] ─Concat([s, s], 1)→ [B, 2, …d]
 *                                                                                    ─Reshape→ input [2B, …d]
 */
export function buildCfgPairGraph(batch: number, dims: readonly number[]): Graph {
  const g = new Graph(`cfg-pair-b${batch}-${dims.join('x')}`);
  const xs = Array.from({ length: batch }, (_, i) => g.input(`x_${i}`, 'float32', [1, ...dims]));
  const scale = g.input('scale', 'float32', per(batch, dims.length));
  const scaled = concat(xs, 0).mul(scale).unsqueeze(1); // (B, 1, …d)
  g.output(concat([scaled, scaled], 1).reshape(2 * batch, ...dims), 'input'); // (2B, …d): rows 2i, 2i+1 = sample i
  return g;
}

/**
 *   out [2B, …d] ─Reshape→ [B, 2, …d] ─Split(1)→ r0, r1 ─Squeeze(1)→ lo, hi (by PairOrder)
 *   guided = lo + g·(hi − lo)            g, dt [B, 1…]
 *   x_0 … x_{B−1} ─Concat→ x;  x' = x + dt·guided  ─Split(0)→ next_0 … next_{B−1} [1, …d]
 */
export function buildGuidedStepGraph(order: PairOrder, batch: number, dims: readonly number[]): Graph {
  const g = new Graph(`guided-step-${order}-b${batch}-${dims.join('x')}`);
  const out = g.input('model_output', 'float32', [2 * batch, ...dims]);
  const xs = Array.from({ length: batch }, (_, i) => g.input(`x_${i}`, 'float32', [1, ...dims]));
  const guidance = g.input('guidance', 'float32', per(batch, dims.length));
  const dt = g.input('dt', 'float32', per(batch, dims.length));
  const [r0, r1] = split(out.reshape(batch, 2, ...dims), [1, 1], 1).map((r) => r.squeeze(1)) as [Tensor, Tensor]; // (B, …d) each
  const [lo, hi] = order === 'uncond-first' ? [r0, r1] : [r1, r0];
  const guided = lo.add(guidance.mul(hi.sub(lo)));
  const next = concat(xs, 0).add(dt.mul(guided)); // (B, …d)
  split(next, Array<number>(batch).fill(1), 0).forEach((t, i) => g.output(t, `next_${i}`));
  return g;
}

/** Opens each scheduler graph once per key on `provider`, its outputs kept where they are computed. */
export class SchedulerGraphs {
  private readonly sessions = new Map<string, Promise<ModelSession>>();

  constructor(
    readonly provider: ResolvedProvider,
    private readonly intraOpThreads = 0,
  ) {}

  /** Each sample's next model input: its latent times its input scale, written twice (its CFG pair): [2B, …dims]. */
  async cfgPair(xs: readonly DeviceTensor[], scales: readonly number[], dims: readonly number[]): Promise<DeviceTensor> {
    const s = await this.session(`pair ${xs.length} ${dims.join('x')}`, () => buildCfgPairGraph(xs.length, dims), ['input']);
    const feeds = Object.fromEntries(xs.map((x, i) => [`x_${i}`, x]));
    const { device } = await s.runOnDevice({ ...feeds, scale: { data: Float32Array.from(scales), dims: per(xs.length, dims.length) } });
    return device.input!;
  }

  /** Each sample's next latent x + dt·(guided model output), from the model's [2B, …dims] output. */
  async guidedStep(
    order: PairOrder,
    modelOutput: DeviceTensor,
    xs: readonly DeviceTensor[],
    guidance: readonly number[],
    dt: readonly number[],
    dims: readonly number[],
  ): Promise<DeviceTensor[]> {
    const b = xs.length;
    const names = Array.from({ length: b }, (_, i) => `next_${i}`);
    const s = await this.session(`step ${order} ${b} ${dims.join('x')}`, () => buildGuidedStepGraph(order, b, dims), names);
    const feeds = Object.fromEntries(xs.map((x, i) => [`x_${i}`, x]));
    const scalars = (v: readonly number[]) => ({ data: Float32Array.from(v), dims: per(b, dims.length) });
    const { device } = await s.runOnDevice({ model_output: modelOutput, ...feeds, guidance: scalars(guidance), dt: scalars(dt) });
    return names.map((n) => device[n]!);
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map(async (s) => (await s).release()));
  }

  private session(key: string, build: () => Graph, outputs: string[]): Promise<ModelSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = openSession(build().toBytes(), { executionProvider: this.provider, intraOpThreads: this.intraOpThreads, keepOnDevice: outputs });
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }
}
