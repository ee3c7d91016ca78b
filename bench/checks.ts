// npm run bench -- checks [--rounds R] [--caption N] [--dit S] [--decoder S] [--threads T]
//
// What the model's checks of its own image cost (issue 16), two ways, in one run:
//
// 1. Measured on the tiny checkpoint (make-tiny + convert) through the real pipeline (worker/pipeline/blip3o.ts):
//    per round, one image at the default steps (config generation.defaultDitSteps/defaultDecoderSteps unless given),
//    then one check round of the caption (--caption tokens, greedy), the match question and the two default moderation
//    questions — shared prefix + one batched forward — and the same round with every question prefilled whole (the
//    WebGPU fallback), interleaved. Prints medians and the ratios check ÷ generation and shared ÷ whole.
//    The tiny model's proportions are not the real model's (its UNet is tiny; its 151668-row lm_head over 64 wide
//    hidden states dominates every LLM pass), so the share here overstates the real one.
//
// 2. The FLOPs of the same check round for the real 8B model (spec §6's counts: decoder layers 6.53 B params, lm_head
//    151668 × 3584, vision 1.26 GFLOP per 14×14 patch + ~30 GMAC attention/merger at 448²) with the token counts of
//    the actual prompts from the real tokenizer, against spec §6's 705 TFLOP of the first generated image.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/load.ts';
import { convertSnapshot } from '../worker/builder/convert.ts';
import { makeTiny } from '../worker/builder/tiny/index.ts';
import { createPipeline } from '../worker/pipeline/blip3o.ts';
import { CAPTION_QUESTION, matchQuestion, yesNoQuestion } from '../worker/pipeline/checks.ts';
import { loadTokenizer, TOKENS } from '../worker/pipeline/tokenizer.ts';
import type { CheckRequest, CheckResult, Pipeline } from '../worker/pipeline/types.ts';
import { conversation } from '../worker/pipeline/understand.ts';

const arg = (args: string[], name: string, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t0: number) => performance.now() - t0;

/** spec §6, 8B: decoder layer params, lm_head, vision per patch and the 448² attention/merger extra, one image. */
const REAL_8B = { layerParams: 6.53e9, lmHead: 151668 * 3584, visionPerPatch: 1.26e9, visionExtra: 2 * 30e9, patches448: 1024, imageTokens: 256, generation: 705e12 };

export async function run(args: string[]): Promise<void> {
  const config = loadConfig({ env: {} });
  const rounds = arg(args, '--rounds', 5);
  const captionTokens = arg(args, '--caption', config.checks.captionMaxTokens);
  const ditSteps = arg(args, '--dit', config.generation.defaultDitSteps);
  const decoderSteps = arg(args, '--decoder', config.generation.defaultDecoderSteps);
  const questions = config.checks.moderation.questions.map(({ id, question }) => ({ id, question }));
  const prompt = 'a red fox sitting in fresh snow at dawn';

  const dir = mkdtempSync(join(tmpdir(), 'bench-checks-'));
  let pipeline: Pipeline | undefined;
  try {
    makeTiny(join(dir, 'snapshot'));
    await convertSnapshot(join(dir, 'snapshot'), join(dir, 'onnx'), { dtype: 'fp32' });
    pipeline = await createPipeline({
      modelDir: join(dir, 'onnx'),
      dtype: 'fp32',
      executionProvider: 'cpu',
      intraOpThreads: arg(args, '--threads', 0),
      understanding: { minPixels: config.understanding.minPixels, maxPixels: config.understanding.maxPixels, maxInputPixels: config.understanding.maxInputPixels, maxAspectRatio: config.understanding.maxAspectRatio },
    });
    const ctx = { signal: new AbortController().signal, onProgress: () => {} };
    const request = (png: Uint8Array): CheckRequest => ({ image: png, prompt, match: true, captionMaxTokens: captionTokens, questions });
    // warm-up: the cached " " negative, session first-run costs
    const warm = await pipeline.generate({ prompt, options: { seed: 1, ditSteps, decoderSteps, guidance: 3, aspect: '1:1' } }, ctx);
    await pipeline.check(request(warm.png), ctx);

    const gen: number[] = [];
    const shared: number[] = [];
    const whole: number[] = [];
    const counts: Record<string, CheckResult['counts']> = {};
    for (let r = 0; r < rounds; r++) {
      let t0 = performance.now();
      const img = await pipeline.generate({ prompt, options: { seed: 100 + r, ditSteps, decoderSteps, guidance: 3, aspect: '1:1' } }, ctx);
      gen.push(ms(t0));
      const once = async (out: number[], wholePrefills: boolean) => {
        t0 = performance.now();
        const res = await (wholePrefills ? withoutSharedCache(() => pipeline!.check(request(img.png), ctx)) : pipeline!.check(request(img.png), ctx));
        counts[wholePrefills ? 'whole' : 'shared'] = res.counts;
        out.push(ms(t0));
      };
      // alternate the order so neither variant always runs on a warmer cache
      if (r % 2 === 0) await once(shared, false), await once(whole, true);
      else await once(whole, true), await once(shared, false);
    }
    const g = median(gen);
    const s = median(shared);
    const w = median(whole);
    console.log(`tiny checkpoint, CPU, ${rounds} interleaved rounds, ${ditSteps} DiT + ${decoderSteps} decoder steps, caption ≤ ${captionTokens} tokens, match + ${questions.length} questions`);
    console.log(`  generation             median ${g.toFixed(0)} ms`);
    console.log(`  check (shared prefix)  median ${s.toFixed(0)} ms = ${((100 * s) / g).toFixed(1)} % of the generation  counts ${JSON.stringify(counts.shared)}`);
    console.log(`  check (whole prefills) median ${w.toFixed(0)} ms = ${((100 * w) / g).toFixed(1)} % of the generation  counts ${JSON.stringify(counts.whole)}; shared ÷ whole = ${(s / w).toFixed(2)}`);
  } finally {
    await pipeline?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  flops8b(captionTokens, prompt, questions);
}

/** Runs `fn` with the pipeline's decoder treated as one whose cache cannot be shared (the whole-prefill path). */
async function withoutSharedCache<T>(fn: () => Promise<T>): Promise<T> {
  const proto = (await import('../worker/pipeline/sampling.ts')).KvDecoder.prototype;
  const desc = Object.getOwnPropertyDescriptor(proto, 'sharesCache')!;
  Object.defineProperty(proto, 'sharesCache', { get: () => false, configurable: true });
  try {
    return await fn();
  } finally {
    Object.defineProperty(proto, 'sharesCache', desc);
  }
}

function flops8b(captionTokens: number, prompt: string, questions: { id: string; question: string }[]): void {
  const dir = mkdtempSync(join(tmpdir(), 'bench-checks-tok-'));
  try {
    makeTiny(join(dir, 'snapshot')); // the real Qwen2.5-VL vocabulary and chat template
    const tok = loadTokenizer(join(dir, 'snapshot'));
    const split = (q: string) => {
      const ids = tok.encodeChat(conversation(q, []));
      const cut = ids.indexOf(TOKENS.visionEnd) + 1;
      return { prefix: cut - 1 + REAL_8B.imageTokens, suffix: ids.length - cut };
    };
    const rows = [matchQuestion(prompt), ...questions.map((q) => yesNoQuestion(q.question)), CAPTION_QUESTION].map(split);
    const prefix = rows[0]!.prefix;
    const suffixTokens = rows.reduce((n, r) => n + r.suffix, 0);
    const R = REAL_8B;
    const vision = R.visionPerPatch * R.patches448 + R.visionExtra;
    const prefill = 2 * R.layerParams * prefix; // KV only: no lm_head
    const batched = 2 * (R.layerParams + R.lmHead) * suffixTokens; // logits at every suffix position
    const caption = 2 * (R.layerParams + R.lmHead) * captionTokens; // upper bound: every caption token
    const total = vision + prefill + batched + caption;
    const wholeTotal = vision + rows.reduce((f, r) => f + 2 * R.layerParams * (r.prefix + r.suffix) + 2 * R.lmHead * (r.prefix + r.suffix), 0) + caption;
    const tf = (x: number) => `${(x / 1e12).toFixed(2)} TFLOP`;
    console.log(`real 8B, one check round (spec §6 counts; real tokenizer: prefix ${prefix} tokens incl. ${R.imageTokens} image tokens, ${rows.length} questions, ${suffixTokens} suffix tokens, caption ≤ ${captionTokens} tokens):`);
    console.log(`  vision 448² ${tf(vision)} + prefix prefill ${tf(prefill)} + batched questions ${tf(batched)} + caption ${tf(caption)} = ${tf(total)}`);
    console.log(`  = ${((100 * total) / R.generation).toFixed(2)} % of a generation (${tf(R.generation)}, spec §6); each question prefilled whole with logits everywhere would be ${tf(wholeTotal)} (${((100 * wholeTotal) / R.generation).toFixed(2)} %)`);
    console.log(`  with maxRerolls N every re-roll adds a generation and a check round: worst case (N + 1) × (705 + ${(total / 1e12).toFixed(1)}) TFLOP`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
