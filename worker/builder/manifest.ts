// manifest.json: what `convert` wrote, so the worker can load it and detect a stale conversion. It is written
// last, after every graph, so a crash mid-conversion leaves no manifest (and the next start converts again).
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { AppError } from '../../src/errors.ts';
import { readManifest as readSnapshotManifest } from '../hub/snapshot.ts';

/** Bump when any graph a builder emits changes meaning or I/O: every existing conversion becomes stale. */
export const BUILDER_VERSION = 2; // 2: the decoder picks each row's logits (input logits_index)
export const MANIFEST_FILE = 'manifest.json';
/** What `convert --only` runs wrote so far; becomes manifest.json once every component is written. */
export const PARTIAL_MANIFEST_FILE = 'manifest.partial.json';

const FileDigest = z.object({ bytes: z.number().int().nonnegative(), sha256: z.string() });
export type FileDigest = z.infer<typeof FileDigest>;
const GraphEntry = z.object({
  file: z.string(),
  dtype: z.enum(['fp32', 'fp16']),
  external: z.boolean(),
  bytes: z.number().int().nonnegative(),
  inputs: z.array(z.string()),
  outputs: z.array(z.string()),
  /** Size and sha256 of each file of the graph (the .onnx and its .data), by path under the output dir. */
  files: z.record(z.string(), FileDigest).optional(),
});
export const Manifest = z.object({
  manifestVersion: z.literal(1),
  builderVersion: z.number().int(),
  architecture: z.string(),
  dtype: z.enum(['fp32', 'fp16']),
  /** Block quantization of the LLM's Linear weights (absent in manifests written before it existed = none). */
  quant: z.enum(['none', 'int4', 'int8']).default('none'),
  /** sha256 over the snapshot's config files and safetensors indexes (see sourceConfigHash). */
  sourceConfigHash: z.string(),
  /**
   * sha256 over the hub's hashes of the snapshot's weights and tokenizer files, as the fetch verified them (see
   * sourceWeightsHash). Absent when the snapshot was not fetched here, and in manifests written before it existed.
   */
  sourceWeightsHash: z.string().optional(),
  components: z.record(
    z.string(),
    z.object({
      graphs: z.record(z.string(), GraphEntry),
      tensors: z.record(z.string(), z.object({ file: z.string(), key: z.string(), dims: z.array(z.number()) })),
      info: z.record(z.string(), z.unknown()),
    }),
  ),
  /** Checkpoint key prefixes skipped on purpose → number of keys skipped. */
  skipped: z.record(z.string(), z.number()),
});
export type Manifest = z.infer<typeof Manifest>;

/** sha256 over every config-like JSON of the snapshot (config.json, generation_config.json, safetensors indexes,
 *  diffusion-decoder/<part>/*.json), in sorted path order. Weights are not hashed (GBs); their layout is in the indexes. */
export function sourceConfigHash(snapshotDir: string): string {
  const files: string[] = [];
  const isConfig = (f: string) => f.endsWith('.json') && !f.startsWith('tokenizer') && f !== 'trainer_state.json' && f !== MANIFEST_FILE && f !== PARTIAL_MANIFEST_FILE;
  for (const f of readdirSync(snapshotDir).sort()) if (isConfig(f)) files.push(f);
  const dd = join(snapshotDir, 'diffusion-decoder');
  if (existsSync(dd))
    for (const part of readdirSync(dd, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort())
      for (const f of readdirSync(join(dd, part)).sort()) if (f.endsWith('.json')) files.push(join('diffusion-decoder', part, f));
  const h = createHash('sha256');
  for (const f of files) h.update(f).update('\0').update(readFileSync(join(snapshotDir, f))).update('\0');
  return h.digest('hex');
}

/** The converter reads these besides the configs: the weights, and the tokenizer files it copies (convert.ts). */
const isWeightsOrTokenizer = (path: string): boolean => path.endsWith('.safetensors') || /(^|\/)(tokenizer[^/]*\.json|vocab\.json|merges\.txt|chat_template\.(json|jinja))$/.test(path);

/**
 * sha256 over the hub's hashes (LFS sha256, git sha1) of the weights and tokenizer files in the snapshot's fetch
 * manifest (worker/hub/snapshot.ts), in path order: a new model.hubRevision that changed only weights is a new
 * conversion, without hashing GBs. Undefined for a snapshot not fetched here (no manifest: nothing to compare).
 */
export function sourceWeightsHash(snapshotDir: string): string | undefined {
  const fetched = readSnapshotManifest(snapshotDir);
  if (!fetched) return undefined;
  const h = createHash('sha256');
  for (const path of Object.keys(fetched.files).filter(isWeightsOrTokenizer).sort()) h.update(path).update('\0').update(fetched.files[path]!.oid).update('\0');
  return h.digest('hex');
}

/** Size and sha256 of a file, read in chunks (graphs' external data runs to GBs). */
export function digestFile(path: string): FileDigest {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(16 * 2 ** 20);
  const fd = openSync(path, 'r');
  let bytes = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; bytes += n) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return { bytes, sha256: h.digest('hex') };
}

/** The files of each graph in `m` with what manifest.json records for them (undefined: an older manifest). */
function graphFiles(m: Manifest): { file: string; digest: FileDigest | undefined }[] {
  return Object.values(m.components).flatMap((c) =>
    Object.values(c.graphs).flatMap((g) => [g.file, ...(g.external ? [`${g.file}.data`] : [])].map((file) => ({ file, digest: g.files?.[file] }))),
  );
}

/**
 * Hashes every graph file against manifest.json (start-up check: a truncated or corrupted graph would otherwise
 * surface as "Protobuf parsing failed" in onnxruntime). Returns what is damaged, or undefined when all match.
 */
export async function verifyGraphFiles(outDir: string, m: Manifest): Promise<string | undefined> {
  for (const { file, digest } of graphFiles(m)) {
    if (!digest) return `manifest.json records no size and hash for ${file} (converted by an older version)`;
    const path = join(outDir, file);
    if (!existsSync(path)) return `${file} is missing`;
    const bytes = statSync(path).size;
    if (bytes !== digest.bytes) return `${file} is ${bytes} bytes, manifest.json records ${digest.bytes}`;
    const h = createHash('sha256');
    for await (const chunk of createReadStream(path, { highWaterMark: 16 * 2 ** 20 })) h.update(chunk as Buffer);
    if (h.digest('hex') !== digest.sha256) return `${file} does not match the sha256 manifest.json records for it`;
  }
  return undefined;
}

export function readManifest(outDir: string): Manifest | undefined {
  const p = join(outDir, MANIFEST_FILE);
  if (!existsSync(p)) return undefined;
  try {
    return Manifest.parse(JSON.parse(readFileSync(p, 'utf8')));
  } catch (e) {
    throw new AppError('model', `${p} is not a valid manifest; delete ${outDir} to convert again`, { cause: e });
  }
}

/** Why the conversion in `outDir` cannot be used for `snapshotDir` at `dtype` (undefined = it is current). */
export function staleReason(outDir: string, snapshotDir: string, dtype: 'fp32' | 'fp16', quant: 'none' | 'int4' | 'int8' = 'none'): string | undefined {
  let m: Manifest | undefined;
  try {
    m = readManifest(outDir);
  } catch (e) {
    return (e as Error).message;
  }
  if (!m) return `no ${MANIFEST_FILE} in ${outDir}`;
  if (m.builderVersion !== BUILDER_VERSION) return `built by builder version ${m.builderVersion}, this is ${BUILDER_VERSION}`;
  if (m.dtype !== dtype) return `built as ${m.dtype}, ${dtype} wanted`;
  if (m.quant !== quant) return `built with LLM weights ${m.quant === 'none' ? 'unquantized' : m.quant}, ${quant} wanted`;
  if (m.sourceConfigHash !== sourceConfigHash(snapshotDir)) return 'the snapshot config changed since the conversion';
  const weights = sourceWeightsHash(snapshotDir);
  if (m.sourceWeightsHash !== undefined && weights !== undefined && m.sourceWeightsHash !== weights) return 'the snapshot weights changed since the conversion (a new model.hubRevision)';
  for (const { file, digest } of graphFiles(m)) {
    if (!existsSync(join(outDir, file))) return `${file} is missing`;
    if (!digest) return `manifest.json records no size and hash for ${file} (converted by an older version)`;
    const bytes = statSync(join(outDir, file)).size; // cheap; the hashes are checked at start-up (verifyGraphFiles)
    if (bytes !== digest.bytes) return `${file} is ${bytes} bytes, manifest.json records ${digest.bytes} (damaged)`;
  }
  for (const c of Object.values(m.components)) for (const t of Object.values(c.tensors)) if (!existsSync(join(outDir, t.file))) return `${t.file} is missing`;
  return undefined;
}
