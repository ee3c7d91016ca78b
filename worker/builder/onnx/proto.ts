// The only file that knows the ONNX wire format. It maps our plain model description to the protobufjs classes
// generated from onnx.proto by the `onnx-proto` package (onnx v1.10.2 schema: IR version 8) and back.
// Tensor bytes are either inline (`raw_data`) or external: `data_location = EXTERNAL` plus the
// location/offset/length entries of https://github.com/onnx/onnx/blob/main/docs/ExternalData.md.
import onnxProto from 'onnx-proto';
import type { Attrs, DType, Shape } from './ops.ts';
import { ONNX_DTYPE } from './ops.ts';

const { onnx } = onnxProto;

export interface ValueInfoDesc {
  name: string;
  dtype: DType;
  /** undefined = rank unknown (no shape written). */
  shape: Shape | undefined;
}
export interface NodeDesc {
  name: string;
  opType: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  attrs: Attrs;
}
export interface TensorDesc {
  name: string;
  dtype: DType;
  dims: number[];
  /** Inline little-endian bytes, or where they live in the external data file. */
  data: Uint8Array | { location: string; offset: number; length: number };
}
export interface ModelDesc {
  graphName: string;
  producer: string;
  opset: number;
  inputs: ValueInfoDesc[];
  outputs: ValueInfoDesc[];
  nodes: NodeDesc[];
  initializers: TensorDesc[];
  metadata: Record<string, string>;
}

const FROM_ONNX = Object.fromEntries(Object.entries(ONNX_DTYPE).map(([k, v]) => [v, k])) as Record<number, DType>;
const IR_VERSION = 8;

function valueInfo(v: ValueInfoDesc) {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[v.dtype],
        ...(v.shape && { shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } }),
      },
    },
  };
}

function smallTensor(dtype: DType, dims: number[], values: number[]) {
  const buf = new ArrayBuffer(values.length * bytesOf(dtype));
  const dv = new DataView(buf);
  values.forEach((v, i) => {
    if (dtype === 'float32') dv.setFloat32(i * 4, v, true);
    else if (dtype === 'int64') dv.setBigInt64(i * 8, BigInt(v), true);
    else if (dtype === 'int32') dv.setInt32(i * 4, v, true);
    else if (dtype === 'bool' || dtype === 'uint8') dv.setUint8(i, v);
    else throw new Error(`small tensor of ${dtype} not supported`);
  });
  return { dims, dataType: ONNX_DTYPE[dtype], rawData: new Uint8Array(buf) };
}

export const bytesOf = (d: DType) => ({ float32: 4, float16: 2, int64: 8, int32: 4, bool: 1, uint8: 1 })[d];

function attribute(name: string, a: Attrs[string]) {
  const T = onnx.AttributeProto.AttributeType;
  if ('i' in a) return { name, type: T.INT, i: a.i };
  if ('f' in a) return { name, type: T.FLOAT, f: a.f };
  if ('ints' in a) return { name, type: T.INTS, ints: a.ints };
  if ('floats' in a) return { name, type: T.FLOATS, floats: a.floats };
  if ('s' in a) return { name, type: T.STRING, s: new TextEncoder().encode(a.s) };
  return { name, type: T.TENSOR, t: smallTensor(a.t.dtype, a.t.dims, a.t.values) };
}

function tensor(t: TensorDesc) {
  const base = { name: t.name, dims: t.dims, dataType: ONNX_DTYPE[t.dtype] };
  if (t.data instanceof Uint8Array) return { ...base, rawData: t.data };
  return {
    ...base,
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: t.data.location },
      { key: 'offset', value: String(t.data.offset) },
      { key: 'length', value: String(t.data.length) },
    ],
  };
}

export function encodeModel(m: ModelDesc): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: m.producer,
    // contrib ops (com.microsoft, version 1) need their own opset import
    opsetImport: [{ domain: '', version: m.opset }, ...[...new Set(m.nodes.map((n) => n.domain ?? '').filter((d) => d))].sort().map((domain) => ({ domain, version: 1 }))],
    metadataProps: Object.entries(m.metadata).map(([key, value]) => ({ key, value })),
    graph: {
      name: m.graphName,
      input: m.inputs.map(valueInfo),
      output: m.outputs.map(valueInfo),
      initializer: m.initializers.map(tensor),
      node: m.nodes.map((n) => ({
        name: n.name,
        opType: n.opType,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, v)),
      })),
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The parts of a model file that tests and tools look at (tensor bytes are not decoded). */
export interface DecodedModel {
  opset: number;
  inputs: ValueInfoDesc[];
  outputs: ValueInfoDesc[];
  nodes: { name: string; opType: string; inputs: string[]; outputs: string[] }[];
  initializers: { name: string; dtype: DType; dims: number[]; external: boolean }[];
  metadata: Record<string, string>;
}

export function decodeModel(bytes: Uint8Array): DecodedModel {
  const m = onnx.ModelProto.decode(bytes);
  const g = m.graph as InstanceType<typeof onnx.GraphProto>;
  const vi = (v: onnxProto.onnx.IValueInfoProto): ValueInfoDesc => ({
    name: v.name ?? '',
    dtype: FROM_ONNX[v.type!.tensorType!.elemType!]!,
    shape: (v.type!.tensorType!.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue))),
  });
  return {
    opset: Number(m.opsetImport[0]?.version ?? 0),
    inputs: g.input.map(vi),
    outputs: g.output.map(vi),
    nodes: g.node.map((n) => ({ name: n.name ?? '', opType: n.opType ?? '', inputs: n.input ?? [], outputs: n.output ?? [] })),
    initializers: g.initializer.map((t) => ({
      name: t.name ?? '',
      dtype: FROM_ONNX[t.dataType ?? 0]!,
      dims: (t.dims ?? []).map(Number),
      external: t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL,
    })),
    metadata: Object.fromEntries(m.metadataProps.map((p) => [p.key, p.value])),
  };
}
