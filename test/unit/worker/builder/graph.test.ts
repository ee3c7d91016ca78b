// Graph structure: module-path node names, constant dedupe, static shapes, the ONNX file written through
// onnx-proto (decoded back), and external data that onnxruntime loads.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { linear } from '../../../../worker/builder/nn.ts';
import { Graph, keyToPath } from '../../../../worker/builder/onnx/graph.ts';
import { decodeModel } from '../../../../worker/builder/onnx/proto.ts';
import { openSession } from '../../../../worker/runtime/session.ts';
import { linear as refLinear, maxAbsDiff, randomArray } from '../../../reference/ops.ts';
import { storeOf } from './harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'graph-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Graph', () => {
  it('names nodes by module path, dedupes constants and tracks static/symbolic shapes', () => {
    expect(keyToPath('model.layers.12.self_attn.q_proj')).toBe('/model/layers.12/self_attn/q_proj');
    const W = randomArray(8 * 4, 1);
    const store = storeOf({ 'model.layers.0.mlp.up_proj.weight': { shape: [8, 4], data: W } });
    const g = new Graph('t');
    const x = g.input('x', 'float32', ['batch', 'seq', 4]);
    const y = linear(store.scope(g, 'float32').at('model').at('layers').at(0).at('mlp').at('up_proj'), x, 8, { bias: false });
    expect(y.shape).toEqual(['batch', 'seq', 8]);
    const r = y.reshape(0, 0, 2, 4).transpose(0, 2, 1, 3);
    expect(r.shape).toEqual(['batch', 2, 'seq', 4]);
    y.mul(2).add(2);
    y.mul(2);
    g.output(r, 'r');
    const names = g.nodes.map((n) => n.name);
    expect(names).toContain('/model/layers.0/mlp/up_proj/MatMul');
    expect(names.filter((n) => n === '/Mul').length).toBe(1);
    expect(names).toContain('/Mul_1');
    expect([...g.initializers.keys()].filter((k) => k === '/model/constants/FLOAT/2')).toHaveLength(1);
    expect([...g.initializers.keys()]).toContain('/model/constants/INT64/[0,0,2,4]');
    const decoded = decodeModel(g.toBytes());
    expect(decoded.opset).toBe(17);
    expect(decoded.inputs[0]).toEqual({ name: 'x', dtype: 'float32', shape: ['batch', 'seq', 4] });
    expect(decoded.outputs[0]).toEqual({ name: 'r', dtype: 'float32', shape: ['batch', 2, 'seq', 4] });
    expect(decoded.initializers.find((i) => i.name === 'model.layers.0.mlp.up_proj.weight')).toEqual({ name: 'model.layers.0.mlp.up_proj.weight', dtype: 'float32', dims: [4, 8], external: false });
    store.close();
  });

  it('writes external data that onnxruntime loads, with the same results as inline', async () => {
    const [T, C, O] = [3, 32, 16]; // the weight is ≥ 1 KiB, so it goes to the external file
    const W = randomArray(O * C, 2);
    const b = randomArray(O, 3);
    const store = storeOf({ 'p.weight': { shape: [O, C], data: W }, 'p.bias': { shape: [O], data: b } });
    const g = new Graph('t');
    g.output(linear(store.scope(g, 'float32').at('p'), g.input('x', 'float32', [T, C]), O), 'y');
    const path = join(dir, 'ext.onnx');
    expect(g.save(path, { externalData: true }).external).toBe(true);
    expect(existsSync(`${path}.data`)).toBe(true);
    const decoded = decodeModel(readFileSync(path));
    expect(decoded.initializers.find((i) => i.name === 'p.weight')?.external).toBe(true);
    const s = await openSession(path, { executionProvider: 'cpu' });
    const x = randomArray(T * C, 4);
    const out = await s.run({ x: { data: x, dims: [T, C] } });
    expect(maxAbsDiff(out.y!.data as Float32Array, refLinear(x, W, b, T, C, O))).toBeLessThan(1e-5);
    await s.release();
    store.close();
  });
});
