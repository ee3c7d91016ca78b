// convertSnapshot(): a HF BLIP3-o snapshot → ONNX graphs + manifest.json. Called by `npm run model -- convert` and
// by the worker at start-up when the output is missing or stale (see manifest.ts staleReason).
//
//   1. config.json → ARCHITECTURES[architectures[0]] (architectures/index.ts)
//   2. every component builds its graphs; weights are declared (shape-checked) but not read yet
//   3. every checkpoint key must be declared by some graph, except prefixes skipped on purpose (reported)
//   4. graphs are written one initializer at a time (external data above 512 MiB), then manifest.json, last
//      (`only`: some components now, the rest in later runs; see ConvertOptions.only)
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { AppError } from '../../src/errors.ts';
import { ARCHITECTURES, type Architecture, type BuildContext, type ComponentOutput, type OutputDType } from './architectures/index.ts';
import { BUILDER_VERSION, digestFile, Manifest, MANIFEST_FILE, PARTIAL_MANIFEST_FILE, readManifest, sourceConfigHash, sourceWeightsHash, staleReason } from './manifest.ts';
import type { QuantName } from './quant.ts';
import { Checkpoint, fromFloat32, writeSafetensors } from './safetensors.ts';
import { WeightStore } from './weights.ts';

export interface ConvertProgress {
  phase: 'build' | 'write';
  /** The graph or tensor file being written. */
  file: string;
  bytesDone: number;
  bytesTotal: number;
}
export interface ConvertOptions {
  /** fp32 for CPU, fp16 for GPU (norm statistics, softmax and the VAE stay fp32). @defaultValue 'fp32' */
  dtype?: OutputDType;
  /** int4/int8: the LLM's Linear weights (layers and lm_head) block-quantized for MatMulNBits. @defaultValue 'none' */
  quant?: QuantName;
  onProgress?(p: ConvertProgress): void;
  /**
   * Write only these components (e.g. ['unet', 'vae']): a real-size conversion in several shorter runs, or one
   * component converted again. Every component is still built (the unused-key check spans them all). The written
   * components are merged into `manifest.partial.json` (reset when builder version, dtype, quant or snapshot config
   * differ; seeded from a current manifest.json); once it covers every component it becomes manifest.json. Until
   * then the folder has no manifest.json, so the worker never takes it for a finished conversion.
   * @defaultValue every component
   */
  only?: readonly string[];
  /** The architecture table (tests convert partial snapshots with a smaller one). @defaultValue ARCHITECTURES */
  architectures?: Record<string, Architecture>;
}

const RootConfig = z.looseObject({ architectures: z.array(z.string()).min(1) });

export async function convertSnapshot(snapshotDir: string, outDir: string, opts: ConvertOptions = {}): Promise<Manifest> {
  const dtype = opts.dtype ?? 'fp32';
  const quant = opts.quant ?? 'none';
  const configPath = join(snapshotDir, 'config.json');
  if (!existsSync(configPath)) throw new AppError('model', `${snapshotDir} has no config.json: not a HF snapshot`, { context: { snapshotDir } });
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  const parsed = RootConfig.safeParse(config);
  if (!parsed.success) throw new AppError('model', `${configPath} has no "architectures" list`);
  const archName = parsed.data.architectures[0]!;
  const table = opts.architectures ?? ARCHITECTURES;
  const arch = table[archName];
  if (!arch)
    throw new AppError('model', `no builder for architecture ${archName} (known: ${Object.keys(table).join(', ')})`, { context: { archName } });
  const names = arch.components.map((c) => c.name);
  const unknown = (opts.only ?? []).filter((n) => !names.includes(n));
  if (unknown.length || opts.only?.length === 0)
    throw new AppError('config', `unknown component ${unknown.join(', ') || '(none given)'} for ${archName}: choose from ${names.join(', ')}`, { context: { unknown } });
  const selected = (name: string) => !opts.only || opts.only.includes(name);

  // Shards holding only skipped keys (EVA-CLIP) may be absent: the hub fetch does not download them.
  const rootCkpt = Checkpoint.open(snapshotDir, 'model', arch.skipPrefixes.map((s) => s.prefix));
  const checkpoints = [rootCkpt];
  const stores: { name: string; store: WeightStore; skip: readonly string[] }[] = [];
  const store = new WeightStore(rootCkpt);
  stores.push({ name: 'root', store, skip: arch.skipPrefixes.map((s) => s.prefix) });
  const ctx: BuildContext = {
    snapshotDir,
    config,
    dtype,
    quant,
    store,
    openStore(subdir, filePrefix, skip = []) {
      const ckpt = Checkpoint.open(join(snapshotDir, subdir), filePrefix);
      checkpoints.push(ckpt);
      const s = new WeightStore(ckpt);
      stores.push({ name: subdir, store: s, skip });
      return s;
    },
  };

  try {
    // 1–2. build (weights declared, shapes checked; nothing read yet)
    const built: { name: string; out: ComponentOutput }[] = [];
    for (const c of arch.components) {
      opts.onProgress?.({ phase: 'build', file: c.name, bytesDone: 0, bytesTotal: 0 });
      built.push({ name: c.name, out: c.build(ctx) });
    }
    // 3. every key accounted for
    const skipped: Record<string, number> = {};
    for (const s of stores) {
      const r = s.store.unused(s.skip);
      if (r.unused.length)
        throw new AppError('model', `${r.unused.length} ${s.name} checkpoint keys are not used by any graph, e.g. ${r.unused.slice(0, 5).join(', ')}`, {
          context: { unused: r.unused },
        });
      for (const [p, n] of Object.entries(r.skipped)) skipped[s.name === 'root' ? p : `${s.name}:${p}`] = n;
    }

    const weightsHash = sourceWeightsHash(snapshotDir);
    // 4. write: the old manifest goes first, so an interrupted conversion is never taken for a current one
    mkdirSync(outDir, { recursive: true });
    const manifest: Manifest = {
      manifestVersion: 1,
      builderVersion: BUILDER_VERSION,
      architecture: archName,
      dtype,
      quant,
      sourceConfigHash: sourceConfigHash(snapshotDir),
      ...(weightsHash ? { sourceWeightsHash: weightsHash } : {}),
      components: opts.only ? earlierComponents(outDir, snapshotDir, archName, dtype, quant) : {},
      skipped,
    };
    const toWrite = built.filter((b) => selected(b.name));
    for (const { name } of toWrite) delete manifest.components[name];
    rmSync(join(outDir, MANIFEST_FILE), { force: true });
    if (opts.only) writeFileSync(join(outDir, PARTIAL_MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    else rmSync(join(outDir, PARTIAL_MANIFEST_FILE), { force: true });
    const bytesTotal = toWrite.reduce((s, b) => s + b.out.graphs.reduce((t, g) => t + g.graph.initializerBytes(), 0), 0);
    let bytesDone = 0;
    for (const { name, out } of toWrite) {
      const entry: Manifest['components'][string] = { graphs: {}, tensors: {}, info: out.info ?? {} };
      for (const g of out.graphs) {
        const path = join(outDir, g.file);
        mkdirSync(dirname(path), { recursive: true });
        rmSync(`${path}.data`, { force: true });
        const saved = g.graph.save(path, {
          onTensor(_n, bytes) {
            bytesDone += bytes;
            opts.onProgress?.({ phase: 'write', file: g.file, bytesDone, bytesTotal });
          },
        });
        const graphName = g.file.replace(/^.*\//, '').replace(/\.onnx$/, '');
        entry.graphs[graphName] = {
          file: g.file,
          dtype: g.dtype,
          external: saved.external,
          bytes: saved.bytes,
          inputs: g.graph.inputs.map((i) => i.name),
          outputs: g.graph.outputs.map((o) => o.name),
          files: Object.fromEntries([g.file, ...(saved.external ? [`${g.file}.data`] : [])].map((f) => [f, digestFile(join(outDir, f))])),
        };
      }
      for (const t of out.tensors ?? []) {
        const path = join(outDir, t.file);
        mkdirSync(dirname(path), { recursive: true });
        writeSafetensors(path, [{ key: t.key, dtype: 'F32', shape: t.dims, data: fromFloat32('F32', t.data) }]);
        entry.tensors[t.key] = { file: t.file, key: t.key, dims: t.dims };
      }
      manifest.components[name] = entry;
      // a partial run records each finished component at once: an interruption loses only the one being written
      if (opts.only) writeFileSync(join(outDir, PARTIAL_MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    }
    copyTokenizerFiles(snapshotDir, join(outDir, 'tokenizer'));
    // components in the table's order, whatever order the runs wrote them in
    manifest.components = Object.fromEntries(names.filter((n) => manifest.components[n]).map((n) => [n, manifest.components[n]!]));
    if (names.every((n) => manifest.components[n])) {
      writeFileSync(join(outDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
      rmSync(join(outDir, PARTIAL_MANIFEST_FILE), { force: true });
    }
    return manifest;
  } finally {
    for (const c of checkpoints) c.close();
  }
}

/**
 * What earlier `only` runs wrote into `outDir` for this snapshot and these settings (manifest.partial.json, or a
 * current manifest.json when one component is converted again), so a later run adds to it; {} when there is none
 * or it was written for another builder version, dtype, quant or snapshot config.
 */
function earlierComponents(outDir: string, snapshotDir: string, archName: string, dtype: OutputDType, quant: QuantName): Manifest['components'] {
  for (const file of [PARTIAL_MANIFEST_FILE, MANIFEST_FILE]) {
    const path = join(outDir, file);
    if (!existsSync(path)) continue;
    const parsed = Manifest.safeParse(JSON.parse(readFileSync(path, 'utf8')));
    if (!parsed.success) continue;
    const m = parsed.data;
    if (m.builderVersion === BUILDER_VERSION && m.architecture === archName && m.dtype === dtype && m.quant === quant && m.sourceConfigHash === sourceConfigHash(snapshotDir) && m.sourceWeightsHash === sourceWeightsHash(snapshotDir))
      return m.components;
  }
  return {};
}

/** The snapshot's tokenizer and chat-template files, as HF saves them; tokenizer.json is required. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt', 'chat_template.json', 'chat_template.jinja', 'generation_config.json'];

/**
 * The converted folder carries its tokenizer, so the worker needs the graphs folder alone (snapshotDir may be
 * pruned or moved). A snapshot without tokenizer.json converts (weights-only tests do); loading then says so.
 */
function copyTokenizerFiles(snapshotDir: string, dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of TOKENIZER_FILES) if (existsSync(join(snapshotDir, f))) copyFileSync(join(snapshotDir, f), join(dir, f));
}

/** The worker's start-up: the current manifest of `outDir`, converting first when it is missing or stale
 *  (`onStale` hears why, e.g. to log it). */
export async function ensureConverted(snapshotDir: string, outDir: string, opts: ConvertOptions & { onStale?(reason: string): void } = {}): Promise<Manifest> {
  const reason = staleReason(outDir, snapshotDir, opts.dtype ?? 'fp32', opts.quant ?? 'none');
  if (reason === undefined) return readManifest(outDir)!;
  opts.onStale?.(reason);
  return convertSnapshot(snapshotDir, outDir, opts);
}

/** Prints what convert skipped on purpose, with the reason (EVA-CLIP is present in real snapshots but unused). */
export function describeSkipped(archName: string, skipped: Record<string, number>): string[] {
  const reasons = new Map((ARCHITECTURES[archName]?.skipPrefixes ?? []).map((s) => [s.prefix, s.reason]));
  return Object.entries(skipped)
    .filter(([, n]) => n > 0)
    .map(([p, n]) => `skipped ${n} keys under ${p}${reasons.has(p) ? `: ${reasons.get(p)}` : ''}`);
}
