// Fidelity of the reduced-precision LLM graphs against the fp32 graph, on the same weights:
//   - the tiny checkpoint (hidden 64) and a Qwen2.5-0.5B-shaped random decoder (hidden 896, 14/2 heads,
//     intermediate 4864, vocab 151668, tied head; 4 of its 24 layers, so the test stays fast on CPU;
//     `npm run bench -- llm --quant int4` measures all 24): logits over 256 prefill positions, max abs, cosine,
//     top-1 agreement, for int4 / int8 (MatMulNBits, fp32 activations as on CPU), int4 inside an fp16 graph (what
//     `convert --dtype fp16 --quant int4` writes for the GPU) and plain fp16;
//   - a whole tiny image generation (LLM → DiT → UNet → VAE) with fp16 graphs vs fp32: the decoded pixels.
// The bounds are documented in docs/model-builder.md ("Precision and fidelity"); each is ~2–5× the measured value.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { compareLogits, describeFidelity, prefillLogits, type Fidelity } from '../../bench/_fidelity.ts';
import { buildTextDecoder, TextConfig } from '../../worker/builder/architectures/qwen2_5_vl_text.ts';
import { convertSnapshot } from '../../worker/builder/convert.ts';
import { QUANT, type NBitsOptions } from '../../worker/builder/quant.ts';
import { randomFill } from '../../worker/builder/random/index.ts';
import { Checkpoint, writeSafetensorsStreaming } from '../../worker/builder/safetensors.ts';
import { specScale } from '../../worker/builder/tiny/component.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { llmComponent, textWeightSpecs } from '../../worker/builder/tiny/llm.ts';
import { WeightStore } from '../../worker/builder/weights.ts';
import { createPipeline } from '../../worker/pipeline/blip3o.ts';
import { openSession } from '../../worker/runtime/session.ts';
import { randomArray } from '../reference/ops.ts';

const root = mkdtempSync(join(tmpdir(), 'quant-fidelity-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const P = 256;
type Variant = { name: string; dtype: 'float32' | 'float16'; quant?: NBitsOptions };
const VARIANTS: Variant[] = [
  { name: 'int4', dtype: 'float32', quant: QUANT.int4 },
  { name: 'int8', dtype: 'float32', quant: QUANT.int8 },
  { name: 'fp16+int4', dtype: 'float16', quant: QUANT.int4 },
  { name: 'fp16', dtype: 'float16' },
];

async function fidelity(dir: string, c: TextConfig): Promise<Record<string, Fidelity>> {
  const ckpt = Checkpoint.open(dir);
  const dims = { hiddenSize: c.hidden_size, numLayers: c.num_hidden_layers, numKvHeads: c.num_key_value_heads, headDim: c.hidden_size / c.num_attention_heads };
  const x = randomArray(P * c.hidden_size, 17, 1);
  const run = async (v: Omit<Variant, 'name'>) => {
    const path = join(dir, `decoder-${v.dtype}-${v.quant?.bits ?? 0}.onnx`);
    buildTextDecoder(new WeightStore(ckpt), c, { dtype: v.dtype, quant: v.quant }).save(path, { externalData: true });
    const s = await openSession(path, { executionProvider: 'cpu' });
    try {
      return await prefillLogits(s, x, dims);
    } finally {
      await s.release();
    }
  };
  const ref = await run({ dtype: 'float32' });
  const out: Record<string, Fidelity> = {};
  for (const v of VARIANTS) {
    out[v.name] = compareLogits(ref, await run(v), c.vocab_size);
    console.log(`${dir.includes('tiny') ? 'tiny' : '0.5B-shaped'} ${v.name} vs fp32: ${describeFidelity(out[v.name]!)}`);
  }
  ckpt.close();
  return out;
}

describe('LLM logits of int4 / int8 / fp16 graphs vs fp32', () => {
  it('tiny checkpoint', async () => {
    const dir = join(root, 'tiny');
    makeTiny(dir, [llmComponent]);
    const f = await fidelity(dir, TextConfig.parse(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))));
    // measured (loaded 2-core VM): int4 cosine 0.984, top-1 61.7 %; int8 0.99986, 94.1 %; fp16+int4 0.984; fp16 max abs 3.8e-3, 100 %
    expect(f.int4!.meanCosine).toBeGreaterThan(0.97);
    expect(f.int4!.top1).toBeGreaterThan(0.4);
    expect(f.int8!.meanCosine).toBeGreaterThan(0.9995);
    expect(f.int8!.top1).toBeGreaterThan(0.85);
    expect(f['fp16+int4']!.meanCosine).toBeGreaterThan(0.97);
    expect(f.fp16!.maxAbs).toBeLessThan(2e-2);
    expect(f.fp16!.top1).toBeGreaterThan(0.97);
  }, 900_000);

  it('Qwen2.5-0.5B-shaped random decoder (4 layers)', async () => {
    const dir = join(root, 'half-b');
    const text = { hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 4, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151668, rms_norm_eps: 1e-6, rope_theta: 1e6, mrope_section: [8, 12, 12], n_query: 64 };
    // make-random's value streams (uniform, per-key seeds); tied head: no lm_head stored
    const specs = textWeightSpecs(text, { lmHead: false }).filter((s) => s.key !== 'model.latent_queries');
    mkdirSync(dir, { recursive: true });
    writeSafetensorsStreaming(join(dir, 'model.safetensors'), specs.map((s, i) => {
      const { std, mean } = specScale(s);
      return { key: s.key, dtype: 'BF16' as const, shape: s.shape, fill: randomFill(1000 + i, s.kind === 'unit' ? 0.02 : std, mean) };
    }));
    const c = TextConfig.parse({ ...text, rope_scaling: { mrope_section: text.mrope_section }, tie_word_embeddings: true });
    const f = await fidelity(dir, c);
    // measured: int4 cosine 0.9815, top-1 56.3 %; int8 0.99980, 94.1 % (random weights give flat logits, so top-1 is
    // the most fragile of the three numbers; a trained model's peaked logits agree far more often)
    expect(f.int4!.meanCosine).toBeGreaterThan(0.97);
    expect(f.int4!.top1).toBeGreaterThan(0.35);
    expect(f.int8!.meanCosine).toBeGreaterThan(0.9995);
    expect(f.int8!.top1).toBeGreaterThan(0.85);
    expect(f['fp16+int4']!.meanCosine).toBeGreaterThan(0.97);
    expect(f.fp16!.top1).toBeGreaterThan(0.97);
  }, 1_800_000);
});

describe('a whole tiny image generation, fp16 graphs vs fp32', () => {
  it('decodes to nearly the same pixels', async () => {
    const snap = join(root, 'gen-snapshot');
    makeTiny(snap);
    const pixels: Buffer[] = [];
    for (const dtype of ['fp32', 'fp16'] as const) {
      await convertSnapshot(snap, join(root, `gen-${dtype}`), { dtype });
      const pipeline = await createPipeline({
        modelDir: join(root, `gen-${dtype}`),
        dtype,
        executionProvider: 'cpu',
        intraOpThreads: 0,
        understanding: { minPixels: 3136, maxPixels: 1003520, maxInputPixels: 50_000_000, maxAspectRatio: 200 },
      });
      try {
        const img = await pipeline.generate({ prompt: 'a red fox in snow', options: { seed: 11, ditSteps: 12, decoderSteps: 12, guidance: 3, aspect: '1:1' } }, { signal: new AbortController().signal, onProgress: () => {} });
        pixels.push(await sharp(img.png).raw().toBuffer());
      } finally {
        await pipeline.close();
      }
    }
    const [a, b] = pixels as [Buffer, Buffer];
    expect(b.length).toBe(a.length);
    let max = 0;
    let differing = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      max = Math.max(max, d);
      if (d) differing++;
    }
    console.log(`tiny generation fp16 vs fp32: max pixel difference ${max}/255, ${((100 * differing) / a.length).toFixed(2)} % of channel values differ`);
    expect(max).toBeLessThanOrEqual(4);
    expect(differing / a.length).toBeLessThan(0.1);
  }, 1_800_000);
});
