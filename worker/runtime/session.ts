// The only file that imports onnxruntime-node (style.md §3). Everything else speaks plain typed arrays:
//   const s = await openSession('models/onnx/decoder.onnx', { executionProvider: 'auto', intraOpThreads: 0 });
//   const out = await s.run({ input_ids: { data: BigInt64Array.from([1n, 2n]), dims: [1, 2] } });
//   out.logits.data  // Float32Array (fp16 outputs are widened)
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { AppError } from '../../src/errors.ts';

let cudaInstalled: boolean | undefined;
/**
 * Whether this onnxruntime-node install carries the CUDA provider library (ONNXRUNTIME_NODE_INSTALL=cuda12 puts
 * libonnxruntime_providers_cuda.so next to the binding; CPU installs skip it). 'auto' only tries CUDA then, so
 * CPU hosts do not log onnxruntime's "failed to load providers_shared" error at every session.
 */
function cudaProviderInstalled(): boolean {
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

export type ExecutionProvider = 'auto' | 'cuda' | 'cpu';

export interface SessionOptions {
  /** 'auto' = CUDA when this onnxruntime build can use it, else CPU; 'cuda' = fail fast without it. @defaultValue 'auto' */
  executionProvider?: ExecutionProvider;
  /** Threads for CPU kernels; 0 = onnxruntime's default (one per core). @defaultValue 0 */
  intraOpThreads?: number;
  /**
   * onnxruntime graph optimizations. 'disabled' keeps fp16 initializers fp16 in memory on the CPU provider (with
   * 'all', constant folding turns the Casts it inserts in front of fp16-less CPU kernels into fp32 copies of the
   * weights: twice the memory), at the price of casting weights at run time. @defaultValue 'all'
   */
  graphOptimization?: 'all' | 'basic' | 'disabled';
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
  constructor(
    private readonly session: ort.InferenceSession,
    /** The execution provider actually in use. */
    readonly provider: 'cuda' | 'cpu',
  ) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Runs the graph. Returns every output, or only those named in `outputs`. */
  async run(inputs: Record<string, TensorInput>, outputs?: readonly string[]): Promise<Record<string, TensorOutput>> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(inputs)) feeds[k] = toOrt(v);
    const res = outputs ? await this.session.run(feeds, [...outputs]) : await this.session.run(feeds);
    const out: Record<string, TensorOutput> = {};
    for (const [k, v] of Object.entries(res)) out[k] = fromOrt(v);
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Opens a session on a .onnx file (its external `.data` file is found next to it) or on model bytes held in memory. */
export async function openSession(model: string | Uint8Array, opts: SessionOptions = {}): Promise<ModelSession> {
  const modelPath = typeof model === 'string' ? model : `<${model.byteLength} bytes in memory>`;
  const create = (o: ort.InferenceSession.SessionOptions) =>
    typeof model === 'string' ? ort.InferenceSession.create(model, o) : ort.InferenceSession.create(model, o);
  const ep = opts.executionProvider ?? 'auto';
  const base: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: opts.graphOptimization ?? 'all' };
  if (opts.intraOpThreads) base.intraOpNumThreads = opts.intraOpThreads;
  if (ep === 'cuda' || (ep === 'auto' && cudaProviderInstalled())) {
    try {
      const s = await create({ ...base, executionProviders: ['cuda'] });
      return new ModelSession(s, 'cuda');
    } catch (e) {
      if (ep === 'cuda')
        throw new AppError('config', `model.executionProvider is cuda but onnxruntime could not use CUDA for ${modelPath}`, { cause: e });
    }
  }
  try {
    return new ModelSession(await create({ ...base, executionProviders: ['cpu'] }), 'cpu');
  } catch (e) {
    throw new AppError('model', `onnxruntime could not load ${modelPath}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}
