// The only file that imports onnxruntime-node (style.md §3). Everything else speaks plain typed arrays:
//   const s = await openSession('models/onnx/decoder.onnx', { executionProvider: 'auto', intraOpThreads: 0 });
//   const out = await s.run({ input_ids: { data: BigInt64Array.from([1n, 2n]), dims: [1, 2] } });
//   out.logits.data  // Float32Array (fp16 outputs are widened)
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { AppError } from '../../src/errors.ts';
import { Graph } from '../builder/onnx/graph.ts';
import { hostGpus, softwareOnly } from './adapter.ts';
import type { DType } from '../builder/onnx/ops.ts';

let cudaInstalled: boolean | undefined;
/**
 * Whether this onnxruntime-node install carries the CUDA provider library (ONNXRUNTIME_NODE_INSTALL=cuda12 puts
 * libonnxruntime_providers_cuda.so next to the binding; CPU installs skip it). 'auto' only tries CUDA then, so
 * CPU hosts do not log onnxruntime's "failed to load providers_shared" error at every session.
 */
export function cudaProviderInstalled(): boolean {
  if (cudaInstalled !== undefined) return cudaInstalled;
  const walk = (dir: string): boolean =>
    readdirSync(dir, { withFileTypes: true }).some((e) => (e.isDirectory() ? walk(join(dir, e.name)) : /providers_cuda\.(so|dll)/.test(e.name)));
  try {
    const pkg = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    cudaInstalled = walk(join(pkg, 'bin'));
  } catch {
    cudaInstalled = true; // cannot tell: let onnxruntime try
  }
  return cudaInstalled;
}

export type ExecutionProvider = 'auto' | 'cuda' | 'webgpu' | 'cpu';
/** The provider a session really runs on ('auto' resolved). */
export type ResolvedProvider = Exclude<ExecutionProvider, 'auto'>;

export interface SessionOptions {
  /** 'auto' = CUDA when this onnxruntime build carries it and it works, else WebGPU when a GPU adapter is found, else CPU;
   *  'cuda' / 'webgpu' = fail fast without it. @defaultValue 'auto' */
  executionProvider?: ExecutionProvider;
  /** Threads for CPU kernels; 0 = onnxruntime's default (one per core). @defaultValue 0 */
  intraOpThreads?: number;
  /**
   * onnxruntime graph optimizations. 'disabled' keeps fp16 initializers fp16 in memory on the CPU provider (with
   * 'all', constant folding turns the Casts it inserts in front of fp16-less CPU kernels into fp32 copies of the
   * weights: twice the memory), at the price of casting weights at run time. @defaultValue 'all'
   */
  graphOptimization?: 'all' | 'basic' | 'disabled';
  /**
   * onnxruntime's CPU memory arena, which keeps the peak of every run's buffers. With `graphOptimization: 'disabled'`
   * turn it off: the fp32 casts of fp16 weights made at run time would otherwise stay resident, and grow from run
   * to run (real-size DiT: 5.3 GB after one forward, 7.8 GB after two, vs 3.5 GB steady without the arena).
   * @defaultValue true
   */
  cpuMemArena?: boolean;
  /** Outputs (by name) that stay where the provider computed them (WebGPU: a GPU buffer); `runOnDevice` returns them as
   *  `DeviceTensor`s that the next run takes as inputs without a copy through host memory. */
  keepOnDevice?: readonly string[];
  /** Writes onnxruntime's per-node profile (`<prefix>_<time>.json`, node → provider, shapes) until `endProfiling()`. */
  profilePrefix?: string;
}

export type InputData = Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;
/** A run input. Uint16Array means float16 bits (for fp16 graphs). */
export interface TensorInput {
  data: InputData;
  dims: readonly number[];
}
export interface TensorOutput {
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array;
  dims: number[];
  /** The dtype the graph produced (float16 outputs are returned widened to Float32Array). */
  type: string;
}

/**
 * A tensor that stays where a session left it: on the GPU under WebGPU, in host memory on CPU/CUDA (the Node binding
 * binds GPU buffers for WebGPU only). Pass it as a run input; `dispose()` frees the GPU buffer once nothing needs it.
 * Reading it back is not offered: onnxruntime-node 1.30 aborts the process when a WebGPU buffer is downloaded
 * (`Tensor.getData()`), so whatever the host needs is asked for as a host output instead.
 */
export class DeviceTensor {
  private disposed = false;
  /** @internal */
  constructor(
    readonly tensor: ort.Tensor,
    /** True when the data is in GPU memory. */
    readonly onDevice: boolean,
  ) {}
  get dims(): readonly number[] {
    return this.tensor.dims;
  }
  get type(): string {
    return this.tensor.type;
  }
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.onDevice) this.tensor.dispose();
  }
}

/** Bytes that crossed between host and GPU memory through the binding (zero on the CPU provider). */
export interface TransferCounts {
  toDevice: number;
  toHost: number;
  runs: number;
}
const totals: TransferCounts = { toDevice: 0, toHost: 0, runs: 0 };
/** Transfers of every session in this process since it started (a copy). */
export function transferTotals(): TransferCounts {
  return { ...totals };
}

const BYTES: Record<string, number> = { float32: 4, float16: 2, int64: 8, int32: 4, bool: 1, uint8: 1, int8: 1 };
const byteSize = (type: string, dims: readonly number[]) => (BYTES[type] ?? 4) * dims.reduce((a, b) => a * b, 1);

function toOrt(t: TensorInput): ort.Tensor {
  const d = t.data;
  const dims = [...t.dims];
  if (d instanceof Float32Array) return new ort.Tensor('float32', d, dims);
  if (d instanceof BigInt64Array) return new ort.Tensor('int64', d, dims);
  if (d instanceof Int32Array) return new ort.Tensor('int32', d, dims);
  if (d instanceof Uint16Array) return new ort.Tensor('float16', d, dims);
  return new ort.Tensor('bool', d, dims);
}

function halfToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

function fromOrt(t: ort.Tensor): TensorOutput {
  const dims = [...t.dims];
  if (t.type === 'float16') {
    const data = t.data as unknown;
    const out = data instanceof Uint16Array ? halfToFloat(data) : Float32Array.from(data as ArrayLike<number>);
    return { data: out, dims, type: t.type };
  }
  return { data: t.data as TensorOutput['data'], dims, type: t.type };
}

export class ModelSession {
  /** Host↔GPU bytes of this session's runs (zero on the CPU provider). */
  readonly transfers: TransferCounts = { toDevice: 0, toHost: 0, runs: 0 };

  private readonly kept: ReadonlySet<string>;

  constructor(
    private readonly session: ort.InferenceSession,
    /** The execution provider actually in use. */
    readonly provider: ResolvedProvider,
    keepOnDevice: readonly string[] = [],
  ) {
    this.kept = new Set(keepOnDevice);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Runs the graph. Returns every output, or only those named in `outputs` (none of them may be kept on the device). */
  async run(inputs: Record<string, TensorInput | DeviceTensor>, outputs?: readonly string[]): Promise<Record<string, TensorOutput>> {
    const { host, device } = await this.runOnDevice(inputs, outputs);
    const kept = Object.keys(device);
    if (kept.length) {
      for (const d of Object.values(device)) d.dispose();
      throw new AppError('internal', `run() would lose device outputs ${kept.join(', ')}; use runOnDevice()`);
    }
    return host;
  }

  /** Runs the graph; outputs matching `keepOnDevice` come back as DeviceTensors, the others in host memory. */
  async runOnDevice(
    inputs: Record<string, TensorInput | DeviceTensor>,
    outputs?: readonly string[],
  ): Promise<{ host: Record<string, TensorOutput>; device: Record<string, DeviceTensor> }> {
    const gpu = this.provider !== 'cpu';
    const feeds: Record<string, ort.Tensor> = {};
    let up = 0;
    for (const [k, v] of Object.entries(inputs)) {
      if (v instanceof DeviceTensor) {
        feeds[k] = v.tensor;
        if (gpu && !v.onDevice) up += byteSize(v.type, v.dims);
      } else {
        feeds[k] = toOrt(v);
        if (gpu) up += v.data.byteLength;
      }
    }
    // onnxruntime-node 1.30, on a session with preferredOutputLocation, hands the last run's value of an output that
    // a run does not fetch back to onnxruntime as that output's pre-allocated buffer: a shape change fails the run
    // ("Tensor size mismatch"), an equal shape overwrites a tensor the caller may still hold. So such a session
    // fetches every output on every run and drops the unwanted ones (freeing their GPU buffers).
    const extra = outputs && this.provider === 'webgpu' && this.kept.size ? this.session.outputNames.filter((k) => !outputs.includes(k)) : [];
    const res = outputs ? await this.session.run(feeds, [...outputs, ...extra]) : await this.session.run(feeds);
    const host: Record<string, TensorOutput> = {};
    const device: Record<string, DeviceTensor> = {};
    let down = 0;
    for (const [k, v] of Object.entries(res)) {
      if (extra.includes(k)) {
        if (v.location === 'gpu-buffer') v.dispose();
        continue;
      }
      if (this.kept.has(k)) {
        device[k] = new DeviceTensor(v, v.location === 'gpu-buffer');
        if (gpu && v.location !== 'gpu-buffer') down += byteSize(v.type, v.dims);
      } else {
        host[k] = fromOrt(v);
        if (gpu) down += byteSize(v.type, v.dims);
      }
    }
    for (const c of [this.transfers, totals]) {
      c.toDevice += up;
      c.toHost += down;
      c.runs++;
    }
    return { host, device };
  }

  /** Stops the profile `profilePrefix` asked for and writes its file. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

// ---- opening a session on a provider ----------------------------------------------------------------------------

/** Dawn (WebGPU on Vulkan) logs errors without a runtime directory; containers often have none. */
function ensureRuntimeDir(): void {
  if (process.env.XDG_RUNTIME_DIR) return;
  process.env.XDG_RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'blip3o-xdg-'));
}

/** Why WebGPU could not be used in this process (onnxruntime keeps one WebGPU context per process, so one try is enough). */
let webgpuFailure: string | undefined;

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 300);

/** Opens a session on a .onnx file (its external `.data` file is found next to it) or on model bytes held in memory. */
export async function openSession(model: string | Uint8Array, opts: SessionOptions = {}): Promise<ModelSession> {
  const modelPath = typeof model === 'string' ? model : `<${model.byteLength} bytes in memory>`;
  const ep = opts.executionProvider ?? 'auto';
  const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: opts.graphOptimization ?? 'all' };
  if (opts.intraOpThreads) base.intraOpNumThreads = opts.intraOpThreads;
  if (opts.cpuMemArena === false) base.enableCpuMemArena = false;
  if (opts.profilePrefix) {
    base.enableProfiling = true;
    base.profileFilePrefix = opts.profilePrefix;
  }
  const create = async (provider: ResolvedProvider): Promise<ModelSession> => {
    const o: ort.InferenceSession.SessionOptions = { ...base, executionProviders: [provider] };
    if (provider === 'webgpu') {
      ensureRuntimeDir();
      if (opts.keepOnDevice?.length) o.preferredOutputLocation = Object.fromEntries(opts.keepOnDevice.map((n) => [n, 'gpu-buffer' as const]));
    }
    const s = typeof model === 'string' ? await ort.InferenceSession.create(model, o) : await ort.InferenceSession.create(model, o);
    return new ModelSession(s, provider, opts.keepOnDevice);
  };

  if (ep === 'cuda' || (ep === 'auto' && cudaProviderInstalled())) {
    try {
      return await create('cuda');
    } catch (e) {
      // the reason goes in the message, as for WebGPU: a missing library and a GPU out of memory need different fixes
      if (ep === 'cuda')
        throw new AppError('config', `model.executionProvider is cuda but onnxruntime could not use CUDA for ${modelPath}: ${errorText(e)}`, { cause: e });
    }
  }
  // 'auto' here is a session opened without the start-up probe (tools, benches): WebGPU only on a GPU device node.
  if (ep === 'webgpu' || (ep === 'auto' && webgpuFailure === undefined && !softwareOnly(hostGpus()))) {
    try {
      return await create('webgpu');
    } catch (e) {
      const why = errorText(e);
      if (/adapter|webgpu|dawn|vulkan/i.test(why)) webgpuFailure = why;
      if (ep === 'webgpu')
        throw new AppError('config', `model.executionProvider is webgpu but onnxruntime could not use WebGPU for ${modelPath}: ${why}`, { cause: e });
    }
  }
  try {
    return await create('cpu');
  } catch (e) {
    throw new AppError('model', `onnxruntime could not load ${modelPath}: ${errorText(e)}`, { cause: e });
  }
}

// ---- uploads and downloads --------------------------------------------------------------------------------------

/** One-node Identity graphs on WebGPU, one per direction, dtype and rank: the binding's one way to move a tensor into
 *  a GPU buffer (output kept on the device) or out of one (output copied to the host). */
const identities = new Map<string, Promise<ModelSession>>();
function identitySession(direction: 'upload' | 'download', dtype: DType, rank: number): Promise<ModelSession> {
  const key = `${direction}/${dtype}/${rank}`;
  let s = identities.get(key);
  if (!s) {
    const g = new Graph(`${direction}-${dtype}-rank${rank}`);
    g.output(g.input('x', dtype, Array.from({ length: rank }, (_, i) => `d${i}`)), 'y');
    s = openSession(g.toBytes(), { executionProvider: 'webgpu', ...(direction === 'upload' ? { keepOnDevice: ['y'] } : {}) });
    identities.set(key, s);
    s.catch(() => identities.delete(key));
  }
  return s;
}

const DTYPE_OF = (d: InputData): DType =>
  d instanceof Float32Array ? 'float32' : d instanceof BigInt64Array ? 'int64' : d instanceof Int32Array ? 'int32' : d instanceof Uint16Array ? 'float16' : 'bool';

/**
 * Puts a host tensor where `provider` computes, once, for inputs that many runs share (the conditioning of every
 * diffusion step): on WebGPU through a one-node Identity graph whose output stays a GPU buffer; elsewhere the host
 * tensor itself. Counted in the transfer totals once.
 */
export async function toDevice(t: TensorInput, provider: ResolvedProvider): Promise<DeviceTensor> {
  if (provider !== 'webgpu') return new DeviceTensor(toOrt(t), false);
  const { device } = await (await identitySession('upload', DTYPE_OF(t.data), t.dims.length)).runOnDevice({ x: t });
  return device.y!;
}

/**
 * Brings a device tensor back to host memory once (a final latent): on WebGPU through a one-node Identity graph whose
 * output the binding copies to the host (the one read-back path that works: `Tensor.getData()` on a GPU buffer aborts,
 * see DeviceTensor); a host-memory DeviceTensor is read as it is. Counted in the transfer totals.
 */
export async function toHost(t: DeviceTensor): Promise<TensorOutput> {
  if (!t.onDevice) return fromOrt(t.tensor);
  const { host } = await (await identitySession('download', t.type as DType, t.dims.length)).runOnDevice({ x: t });
  return host.y!;
}
