// MatMulNBits as convert ships it, checked against onnxruntime's contrib-op layout rather than against our own
// dequantizer alone (quant.test.ts compares ORT with dequantizeBlockwise, which shares quantizeBlockwise's idea of
// the layout, so a layout mistake made the same way in both would cancel there):
//   - B, scales and zero points packed by hand from the spec text (docs/ContribOperators.md, MatMulNBits: B
//     [N, k_blocks, blob], element k of a block in the low nibble when k is even; zero points
//     [N·⌈k_blocks·bits/8⌉], block b in the low nibble when b is even), with values that differ between nibbles and
//     an odd k_blocks (a half-used zero-point byte) and a padded last block; one-hot rows of A read W back exactly;
//     quantizeBlockwise of that W must produce the same bytes;
//   - the shipped settings (QUANT.int4 / QUANT.int8: blocks of 32, accuracy_level 4) in fp32 and fp16 graphs, for
//     a decode step (1 token) and a batched prefill, on a multi-threaded session, against a plain-JS matmul;
//   - the K of every Linear at BLIP3-o's real sizes (Qwen2.5-VL-3B/7B: hidden 2048 / 3584, intermediate 11008 /
//     18944; blip3o.md §1) with a few output rows;
//   - a tied checkpoint (no lm_head.weight): the quantized head is the embedding table, and the logits equal
//     last_hidden_state · dequant(embed_tokens)ᵀ.
import { describe, expect, it } from 'vitest';
import { buildTextDecoder, TextConfig } from '../../../../worker/builder/architectures/qwen2_5_vl_text.ts';
import { linear as linearBlock } from '../../../../worker/builder/nn.ts';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { matMulNBits } from '../../../../worker/builder/onnx/ops.ts';
import { decodeModel } from '../../../../worker/builder/onnx/proto.ts';
import { dequantizeBlockwise, QUANT, quantizeBlockwise, type NBitsOptions, type Quantized } from '../../../../worker/builder/quant.ts';
import { fromFloat32 } from '../../../../worker/builder/safetensors.ts';
import { openSession, type TensorInput, type TensorOutput } from '../../../../worker/runtime/session.ts';
import { linear, randomArray, relError } from '../../../reference/ops.ts';
import { f32, runGraph, storeOf } from './harness.ts';

/** Runs on the CPU provider with 2 intra-op threads (the worker's default is one per core; the MLAS kernels split
 *  N and K blocks across threads, a path the single-threaded harness never takes). */
async function runThreaded(g: Graph, feeds: Record<string, TensorInput>): Promise<Record<string, TensorOutput>> {
  const s = await openSession(g.toBytes(), { executionProvider: 'cpu', intraOpThreads: 2 });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

describe('MatMulNBits layout, packed by hand from the contrib-op spec', () => {
  // 3 output rows, K = 80: k_blocks = 3 (odd: the second zero-point byte of a row holds one block), last block 16 of 32
  const [N, K, blockSize] = [3, 80, 32];
  const kBlocks = Math.ceil(K / blockSize);
  // distinct per nibble position: 7 is coprime with 16, so every 16 consecutive k take all 16 values
  const qOf = (n: number, k: number) => (7 * k + 3 * n) % 16;
  const zpOf = (n: number, b: number) => (5 * b + 2 * n + 1) % 16;
  const scaleOf = (n: number, b: number) => 0.5 + 0.25 * b + 0.125 * n; // dyadic: products stay exact in fp32
  const W = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) W[n * K + k] = (qOf(n, k) - zpOf(n, Math.floor(k / blockSize))) * scaleOf(n, Math.floor(k / blockSize));

  const byHand: Quantized = (() => {
    const blob = blockSize / 2;
    const zpPerRow = Math.ceil(kBlocks / 2);
    const packed = new Uint8Array(N * kBlocks * blob);
    const scales = new Float32Array(N * kBlocks);
    const zeroPoints = new Uint8Array(N * zpPerRow);
    for (let n = 0; n < N; n++)
      for (let b = 0; b < kBlocks; b++) {
        scales[n * kBlocks + b] = scaleOf(n, b);
        const zp = zpOf(n, b);
        zeroPoints[n * zpPerRow + Math.floor(b / 2)]! |= b % 2 === 0 ? zp : zp << 4;
        for (let i = 0; i < blockSize; i += 2) {
          const k = b * blockSize + i;
          const lo = k < K ? qOf(n, k) : zp; // padding past K quantizes to the zero point (a weight of 0)
          const hi = k + 1 < K ? qOf(n, k + 1) : zp;
          packed[(n * kBlocks + b) * blob + i / 2] = lo | (hi << 4);
        }
      }
    return { packed, scales, zeroPoints, kBlocks };
  })();

  it('onnxruntime reads the hand-packed B, scales and zero points as W (one-hot rows of A, exact)', async () => {
    const g = new Graph('layout');
    const B = g.initializer('B', 'uint8', [N, kBlocks, blockSize / 2], byHand.packed);
    const scales = g.initializer('scales', 'float32', [N * kBlocks], fromFloat32('F32', byHand.scales));
    const zeroPoints = g.initializer('zero_points', 'uint8', [byHand.zeroPoints.length], byHand.zeroPoints);
    const x = g.input('x', 'float32', [K, K]);
    g.output(matMulNBits(x, B, scales, zeroPoints, { K, N, bits: 4, blockSize, accuracyLevel: 0 }), 'y');
    const eye = new Float32Array(K * K);
    for (let k = 0; k < K; k++) eye[k * K + k] = 1;
    const y = f32((await runGraph(g, { x: { data: eye, dims: [K, K] } })).y); // y[k, n] = W[n, k]
    const wT = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wT[k * N + n] = W[n * K + k]!;
    expect([...y]).toEqual([...wT]);
  });

  it('quantizeBlockwise of that W writes the same bytes, and dequantizeBlockwise reads them back exactly', () => {
    const q = quantizeBlockwise(W, N, K, { bits: 4, blockSize });
    expect([...q.scales]).toEqual([...byHand.scales]);
    expect([...q.zeroPoints]).toEqual([...byHand.zeroPoints]);
    expect([...q.packed]).toEqual([...byHand.packed]);
    expect([...dequantizeBlockwise(byHand, N, K, { bits: 4, blockSize })]).toEqual([...W]);
  });
});

describe('the shipped settings (blocks of 32, accuracy_level 4) against a plain-JS matmul', () => {
  // int8 activations per block of 32 (MLAS CompInt8): measured ≤ 7e-3 of max |y| here; exact levels ≤ 1e-5 (fp32),
  // ≤ 6e-4 (fp16 graph)
  const bound = (q: NBitsOptions, dtype: 'float32' | 'float16') => (q.accuracyLevel === 4 ? 1.5e-2 : dtype === 'float16' ? 2e-3 : 1e-5);
  const shapes = [
    { name: 'decode step', B: 1, T: 1 },
    { name: 'batched prefill', B: 2, T: 9 },
  ];
  const quants: [string, NBitsOptions][] = [
    ['int4', QUANT.int4],
    ['int8', QUANT.int8],
    ['int4, accuracy_level 0', { ...QUANT.int4, accuracyLevel: 0 }],
  ];
  for (const [qName, quant] of quants)
    for (const dtype of ['float32', 'float16'] as const)
      it(`${qName}, ${dtype} graph: K = 112 (4 blocks, the last padded), N = 37, ${shapes.map((s) => s.name).join(' and ')}`, async () => {
        const [K, N] = [112, 37];
        const W = randomArray(N * K, 11, 1 / Math.sqrt(K));
        const bias = randomArray(N, 12, 0.1);
        const store = storeOf({ 'p.weight': { shape: [N, K], data: W }, 'p.bias': { shape: [N], data: bias } });
        const deq = dequantizeBlockwise(quantizeBlockwise(W, N, K, quant), N, K, quant);
        for (const s of shapes) {
          const g = new Graph('q');
          const y = linearBlock(store.scope(g, dtype).at('p').withQuant(quant), g.input('x', 'float32', [s.B, s.T, K]).cast(dtype), N);
          g.output(y.cast('float32'), 'y');
          const x = randomArray(s.B * s.T * K, 13, 1);
          const out = await runThreaded(g, { x: { data: x, dims: [s.B, s.T, K] } });
          expect(out.y!.dims).toEqual([s.B, s.T, N]);
          const err = relError(f32(out.y), linear(x, deq, bias, s.B * s.T, K, N));
          expect(err, `${s.name}: error relative to max |y|`).toBeLessThan(bound(quant, dtype));
        }
        store.close();
      });
});

describe('K of every quantized Linear at the real sizes (Qwen2.5-VL-3B / 7B)', () => {
  for (const K of [2048, 3584, 11008, 18944])
    it(`K = ${K}: int4 as shipped, 2 tokens × 24 outputs`, async () => {
      const N = 24;
      const W = randomArray(N * K, K, 1 / Math.sqrt(K));
      const store = storeOf({ 'p.weight': { shape: [N, K], data: W } });
      const g = new Graph('q');
      g.output(linearBlock(store.scope(g, 'float32').at('p').withQuant(QUANT.int4), g.input('x', 'float32', [1, 2, K]), N, { bias: false }), 'y');
      const x = randomArray(2 * K, 3, 1);
      const out = f32((await runThreaded(g, { x: { data: x, dims: [1, 2, K] } })).y);
      const deq = dequantizeBlockwise(quantizeBlockwise(W, N, K, QUANT.int4), N, K, QUANT.int4);
      expect(relError(out, linear(x, deq, undefined, 2, K, N))).toBeLessThan(1.5e-2);
      store.close();
    });
});

describe('tied checkpoint (no lm_head.weight) with --quant int4', () => {
  it('the head is the quantized embedding table: logits = last_hidden_state · dequant(embed_tokens)ᵀ', async () => {
    const [H, I, V, nh, nkv] = [64, 96, 200, 4, 2];
    const hd = H / nh;
    const c = TextConfig.parse({
      hidden_size: H,
      intermediate_size: I,
      num_hidden_layers: 1,
      num_attention_heads: nh,
      num_key_value_heads: nkv,
      vocab_size: V,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      rope_scaling: { mrope_section: [2, 3, 3] },
      tie_word_embeddings: true,
    });
    let seed = 100;
    const w = (shape: number[], scale: number) => ({ shape, data: randomArray(shape.reduce((a, d) => a * d, 1), seed++, scale) });
    const ones = (n: number) => ({ shape: [n], data: new Float32Array(n).fill(1) });
    const embed = w([V, H], 0.5);
    const p = 'model.layers.0';
    const store = storeOf({
      'model.embed_tokens.weight': embed,
      [`${p}.input_layernorm.weight`]: ones(H),
      [`${p}.post_attention_layernorm.weight`]: ones(H),
      [`${p}.self_attn.q_proj.weight`]: w([nh * hd, H], 0.1),
      [`${p}.self_attn.q_proj.bias`]: w([nh * hd], 0.1),
      [`${p}.self_attn.k_proj.weight`]: w([nkv * hd, H], 0.1),
      [`${p}.self_attn.k_proj.bias`]: w([nkv * hd], 0.1),
      [`${p}.self_attn.v_proj.weight`]: w([nkv * hd, H], 0.1),
      [`${p}.self_attn.v_proj.bias`]: w([nkv * hd], 0.1),
      [`${p}.self_attn.o_proj.weight`]: w([H, nh * hd], 0.1),
      [`${p}.mlp.gate_proj.weight`]: w([I, H], 0.1),
      [`${p}.mlp.up_proj.weight`]: w([I, H], 0.1),
      [`${p}.mlp.down_proj.weight`]: w([H, I], 0.1),
      'model.norm.weight': ones(H),
    });
    const g = buildTextDecoder(store, c, { dtype: 'float32', quant: QUANT.int4 });
    const names = decodeModel(g.toBytes()).initializers.map((t) => t.name);
    expect(names).toContain('model.embed_tokens.weight_Q4');
    expect(names.filter((n) => n.startsWith('lm_head'))).toEqual([]);

    const S = 5;
    const feeds: Record<string, TensorInput> = {
      inputs_embeds: { data: randomArray(S * H, 7, 1), dims: [1, S, H] },
      attention_mask: { data: new BigInt64Array(S).fill(1n), dims: [1, S] },
      position_ids: { data: BigInt64Array.from({ length: 3 * S }, (_, i) => BigInt(i % S)), dims: [3, 1, S] },
      'past_key_values.0.key': { data: new Float32Array(0), dims: [1, nkv, 0, hd] },
      'past_key_values.0.value': { data: new Float32Array(0), dims: [1, nkv, 0, hd] },
    };
    const out = await runThreaded(g, feeds);
    const head = dequantizeBlockwise(quantizeBlockwise(embed.data, V, H, QUANT.int4), V, H, QUANT.int4);
    const want = linear(f32(out.last_hidden_state), head, undefined, S, H, V);
    expect(relError(f32(out.logits), want)).toBeLessThan(1.5e-2);
    store.close();
  });
});
