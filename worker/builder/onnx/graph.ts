// A Graph collects inputs, outputs, initializers and nodes emitted by the op DSL (ops.ts) and writes a .onnx file.
// Conventions from onnxruntime-genai's builder DESIGN.md:
//  - node names are module paths: `/model/layers.0/self_attn/q_proj/MatMul`; outputs are `<node>/output_<k>`;
//  - constants are initializers deduplicated by name: `/model/constants/INT64/[1,2]`;
//  - initializers may hold their bytes lazily (a thunk reading the checkpoint), so saving streams one tensor at
//    a time into `<file>.data` (external data) and never holds a whole model in memory.
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import { AppError } from '../../../src/errors.ts';
import { f32ToF16 } from '../safetensors.ts';
import type { Attrs, DType, NodeSink, Shape } from './ops.ts';
import { Tensor } from './ops.ts';
import type { ModelDesc, NodeDesc, TensorDesc, ValueInfoDesc } from './proto.ts';
import { bytesOf, encodeModel } from './proto.ts';

export const OPSET = 17;

export interface Initializer {
  name: string;
  dtype: DType;
  dims: number[];
  /** Bytes, or a function producing them when the file is written (weights read from the checkpoint). */
  data: Uint8Array | (() => Uint8Array);
}

export interface SaveOptions {
  /** 'auto' = external when initializers exceed `externalThresholdBytes` (protobuf caps a file at 2 GB). @defaultValue 'auto' */
  externalData?: boolean | 'auto';
  /** @defaultValue 512 MiB */
  externalThresholdBytes?: number;
  /** Called after each initializer is written (for progress bars). */
  onTensor?(name: string, bytes: number): void;
}

const DT_NAME: Record<DType, string> = { float32: 'FLOAT', float16: 'FLOAT16', int64: 'INT64', int32: 'INT32', bool: 'BOOL', uint8: 'UINT8' };

/** `model.layers.0.self_attn.q_proj` → `/model/layers.0/self_attn/q_proj` (numeric parts stay with their list). */
export function keyToPath(key: string): string {
  const parts: string[] = [];
  for (const p of key.split('.')) {
    if (/^\d+$/.test(p) && parts.length) parts[parts.length - 1] += `.${p}`;
    else parts.push(p);
  }
  return '/' + parts.join('/');
}

export function encodeValues(dtype: DType, values: readonly number[]): Uint8Array {
  const buf = new ArrayBuffer(values.length * bytesOf(dtype));
  const dv = new DataView(buf);
  values.forEach((v, i) => {
    switch (dtype) {
      case 'float32': dv.setFloat32(i * 4, v, true); break;
      case 'float16': dv.setUint16(i * 2, f32ToF16(v), true); break;
      case 'int64': dv.setBigInt64(i * 8, BigInt(v), true); break;
      case 'int32': dv.setInt32(i * 4, v, true); break;
      default: dv.setUint8(i, v);
    }
  });
  return new Uint8Array(buf);
}

/** fs.writeSync takes at most 2 GiB − 1 per call; an 8B lm_head in fp32 is 2.2 GB. */
function writeAll(fd: number, data: Uint8Array, position: number): void {
  const CHUNK = 1 << 30;
  for (let off = 0; off < data.byteLength; ) {
    const n = writeSync(fd, data, off, Math.min(CHUNK, data.byteLength - off), position + off);
    off += n;
  }
}

export class Graph implements NodeSink {
  readonly inputs: ValueInfoDesc[] = [];
  readonly outputs: ValueInfoDesc[] = [];
  readonly nodes: NodeDesc[] = [];
  readonly initializers = new Map<string, Initializer>();
  readonly metadata: Record<string, string> = {};
  private path = '';
  private readonly nodeNames = new Map<string, number>();

  constructor(readonly name: string) {}

  input(name: string, dtype: DType, shape: Shape): Tensor {
    this.inputs.push({ name, dtype, shape });
    return new Tensor(this, name, dtype, shape);
  }

  /** Declares `t` as a graph output called `name`, through an Identity node (so `t` stays usable afterwards;
   *  onnxruntime removes the Identity when it optimises the graph). */
  output(t: Tensor, name: string): void {
    this.nodes.push({ name: `/output/${name}/Identity`, opType: 'Identity', inputs: [t.name], outputs: [name], attrs: {} });
    const shape = t.shape?.map((d, i) => (d === '?' ? `${name}_dim_${i}` : d));
    this.outputs.push({ name, dtype: t.dtype, shape });
  }

  /** Runs `fn` with node names under `path`: absolute ('/model/layers.0', '' = root) or relative to the current path ('rope'). */
  within<T>(path: string, fn: () => T): T {
    const saved = this.path;
    this.path = path === '' || path.startsWith('/') ? path : `${saved}/${path}`;
    try {
      return fn();
    } finally {
      this.path = saved;
    }
  }

  emit(opType: string, inputs: (Tensor | undefined)[], attrs: Attrs, outputCount: number, domain?: string): string[] {
    const base = `${this.path}/${opType}`;
    const k = this.nodeNames.get(base) ?? 0;
    this.nodeNames.set(base, k + 1);
    const name = k === 0 ? base : `${base}_${k}`;
    const outputs = Array.from({ length: outputCount }, (_, i) => `${name}/output_${i}`);
    // ONNX marks an omitted optional input with an empty name.
    const node: NodeDesc = { name, opType, inputs: inputs.map((t) => t?.name ?? ''), outputs, attrs };
    while (node.inputs.length && node.inputs[node.inputs.length - 1] === '') node.inputs.pop();
    if (domain) node.domain = domain;
    this.nodes.push(node);
    return outputs;
  }

  constant(dtype: DType, dims: number[], values: readonly number[]): Tensor {
    const shown = values.length <= 8 ? `[${values.join(',')}]` : createHash('sha1').update(values.join(',')).digest('hex').slice(0, 12);
    const name = `/model/constants/${DT_NAME[dtype]}/${dims.length <= 1 ? '' : JSON.stringify(dims)}${dims.length === 0 ? values[0] : shown}`;
    if (!this.initializers.has(name)) this.initializers.set(name, { name, dtype, dims, data: encodeValues(dtype, values) });
    const small = dtype === 'int64' && values.length <= 8 ? values : undefined;
    return new Tensor(this, name, dtype, dims, small);
  }

  /** A named initializer (a weight). Declaring the same name twice with the same dims returns the same tensor. */
  initializer(name: string, dtype: DType, dims: number[], data: Initializer['data']): Tensor {
    const prev = this.initializers.get(name);
    if (prev && (prev.dtype !== dtype || prev.dims.join() !== dims.join()))
      throw new AppError('internal', `initializer ${name} declared twice with different layouts`);
    if (!prev) this.initializers.set(name, { name, dtype, dims, data });
    return new Tensor(this, name, dtype, dims);
  }

  initializerBytes(): number {
    let n = 0;
    for (const i of this.initializers.values()) n += i.dims.reduce((a, d) => a * d, 1) * bytesOf(i.dtype);
    return n;
  }

  /** The model with inline tensors (materialises every lazy initializer: for small graphs and tests). */
  toModel(): ModelDesc {
    const initializers: TensorDesc[] = [...this.initializers.values()].map((i) => ({
      name: i.name, dtype: i.dtype, dims: i.dims, data: typeof i.data === 'function' ? i.data() : i.data,
    }));
    return this.desc(initializers);
  }

  toBytes(): Uint8Array {
    return encodeModel(this.toModel());
  }

  /** Writes `path` (and `path + '.data'` when external). Returns whether external data was used. */
  save(path: string, opts: SaveOptions = {}): { external: boolean; bytes: number } {
    const total = this.initializerBytes();
    const ext = opts.externalData ?? 'auto';
    const external = ext === 'auto' ? total > (opts.externalThresholdBytes ?? 512 * 1024 * 1024) : ext;
    const tensors: TensorDesc[] = [];
    if (!external) {
      for (const i of this.initializers.values()) {
        const data = typeof i.data === 'function' ? i.data() : i.data;
        tensors.push({ name: i.name, dtype: i.dtype, dims: i.dims, data });
        opts.onTensor?.(i.name, data.byteLength);
      }
      writeFileSync(path, encodeModel(this.desc(tensors)));
      return { external, bytes: total };
    }
    const location = `${basename(path)}.data`;
    const fd = openSync(`${path}.data`, 'w');
    let offset = 0;
    try {
      for (const i of this.initializers.values()) {
        const data = typeof i.data === 'function' ? i.data() : i.data;
        if (data.byteLength < 1024) {
          // small constants stay inline: onnxruntime's shape inference cannot read shape tensors (Reshape/Unsqueeze
          // axes) from external data ("Cannot parse data from external tensors")
          tensors.push({ name: i.name, dtype: i.dtype, dims: i.dims, data });
          opts.onTensor?.(i.name, data.byteLength);
          continue;
        }
        const aligned = Math.ceil(offset / 64) * 64; // keep tensors aligned for mmap-friendly loading
        if (aligned > offset) writeSync(fd, new Uint8Array(aligned - offset), 0, aligned - offset, offset);
        writeAll(fd, data, aligned);
        tensors.push({ name: i.name, dtype: i.dtype, dims: i.dims, data: { location, offset: aligned, length: data.byteLength } });
        offset = aligned + data.byteLength;
        opts.onTensor?.(i.name, data.byteLength);
      }
    } finally {
      closeSync(fd);
    }
    writeFileSync(path, encodeModel(this.desc(tensors)));
    return { external, bytes: total };
  }

  private desc(initializers: TensorDesc[]): ModelDesc {
    return {
      graphName: this.name,
      producer: 'blip3o-chat-bot model builder',
      opset: OPSET,
      inputs: this.inputs,
      outputs: this.outputs,
      nodes: this.nodes,
      initializers,
      metadata: this.metadata,
    };
  }
}
