// Where a graph's nodes run under a GPU provider and how much of the work that is: onnxruntime's per-node profile
// (provider, op type, input/output shapes of every kernel that ran) turned into FLOP estimates per node.
//   npm run bench -- gpu-fallback [onnxDir] [--provider webgpu]   (no folder: the tiny checkpoint, made and converted)
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { convertSnapshot } from '../worker/builder/convert.ts';
import { readManifest } from '../worker/builder/manifest.ts';
import { makeTiny } from '../worker/builder/tiny/index.ts';
import { sampleFeeds, type GraphSample } from '../worker/pipeline/sample-feeds.ts';
import { openSession, type ResolvedProvider } from '../worker/runtime/session.ts';

export interface FallbackRow {
  graph: string;
  nodes: number;
  cpuNodes: number;
  /** op type → count, of the nodes that ran on the CPU provider. */
  cpuOps: Record<string, number>;
  flops: number;
  cpuFlops: number;
  /** cpuFlops / flops. */
  cpuShare: number;
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Multiply-adds ×2 for the ops that carry the work; one per output element for everything else. */
export function nodeFlops(op: string, ins: number[][], outs: number[][]): number {
  const out = outs[0] ? size(outs[0]) : 0;
  const last = (s: number[] | undefined) => s?.[s.length - 1] ?? 1;
  switch (op) {
    case 'MatMul':
    case 'FusedMatMul':
    case 'MatMulNBits':
    case 'MatMulInteger':
    case 'Gemm':
      return 2 * out * last(ins[0]);
    case 'Conv':
    case 'FusedConv':
    case 'NhwcConv':
      return 2 * out * size((ins[1] ?? [1, 1]).slice(1));
    case 'ConvTranspose':
      return 2 * size(ins[0] ?? []) * size((ins[1] ?? [1, 1]).slice(1));
    case 'MultiHeadAttention':
    case 'GroupQueryAttention':
    case 'Attention': {
      const q = ins[0] ?? [];
      const kvLen = ins[1]?.[1] ?? q[1] ?? 1;
      return 4 * size(q) * kvLen;
    }
    default:
      return out;
  }
}

interface ProfileEvent {
  cat?: string;
  name: string;
  args?: { provider?: string; op_name?: string; input_type_shape?: Record<string, number[]>[]; output_type_shape?: Record<string, number[]>[] };
}

/** Rows from one onnxruntime profile JSON. */
export function fallbackFromProfile(graph: string, events: ProfileEvent[]): FallbackRow {
  const row: FallbackRow = { graph, nodes: 0, cpuNodes: 0, cpuOps: {}, flops: 0, cpuFlops: 0, cpuShare: 0 };
  const shapes = (l: Record<string, number[]>[] | undefined) => (l ?? []).map((d) => Object.values(d)[0] ?? []);
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const f = nodeFlops(e.args.op_name, shapes(e.args.input_type_shape), shapes(e.args.output_type_shape));
    row.nodes++;
    row.flops += f;
    if (e.args.provider === 'CPUExecutionProvider') {
      row.cpuNodes++;
      row.cpuFlops += f;
      row.cpuOps[e.args.op_name] = (row.cpuOps[e.args.op_name] ?? 0) + 1;
    }
  }
  row.cpuShare = row.flops ? row.cpuFlops / row.flops : 0;
  return row;
}

/** Runs each sample once on `provider` with profiling on and reads where every node ran. */
export async function fallbackTable(modelDir: string, samples: GraphSample[], provider: ResolvedProvider): Promise<FallbackRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'ort-profile-'));
  const rows: FallbackRow[] = [];
  try {
    for (const s of samples) {
      const prefix = join(dir, s.name.replace(/[^a-z0-9]+/gi, '_'));
      const session = await openSession(join(modelDir, s.file), { executionProvider: provider, profilePrefix: prefix });
      try {
        await session.run(s.feeds);
        session.endProfiling();
      } finally {
        await session.release();
      }
      const file = readdirSync(dirname(prefix)).filter((f) => f.startsWith(`${basename(prefix)}_`) && f.endsWith('.json')).sort().at(-1);
      if (!file) throw new Error(`onnxruntime wrote no profile for ${s.name}`);
      rows.push(fallbackFromProfile(s.name, JSON.parse(readFileSync(join(dir, file), 'utf8')) as ProfileEvent[]));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export function fallbackMarkdown(rows: FallbackRow[]): string {
  const lines = ['| graph | nodes | on CPU | CPU op types | CPU share of FLOPs |', '|---|---:|---:|---|---:|'];
  for (const r of rows)
    lines.push(
      `| ${r.graph} | ${r.nodes} | ${r.cpuNodes} | ${Object.entries(r.cpuOps).map(([k, v]) => `${k}×${v}`).join(', ') || '—'} | ${(100 * r.cpuShare).toPrecision(2)} % |`,
    );
  return lines.join('\n');
}

/** The tiny checkpoint converted into `dir` (for runs without a model folder). */
export async function tinyModel(dir: string, dtype: 'fp32' | 'fp16'): Promise<string> {
  mkdirSync(dir, { recursive: true });
  makeTiny(join(dir, 'snapshot'));
  await convertSnapshot(join(dir, 'snapshot'), join(dir, 'onnx'), { dtype });
  return join(dir, 'onnx');
}

export async function run(args: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { provider: { type: 'string', default: 'webgpu' }, dtype: { type: 'string', default: 'fp32' } } });
  const dtype = values.dtype === 'fp16' ? 'fp16' : 'fp32';
  const work = positionals[0] ? undefined : mkdtempSync(join(tmpdir(), 'gpu-fallback-'));
  try {
    const modelDir = positionals[0] ?? (await tinyModel(work!, dtype));
    const manifest = readManifest(modelDir);
    if (!manifest) throw new Error(`no manifest.json in ${modelDir}`);
    const rows = await fallbackTable(modelDir, sampleFeeds(manifest), values.provider as ResolvedProvider);
    console.log(`nodes onnxruntime ran on the CPU provider inside ${values.provider} sessions (${manifest.architecture}, ${manifest.dtype}):\n`);
    console.log(fallbackMarkdown(rows));
  } finally {
    if (work) rmSync(work, { recursive: true, force: true });
  }
}
