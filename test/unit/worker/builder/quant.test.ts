// Block-wise quantization for MatMulNBits: the packing round-trips within half a quantization step, and
// onnxruntime's MatMulNBits (4 and 8 bits, fp32 and fp16 graphs, exact and int8-activation accuracy levels) computes
// x · dequant(W)ᵀ + b, checked against plain loops over the dequantized weights.
import { describe, expect, it } from 'vitest';
import { linear as linearBlock } from '../../../../worker/builder/nn.ts';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { decodeModel } from '../../../../worker/builder/onnx/proto.ts';
import { dequantizeBlockwise, nbitsBytes, quantizeBlockwise, type NBitsOptions } from '../../../../worker/builder/quant.ts';
import { linear, maxAbsDiff, randomArray } from '../../../reference/ops.ts';
import { f32, runGraph, storeOf } from './harness.ts';

describe('quantizeBlockwise', () => {
  for (const bits of [4, 8] as const)
    it(`${bits} bits: every weight within half a step of its block's scale, K padded to the block`, () => {
      const N = 5;
      const K = 80; // 2.5 blocks of 32: the last block is padded
      const w = randomArray(N * K, 3, 0.2);
      w[7] = 0; // zero must stay exactly zero
      const q = quantizeBlockwise(w, N, K, { bits, blockSize: 32 });
      expect(q.kBlocks).toBe(3);
      expect(q.packed.length).toBe(N * 3 * ((32 * bits) / 8));
      expect(q.packed.length + q.zeroPoints.length + 2 * q.scales.length).toBe(nbitsBytes(N, K, { bits, blockSize: 32 }, 2));
      const d = dequantizeBlockwise(q, N, K, { bits, blockSize: 32 });
      expect(d[7]).toBe(0);
      for (let n = 0; n < N; n++)
        for (let k = 0; k < K; k++) {
          const scale = q.scales[n * 3 + Math.floor(k / 32)]!;
          expect(Math.abs(d[n * K + k]! - w[n * K + k]!)).toBeLessThanOrEqual(scale / 2 + 1e-7);
        }
    });
});

describe('linear() in a quantized scope → MatMulNBits', () => {
  const cases: { bits: 4 | 8; dtype: 'float32' | 'float16'; accuracyLevel: NBitsOptions['accuracyLevel']; tol: number }[] = [
    { bits: 4, dtype: 'float32', accuracyLevel: 0, tol: 1e-4 },
    { bits: 8, dtype: 'float32', accuracyLevel: 0, tol: 1e-4 },
    { bits: 4, dtype: 'float16', accuracyLevel: 0, tol: 2e-2 },
    // int8 activations (per block of 32): error ~ |x|·|W|·K / 2·127
    { bits: 4, dtype: 'float32', accuracyLevel: 4, tol: 5e-2 },
  ];
  for (const c of cases)
    it(`${c.bits} bits, ${c.dtype}, accuracy_level ${c.accuracyLevel}: x·dequant(W)ᵀ + b`, async () => {
      const [T, K, N] = [6, 64, 48];
      const W = randomArray(N * K, 1, 1 / Math.sqrt(K));
      const b = randomArray(N, 2, 0.1);
      const x = randomArray(T * K, 4, 1);
      const store = storeOf({ 'p.weight': { shape: [N, K], data: W }, 'p.bias': { shape: [N], data: b } });
      const quant: NBitsOptions = { bits: c.bits, blockSize: 32, accuracyLevel: c.accuracyLevel };
      const g = new Graph('q');
      const y = linearBlock(store.scope(g, c.dtype).at('p').withQuant(quant), g.input('x', 'float32', [T, K]).cast(c.dtype), N);
      g.output(y.cast('float32'), 'y');
      const model = decodeModel(g.toBytes());
      expect(model.nodes.map((n) => n.opType)).toContain('MatMulNBits');
      const out = await runGraph(g, { x: { data: x, dims: [T, K] } });
      const deq = dequantizeBlockwise(quantizeBlockwise(W, N, K, quant), N, K, quant);
      const err = maxAbsDiff(f32(out.y), linear(x, deq, b, T, K, N));
      console.log(`MatMulNBits ${c.bits} bits ${c.dtype} acc ${c.accuracyLevel}: max abs error vs dequantized reference ${err.toExponential(2)}`);
      expect(err).toBeLessThan(c.tol);
      // and quantization itself moved the result by a bounded amount from the unquantized layer
      expect(maxAbsDiff(f32(out.y), linear(x, W, b, T, K, N))).toBeLessThan(c.bits === 4 ? 0.5 : 0.05);
      store.close();
    });
});
