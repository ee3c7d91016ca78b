// Safetensors reader and writer (format: https://github.com/huggingface/safetensors#format).
//
//   [u64 little-endian N][N bytes of JSON header, space padded][data]
//   header: { "<key>": { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {str: str} }
//   offsets are relative to the first byte after the header.
//
// Reading is lazy and per tensor (fs.readSync at the tensor's offset), so converting an 8B checkpoint holds at
// most one tensor (plus its converted copy) in memory at a time. Sharded checkpoints are joined through
// model.safetensors.index.json (`weight_map`: key → shard file name).
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { AppError } from '../../src/errors.ts';

export type SafeDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
const BYTES: Record<SafeDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface TensorInfo {
  key: string;
  dtype: SafeDType;
  shape: number[];
  /** Absolute byte range in `file`. */
  begin: number;
  end: number;
  file: string;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024; // the reference implementation's own limit

const corrupt = (file: string, why: string, cause?: unknown) =>
  new AppError('model', `${basename(file)} is not a valid safetensors file: ${why}`, { cause, context: { file } });

/** One .safetensors file: the header is parsed and validated on open; tensor bytes are read on demand. */
export class SafetensorsFile {
  readonly tensors = new Map<string, TensorInfo>();
  readonly metadata: Record<string, string>;
  private fd: number | undefined;

  constructor(readonly path: string) {
    if (!existsSync(path)) throw new AppError('model', `missing checkpoint file ${path}`, { context: { file: path } });
    const fd = openSync(path, 'r');
    this.fd = fd;
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw corrupt(path, `only ${size} bytes (truncated)`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > size)
        throw corrupt(path, `header length ${headerLen} does not fit in the ${size}-byte file (truncated or not safetensors)`);
      const headerBuf = Buffer.alloc(headerLen);
      readSync(fd, headerBuf, 0, headerLen, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
      } catch (e) {
        throw corrupt(path, 'header is not JSON', e);
      }
      const dataStart = 8 + headerLen;
      this.metadata = (header.__metadata__ as Record<string, string> | undefined) ?? {};
      for (const [key, raw] of Object.entries(header)) {
        if (key === '__metadata__') continue;
        const entry = raw as { dtype?: string; shape?: number[]; data_offsets?: number[] };
        const dtype = entry.dtype as SafeDType;
        if (!(dtype in BYTES)) throw corrupt(path, `${key} has unsupported dtype ${entry.dtype}`);
        const [b, e] = entry.data_offsets ?? [];
        const shape = entry.shape;
        if (!Array.isArray(shape) || b === undefined || e === undefined) throw corrupt(path, `${key} lacks shape or data_offsets`);
        const want = shape.reduce((a, d) => a * d, 1) * BYTES[dtype];
        if (e - b !== want) throw corrupt(path, `${key} ${dtype}[${shape}] needs ${want} bytes, offsets give ${e - b}`);
        if (dataStart + e > size)
          throw corrupt(path, `${key} ends at byte ${dataStart + e} but the file has ${size} bytes (truncated)`);
        this.tensors.set(key, { key, dtype, shape, begin: dataStart + b, end: dataStart + e, file: path });
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  read(info: TensorInfo): Buffer {
    if (this.fd === undefined) this.fd = openSync(this.path, 'r');
    const buf = Buffer.alloc(info.end - info.begin);
    let done = 0;
    while (done < buf.length) {
      const n = readSync(this.fd, buf, done, buf.length - done, info.begin + done);
      if (n === 0) throw corrupt(this.path, `unexpected end of file while reading ${info.key}`);
      done += n;
    }
    return buf;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** A whole checkpoint folder: one model.safetensors, or shards joined by model.safetensors.index.json. */
export class Checkpoint {
  private readonly files: SafetensorsFile[] = [];
  private readonly index = new Map<string, { file: SafetensorsFile; info: TensorInfo }>();

  /** `dir` holds `<prefix>.safetensors` or `<prefix>.safetensors.index.json` (prefix `model`, or e.g. `diffusion_pytorch_model.bf16`). */
  /**
   * `absentOkPrefixes`: a shard listed in the index may be missing on disk when every key it holds starts with one of
   * these (`npm run model -- fetch` does not download EVA-CLIP-only shards); those keys are then simply absent.
   */
  static open(dir: string, prefix = 'model', absentOkPrefixes: readonly string[] = []): Checkpoint {
    const indexPath = join(dir, `${prefix}.safetensors.index.json`);
    const single = join(dir, `${prefix}.safetensors`);
    if (existsSync(indexPath)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = (JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
      } catch (e) {
        throw new AppError('model', `${indexPath} is not a valid safetensors index`, { cause: e });
      }
      const skippable = (shard: string) =>
        !existsSync(join(dir, shard)) &&
        Object.entries(weightMap).every(([k, s]) => s !== shard || absentOkPrefixes.some((p) => k.startsWith(p)));
      const absent = new Set([...new Set(Object.values(weightMap))].filter(skippable));
      const shards = [...new Set(Object.values(weightMap))].filter((s) => !absent.has(s)).sort();
      const ckpt = new Checkpoint(shards.map((s) => join(dir, s)));
      for (const [key, shard] of Object.entries(weightMap)) {
        if (absent.has(shard)) continue;
        const hit = ckpt.index.get(key);
        if (!hit || basename(hit.file.path) !== shard)
          throw new AppError('model', `index says ${key} is in ${shard}, but that shard does not hold it`, { context: { key, shard } });
      }
      return ckpt;
    }
    if (existsSync(single)) return new Checkpoint([single]);
    throw new AppError('model', `no ${prefix}.safetensors or ${prefix}.safetensors.index.json in ${dir}`, { context: { dir } });
  }

  constructor(paths: string[]) {
    for (const p of paths) {
      const f = new SafetensorsFile(p);
      this.files.push(f);
      for (const info of f.tensors.values()) {
        if (this.index.has(info.key)) throw new AppError('model', `${info.key} appears in two shards`, { context: { key: info.key } });
        this.index.set(info.key, { file: f, info });
      }
    }
  }

  keys(): string[] {
    return [...this.index.keys()];
  }
  info(key: string): TensorInfo | undefined {
    return this.index.get(key)?.info;
  }
  /** Raw little-endian bytes in the stored dtype. */
  readRaw(key: string): { info: TensorInfo; bytes: Buffer } {
    const hit = this.index.get(key);
    if (!hit) throw new AppError('model', `checkpoint has no tensor ${key}`, { context: { key } });
    return { info: hit.info, bytes: hit.file.read(hit.info) };
  }
  /** Any float dtype, widened to fp32. */
  readFloat32(key: string): Float32Array {
    const { info, bytes } = this.readRaw(key);
    return toFloat32(info.dtype, bytes);
  }
  close(): void {
    for (const f of this.files) f.close();
  }
}

// --- dtype conversion ------------------------------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 is the top half of an fp32. */
export function bf16ToF32(h: number): number {
  u32[0] = h << 16;
  return f32[0]!;
}
/** Round-to-nearest-even, as torch does; NaN stays NaN. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
/** IEEE half, round-to-nearest-even, overflow → ±inf. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half; // a carry out of the mantissa bumps the exponent: still the correct rounding (up to inf)
}

let f16Cache: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!f16Cache) {
    f16Cache = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Cache[h] = f16ToF32(h);
  }
  return f16Cache;
}

export function toFloat32(dtype: SafeDType, bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / BYTES[dtype];
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Fast paths over typed-array views (little-endian hosts; every tensor of a checkpoint passes through here).
  const aligned = (k: number) => bytes.byteOffset % k === 0;
  switch (dtype) {
    case 'F32':
      if (aligned(4)) out.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
      else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case 'F16': {
      const table = f16Table();
      for (let i = 0; i < n; i++) out[i] = table[dv.getUint16(i * 2, true)]!;
      return out;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      if (aligned(2)) {
        const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        for (let i = 0; i < n; i++) bits[i] = h[i]! << 16;
      } else for (let i = 0; i < n; i++) bits[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    default:
      throw new AppError('model', `cannot read ${dtype} as float`);
  }
}

export function fromFloat32(dtype: 'F32' | 'F16' | 'BF16', values: Float32Array): Uint8Array {
  // a view, not a copy: converting an 8B checkpoint must not hold a 2 GB tensor twice
  if (dtype === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint16Array(values.length);
  if (dtype === 'BF16') {
    // inlined f32ToBf16 over the bit patterns (this runs over every weight of a checkpoint)
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < bits.length; i++) {
      const u = bits[i]!;
      out[i] = (u & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
  } else for (let i = 0; i < values.length; i++) out[i] = f32ToF16(values[i]!);
  return new Uint8Array(out.buffer);
}

// --- writer ----------------------------------------------------------------------------------------------------

export interface TensorToWrite {
  key: string;
  dtype: SafeDType;
  shape: number[];
  data: Uint8Array;
}

/** The 8-byte length + JSON header (space padded to 8 bytes) for tensors already in key order. */
function headerBytes(sorted: readonly { key: string; dtype: SafeDType; shape: number[] }[], metadata: Record<string, string>): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of sorted) {
    const want = t.shape.reduce((a, d) => a * d, 1) * BYTES[t.dtype];
    header[t.key] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(body.length));
  return Buffer.concat([len, body]);
}

const byKey = <T extends { key: string }>(a: T, b: T) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
export const tensorBytes = (t: { dtype: SafeDType; shape: readonly number[] }) => t.shape.reduce((a, d) => a * d, 1) * BYTES[t.dtype];

/** Writes one safetensors file; keys are sorted so the same tensors always give the same bytes. */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: 'pt' }): void {
  const sorted = [...tensors].sort(byKey);
  for (const t of sorted)
    if (tensorBytes(t) !== t.data.byteLength) throw new AppError('internal', `${t.key}: ${t.data.byteLength} bytes for ${t.dtype}[${t.shape}]`);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, headerBytes(sorted, metadata));
    for (const t of sorted) for (let off = 0; off < t.data.byteLength; ) off += writeSync(fd, t.data, off, Math.min(1 << 30, t.data.byteLength - off));
  } finally {
    closeSync(fd);
  }
}

/** Splits key-sorted tensors into consecutive shards of at most `maxShardBytes` (a bigger tensor gets its own). */
function planShards<T extends { dtype: SafeDType; shape: number[] }>(sorted: readonly T[], maxShardBytes: number): T[][] {
  const shards: T[][] = [[]];
  let size = 0;
  for (const t of sorted) {
    const b = tensorBytes(t);
    if (size > 0 && size + b > maxShardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(t);
    size += b;
  }
  return shards;
}

const shardName = (prefix: string, i: number, n: number) => `${prefix}-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

function writeIndex(dir: string, prefix: string, shards: readonly (readonly { key: string; dtype: SafeDType; shape: number[] }[])[]): void {
  const weightMap: Record<string, string> = {};
  let total = 0;
  shards.forEach((shard, i) => {
    for (const t of shard) {
      weightMap[t.key] = shardName(prefix, i, shards.length);
      total += tensorBytes(t);
    }
  });
  const index = { metadata: { total_size: total }, weight_map: weightMap };
  writeFileSyncText(join(dir, `${prefix}.safetensors.index.json`), JSON.stringify(index, null, 2) + '\n');
}

/** Writes `model-0000k-of-0000n.safetensors` shards of at most `maxShardBytes` plus the index, like HF `save_pretrained`. */
export function writeShardedSafetensors(dir: string, tensors: TensorToWrite[], maxShardBytes: number, prefix = 'model'): void {
  const shards = planShards([...tensors].sort(byKey), maxShardBytes);
  shards.forEach((shard, i) => writeSafetensors(join(dir, shardName(prefix, i, shards.length)), shard));
  writeIndex(dir, prefix, shards);
}

// --- streaming writer (real-size checkpoints: values are produced chunk by chunk, never a whole tensor) ---------

export interface StreamedTensor {
  key: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  /** Fills `out` with the row-major values [start, start + out.length) of the tensor. */
  fill(start: number, out: Float32Array): void;
}

/** Values per chunk: 4 Mi float32 (16 MiB) plus its converted copy is all a streamed write holds. */
const STREAM_CHUNK = 1 << 22;

/** Like writeSafetensors, but each tensor's bytes are produced and written `STREAM_CHUNK` values at a time.
 *  `onBytes` hears each chunk's byte count (for progress bars). */
export function writeSafetensorsStreaming(path: string, tensors: readonly StreamedTensor[], onBytes?: (n: number) => void, metadata: Record<string, string> = { format: 'pt' }): void {
  const sorted = [...tensors].sort(byKey);
  const fd = openSync(path, 'w');
  const buf = new Float32Array(STREAM_CHUNK);
  try {
    writeSync(fd, headerBytes(sorted, metadata));
    for (const t of sorted) {
      const n = t.shape.reduce((a, d) => a * d, 1);
      for (let start = 0; start < n; start += STREAM_CHUNK) {
        const view = buf.subarray(0, Math.min(STREAM_CHUNK, n - start));
        t.fill(start, view);
        const bytes = fromFloat32(t.dtype, view);
        for (let off = 0; off < bytes.byteLength; ) off += writeSync(fd, bytes, off, bytes.byteLength - off);
        onBytes?.(bytes.byteLength);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Sharded + indexed like writeShardedSafetensors, streaming. Returns the shard file names. */
export function writeShardedSafetensorsStreaming(dir: string, tensors: readonly StreamedTensor[], maxShardBytes: number, prefix = 'model', onBytes?: (n: number) => void): string[] {
  const shards = planShards([...tensors].sort(byKey), maxShardBytes);
  const names = shards.map((_, i) => shardName(prefix, i, shards.length));
  shards.forEach((shard, i) => writeSafetensorsStreaming(join(dir, names[i]!), shard, onBytes));
  writeIndex(dir, prefix, shards);
  return names;
}

function writeFileSyncText(path: string, text: string): void {
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}
