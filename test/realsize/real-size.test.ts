// Opt-in (REAL_SIZE=1; tens of GB of disk, an hour on a loaded 2-core machine): the real-size path a self-hoster's
// first run takes, on CPU.
//   make-random --preset blip3o-4b (REAL_SIZE_PRESET) → convert --dtype fp16 --quant int4 → load every graph in onnxruntime (CPU) →
//   one forward each at a reduced sequence/latent size → finite outputs of the expected shapes, and the resident
//   memory of each graph (RSS delta of this process, after load and after its forward) against the memory plan; then
//   all graphs loaded together, one forward each (external data is memory-mapped: a graph's pages count as resident
//   once a forward has touched them), when the machine has the memory for it (otherwise the per-graph deltas are
//   summed, and the test says so).
// Reuse: REAL_SIZE_SNAPSHOT=<dir> skips make-random, REAL_SIZE_ONNX=<dir> skips both (neither is deleted).
// Everything this test creates lives under REAL_SIZE_TMP (default: the OS temp dir) and is deleted at the end.
import { freemem } from 'node:os';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertSnapshot } from '../../worker/builder/convert.ts';
import { Manifest, MANIFEST_FILE, PARTIAL_MANIFEST_FILE, readManifest } from '../../worker/builder/manifest.ts';
import { makeRandom, RANDOM_PRESETS } from '../../worker/builder/random/index.ts';
import { memoryPlan } from '../../worker/builder/random/memory-plan.ts';
import { patchify, visionFeeds } from '../../worker/pipeline/image.ts';
import { openSession, type ModelSession, type TensorInput } from '../../worker/runtime/session.ts';

const ON = process.env.REAL_SIZE === '1';
/** REAL_SIZE_PRESET=blip3o-8b measures the 8B set (with REAL_SIZE_ONNX, or ~33 GB of snapshot made here). */
const PRESET = process.env.REAL_SIZE_PRESET ?? 'blip3o-4b';
const GB = 1e9;
const created: string[] = [];
let snapshot = process.env.REAL_SIZE_SNAPSHOT ?? '';
let onnx = process.env.REAL_SIZE_ONNX ?? '';
let manifest: Manifest | undefined;

/** fp16 weights stay fp16 in memory (no folding into fp32 copies), and the run-time casts are freed after each run
 *  instead of staying in onnxruntime's arena (see SessionOptions.graphOptimization and cpuMemArena). */
const LEAN = { graphOptimization: 'disabled', cpuMemArena: false } as const;
const rss = () => process.memoryUsage.rss();
const settle = async () => {
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((r) => setTimeout(r, 200));
};
function timed<T>(label: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  return f().then((v) => {
    console.log(`${label}: ${((performance.now() - t0) / 1000).toFixed(0)} s, peak RSS of this process so far ${(process.resourceUsage().maxRSS * 1024 / GB).toFixed(2)} GB`);
    return v;
  });
}

beforeAll(async () => {
  if (!ON) return;
  const tmp = mkdtempSync(join(process.env.REAL_SIZE_TMP ?? tmpdir(), 'real-size-'));
  created.push(tmp);
  if (!snapshot && !onnx) {
    snapshot = join(tmp, 'snapshot');
    await timed(`make-random ${PRESET}`, () => makeRandom({ preset: PRESET, dir: snapshot }));
  }
  if (!onnx) {
    onnx = join(tmp, 'onnx');
    await timed('convert --dtype fp16 --quant int4', () => convertSnapshot(snapshot, onnx, { dtype: 'fp16', quant: 'int4' }));
  }
  manifest = readManifest(onnx);
}, 4 * 3600_000);

/** The graphs to load: the manifest's, or (REAL_SIZE_ONNX of a conversion done with `convert --only`, or still
 *  running that way) the components manifest.partial.json lists as written. */
function graphFiles(): { file: string; bytes: number }[] {
  const partialPath = join(onnx, PARTIAL_MANIFEST_FILE);
  const m = manifest ?? (existsSync(partialPath) ? Manifest.parse(JSON.parse(readFileSync(partialPath, 'utf8'))) : undefined);
  if (!m) throw new Error(`${onnx} has neither ${MANIFEST_FILE} nor ${PARTIAL_MANIFEST_FILE}`);
  if (!manifest) console.log(`${onnx} has no ${MANIFEST_FILE} yet: loading the components ${PARTIAL_MANIFEST_FILE} lists (${Object.keys(m.components).join(', ')})`);
  return Object.values(m.components).flatMap((c) => Object.values(c.graphs));
}
afterAll(() => {
  for (const d of created) rmSync(d, { recursive: true, force: true });
});

const p = RANDOM_PRESETS[PRESET]!;
if (ON && !p) throw new Error(`REAL_SIZE_PRESET=${PRESET}: choose from ${Object.keys(RANDOM_PRESETS).join(', ')}`);
const H = p.text.hidden_size;
const hd = H / p.text.num_attention_heads;
const finite = (a: ArrayLike<number>) => {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return false;
  return true;
};
const ramp = (n: number, scale: number) => Float32Array.from({ length: n }, (_, i) => scale * Math.sin(i * 0.37));

/** One reduced-size forward per graph: feeds and the expected dims of the checked output. */
function cases(): Record<string, { feeds: Record<string, TensorInput>; output: string; dims: number[] }> {
  const S = 8;
  const past: Record<string, TensorInput> = {};
  for (let i = 0; i < p.text.num_hidden_layers; i++)
    for (const kv of ['key', 'value']) past[`past_key_values.${i}.${kv}`] = { data: new Float32Array(0), dims: [1, p.text.num_key_value_heads, 0, hd] };
  const size = 56; // 4×4 patches, 4 merged tokens
  const geometry = { patchSize: 14, temporalPatchSize: 2, mergeSize: 2 };
  const image = { ...patchify(ramp(3 * size * size, 1), size, size, geometry), width: size, height: size };
  const vf = visionFeeds(image, geometry, p.vision.window_size, p.vision.hidden_size / p.vision.num_heads) as unknown as Record<string, TensorInput>;
  const lat = 16;
  return {
    embedding: { feeds: { input_ids: { data: BigInt64Array.from([9707n, 1879n, 11n, 151644n, 872n, 198n, 151665n, 151667n]), dims: [1, S] } }, output: 'inputs_embeds', dims: [1, S, H] },
    decoder: {
      feeds: {
        inputs_embeds: { data: ramp(S * H, 0.02), dims: [1, S, H] },
        attention_mask: { data: new BigInt64Array(S).fill(1n), dims: [1, S] },
        position_ids: { data: BigInt64Array.from({ length: 3 * S }, (_, i) => BigInt(i % S)), dims: [3, 1, S] },
        logits_index: { data: BigInt64Array.of(BigInt(S - 1)), dims: [1] },
        ...past,
      },
      output: 'logits',
      dims: [1, 1, p.text.vocab_size],
    },
    vision: { feeds: vf, output: 'image_embeds', dims: [4, H] },
    dit: {
      feeds: { x: { data: ramp(64 * p.dit.latentChannels, 1), dims: [1, 64, p.dit.latentChannels] }, timestep: { data: Float32Array.of(500), dims: [1] }, z: { data: ramp(S * H, 1), dims: [1, S, H] } },
      output: 'velocity',
      dims: [1, 64, p.dit.latentChannels],
    },
    unet: {
      feeds: {
        sample: { data: ramp(2 * 4 * lat * lat, 1), dims: [2, 4, lat, lat] },
        timestep: { data: Float32Array.of(981, 981), dims: [2] },
        encoder_hidden_states: { data: ramp(2 * 64 * p.dit.latentChannels, 1), dims: [2, 64, p.dit.latentChannels] },
        text_embeds: { data: ramp(2 * p.dit.latentChannels, 1), dims: [2, p.dit.latentChannels] },
        time_ids: { data: Float32Array.of(1024, 1024, 0, 0, 1024, 1024, 1024, 1024, 0, 0, 1024, 1024), dims: [2, 6] },
      },
      output: 'noise_pred',
      dims: [2, 4, lat, lat],
    },
    vae_decoder: { feeds: { latents: { data: ramp(4 * lat * lat, 1), dims: [1, 4, lat, lat] } }, output: 'image', dims: [1, 3, 8 * lat, 8 * lat] },
  };
}

describe.skipIf(!ON)(`real size (REAL_SIZE=1): ${PRESET} random → fp16 + int4 LLM → every graph on CPU`, () => {
  it('loads every graph, runs one reduced forward each (finite, expected shapes), and measures resident memory vs the plan', async () => {
    if (manifest) expect(manifest.quant).toBe('int4');
    const graphs = graphFiles();
    const plan = new Map(memoryPlan(PRESET).map((r) => [r.graph.split('/')[1]!, r.int4Bytes]));
    const byName = cases();
    const resident: Record<string, number> = {};
    for (const g of graphs) {
      const name = g.file.replace(/^.*\//, '').replace(/\.onnx$/, '');
      const c = byName[name];
      expect(c, `a forward case for ${g.file}`).toBeDefined();
      await settle();
      const before = rss();
      const t0 = performance.now();
      const s: ModelSession = await openSession(join(onnx, g.file), { executionProvider: 'cpu', ...LEAN });
      const loadS = (performance.now() - t0) / 1000;
      await settle();
      resident[name] = rss() - before;
      const t1 = performance.now();
      const out = (await s.run(c!.feeds, [c!.output]))[c!.output]!;
      const runS = (performance.now() - t1) / 1000;
      // external data is memory-mapped: its pages count once a forward has touched them
      const afterLoad = resident[name]!;
      resident[name] = Math.max(afterLoad, rss() - before);
      console.log(`${g.file.padEnd(30)} file ${(g.bytes / GB).toFixed(2)} GB, plan ${((plan.get(name) ?? 0) / GB).toFixed(2)} GB, resident +${(afterLoad / GB).toFixed(2)} GB after load, +${(resident[name]! / GB).toFixed(2)} GB after the forward; load ${loadS.toFixed(0)} s, forward ${runS.toFixed(1)} s → ${c!.output} [${out.dims}]`);
      expect(out.dims).toEqual(c!.dims);
      expect(finite(out.data as Float32Array)).toBe(true);
      // weights held once, in the dtype convert wrote (+ onnxruntime's buffers), not upcast to fp32 (that would be
      // 2× for fp16 graphs, 7× for int4). MatMulNBits' CPU prepack takes ~1.4× the int4 bytes, and the first forward
      // adds its buffers: 4B decoder +2.47 GB after load, +2.82 after an 8-token prefill, for 1.78 GB of int4
      // weights; 8B +5.60 / +6.00 for 4.09.
      expect(resident[name]!).toBeLessThan(1.3 * (plan.get(name) ?? g.bytes) + 1 * GB);
      await s.release();
      if (process.env.REAL_SIZE_COMPARE_OPT === name) {
        // the same graph with onnxruntime's default optimizations (fp16 initializers folded to fp32 copies)
        await settle();
        const b = rss();
        const t = performance.now();
        const all = await openSession(join(onnx, g.file), { executionProvider: 'cpu', graphOptimization: 'all' });
        await settle();
        const allS = (performance.now() - t) / 1000;
        const t2 = performance.now();
        await all.run(c!.feeds, [c!.output]);
        console.log(`${g.file} with graphOptimization 'all': resident +${((rss() - b) / GB).toFixed(2)} GB; load ${allS.toFixed(0)} s, forward ${((performance.now() - t2) / 1000).toFixed(1)} s`);
        await all.release();
      }
    }
    const sum = Object.values(resident).reduce((a, b) => a + b, 0);
    const planTotal = [...plan.values()].reduce((a, b) => a + b, 0);
    console.log(`sum of per-graph resident deltas ${(sum / GB).toFixed(2)} GB vs plan ${(planTotal / GB).toFixed(2)} GB`);

    // all together, if it fits beside everything else on this machine (2 GB margin)
    await settle();
    if (freemem() < sum + 2 * GB) {
      console.log(`not loading all graphs together: ${(freemem() / GB).toFixed(1)} GB free < ${(sum / GB + 2).toFixed(1)} GB needed; the per-graph sum stands for it`);
      return;
    }
    const before = rss();
    const sessions: { name: string; s: ModelSession }[] = [];
    const tl = performance.now();
    for (const g of graphs) {
      const name = g.file.replace(/^.*\//, '').replace(/\.onnx$/, '');
      sessions.push({ name, s: await openSession(join(onnx, g.file), { executionProvider: 'cpu', ...LEAN }) });
    }
    await settle();
    const afterLoad = rss() - before;
    console.log(`all ${graphs.length} graphs loaded together: resident +${(afterLoad / GB).toFixed(2)} GB right after load (${((performance.now() - tl) / 1000).toFixed(0)} s)`);
    for (const { name, s } of sessions) {
      const c = byName[name]!;
      const t = performance.now();
      const out = (await s.run(c.feeds, [c.output]))[c.output]!;
      expect(out.dims).toEqual(c.dims);
      expect(finite(out.data as Float32Array)).toBe(true);
      await settle();
      console.log(`  together, after the ${name} forward (${((performance.now() - t) / 1000).toFixed(1)} s): resident +${((rss() - before) / GB).toFixed(2)} GB`);
    }
    const together = rss() - before;
    console.log(`all ${graphs.length} graphs loaded together, one forward each: resident +${(together / GB).toFixed(2)} GB (plan ${(planTotal / GB).toFixed(2)} GB; per-graph sum ${(sum / GB).toFixed(2)} GB); peak RSS of this process ${(process.resourceUsage().maxRSS * 1024 / GB).toFixed(2)} GB`);
    expect(together).toBeLessThan(1.3 * planTotal + 1 * GB);
    for (const { s } of sessions) await s.release();
  }, 4 * 3600_000);
});
