// convert on a tiny LLM-only snapshot: manifest + loadable graphs, staleness, EVA-CLIP skipped and said so, and
// clear rejections of a wrong shape, a missing key and an unexpected key.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qwen2_5_vl_text, type Architecture, type ComponentBuilder } from '../../../../worker/builder/architectures/index.ts';
import { convertSnapshot, describeSkipped, ensureConverted } from '../../../../worker/builder/convert.ts';
import { readManifest, staleReason, verifyGraphFiles } from '../../../../worker/builder/manifest.ts';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { writeManifest as writeSnapshotManifest } from '../../../../worker/hub/snapshot.ts';
import { fromFloat32, writeShardedSafetensors, type TensorToWrite } from '../../../../worker/builder/safetensors.ts';
import { tinyEvaClipTensors } from '../../../../worker/builder/tiny/eva_clip.ts';
import { tinyRootConfig, tinyTextTensors } from '../../../../worker/builder/tiny/llm.ts';
import { openSession } from '../../../../worker/runtime/session.ts';

// Only the text component: this file tests convert itself, independent of the other architectures' progress.
const TEXT_ONLY: Record<string, Architecture> = {
  blip3oQwenForCausalLM: { components: [qwen2_5_vl_text], skipPrefixes: [{ prefix: 'model.gen_vision_tower.', reason: 'EVA-CLIP, training only' }] },
};
// A second component for `only` (a weightless graph: y = x + 1).
const plusOne: ComponentBuilder = {
  name: 'extra',
  build(ctx) {
    const g = new Graph('extra');
    g.output(g.input('x', 'float32', [2]).add(1), 'y');
    return { graphs: [{ file: 'extra/plus_one.onnx', graph: g, dtype: ctx.dtype }], info: { plusOne: true } };
  },
};
const TEXT_AND_EXTRA: Record<string, Architecture> = {
  blip3oQwenForCausalLM: { components: [qwen2_5_vl_text, plusOne], skipPrefixes: TEXT_ONLY.blip3oQwenForCausalLM!.skipPrefixes },
};
const root = mkdtempSync(join(tmpdir(), 'convert-'));
const base = join(root, 'snapshot');
let tensors: TensorToWrite[];

// A 1000-token vocabulary keeps this file fast (the model tests cover the real 151668).
const VOCAB = 1000;
function snapshot(name: string, edit: (t: TensorToWrite[]) => TensorToWrite[]): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...tinyRootConfig(), vocab_size: VOCAB }));
  writeShardedSafetensors(dir, edit(tensors), 16 * 2 ** 20);
  return dir;
}

beforeAll(() => {
  const small = (t: TensorToWrite): TensorToWrite =>
    t.shape[0] === 151668 ? { ...t, shape: [VOCAB, t.shape[1]!], data: t.data.subarray(0, VOCAB * t.shape[1]! * 2) } : t;
  tensors = [...tinyTextTensors().map(small), ...tinyEvaClipTensors()];
  snapshot('snapshot', (t) => t);
  writeFileSync(join(base, 'tokenizer.json'), '{"model":{"type":"BPE"}}');
}, 60_000);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('convertSnapshot', () => {
  it('writes loadable graphs and a manifest; reports the skipped EVA-CLIP keys; detects staleness', async () => {
    const out = join(root, 'out');
    const progress: number[] = [];
    const m = await convertSnapshot(base, out, { dtype: 'fp32', architectures: TEXT_ONLY, onProgress: (p) => p.phase === 'write' && progress.push(p.bytesDone) });
    expect(Object.keys(m.components.text!.graphs)).toEqual(['embedding', 'decoder']);
    expect(m.components.text!.graphs.decoder!.outputs).toEqual(expect.arrayContaining(['logits', 'last_hidden_state', 'present.0.key', 'present.1.value']));
    // the converted decoder returns one position's logits per row (logits: 'at'), not S × 151668 of them
    expect(m.components.text!.graphs.decoder!.inputs).toContain('logits_index');
    expect(m.skipped['model.gen_vision_tower.']).toBeGreaterThan(0);
    expect(describeSkipped(m.architecture, m.skipped)[0]).toMatch(/skipped \d+ keys under model\.gen_vision_tower\.: EVA-CLIP/);
    expect(progress.at(-1)).toBeGreaterThan(progress[0]!);
    expect(readManifest(out)).toEqual(m);
    // the graphs folder carries the tokenizer: the worker needs nothing from the snapshot
    expect(readFileSync(join(out, 'tokenizer/tokenizer.json'), 'utf8')).toBe(readFileSync(join(base, 'tokenizer.json'), 'utf8'));
    expect(staleReason(out, base, 'fp32')).toBeUndefined();
    expect(staleReason(out, base, 'fp16')).toMatch(/fp32/);

    const s = await openSession(join(out, 'text/decoder.onnx'), { executionProvider: 'cpu' });
    expect(s.inputNames).toEqual(expect.arrayContaining(['inputs_embeds', 'attention_mask', 'position_ids', 'past_key_values.0.key']));
    await s.release();

    const changed = join(root, 'changed');
    cpSync(base, changed, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(changed, 'config.json'), 'utf8'));
    writeFileSync(join(changed, 'config.json'), JSON.stringify({ ...cfg, rope_theta: 10000 }));
    expect(staleReason(out, changed, 'fp32')).toMatch(/config changed/);
    const reasons: string[] = [];
    expect(await ensureConverted(base, out, { architectures: TEXT_ONLY, onStale: (r) => reasons.push(r) })).toEqual(m);
    expect(reasons).toEqual([]); // current: nothing rebuilt
  }, 60_000);

  it('records each graph file\'s size and sha256; a truncated graph is stale, a corrupted one fails the start-up hash check', async () => {
    const out = join(root, 'damaged');
    const m = await convertSnapshot(base, out, { dtype: 'fp32', architectures: TEXT_ONLY });
    const decoder = m.components.text!.graphs.decoder!;
    const files = Object.keys(decoder.files ?? {});
    expect(files).toContain('text/decoder.onnx');
    for (const f of files) expect(decoder.files![f]).toEqual({ bytes: statSync(join(out, f)).size, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(await verifyGraphFiles(out, m)).toBeUndefined();

    // same size, one byte changed: sizes still match, the hash does not
    const path = join(out, 'text/embedding.onnx');
    const bytes = readFileSync(path);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff;
    writeFileSync(path, bytes);
    expect(staleReason(out, base, 'fp32')).toBeUndefined();
    expect(await verifyGraphFiles(out, m)).toMatch(/text\/embedding\.onnx does not match the sha256/);

    // truncated (the "Protobuf parsing failed" restart loop): stale by size, before any session opens
    truncateSync(join(out, 'text/decoder.onnx'), 1000);
    expect(staleReason(out, base, 'fp32')).toMatch(/text\/decoder\.onnx is 1000 bytes, manifest\.json records \d+ \(damaged\)/);

    // a manifest from before sizes and hashes were recorded is stale too (converted again)
    const old = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    for (const g of Object.values(old.components.text.graphs) as { files?: unknown }[]) delete g.files;
    writeFileSync(join(out, 'manifest.json'), JSON.stringify(old));
    expect(staleReason(out, base, 'fp32')).toMatch(/records no size and hash/);
  }, 60_000);

  // Before: the weights were in no hash, so a new model.hubRevision that changed only weights (or the tokenizer) kept
  // serving the old conversion ("after a weights-only change on the hub, delete model.onnxDir").
  it('a fetched snapshot whose weights or tokenizer changed on the hub is stale; another file, or an older manifest, is not', async () => {
    const fetched = join(root, 'fetched');
    cpSync(base, fetched, { recursive: true });
    const record = (oid: string) => ({ size: 1, oid, hash: 'sha256' as const });
    const shards = readdirSync(fetched).filter((f) => f.endsWith('.safetensors'));
    expect(shards.length).toBeGreaterThan(0);
    const files = Object.fromEntries([...shards, 'tokenizer.json', 'README.md'].map((f) => [f, record(`${f}@1`)]));
    const fetchManifest = (changed: Record<string, ReturnType<typeof record>>) =>
      writeSnapshotManifest(fetched, { version: 1, repo: 'BLIP3o/BLIP3o-Model-4B', revision: 'main', hubUrl: 'https://huggingface.co', complete: true, files: { ...files, ...changed }, skipped: [] });
    await fetchManifest({});
    const out = join(root, 'fetched-onnx');
    const m = await convertSnapshot(fetched, out, { dtype: 'fp32', architectures: TEXT_ONLY });
    expect(m.sourceWeightsHash).toMatch(/^[0-9a-f]{64}$/);
    expect(staleReason(out, fetched, 'fp32')).toBeUndefined();

    await fetchManifest({ 'README.md': record('README.md@2') });
    expect(staleReason(out, fetched, 'fp32')).toBeUndefined(); // the converter does not read it
    await fetchManifest({ [shards[0]!]: record('shard@2') });
    expect(staleReason(out, fetched, 'fp32')).toBe('the snapshot weights changed since the conversion (a new model.hubRevision)');
    await fetchManifest({ 'tokenizer.json': record('tokenizer@2') });
    expect(staleReason(out, fetched, 'fp32')).toMatch(/weights changed/);

    // converted before the weights hash existed: not converted again for it (hours at real size)
    const older = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    delete older.sourceWeightsHash;
    writeFileSync(join(out, 'manifest.json'), JSON.stringify(older));
    expect(staleReason(out, fetched, 'fp32')).toBeUndefined();
  }, 60_000);

  it('--only converts some components now and the rest later; manifest.json appears when every component is written', async () => {
    const out = join(root, 'only');
    const opts = { dtype: 'fp32', architectures: TEXT_AND_EXTRA } as const;
    await expect(convertSnapshot(base, out, { ...opts, only: ['unet'] })).rejects.toThrow('unknown component unet for blip3oQwenForCausalLM: choose from text, extra');

    const first = await convertSnapshot(base, out, { ...opts, only: ['extra'] });
    expect(Object.keys(first.components)).toEqual(['extra']);
    expect(existsSync(join(out, 'text/decoder.onnx'))).toBe(false);
    expect(readManifest(out)).toBeUndefined(); // never taken for a finished conversion
    expect(staleReason(out, base, 'fp32')).toMatch(/no manifest\.json/);
    expect(JSON.parse(readFileSync(join(out, 'manifest.partial.json'), 'utf8')).components.extra.info).toEqual({ plusOne: true });

    // another dtype does not add to the fp32 part: it starts over
    const other = await convertSnapshot(base, out, { ...opts, dtype: 'fp16', only: ['text'] });
    expect(Object.keys(other.components)).toEqual(['text']);
    expect(readManifest(out)).toBeUndefined();
    await convertSnapshot(base, out, { ...opts, only: ['extra'] });

    const done = await convertSnapshot(base, out, { ...opts, only: ['text'] });
    expect(Object.keys(done.components)).toEqual(['text', 'extra']); // the table's order
    expect(readManifest(out)).toEqual(done);
    expect(existsSync(join(out, 'manifest.partial.json'))).toBe(false);
    expect(staleReason(out, base, 'fp32')).toBeUndefined();
    expect(await verifyGraphFiles(out, done)).toBeUndefined();
    // the same as one full conversion
    const full = await convertSnapshot(base, join(root, 'only-full'), opts);
    expect(done).toEqual(full);

    // converting one component again keeps the others' entries
    const again = await convertSnapshot(base, out, { ...opts, only: ['extra'] });
    expect(again).toEqual(full);
    expect(readManifest(out)).toEqual(full);
    const s = await openSession(join(out, 'extra/plus_one.onnx'), { executionProvider: 'cpu' });
    expect(Array.from((await s.run({ x: { data: Float32Array.of(1, 2), dims: [2] } })).y!.data as Float32Array)).toEqual([2, 3]);
    await s.release();
  }, 60_000);

  it('fp16 output stores fp16 weights and still runs', async () => {
    const out = join(root, 'out16');
    const m = await convertSnapshot(base, out, { dtype: 'fp16', architectures: TEXT_ONLY });
    expect(m.components.text!.graphs.decoder!.dtype).toBe('fp16');
    const s = await openSession(join(out, 'text/embedding.onnx'), { executionProvider: 'cpu' });
    const r = await s.run({ input_ids: { data: BigInt64Array.from([970n, 187n]), dims: [1, 2] } });
    expect(r.inputs_embeds!.dims).toEqual([1, 2, 64]);
    await s.release();
  }, 60_000);

  it('rejects a wrong shape naming the key and both shapes', async () => {
    const key = 'model.layers.1.self_attn.k_proj.weight';
    const dir = snapshot('wrong-shape', (t) => t.map((x) => (x.key === key ? { ...x, shape: [16, 64], data: fromFloat32('BF16', new Float32Array(16 * 64)) } : x)));
    await expect(convertSnapshot(dir, join(root, 'o1'), { architectures: TEXT_ONLY })).rejects.toThrow(
      'model.layers.1.self_attn.k_proj.weight has shape [16, 64] in the checkpoint, expected [32, 64]',
    );
  });

  it('rejects a missing key naming it and its expected shape, and an unexpected key', async () => {
    const missing = snapshot('missing', (t) => t.filter((x) => x.key !== 'model.layers.0.self_attn.q_proj.bias'));
    await expect(convertSnapshot(missing, join(root, 'o2'), { architectures: TEXT_ONLY })).rejects.toThrow(
      'checkpoint is missing model.layers.0.self_attn.q_proj.bias (expected shape [64])',
    );
    const extra = snapshot('extra', (t) => [...t, { key: 'model.layers.0.self_attn.o_proj.bias', dtype: 'BF16', shape: [64], data: fromFloat32('BF16', new Float32Array(64)) }]);
    await expect(convertSnapshot(extra, join(root, 'o3'), { architectures: TEXT_ONLY })).rejects.toThrow(/not used by any graph, e\.g\. model\.layers\.0\.self_attn\.o_proj\.bias/);
  });
});
