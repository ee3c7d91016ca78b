// Every nn.ts block against a plain-TS loop (test/reference/ops.ts) on onnxruntime CPU, fp32, max abs error ≤ 1e-4.
// The pattern for a new op or block: random weights → storeOf → build a Graph → runGraph → compare with the loop.
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { gelu, groupNorm, conv2d, layerNorm, linear, rmsNorm, sdpa } from '../../../../worker/builder/nn.ts';
import * as ref from '../../../reference/ops.ts';
import { f32, runGraph, storeOf } from './harness.ts';

const TOL = 1e-4;
const rnd = ref.randomArray;

describe('nn blocks match plain-TS references', () => {
  it('linear (HF [out,in] weight, transposed once) with and without bias', async () => {
    const [rows, inF, outF] = [5, 12, 7];
    const W = rnd(outF * inF, 1);
    const b = rnd(outF, 2);
    const x = rnd(rows * inF, 3);
    const store = storeOf({ 'proj.weight': { shape: [outF, inF], data: W }, 'proj.bias': { shape: [outF], data: b }, 'nob.weight': { shape: [outF, inF], data: W } });
    const g = new Graph('t');
    const root = store.scope(g, 'float32');
    const xi = g.input('x', 'float32', [rows, inF]);
    const y = linear(root.at('proj'), xi, outF);
    expect(y.shape).toEqual([rows, outF]);
    g.output(y, 'y');
    g.output(linear(root.at('nob'), xi, outF, { bias: false }), 'z');
    expect(g.nodes.map((n) => n.name)).toContain('/proj/MatMul');
    expect(g.initializers.get('proj.weight')!.dims).toEqual([inF, outF]);
    const out = await runGraph(g, { x: { data: x, dims: [rows, inF] } });
    expect(ref.maxAbsDiff(f32(out.y), ref.linear(x, W, b, rows, inF, outF))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.z), ref.linear(x, W, undefined, rows, inF, outF))).toBeLessThan(TOL);
    expect(store.unused().unused).toEqual([]);
    store.close();
  });

  it('rmsNorm and layerNorm (affine and not)', async () => {
    const [rows, C] = [4, 16];
    const w = rnd(C, 4);
    const b = rnd(C, 5);
    const x = rnd(rows * C, 6, 3);
    const store = storeOf({ 'n.weight': { shape: [C], data: w }, 'ln.weight': { shape: [C], data: w }, 'ln.bias': { shape: [C], data: b } });
    const g = new Graph('t');
    const root = store.scope(g, 'float32');
    const xi = g.input('x', 'float32', [rows, C]);
    g.output(rmsNorm(root.at('n'), xi, 1e-6), 'rms');
    g.output(layerNorm(root.at('ln'), xi, 1e-5), 'ln');
    g.output(layerNorm(root.at('none'), xi, 1e-6, { affine: false }), 'plain');
    const out = await runGraph(g, { x: { data: x, dims: [rows, C] } });
    expect(ref.maxAbsDiff(f32(out.rms), ref.rmsNorm(x, w, rows, C, 1e-6))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.ln), ref.layerNorm(x, w, b, rows, C, 1e-5))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.plain), ref.layerNorm(x, undefined, undefined, rows, C, 1e-6))).toBeLessThan(TOL);
    store.close();
  });

  it('groupNorm and conv2d on NCHW', async () => {
    const [N, C, H, W, G, Cout] = [2, 8, 5, 6, 4, 3];
    const gw = rnd(C, 7);
    const gb = rnd(C, 8);
    const cw = rnd(Cout * C * 3 * 3, 9, 0.3);
    const cb = rnd(Cout, 10);
    const x = rnd(N * C * H * W, 11, 2);
    const store = storeOf({ 'gn.weight': { shape: [C], data: gw }, 'gn.bias': { shape: [C], data: gb }, 'conv.weight': { shape: [Cout, C, 3, 3], data: cw }, 'conv.bias': { shape: [Cout], data: cb } });
    const g = new Graph('t');
    const root = store.scope(g, 'float32');
    const xi = g.input('x', 'float32', [N, C, H, W]);
    g.output(groupNorm(root.at('gn'), xi, G, 1e-6), 'gn');
    const y = conv2d(root.at('conv'), xi, Cout, { kernel: 3, stride: 2, padding: 1 });
    expect(y.shape).toEqual([N, Cout, 3, 3]);
    g.output(y, 'conv');
    const out = await runGraph(g, { x: { data: x, dims: [N, C, H, W] } });
    expect(ref.maxAbsDiff(f32(out.gn), ref.groupNorm(x, gw, gb, N, C, H * W, G, 1e-6))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.conv), ref.conv2d(x, cw, cb, N, C, H, W, Cout, 3, 2, 1).out)).toBeLessThan(TOL);
    store.close();
  });

  it('sdpa with an additive causal mask and a custom scale; gelu (erf, tanh) and silu', async () => {
    const [BH, T, D] = [3, 5, 8];
    const q = rnd(BH * T * D, 12);
    const k = rnd(BH * T * D, 13);
    const v = rnd(BH * T * D, 14);
    const mask = new Float32Array(T * T).map((_, i) => (i % T > Math.floor(i / T) ? -1e9 : 0));
    const g = new Graph('t');
    const [qi, ki, vi] = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', [BH, T, D]));
    const mi = g.input('mask', 'float32', [T, T]);
    g.output(sdpa(qi!, ki!, vi!, { mask: mi }), 'a');
    g.output(sdpa(qi!, ki!, vi!, { scale: 0.3 }), 'b');
    g.output(gelu(qi!, 'erf'), 'ge');
    g.output(gelu(qi!, 'tanh'), 'gt');
    g.output(qi!.silu(), 'si');
    const dims = [BH, T, D];
    const out = await runGraph(g, { q: { data: q, dims }, k: { data: k, dims }, v: { data: v, dims }, mask: { data: mask, dims: [T, T] } });
    expect(ref.maxAbsDiff(f32(out.a), ref.sdpa(q, k, v, BH, T, T, D, mask))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.b), ref.sdpa(q, k, v, BH, T, T, D, undefined, 0.3))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.ge), q.map(ref.geluErf))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.gt), q.map(ref.geluTanh))).toBeLessThan(TOL);
    expect(ref.maxAbsDiff(f32(out.si), q.map(ref.silu))).toBeLessThan(TOL);
  });
});
