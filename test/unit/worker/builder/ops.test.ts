// Every ops.ts primitive against a plain-TS computation on small tensors (fp32, ≤ 1e-4), plus its static shape.
// nn.test.ts covers the blocks (linear, norms, conv2d, sdpa, gelu, silu).
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import * as op from '../../../../worker/builder/onnx/ops.ts';
import type { Tensor } from '../../../../worker/builder/onnx/ops.ts';
import { erf, maxAbsDiff, randomArray, softmax } from '../../../reference/ops.ts';
import { runGraph } from './harness.ts';

const TOL = 1e-4;
const x = randomArray(2 * 3 * 4, 1, 2); // (2, 3, 4)
const y = randomArray(4, 2, 2).map((v) => v + 3); // (4,), positive
const at = (i: number, j: number, k: number) => x[(i * 3 + j) * 4 + k]!;
const map3 = (f: (i: number, j: number, k: number) => number, d = [2, 3, 4]) => {
  const out: number[] = [];
  for (let i = 0; i < d[0]!; i++) for (let j = 0; j < d[1]!; j++) for (let k = 0; k < d[2]!; k++) out.push(f(i, j, k));
  return out;
};

describe('ops.ts primitives', () => {
  it('elementwise, comparison, where and cast (with broadcasting)', async () => {
    const g = new Graph('t');
    const X = g.input('x', 'float32', [2, 3, 4]);
    const Y = g.input('y', 'float32', [4]);
    const expected: Record<string, number[]> = {};
    const check = (name: string, t: Tensor, want: number[], shape: op.Shape = [2, 3, 4]) => {
      expect(t.shape, name).toEqual(shape);
      g.output(t.dtype === 'bool' ? t.cast('float32') : t, name);
      expected[name] = want;
    };
    const yk = (k: number) => y[k]!;
    check('add', X.add(Y), map3((i, j, k) => at(i, j, k) + yk(k)));
    check('sub', X.sub(1.5), map3((i, j, k) => at(i, j, k) - 1.5));
    check('mul', op.mul(2, X), map3((i, j, k) => 2 * at(i, j, k)));
    check('div', X.div(Y), map3((i, j, k) => at(i, j, k) / yk(k)));
    check('pow', Y.pow(2).reshape(1, 1, 4).expand([2, 3, 4]), map3((_i, _j, k) => yk(k) ** 2));
    check('neg', X.neg(), map3((i, j, k) => -at(i, j, k)));
    check('sqrt', Y.sqrt(), [...y].map(Math.sqrt), [4]);
    check('reciprocal', Y.reciprocal(), [...y].map((v) => 1 / v), [4]);
    check('exp', X.exp(), map3((i, j, k) => Math.exp(at(i, j, k))));
    check('erf', X.erf(), map3((i, j, k) => erf(at(i, j, k))));
    check('tanh', X.tanh(), map3((i, j, k) => Math.tanh(at(i, j, k))));
    check('sigmoid', X.sigmoid(), map3((i, j, k) => 1 / (1 + Math.exp(-at(i, j, k)))));
    check('cos', X.cos(), map3((i, j, k) => Math.cos(at(i, j, k))));
    check('sin', X.sin(), map3((i, j, k) => Math.sin(at(i, j, k))));
    check('abs', op.abs(X), map3((i, j, k) => Math.abs(at(i, j, k))));
    check('less', op.less(X, 0), map3((i, j, k) => +(at(i, j, k) < 0)));
    check('greater', op.greater(X, 0.5), map3((i, j, k) => +(at(i, j, k) > 0.5)));
    check('lessOrEqual', op.lessOrEqual(X, X), map3(() => 1));
    check('equal', op.equal(X.cast('int64'), 0), map3((i, j, k) => +(Math.trunc(at(i, j, k)) === 0)));
    check('andNot', op.and(op.greater(X, 0), op.not(op.greater(X, 1))), map3((i, j, k) => +(at(i, j, k) > 0 && !(at(i, j, k) > 1))));
    check('where', op.where(op.less(X, 0), 0, X), map3((i, j, k) => Math.max(0, at(i, j, k))));
    const out = await runGraph(g, { x: { data: x, dims: [2, 3, 4] }, y: { data: y, dims: [4] } });
    for (const [name, want] of Object.entries(expected)) expect(maxAbsDiff(out[name]!.data as Float32Array, want), name).toBeLessThan(TOL);
  });

  it('layout: matMul (batched, broadcast), reshape, reshapeAs, transpose, (un)squeeze, concat, slice, split, gather, expand, tile, pad', async () => {
    const g = new Graph('t');
    const X = g.input('x', 'float32', [2, 3, 4]);
    const W = g.input('w', 'float32', [4, 5]);
    const w = randomArray(20, 3);
    const expected: Record<string, number[]> = {};
    const check = (name: string, t: Tensor, want: number[], shape: op.Shape) => {
      expect(t.shape, name).toEqual(shape);
      g.output(t, name);
      expected[name] = want;
    };
    check('matMul', X.matmul(W), map3((i, j, n) => [0, 1, 2, 3].reduce((s, k) => s + at(i, j, k) * w[k * 5 + n]!, 0), [2, 3, 5]), [2, 3, 5]);
    check('reshape', X.reshape(0, -1), [...x], [2, 12]);
    check('reshapeAs', X.reshape(6, 4).reshapeAs(X), [...x], [2, 3, 4]);
    check('transpose', X.transpose(2, 0, 1), map3((k, i, j) => at(i, j, k), [4, 2, 3]), [4, 2, 3]);
    check('unsqueeze', X.unsqueeze(0, 3).squeeze(0), [...x], [2, 3, 1, 4]);
    check('concat', op.concat([X, X.neg()], 1), map3((i, j, k) => (j < 3 ? at(i, j, k) : -at(i, j - 3, k)), [2, 6, 4]), [2, 6, 4]);
    check('slice', X.slice(2, 1, 3), map3((i, j, k) => at(i, j, k + 1), [2, 3, 2]), [2, 3, 2]);
    check('sliceStep', X.slice(-1, 0, 100, 2), map3((i, j, k) => at(i, j, 2 * k), [2, 3, 2]), [2, 3, '?']);
    const [a, b] = op.split(X, [1, 3], -1);
    check('split', b!, map3((i, j, k) => at(i, j, k + 1), [2, 3, 3]), [2, 3, 3]);
    expect(a!.shape).toEqual([2, 3, 1]);
    const idx = g.constant('int64', [2], [2, 0]);
    check('gather', X.gather(idx, 1), map3((i, j, k) => at(i, [2, 0][j]!, k), [2, 2, 4]), [2, 2, 4]);
    check('expand', X.slice(0, 0, 1).expand([3, 3, 4]), map3((_i, j, k) => at(0, j, k), [3, 3, 4]), [3, 3, 4]);
    check('tile', op.tile(X, [1, 2, 1]), map3((i, j, k) => at(i, j % 3, k), [2, 6, 4]), [2, 6, 4]);
    check('pad', op.pad(X, [0, 0, 1, 0, 0, 1], 'constant', 7), map3((i, j, k) => (k === 0 || k === 5 ? 7 : at(i, j, k - 1)), [2, 3, 6]), [2, 3, 6]);
    const out = await runGraph(g, { x: { data: x, dims: [2, 3, 4] }, w: { data: w, dims: [4, 5] } });
    for (const [name, want] of Object.entries(expected)) expect(maxAbsDiff(out[name]!.data as Float32Array, want), name).toBeLessThan(TOL);
  });

  it('shape tensors, reductions, normalisations, pooling and resize', async () => {
    const g = new Graph('t');
    const X = g.input('x', 'float32', [2, 3, 4]);
    const expected: Record<string, number[]> = {};
    const check = (name: string, t: Tensor, want: number[]) => {
      g.output(t.dtype === 'float32' ? t : t.cast('float32'), name);
      expected[name] = want;
    };
    const s = X.shapeOf(1, 3);
    expect(s.constValue).toEqual([3, 4]);
    check('shapeOf', s, [3, 4]);
    const zero = g.constant('int64', [], [0]);
    check('range', op.range(zero, X.shapeOf(2, 3).squeeze(0), g.constant('int64', [], [1])), [0, 1, 2, 3]);
    check('constantOfShape', op.constantOfShape(X.shapeOf(1, 3), 'float32', 2.5), new Array(12).fill(2.5));
    check('trilu', op.trilu(X, false), map3((i, j, k) => (k <= j ? at(i, j, k) : 0)));
    check('softmax', X.softmax(-1), [...softmax(x, 6, 4)]);
    check('reduceMean', X.mean([1], false), map3((i, _j, k) => (at(i, 0, k) + at(i, 1, k) + at(i, 2, k)) / 3, [2, 1, 4]));
    check('reduceMax', op.reduceMax(X, [-1]), map3((i, j) => Math.max(...[0, 1, 2, 3].map((k) => at(i, j, k))), [2, 3, 1]));
    check('reduceSum', op.reduceSum(X, [0, 2], false), [0, 1, 2].map((j) => [0, 1].reduce((s2, i) => s2 + [0, 1, 2, 3].reduce((t, k) => t + at(i, j, k), 0), 0)));
    const ones = g.constant('float32', [3], [1, 1, 1]);
    const zeros = g.constant('float32', [3], [0, 0, 0]);
    const inorm = map3((i, j, k) => {
      const row = [0, 1, 2, 3].map((kk) => at(i, j, kk));
      const m = row.reduce((a2, b2) => a2 + b2) / 4;
      const v = row.reduce((a2, b2) => a2 + (b2 - m) ** 2, 0) / 4;
      return (at(i, j, k) - m) / Math.sqrt(v + 1e-5);
    });
    check('instanceNorm', op.instanceNormalization(X, ones, zeros, 1e-5), inorm);
    check('layerNorm', op.layerNormalization(X, g.constant('float32', [4], [1, 1, 1, 1]), undefined, 1e-5), inorm);
    const img = X.reshape(1, 2, 3, 4); // (N, C, H, W)
    const pix = (c: number, h: number, w2: number) => at(c, h, w2);
    check('averagePool', op.averagePool(img, [1, 2], [1, 2]), map3((c, h, w2) => (pix(c, h, 2 * w2) + pix(c, h, 2 * w2 + 1)) / 2, [2, 3, 2]));
    check('resizeNearest', op.resizeNearest(img, [1, 1, 2, 2]), map3((c, h, w2) => pix(c, h >> 1, w2 >> 1), [2, 6, 8]));
    const out = await runGraph(g, { x: { data: x, dims: [2, 3, 4] } });
    for (const [name, want] of Object.entries(expected)) expect(maxAbsDiff(out[name]!.data as Float32Array, want), name).toBeLessThan(TOL);
  });
});
