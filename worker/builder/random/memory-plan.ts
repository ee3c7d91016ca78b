// The memory plan of a preset: weight bytes per graph at the dtypes convert writes (fp16 graphs, the vision tower and
// the VAE decoder always fp32, the LLM's Linear weights int4 with --quant int4), computed from the preset's key list
// alone (no files). `npm run model -- memory-plan` prints it; docs/model-builder.md "Memory plan" quotes it.
import { nbitsBytes, QUANT } from '../quant.ts';
import { randomLayout } from './index.ts';

export interface PlanRow {
  graph: string;
  /** Parameters in the graph. */
  params: number;
  /** Weight bytes as convert writes them with --dtype fp16 (no quantization). */
  fp16Bytes: number;
  /** Weight bytes with --dtype fp16 --quant int4 (differs only for the LLM decoder). */
  int4Bytes: number;
  /** Needed to answer /imagine, and to answer a question about an image (ask). */
  imagine: boolean;
  ask: boolean;
  note: string;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

export function memoryPlan(preset: string): PlanRow[] {
  const { preset: p, root, unet, vae } = randomLayout(preset);
  const q = QUANT.int4;
  const t = p.text;
  const rows: PlanRow[] = [];
  const sum = (specs: readonly { shape: number[] }[]) => specs.reduce((a, s) => a + numel(s.shape), 0);

  const embed = t.vocab_size * t.hidden_size;
  rows.push({ graph: 'text/embedding', params: embed, fp16Bytes: 2 * embed, int4Bytes: 2 * embed, imagine: true, ask: true, note: 'a row lookup: can stay on the CPU' });

  // decoder: every 2-D weight of the layers + lm_head is a Linear (MatMulNBits under int4); norms and biases stay fp16
  const head = root.find((s) => s.key === 'lm_head.weight') ?? root.find((s) => s.key === 'model.embed_tokens.weight')!;
  const dec = root.filter((s) => s.key.startsWith('model.layers.') || s.key === 'model.norm.weight').concat(head);
  let int4 = 0;
  for (const s of dec) int4 += s.shape.length === 2 ? nbitsBytes(s.shape[0]!, s.shape[1]!, q, 2) : 2 * numel(s.shape);
  rows.push({ graph: 'text/decoder', params: sum(dec), fp16Bytes: 2 * sum(dec), int4Bytes: int4, imagine: true, ask: true, note: 'layers + lm_head; KV cache extra' });

  const vision = sum(root.filter((s) => s.key.startsWith('visual.')));
  rows.push({ graph: 'vision/vision', params: vision, fp16Bytes: 4 * vision, int4Bytes: 4 * vision, imagine: false, ask: true, note: 'always fp32 (spec pitfall 12)' });
  const dit = sum(root.filter((s) => s.key.startsWith('model.dit.')));
  rows.push({ graph: 'generation/dit', params: dit, fp16Bytes: 2 * dit, int4Bytes: 2 * dit, imagine: true, ask: false, note: '' });
  const u = sum(unet);
  rows.push({ graph: 'generation/unet', params: u, fp16Bytes: 2 * u, int4Bytes: 2 * u, imagine: true, ask: false, note: '' });
  const v = sum(vae.filter((s) => s.key.startsWith('decoder.') || s.key.startsWith('post_quant_conv.')));
  rows.push({ graph: 'generation/vae_decoder', params: v, fp16Bytes: 4 * v, int4Bytes: 4 * v, imagine: true, ask: false, note: 'always fp32 (spec pitfall 11)' });
  return rows;
}

export function formatPlan(preset: string, rows: readonly PlanRow[]): string {
  const gb = (b: number) => (b / 1e9).toFixed(2).padStart(6);
  const total = (f: (r: PlanRow) => boolean, k: 'fp16Bytes' | 'int4Bytes') => rows.filter(f).reduce((a, r) => a + r[k], 0);
  const lines = [`${preset}: weight bytes per graph (GB; 1 GB = 1e9 B)`, `  ${'graph'.padEnd(24)} ${'params'.padStart(8)}  fp16    int4-LLM  imagine ask`];
  for (const r of rows)
    lines.push(`  ${r.graph.padEnd(24)} ${(r.params / 1e6).toFixed(0).padStart(7)}M ${gb(r.fp16Bytes)}  ${gb(r.int4Bytes)}    ${r.imagine ? ' x ' : '   '}    ${r.ask ? 'x' : ' '}   ${r.note}`);
  const notCpu = (r: PlanRow) => r.graph !== 'text/embedding';
  lines.push(`  imagine: ${gb(total((r) => r.imagine, 'fp16Bytes'))} fp16, ${gb(total((r) => r.imagine, 'int4Bytes'))} with int4 LLM (${gb(total((r) => r.imagine && notCpu(r), 'int4Bytes'))} without the embedding table)`);
  lines.push(`  ask:     ${gb(total((r) => r.ask, 'fp16Bytes'))} fp16, ${gb(total((r) => r.ask, 'int4Bytes'))} with int4 LLM (${gb(total((r) => r.ask && notCpu(r), 'int4Bytes'))} without the embedding table)`);
  lines.push(`  all:     ${gb(total(() => true, 'fp16Bytes'))} fp16, ${gb(total(() => true, 'int4Bytes'))} with int4 LLM (${gb(total(notCpu, 'int4Bytes'))} without the embedding table)`);
  return lines.join('\n');
}
