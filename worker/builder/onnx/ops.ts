// The op DSL: a chained `Tensor` handle plus one function per ONNX primitive (opset 17, https://onnx.ai/onnx/operators/).
// Functions here only emit nodes through a `NodeSink` (implemented by graph.ts's Graph) and track static shapes
// where they can; they know nothing of protobuf. Dims are numbers when known, strings when symbolic ('batch',
// 'past_seq'), and '?' when this file cannot tell.
//
//   x.add(y).silu().reshape(B, T, nh, hs)   ≡   reshape(silu(add(x, y)), [B, T, nh, hs])

export type DType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool' | 'uint8';
export type Dim = number | string;
export type Shape = Dim[];

/** An attribute value with its ONNX type made explicit (an integer-valued float is still a float). */
export type Attr =
  | { i: number }
  | { f: number }
  | { ints: number[] }
  | { floats: number[] }
  | { s: string }
  /** A small tensor attribute (ConstantOfShape's `value`). */
  | { t: { dtype: DType; dims: number[]; values: number[] } };
export type Attrs = Record<string, Attr>;

/** Where nodes go. Graph (graph.ts) implements it; ops never see the wire format. */
export interface NodeSink {
  /** Emits a node named `<current path>/<opType>` and returns its output value names. */
  emit(opType: string, inputs: (Tensor | undefined)[], attrs: Attrs, outputCount: number, domain?: string): string[];
  /** A constant initializer, deduplicated by name (`/model/constants/INT64/[1,2]`). */
  constant(dtype: DType, dims: number[], values: readonly number[]): Tensor;
}

export const isFloat = (d: DType) => d === 'float32' || d === 'float16';
const known = (s: Shape | undefined): s is number[] => !!s && s.every((d) => typeof d === 'number');
const numel = (s: number[]) => s.reduce((a, d) => a * d, 1);

export class Tensor {
  constructor(
    readonly sink: NodeSink,
    readonly name: string,
    readonly dtype: DType,
    /** undefined = rank unknown. */
    readonly shape: Shape | undefined,
    /** Values of small integer constants (shape tensors), so Reshape/Slice can infer static shapes. */
    readonly constValue?: readonly number[],
  ) {}

  get rank(): number | undefined {
    return this.shape?.length;
  }
  /** Static size of axis `axis` (negative counts from the end); throws if unknown. */
  size(axis: number): number {
    const s = this.shape;
    const d = s?.[axis < 0 ? s.length + axis : axis];
    if (typeof d !== 'number') throw new Error(`${this.name}: axis ${axis} of shape [${s ?? '?'}] is not static`);
    return d;
  }

  // elementwise
  add(b: Operand) { return add(this, b); }
  sub(b: Operand) { return sub(this, b); }
  mul(b: Operand) { return mul(this, b); }
  div(b: Operand) { return div(this, b); }
  pow(b: Operand) { return pow(this, b); }
  neg() { return neg(this); }
  sqrt() { return sqrt(this); }
  reciprocal() { return reciprocal(this); }
  exp() { return exp(this); }
  erf() { return erf(this); }
  tanh() { return tanh(this); }
  sigmoid() { return sigmoid(this); }
  cos() { return cos(this); }
  sin() { return sin(this); }
  /** x·σ(x) */
  silu() { return mul(this, sigmoid(this)); }
  matmul(b: Tensor) { return matMul(this, b); }
  cast(to: DType) { return cast(this, to); }
  // layout
  /** Each argument is one dim: a number (0 = copy, -1 = infer), a symbolic name, or an int64 [1] tensor;
   *  or a single int64 [n] shape tensor (e.g. `y.shapeOf()`). */
  reshape(...dims: (Dim | Tensor)[]) { return reshape(this, dims); }
  reshapeAs(like: Tensor) { return reshapeAs(this, like); }
  transpose(...perm: number[]) { return transpose(this, perm); }
  unsqueeze(...axes: number[]) { return unsqueeze(this, axes); }
  squeeze(...axes: number[]) { return squeeze(this, axes); }
  slice(axis: number, start: number | Tensor, end: number | Tensor, step = 1) { return slice(this, axis, start, end, step); }
  gather(indices: Tensor, axis = 0) { return gather(this, indices, axis); }
  expand(shape: Tensor | number[]) { return expand(this, shape); }
  // reductions
  softmax(axis = -1) { return softmax(this, axis); }
  mean(axes: number[], keepdims = true) { return reduceMean(this, axes, keepdims); }
  // shape
  shapeOf(start?: number, end?: number) { return shapeOf(this, start, end); }
}

export type Operand = Tensor | number;

// --- helpers ---------------------------------------------------------------------------------------------------

const norm = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);
const scalarLike = (like: Tensor, v: number) => like.sink.constant(like.dtype, [], [v]);
const asTensor = (like: Tensor, b: Operand) => (typeof b === 'number' ? scalarLike(like, b) : b);
const i64 = (sink: NodeSink, values: readonly number[]) => sink.constant('int64', [values.length], values);

function out(a: Tensor, op: string, inputs: (Tensor | undefined)[], attrs: Attrs, dtype: DType, shape: Shape | undefined, constValue?: number[]): Tensor {
  const [name] = a.sink.emit(op, inputs, attrs, 1);
  return new Tensor(a.sink, name!, dtype, shape, constValue);
}

/** Numpy broadcasting of static shapes; unknown where it cannot tell. */
export function broadcastShapes(a: Shape | undefined, b: Shape | undefined): Shape | undefined {
  if (!a || !b) return undefined;
  const n = Math.max(a.length, b.length);
  const r: Shape = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) r.push(y);
    else if (y === 1 || x === y) r.push(x);
    else if (typeof x === 'number' && typeof y === 'number') throw new Error(`cannot broadcast [${a}] with [${b}]`);
    else r.push(typeof x === 'string' && x !== '?' ? x : y);
  }
  return r;
}

function binary(op: string, a: Operand, b: Operand, boolOut = false): Tensor {
  const like = typeof a === 'number' ? (b as Tensor) : a;
  const ta = asTensor(like, a);
  const tb = asTensor(like, b);
  return out(like, op, [ta, tb], {}, boolOut ? 'bool' : ta.dtype, broadcastShapes(ta.shape, tb.shape));
}
function unary(op: string, x: Tensor, attrs: Attrs = {}): Tensor {
  return out(x, op, [x], attrs, x.dtype, x.shape);
}

// --- elementwise -----------------------------------------------------------------------------------------------

export const add = (a: Operand, b: Operand) => binary('Add', a, b);
export const sub = (a: Operand, b: Operand) => binary('Sub', a, b);
export const mul = (a: Operand, b: Operand) => binary('Mul', a, b);
export const div = (a: Operand, b: Operand) => binary('Div', a, b);
export const pow = (a: Operand, b: Operand) => binary('Pow', a, b);
export const equal = (a: Operand, b: Operand) => binary('Equal', a, b, true);
export const less = (a: Operand, b: Operand) => binary('Less', a, b, true);
export const greater = (a: Operand, b: Operand) => binary('Greater', a, b, true);
export const lessOrEqual = (a: Operand, b: Operand) => binary('LessOrEqual', a, b, true);
export const and = (a: Tensor, b: Tensor) => binary('And', a, b, true);
export const neg = (x: Tensor) => unary('Neg', x);
export const sqrt = (x: Tensor) => unary('Sqrt', x);
export const reciprocal = (x: Tensor) => unary('Reciprocal', x);
export const exp = (x: Tensor) => unary('Exp', x);
export const erf = (x: Tensor) => unary('Erf', x);
export const tanh = (x: Tensor) => unary('Tanh', x);
export const sigmoid = (x: Tensor) => unary('Sigmoid', x);
export const cos = (x: Tensor) => unary('Cos', x);
export const sin = (x: Tensor) => unary('Sin', x);
export const abs = (x: Tensor) => unary('Abs', x);
export const not = (x: Tensor) => unary('Not', x);

export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const like = typeof a === 'number' ? (b as Tensor) : a;
  const ta = asTensor(like, a);
  const tb = asTensor(like, b);
  return out(cond, 'Where', [cond, ta, tb], {}, ta.dtype, broadcastShapes(cond.shape, broadcastShapes(ta.shape, tb.shape)));
}

export function cast(x: Tensor, to: DType): Tensor {
  if (x.dtype === to) return x;
  return out(x, 'Cast', [x], { to: { i: ONNX_DTYPE[to] } }, to, x.shape, x.constValue ? [...x.constValue] : undefined);
}

/** TensorProto.DataType numbers (onnx.proto); duplicated here only because attributes carry them. */
export const ONNX_DTYPE: Record<DType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10 };

// --- linear algebra --------------------------------------------------------------------------------------------

export function matMul(a: Tensor, b: Tensor): Tensor {
  let shape: Shape | undefined;
  if (a.shape && b.shape && a.shape.length >= 2 && b.shape.length >= 2) {
    const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
    shape = batch && [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!];
  } else if (a.shape && b.shape && b.shape.length === 1) shape = a.shape.slice(0, -1);
  return out(a, 'MatMul', [a, b], {}, a.dtype, shape);
}

/** com.microsoft MatMulNBits: A (…, K) × dequant(B) [N, K]ᵀ → (…, N), B block-quantized (see builder/quant.ts). */
export function matMulNBits(a: Tensor, B: Tensor, scales: Tensor, zeroPoints: Tensor, o: { K: number; N: number; bits: number; blockSize: number; accuracyLevel: number }): Tensor {
  const attrs: Attrs = { K: { i: o.K }, N: { i: o.N }, bits: { i: o.bits }, block_size: { i: o.blockSize }, accuracy_level: { i: o.accuracyLevel } };
  const [name] = a.sink.emit('MatMulNBits', [a, B, scales, zeroPoints], attrs, 1, 'com.microsoft');
  return new Tensor(a.sink, name!, a.dtype, a.shape && [...a.shape.slice(0, -1), o.N]);
}

// --- layout ----------------------------------------------------------------------------------------------------

/** Reshape to `dims`: numbers (0 = copy, -1 = infer), symbolic names (only as documentation: emitted as 0 or -1
 *  where possible), or int64 [1] tensors for sizes known only at run time. */
export function reshape(x: Tensor, dims: (Dim | Tensor)[]): Tensor {
  const sink = x.sink;
  const only = dims[0];
  if (dims.length === 1 && only instanceof Tensor && only.shape?.[0] !== 1) {
    // a whole shape tensor (e.g. y.shapeOf()): Reshape(x, shape)
    const n = only.shape?.[0];
    const shape: Shape | undefined = only.constValue ? [...only.constValue] : typeof n === 'number' ? Array<Dim>(n).fill('?') : undefined;
    return out(x, 'Reshape', [x, only], {}, x.dtype, shape);
  }
  const allStatic = dims.every((d) => typeof d === 'number');
  let shapeT: Tensor;
  if (allStatic) shapeT = i64(sink, dims as number[]);
  else {
    // Symbolic string dims must equal the input's dim at the same axis (copied with 0), else they become -1.
    const parts = dims.map((d, i) => {
      if (d instanceof Tensor) return d;
      if (typeof d === 'number') return i64(sink, [d]);
      return i64(sink, [x.shape?.[i] === d ? 0 : -1]);
    });
    shapeT = concat(parts, 0);
  }
  const outShape: Shape = dims.map((d, i) => {
    if (d instanceof Tensor) return d.constValue?.[0] ?? '?';
    if (d === 0) return x.shape?.[i] ?? '?';
    return d;
  });
  const minus = outShape.indexOf(-1);
  if (minus >= 0) {
    const rest = outShape.filter((_, i) => i !== minus);
    outShape[minus] = known(x.shape) && known(rest) ? numel(x.shape) / numel(rest) : '?';
  }
  return out(x, 'Reshape', [x, shapeT], {}, x.dtype, outShape);
}

/** Reshape to the (run-time) shape of `like`: Reshape(x, Shape(like)). */
export function reshapeAs(x: Tensor, like: Tensor): Tensor {
  return out(x, 'Reshape', [x, shapeOf(like)], {}, x.dtype, like.shape);
}

export function transpose(x: Tensor, perm: number[]): Tensor {
  return out(x, 'Transpose', [x], { perm: { ints: perm } }, x.dtype, x.shape && perm.map((p) => x.shape![p]!));
}

export function unsqueeze(x: Tensor, axes: number[]): Tensor {
  let shape: Shape | undefined;
  if (x.shape) {
    const r = x.shape.length + axes.length;
    const ax = axes.map((a) => norm(a, r));
    shape = [];
    let j = 0;
    for (let i = 0; i < r; i++) shape.push(ax.includes(i) ? 1 : x.shape[j++]!);
  }
  return out(x, 'Unsqueeze', [x, i64(x.sink, axes)], {}, x.dtype, shape, x.constValue ? [...x.constValue] : undefined);
}

export function squeeze(x: Tensor, axes: number[]): Tensor {
  const shape = x.shape && x.shape.filter((_, i) => !axes.map((a) => norm(a, x.shape!.length)).includes(i));
  return out(x, 'Squeeze', [x, i64(x.sink, axes)], {}, x.dtype, shape, x.constValue ? [...x.constValue] : undefined);
}

export function concat(xs: Tensor[], axis: number): Tensor {
  const first = xs[0]!;
  let shape: Shape | undefined;
  if (xs.every((x) => x.shape)) {
    const r = first.shape!.length;
    const a = norm(axis, r);
    shape = first.shape!.map((d, i) => {
      if (i !== a) return d;
      const parts = xs.map((x) => x.shape![i]!);
      return parts.every((p) => typeof p === 'number') ? (parts as number[]).reduce((s, p) => s + p, 0) : '?';
    });
  }
  const cv = xs.every((x) => x.constValue) && first.rank === 1 ? xs.flatMap((x) => [...x.constValue!]) : undefined;
  return out(first, 'Concat', xs, { axis: { i: axis } }, first.dtype, shape, cv);
}

/** One-axis slice [start, end) with `step`; ends past the size clamp, as in numpy. */
export function slice(x: Tensor, axis: number, start: number | Tensor, end: number | Tensor, step = 1): Tensor {
  const sink = x.sink;
  const s = typeof start === 'number' ? i64(sink, [start]) : start;
  const e = typeof end === 'number' ? i64(sink, [end]) : end;
  let shape: Shape | undefined;
  if (x.shape) {
    const a = norm(axis, x.shape.length);
    const n = x.shape[a];
    shape = [...x.shape];
    if (typeof n === 'number' && typeof start === 'number' && typeof end === 'number' && step === 1) {
      const clamp = (v: number) => Math.max(0, Math.min(n, v < 0 ? v + n : v));
      shape[a] = Math.max(0, clamp(end) - clamp(start));
    } else shape[a] = '?';
  }
  return out(x, 'Slice', [x, s, e, i64(sink, [axis]), i64(sink, [step])], {}, x.dtype, shape);
}

/** Split along `axis` into pieces of the given sizes. */
export function split(x: Tensor, sizes: number[], axis: number): Tensor[] {
  const names = x.sink.emit('Split', [x, i64(x.sink, sizes)], { axis: { i: axis } }, sizes.length);
  return names.map((n, k) => {
    const shape = x.shape && [...x.shape];
    if (shape) shape[norm(axis, shape.length)] = sizes[k]!;
    return new Tensor(x.sink, n, x.dtype, shape);
  });
}

export function gather(x: Tensor, indices: Tensor, axis = 0): Tensor {
  const shape = x.shape && indices.shape && [...x.shape.slice(0, norm(axis, x.shape.length)), ...indices.shape, ...x.shape.slice(norm(axis, x.shape.length) + 1)];
  return out(x, 'Gather', [x, indices], { axis: { i: axis } }, x.dtype, shape);
}

export function expand(x: Tensor, shape: Tensor | number[]): Tensor {
  const t = Array.isArray(shape) ? i64(x.sink, shape) : shape;
  const target: Shape | undefined = Array.isArray(shape) ? shape : t.constValue ? [...t.constValue] : t.shape?.[0] !== undefined && typeof t.shape[0] === 'number' ? Array(t.shape[0]).fill('?') : undefined;
  return out(x, 'Expand', [x, t], {}, x.dtype, broadcastShapes(x.shape, target));
}

export function tile(x: Tensor, repeats: number[]): Tensor {
  const shape = x.shape && x.shape.map((d, i) => (typeof d === 'number' ? d * repeats[i]! : repeats[i] === 1 ? d : '?'));
  return out(x, 'Tile', [x, i64(x.sink, repeats)], {}, x.dtype, shape);
}

export function pad(x: Tensor, pads: number[], mode: 'constant' | 'reflect' | 'edge' = 'constant', value = 0): Tensor {
  const r = pads.length / 2;
  const shape = x.shape && x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i]! + pads[i + r]! : '?'));
  return out(x, 'Pad', [x, i64(x.sink, pads), scalarLike(x, value)], { mode: { s: mode } }, x.dtype, shape);
}

// --- shape tensors ---------------------------------------------------------------------------------------------

/** Shape(x)[start:end] as int64 (opset 15 start/end attributes). Carries static values when known. */
export function shapeOf(x: Tensor, start?: number, end?: number): Tensor {
  const attrs: Attrs = {};
  if (start !== undefined) attrs.start = { i: start };
  if (end !== undefined) attrs.end = { i: end };
  const dims = x.shape?.slice(start, end);
  return out(x, 'Shape', [x], attrs, 'int64', dims ? [dims.length] : ['?'], dims && known(dims) ? dims : undefined);
}

export function range(start: Tensor, limit: Tensor, delta: Tensor): Tensor {
  return out(start, 'Range', [start, limit, delta], {}, start.dtype, ['?']);
}

export function constantOfShape(shape: Tensor, dtype: DType, value: number): Tensor {
  const dims = shape.constValue ? [...shape.constValue] : shape.shape?.[0] !== undefined && typeof shape.shape[0] === 'number' ? Array<Dim>(shape.shape[0]).fill('?') : undefined;
  return out(shape, 'ConstantOfShape', [shape], { value: { t: { dtype, dims: [1], values: [value] } } }, dtype, dims);
}

/** Lower (upper=0) or upper (upper=1) triangle of the last two axes, shifted by diagonal k. */
export function trilu(x: Tensor, upper: boolean, k?: Tensor): Tensor {
  return out(x, 'Trilu', [x, k], { upper: { i: upper ? 1 : 0 } }, x.dtype, x.shape);
}

// --- reductions and normalisations -----------------------------------------------------------------------------

export function softmax(x: Tensor, axis = -1): Tensor {
  return out(x, 'Softmax', [x], { axis: { i: axis } }, x.dtype, x.shape);
}

const reduced = (x: Tensor, axes: number[], keep: boolean): Shape | undefined => {
  if (!x.shape) return undefined;
  const ax = axes.map((a) => norm(a, x.shape!.length));
  return keep ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
};
/** opset 17: ReduceMean/ReduceMax take axes as an attribute, ReduceSum as an input. */
export function reduceMean(x: Tensor, axes: number[], keepdims = true): Tensor {
  return out(x, 'ReduceMean', [x], { axes: { ints: axes }, keepdims: { i: keepdims ? 1 : 0 } }, x.dtype, reduced(x, axes, keepdims));
}
export function reduceMax(x: Tensor, axes: number[], keepdims = true): Tensor {
  return out(x, 'ReduceMax', [x], { axes: { ints: axes }, keepdims: { i: keepdims ? 1 : 0 } }, x.dtype, reduced(x, axes, keepdims));
}
export function reduceSum(x: Tensor, axes: number[], keepdims = true): Tensor {
  return out(x, 'ReduceSum', [x, i64(x.sink, axes)], { keepdims: { i: keepdims ? 1 : 0 } }, x.dtype, reduced(x, axes, keepdims));
}

/** LayerNormalization (opset 17) over the last axis; computes in fp32 even for fp16 inputs (stash_type 1). */
export function layerNormalization(x: Tensor, scale: Tensor, bias: Tensor | undefined, epsilon: number, axis = -1): Tensor {
  return out(x, 'LayerNormalization', [x, scale, bias], { axis: { i: axis }, epsilon: { f: epsilon } }, x.dtype, x.shape);
}

/** Per-(N,C) normalisation over the spatial axes with per-channel scale and bias. */
export function instanceNormalization(x: Tensor, scale: Tensor, bias: Tensor, epsilon: number): Tensor {
  return out(x, 'InstanceNormalization', [x, scale, bias], { epsilon: { f: epsilon } }, x.dtype, x.shape);
}

// --- convolution, pooling, resize ------------------------------------------------------------------------------

export interface ConvOptions {
  strides?: number[];
  /** [top, left, bottom, right] for 2-D (ONNX order: all begins, then all ends). */
  pads?: number[];
  dilations?: number[];
  group?: number;
}
export function conv(x: Tensor, w: Tensor, b: Tensor | undefined, o: ConvOptions = {}): Tensor {
  const k = w.shape?.slice(2) as number[] | undefined;
  const attrs: Attrs = {};
  if (o.strides) attrs.strides = { ints: o.strides };
  if (o.pads) attrs.pads = { ints: o.pads };
  if (o.dilations) attrs.dilations = { ints: o.dilations };
  if (o.group) attrs.group = { i: o.group };
  let shape: Shape | undefined;
  if (x.shape && w.shape && k) {
    const n = k.length;
    shape = [x.shape[0]!, w.shape[0]!];
    for (let i = 0; i < n; i++) {
      const d = x.shape[2 + i];
      const s = o.strides?.[i] ?? 1;
      const p = (o.pads?.[i] ?? 0) + (o.pads?.[i + n] ?? 0);
      const dl = o.dilations?.[i] ?? 1;
      shape.push(typeof d === 'number' && typeof k[i] === 'number' ? Math.floor((d + p - dl * (k[i]! - 1) - 1) / s) + 1 : '?');
    }
  }
  return out(x, 'Conv', [x, w, b], attrs, x.dtype, shape);
}

export function averagePool(x: Tensor, kernel: number[], strides: number[]): Tensor {
  const shape = x.shape && [x.shape[0]!, x.shape[1]!, ...kernel.map((k, i) => { const d = x.shape![2 + i]; return typeof d === 'number' ? Math.floor((d - k) / strides[i]!) + 1 : '?'; })];
  return out(x, 'AveragePool', [x], { kernel_shape: { ints: kernel }, strides: { ints: strides } }, x.dtype, shape);
}

/** Nearest-neighbour upsampling by integer `scales` (e.g. [1, 1, 2, 2]), as torch F.interpolate(mode='nearest'). */
export function resizeNearest(x: Tensor, scales: number[]): Tensor {
  const sc = x.sink.constant('float32', [scales.length], scales);
  const shape = x.shape && x.shape.map((d, i) => (typeof d === 'number' ? d * scales[i]! : '?'));
  return out(x, 'Resize', [x, undefined, sc], { mode: { s: 'nearest' }, nearest_mode: { s: 'floor' }, coordinate_transformation_mode: { s: 'asymmetric' } }, x.dtype, shape);
}
