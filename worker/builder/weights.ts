// Weights by checkpoint key, with shapes checked where they are declared (llama.cpp's create_tensor(name, {dims})).
//
//   const w = store.scope(graph, 'float16').at('model').at('layers').at(3);   // key prefix "model.layers.3."
//   const q = w.at('self_attn').at('q_proj').weight('weight', [H, H]);        // checked, lazily read
//
// A Scope is also a node path: w.at('self_attn').path === '/model/layers.3/self_attn', so nodes emitted inside
// `scope.within(() => …)` are named after the module that owns the weights. After every graph of a checkpoint
// is built, `store.assertAllUsed(skip)` fails on any key no graph declared (a renamed key or a forgotten bias),
// except for prefixes skipped on purpose (EVA-CLIP's `model.gen_vision_tower.` is training-only).
import { AppError } from '../../src/errors.ts';
import type { Graph } from './onnx/graph.ts';
import type { DType, Tensor } from './onnx/ops.ts';
import { keyToPath } from './onnx/graph.ts';
import type { Checkpoint } from './safetensors.ts';
import { quantizeBlockwise, type NBitsOptions, type Quantized } from './quant.ts';
import { fromFloat32 } from './safetensors.ts';

export interface WeightOptions {
  /** Store a 2-D [out, in] weight as [in, out] (done once, while converting). */
  transpose?: boolean;
  /** Store with this (row-major compatible) shape instead, e.g. a norm weight [C] as [C, 1, 1]. */
  reshape?: number[];
  /** Override the graph's float type, e.g. keep a norm in float32 under an fp16 graph. */
  dtype?: 'float32' | 'float16';
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

export class WeightStore {
  private readonly used = new Set<string>();

  constructor(readonly checkpoint: Checkpoint) {}

  has(key: string): boolean {
    return this.checkpoint.info(key) !== undefined;
  }
  /** The stored shape (for sizes an architecture reads from the checkpoint rather than from config). */
  shape(key: string): number[] | undefined {
    return this.checkpoint.info(key)?.shape;
  }

  /** Throws AppError('model') naming the key and both shapes unless `key` exists with exactly `expected`. */
  check(key: string, expected: readonly number[]): void {
    const info = this.checkpoint.info(key);
    if (!info)
      throw new AppError('model', `checkpoint is missing ${key} (expected shape ${fmt(expected)})`, { context: { key, expected } });
    if (info.shape.length !== expected.length || info.shape.some((d, i) => d !== expected[i]))
      throw new AppError('model', `${key} has shape ${fmt(info.shape)} in the checkpoint, expected ${fmt(expected)}`, {
        context: { key, expected, actual: info.shape },
      });
  }

  /** Reads a checked tensor as fp32 now (for values an architecture computes with in TypeScript). */
  read(key: string, expected: readonly number[]): Float32Array {
    this.check(key, expected);
    this.used.add(key);
    return this.checkpoint.readFloat32(key);
  }

  markUsed(key: string): void {
    this.used.add(key);
  }

  scope(graph: Graph, floatType: 'float32' | 'float16', prefix = ''): Scope {
    return new Scope(this, graph, floatType, prefix);
  }

  /** Keys no graph declared, and per skipped prefix how many keys it covered. */
  unused(skipPrefixes: readonly string[] = []): { unused: string[]; skipped: Record<string, number> } {
    const skipped: Record<string, number> = Object.fromEntries(skipPrefixes.map((p) => [p, 0]));
    const unused: string[] = [];
    for (const key of this.checkpoint.keys()) {
      if (this.used.has(key)) continue;
      const p = skipPrefixes.find((s) => key.startsWith(s));
      if (p !== undefined) skipped[p]!++;
      else unused.push(key);
    }
    return { unused: unused.sort(), skipped };
  }

  assertAllUsed(skipPrefixes: readonly string[] = []): { skipped: Record<string, number> } {
    const { unused, skipped } = this.unused(skipPrefixes);
    if (unused.length)
      throw new AppError('model', `${unused.length} checkpoint keys are not used by any graph, e.g. ${unused.slice(0, 5).join(', ')}`, {
        context: { unused },
      });
    return { skipped };
  }
}

export class Scope {
  constructor(
    readonly store: WeightStore,
    readonly graph: Graph,
    readonly floatType: 'float32' | 'float16',
    /** Key prefix without the trailing dot ('' at the root). */
    readonly prefix: string,
    /** Linear layers under this scope store block-quantized weights (MatMulNBits) when set. */
    readonly quant?: NBitsOptions,
  ) {}

  at(name: string | number): Scope {
    return new Scope(this.store, this.graph, this.floatType, this.key(String(name)), this.quant);
  }
  /** The same module with `linear` layers quantized (or not, with undefined). */
  withQuant(quant: NBitsOptions | undefined): Scope {
    return new Scope(this.store, this.graph, this.floatType, this.prefix, quant);
  }
  key(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }
  /** Node path for this module: `/model/layers.3/self_attn`. */
  get path(): string {
    return this.prefix ? keyToPath(this.prefix) : '';
  }
  has(name: string): boolean {
    return this.store.has(this.key(name));
  }
  shape(name: string): number[] | undefined {
    return this.store.shape(this.key(name));
  }

  /** Emits nodes named under this module's path. */
  within<T>(fn: () => T): T {
    return this.graph.within(this.path, fn);
  }

  /** A checked weight as a graph initializer, read from the checkpoint only when the graph is written. */
  weight(name: string, expectedShape: readonly number[], opts: WeightOptions = {}): Tensor {
    const key = this.key(name);
    this.store.check(key, expectedShape);
    this.store.markUsed(key);
    const dtype: DType = opts.dtype ?? this.floatType;
    let dims = [...expectedShape];
    if (opts.transpose) {
      if (dims.length !== 2) throw new AppError('internal', `transpose of ${key} needs a 2-D weight, got ${fmt(dims)}`);
      dims = [dims[1]!, dims[0]!];
    }
    if (opts.reshape) {
      if (opts.reshape.reduce((a, d) => a * d, 1) !== dims.reduce((a, d) => a * d, 1))
        throw new AppError('internal', `cannot reshape ${key} ${fmt(dims)} to ${fmt(opts.reshape)}`);
      dims = [...opts.reshape];
    }
    const ckpt = this.store.checkpoint;
    const [rows, cols] = expectedShape;
    return this.graph.initializer(key, dtype, dims, () => {
      let values = ckpt.readFloat32(key);
      if (opts.transpose) values = transpose2d(values, rows!, cols!);
      return fromFloat32(dtype === 'float16' ? 'F16' : 'F32', values);
    });
  }

  /**
   * A checked [N, K] weight as MatMulNBits initializers (`<key>_Q<bits>` uint8 [N, k_blocks, blob], `<key>_scales`
   * in the graph's float type, `<key>_zp` uint8). The weight is read and quantized once, when the first of the
   * three is written, and dropped after the last (they are written one after the other).
   */
  nbitsWeight(name: string, shape: readonly [number, number]): { B: Tensor; scales: Tensor; zeroPoints: Tensor; quant: NBitsOptions } {
    const q = this.quant;
    if (!q) throw new AppError('internal', `nbitsWeight(${this.key(name)}) outside a quantized scope`);
    const key = this.key(name);
    this.store.check(key, shape);
    this.store.markUsed(key);
    const [N, K] = shape;
    const ckpt = this.store.checkpoint;
    let memo: Quantized | undefined;
    const get = () => (memo ??= quantizeBlockwise(ckpt.readFloat32(key), N, K, q));
    const kBlocks = Math.ceil(K / q.blockSize);
    const float = this.floatType;
    const B = this.graph.initializer(`${key}_Q${q.bits}`, 'uint8', [N, kBlocks, (q.blockSize * q.bits) / 8], () => get().packed);
    const scales = this.graph.initializer(`${key}_scales`, float, [N * kBlocks], () => fromFloat32(float === 'float16' ? 'F16' : 'F32', get().scales));
    const zeroPoints = this.graph.initializer(`${key}_zp`, 'uint8', [N * Math.ceil((kBlocks * q.bits) / 8)], () => {
      const zp = get().zeroPoints;
      memo = undefined;
      return zp;
    });
    return { B, scales, zeroPoints, quant: q };
  }

  /** Like `weight`, but undefined when the checkpoint lacks the key (e.g. an untied lm_head). */
  optionalWeight(name: string, expectedShape: readonly number[], opts: WeightOptions = {}): Tensor | undefined {
    return this.has(name) ? this.weight(name, expectedShape, opts) : undefined;
  }
}

/** (rows, cols) row-major → (cols, rows) row-major, in cache-friendly tiles. */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T)
    for (let c0 = 0; c0 < cols; c0 += T)
      for (let r = r0; r < Math.min(rows, r0 + T); r++)
        for (let c = c0; c < Math.min(cols, c0 + T); c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}
