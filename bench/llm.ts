// npm run bench -- llm [--layers 24] [--prefill 64] [--decode 16] [--threads 0] [--rounds 3] [--quant int4|int8] [--fidelity 256]
//
// The Qwen2.5 text decoder graph at a Qwen2.5-0.5B-sized random config (hidden 896, 24 layers, 14/2 heads,
// intermediate 4864, BLIP3-o vocab 151668, tied head), fp32 on onnxruntime CPU. Prints, measured side by side in
// this run:
//   prefill GFLOP/s ÷ onnxruntime's own MatMul GFLOP/s over the same GEMM shapes, each timed alone
//   decode tokens/s ÷ the memory-bandwidth bound (measured copy bandwidth ÷ weight bytes read per token)
// With --quant int4 (or int8) it also builds the same decoder with MatMulNBits weights (fp32 activations, the
// converter's block size and accuracy level) and prints, side by side in the same rounds:
//   int4 decode tokens/s ÷ fp32 decode tokens/s
//   int4 decode tokens/s ÷ the bandwidth bound from the int4 bytes read per token
// and the logit fidelity of int4 and fp16 vs fp32 over --fidelity positions of one prefill (max abs, cosine, top-1).
// Random weights (bf16 safetensors → graphs with external data) are cached under the OS temp dir.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildTextDecoder, TextConfig } from '../worker/builder/architectures/qwen2_5_vl_text.ts';
import { Graph } from '../worker/builder/onnx/graph.ts';
import { Checkpoint, fromFloat32, writeSafetensors, type TensorToWrite } from '../worker/builder/safetensors.ts';
import { nbitsBytes, QUANT } from '../worker/builder/quant.ts';
import { WeightStore } from '../worker/builder/weights.ts';
import { compareLogits, describeFidelity, prefillLogits } from './_fidelity.ts';
import { KvDecoder } from '../worker/pipeline/sampling.ts';
import { openSession, type ModelSession } from '../worker/runtime/session.ts';

export function fill(n: number, seed: number, std: number): Float32Array {
  const v = new Float32Array(n);
  let s = seed >>> 0;
  const k = (2 * Math.sqrt(3) * std) / 4294967296;
  const c = Math.sqrt(3) * std;
  for (let i = 0; i < n; i++) {
    s = (s + 0x9e3779b9) >>> 0;
    let z = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    v[i] = ((z ^ (z >>> 16)) >>> 0) * k - c;
  }
  return v;
}

export function randomCheckpoint(dir: string, c: TextConfig): void {
  const H = c.hidden_size;
  const I = c.intermediate_size;
  const kv = (H / c.num_attention_heads) * c.num_key_value_heads;
  const t: TensorToWrite[] = [];
  let seed = 1;
  const put = (key: string, shape: number[], std: number, mean = 0) => {
    const v = fill(shape.reduce((a, b) => a * b, 1), seed++, std);
    if (mean) for (let i = 0; i < v.length; i++) v[i]! += mean;
    t.push({ key, dtype: 'BF16', shape, data: fromFloat32('BF16', v) });
  };
  put('model.embed_tokens.weight', [c.vocab_size, H], 0.02);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    put(`${p}input_layernorm.weight`, [H], 0.1, 1);
    put(`${p}post_attention_layernorm.weight`, [H], 0.1, 1);
    for (const [n, o] of [['q_proj', H], ['k_proj', kv], ['v_proj', kv]] as const) {
      put(`${p}self_attn.${n}.weight`, [o, H], 1 / Math.sqrt(H));
      put(`${p}self_attn.${n}.bias`, [o], 0.02);
    }
    put(`${p}self_attn.o_proj.weight`, [H, H], 1 / Math.sqrt(H));
    put(`${p}mlp.gate_proj.weight`, [I, H], 1 / Math.sqrt(H));
    put(`${p}mlp.up_proj.weight`, [I, H], 1 / Math.sqrt(H));
    put(`${p}mlp.down_proj.weight`, [H, I], 1 / Math.sqrt(I));
  }
  put('model.norm.weight', [H], 0.1, 1);
  writeSafetensors(join(dir, 'model.safetensors'), t);
}

async function median(n: number, f: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]! / 1000;
}

/** Memory traffic per second of a large typed-array copy: each copied byte is read once and written once, so
 *  2 × bytes copied per second. Decoding reads every weight once per token, so tokens/s ≤ this ÷ weight bytes. */
function copyBandwidth(): number {
  const n = 64 * 2 ** 20; // 256 MiB of float32, far beyond any cache
  const a = fill(n, 7, 1);
  const b = new Float32Array(n);
  b.set(a); // warm: page in
  const t: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    b.set(a);
    t.push(performance.now() - t0);
  }
  t.sort((x, y) => x - y);
  return (2 * n * 4) / (t[2]! / 1000);
}

/** The Qwen2.5-0.5B text decoder's shape with `layers` layers: the model these benches run (llm, batch). */
export function smallTextConfig(layers: number): TextConfig {
  return TextConfig.parse({
    hidden_size: 896, intermediate_size: 4864, num_hidden_layers: layers, num_attention_heads: 14, num_key_value_heads: 2,
    vocab_size: 151668, rms_norm_eps: 1e-6, rope_theta: 1e6, rope_scaling: { mrope_section: [8, 12, 12] }, tie_word_embeddings: true,
  });
}

/** Random weights for `c` and their fp32 decoder graph, built once per layer count and cached in the temp folder. */
export function cachedRandomDecoder(c: TextConfig): { dir: string; model: string } {
  const layers = c.num_hidden_layers;
  const dir = join(tmpdir(), `blip3o-bench-llm-${layers}`);
  const model = join(dir, 'decoder.onnx');
  if (!existsSync(join(dir, 'model.safetensors')) || !existsSync(model)) {
    console.log(`building a random ${layers}-layer Qwen2.5-0.5B-sized checkpoint and graph in ${dir} (cached for next runs)…`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    randomCheckpoint(dir, c);
    const ckpt = Checkpoint.open(dir);
    buildTextDecoder(new WeightStore(ckpt), c, { dtype: 'float32' }).save(model, { externalData: true });
    ckpt.close();
  }
  return { dir, model };
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { layers: { type: 'string', default: '24' }, prefill: { type: 'string', default: '64' }, decode: { type: 'string', default: '16' }, threads: { type: 'string', default: '0' }, rounds: { type: 'string', default: '3' }, quant: { type: 'string', default: 'none' }, fidelity: { type: 'string', default: '256' } } });
  const quant = values.quant;
  if (quant !== 'none' && quant !== 'int4' && quant !== 'int8') throw new Error('--quant must be none, int4 or int8');
  const rounds = Number(values.rounds);
  const layers = Number(values.layers);
  const S = Number(values.prefill);
  const T = Number(values.decode);
  const threads = Number(values.threads);
  const c = smallTextConfig(layers);
  const H = c.hidden_size;
  const I = c.intermediate_size;
  const kv = (H / c.num_attention_heads) * c.num_key_value_heads;
  const { dir, model } = cachedRandomDecoder(c);
  /** The same weights as another graph variant (cached next to the fp32 one). */
  const variant = (name: string, build: (store: WeightStore) => Graph): string => {
    const path = join(dir, `decoder-${name}.onnx`);
    if (!existsSync(path)) {
      console.log(`building the ${name} decoder…`);
      const ckpt = Checkpoint.open(dir);
      build(new WeightStore(ckpt)).save(path, { externalData: true });
      ckpt.close();
    }
    return path;
  };
  const q = quant === 'none' ? undefined : QUANT[quant];
  const quantModel = q && variant(quant, (store) => buildTextDecoder(store, c, { dtype: 'float32', quant: q }));
  const opts = { executionProvider: 'cpu' as const, intraOpThreads: threads };

  // onnxruntime's own MatMul, timed alone at each GEMM shape of the prefill; the model's GEMMs would take
  // Σ count × time(shape) if the graph ran nothing but MatMuls at that throughput.
  const gemms: { m: number; k: number; n: number; count: number }[] = [
    { m: S, k: H, n: H, count: 2 * layers }, // q_proj, o_proj
    { m: S, k: H, n: kv, count: 2 * layers }, // k_proj, v_proj
    { m: S, k: H, n: I, count: 2 * layers }, // gate_proj, up_proj
    { m: S, k: I, n: H, count: layers }, // down_proj
    { m: S, k: H, n: c.vocab_size, count: 1 }, // lm_head
  ];
  const mms: { session: ModelSession; a: Float32Array; dims: number[] }[] = [];
  let gemmFlops = 0;
  for (const [i, g] of gemms.entries()) {
    const mg = new Graph('matmul');
    const w = mg.initializer('w', 'float32', [g.k, g.n], new Uint8Array(fill(g.k * g.n, 10 + i, 0.03).buffer));
    mg.output(mg.input('a', 'float32', [g.m, g.k]).matmul(w), 'y');
    mms.push({ session: await openSession(mg.toBytes(), opts), a: fill(g.m * g.k, 4, 1), dims: [g.m, g.k] });
    gemmFlops += g.count * 2 * g.m * g.k * g.n;
  }
  const session: ModelSession = await openSession(model, opts);
  const dims = { numLayers: layers, numKvHeads: c.num_key_value_heads, headDim: H / c.num_attention_heads, hiddenSize: H, vocabSize: c.vocab_size };
  const dec = new KvDecoder(session, dims);
  const quantSession = quantModel ? await openSession(quantModel, opts) : undefined;
  const quantDec = quantSession && new KvDecoder(quantSession, dims);
  let quantStepSeconds = Infinity;
  const embeds = fill(S * H, 5, 0.02);
  const step = fill(H, 6, 0.02);

  // Rounds interleave every measurement, so load from other processes hits both sides of each ratio alike;
  // each quantity keeps its best (least disturbed) round.
  let gemmSeconds = Infinity;
  let prefillSeconds = Infinity;
  let stepSeconds = Infinity;
  let bandwidth = 0;
  for (let round = 0; round < rounds; round++) {
    let t = 0;
    for (const [i, m] of mms.entries()) {
      await m.session.run({ a: { data: m.a, dims: m.dims } });
      t += gemms[i]!.count * (await median(3, () => m.session.run({ a: { data: m.a, dims: m.dims } })));
    }
    gemmSeconds = Math.min(gemmSeconds, t);
    const t0 = performance.now();
    await dec.prefill(embeds);
    prefillSeconds = Math.min(prefillSeconds, (performance.now() - t0) / 1000);
    const t1 = performance.now();
    for (let i = 0; i < T; i++) await dec.step(step);
    stepSeconds = Math.min(stepSeconds, (performance.now() - t1) / 1000 / T);
    if (quantDec) {
      await quantDec.prefill(embeds);
      const t2 = performance.now();
      for (let i = 0; i < T; i++) await quantDec.step(step);
      quantStepSeconds = Math.min(quantStepSeconds, (performance.now() - t2) / 1000 / T);
    }
    bandwidth = Math.max(bandwidth, copyBandwidth());
  }
  for (const m of mms) await m.session.release();
  const mmGflops = gemmFlops / gemmSeconds / 1e9;
  // MACs: per layer q,k,v,o + SwiGLU per token, attention scores and values over S×S, tied lm_head per token
  const layerMacs = H * H + 2 * H * kv + H * H + 3 * H * I;
  const prefillFlops = 2 * (layers * (S * layerMacs + 2 * S * S * H) + S * H * c.vocab_size);
  const prefillGflops = prefillFlops / prefillSeconds / 1e9;
  const decodeTps = 1 / stepSeconds;

  const weightBytesPerToken = 4 * (layers * (layerMacs + 2 * H + H + 2 * kv) + H + H * c.vocab_size); // fp32: layers + norms + head
  const boundTps = bandwidth / weightBytesPerToken;

  console.log(`Qwen2.5-0.5B-sized decoder (${layers} layers, fp32, onnxruntime CPU, ${threads || 'default'} threads), prefill ${S} tokens, decode ${T} tokens`);
  console.log(`  onnxruntime MatMul alone, same GEMMs: ${mmGflops.toFixed(1)} GFLOP/s  (${(gemmSeconds * 1000).toFixed(0)} ms for the prefill's GEMMs)`);
  console.log(`  prefill:                            ${prefillGflops.toFixed(1)} GFLOP/s  (${(prefillFlops / 1e9).toFixed(1)} GFLOP in ${(prefillSeconds * 1000).toFixed(0)} ms)`);
  console.log(`  prefill / MatMul throughput:        ${(prefillGflops / mmGflops).toFixed(2)}`);
  console.log(`  copy bandwidth (read + write):      ${(bandwidth / 1e9).toFixed(2)} GB/s; weights read per token ${(weightBytesPerToken / 1e9).toFixed(2)} GB`);
  console.log(`  decode:                             ${decodeTps.toFixed(2)} tokens/s; bandwidth bound ${boundTps.toFixed(2)} tokens/s`);
  console.log(`  decode / bandwidth bound:           ${(decodeTps / boundTps).toFixed(2)}`);
  if (!q || !quantSession) return session.release();

  // MatMulNBits bytes (packed values, fp32 scales, zero points) per Linear; norms and biases stay fp32
  const nb = (N: number, K: number) => nbitsBytes(N, K, q, 4);
  const quantLayer = 2 * nb(H, H) + 2 * nb(kv, H) + 2 * nb(I, H) + nb(H, I) + 4 * (2 * H + H + 2 * kv);
  const quantBytesPerToken = layers * quantLayer + 4 * H + nb(c.vocab_size, H);
  const quantTps = 1 / quantStepSeconds;
  const quantBound = bandwidth / quantBytesPerToken;
  console.log(`${quant} weights (MatMulNBits, ${q.bits} bits, blocks of ${q.blockSize}, accuracy level ${q.accuracyLevel}), same rounds:`);
  console.log(`  weights read per token ${(quantBytesPerToken / 1e9).toFixed(3)} GB (fp32 ${(weightBytesPerToken / 1e9).toFixed(2)} GB)`);
  console.log(`  decode:                             ${quantTps.toFixed(2)} tokens/s; bandwidth bound ${quantBound.toFixed(2)} tokens/s`);
  console.log(`  ${quant} decode / fp32 decode:         ${(quantTps / decodeTps).toFixed(2)}`);
  console.log(`  ${quant} decode / ${quant} bandwidth bound: ${(quantTps / quantBound).toFixed(2)}`);

  const P = Number(values.fidelity);
  if (P > 0) {
    const x = fill(P * H, 21, 1);
    const ref = await prefillLogits(session, x, dims);
    console.log(`logit fidelity vs fp32 over ${P} prefill positions × ${c.vocab_size} logits:`);
    console.log(`  ${quant}: ${describeFidelity(compareLogits(ref, await prefillLogits(quantSession, x, dims), c.vocab_size))}`);
    await quantSession.release();
    const fp16 = await openSession(variant('fp16', (store) => buildTextDecoder(store, c, { dtype: 'float16' })), opts);
    console.log(`  fp16: ${describeFidelity(compareLogits(ref, await prefillLogits(fp16, x, dims), c.vocab_size))}`);
    await fp16.release();
  } else await quantSession.release();
  await session.release();
}
