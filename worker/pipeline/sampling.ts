// Token sampling and the text-generation loop (spec §2.5), plus a KV-cache driver for the decoder graph built by
// worker/builder/architectures/qwen2_5_vl_text.ts.
//
//   const dec = new KvDecoder(decoderSession, dims);
//   const { tokens } = await generateTokens({
//     prefill: async () => (await dec.prefill(embeds, positions)).logits,
//     step: async (id) => dec.step(await embedOne(id)),
//     promptIds, maxNewTokens: 512, stopIds: [151645, 151643], sampling, signal, onToken,
//   });
//
// Logits processing follows transformers' order: repetition penalty → temperature → top-k → top-p → sample.
import { AppError, UserError } from '../../src/errors.ts';
import { DeviceTensor, type ModelSession, type TensorInput } from '../runtime/session.ts';

export interface SamplingOptions {
  /** 0 = greedy (argmax). @defaultValue 0 */
  temperature: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability mass reaches topP. 1 = off. */
  topP: number;
  /** Keep the topK most likely tokens. 0 = off. */
  topK: number;
  /** > 1 discourages tokens already in the prompt or output (CTRL paper; transformers' formula). 1 = off. */
  repetitionPenalty: number;
}
export const GREEDY: SamplingOptions = { temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1 };

/** transformers RepetitionPenaltyLogitsProcessor: logit < 0 ? logit·p : logit/p, once per distinct seen token. */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    const l = logits[id];
    if (l === undefined) continue;
    logits[id] = l < 0 ? l * penalty : l / penalty;
  }
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Picks the next token from `logits` (modified in place by the penalty). `random` returns uniforms in [0, 1). */
export function sampleToken(logits: Float32Array, seen: Iterable<number>, o: SamplingOptions, random: () => number): number {
  applyRepetitionPenalty(logits, seen, o.repetitionPenalty);
  if (o.temperature <= 0 || o.topK === 1) return argmax(logits);
  // Candidates sorted by logit, descending; top-k cuts the list. Tokens more than 30 temperature-units below the
  // best (relative probability < e^-30 ≈ 1e-13 each) are dropped before sorting: 151668 sorts per token are slow,
  // and their total mass (< 2e-8) changes no top-p cut and no draw in practice.
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const floor = max - 30 * o.temperature;
  let ids: number[] = [];
  for (let i = 0; i < logits.length; i++) if (logits[i]! >= floor) ids.push(i);
  ids.sort((a, b) => logits[b]! - logits[a]!);
  if (o.topK > 0) ids = ids.slice(0, o.topK);
  const weights = ids.map((i) => Math.exp((logits[i]! - max) / o.temperature));
  const total = weights.reduce((s, w) => s + w, 0);
  // top-p: keep the shortest prefix whose mass ≥ topP (at least one token)
  let keep = ids.length;
  if (o.topP < 1) {
    let mass = 0;
    for (let k = 0; k < ids.length; k++) {
      mass += weights[k]! / total;
      if (mass >= o.topP) {
        keep = k + 1;
        break;
      }
    }
  }
  const kept = weights.slice(0, keep);
  let r = random() * kept.reduce((s, w) => s + w, 0);
  for (let k = 0; k < keep; k++) {
    r -= kept[k]!;
    if (r < 0) return ids[k]!;
  }
  return ids[keep - 1]!;
}

/** mulberry32: a small seeded uniform generator for sampling. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface GenerateTokensOptions {
  /** Runs the prompt; returns the logits of its last position. */
  prefill(): Promise<Float32Array>;
  /** Feeds one chosen token; returns the logits for the next position. */
  step(token: number): Promise<Float32Array>;
  /** Prompt ids (the repetition penalty covers them, as in transformers). */
  promptIds: readonly number[];
  maxNewTokens: number;
  /** Generation ends after emitting one of these (it is not included in `tokens`). Qwen: 151645, 151643. */
  stopIds: readonly number[];
  sampling: SamplingOptions;
  /** Uniform [0, 1) source for sampling. @defaultValue seededRandom(0) */
  random?: () => number;
  /** Checked between tokens; when aborted, generation throws a UserError('cancelled'). */
  signal?: AbortSignal;
  /** Called with each kept token as soon as it is chosen (stream text from here). */
  onToken?(id: number, index: number): void;
}

export interface GeneratedTokens {
  tokens: number[];
  stopReason: 'stop' | 'length';
}

/** The error a generation stopped by `signal` throws: its reason when that is an AppError (a timeout), else a
 *  UserError('cancelled'). */
export function cancelledError(signal: AbortSignal): AppError {
  if (signal.reason instanceof AppError) return signal.reason;
  return new UserError('cancelled', 'Cancelled.', { cause: signal.reason });
}

function throwIfCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelledError(signal);
}

export async function generateTokens(o: GenerateTokensOptions): Promise<GeneratedTokens> {
  const random = o.random ?? seededRandom(0);
  const seen = [...o.promptIds];
  const tokens: number[] = [];
  throwIfCancelled(o.signal);
  let logits = await o.prefill();
  for (;;) {
    throwIfCancelled(o.signal);
    const id = sampleToken(logits, seen, o.sampling, random);
    if (o.stopIds.includes(id)) return { tokens, stopReason: 'stop' };
    tokens.push(id);
    seen.push(id);
    o.onToken?.(id, tokens.length - 1);
    if (tokens.length >= o.maxNewTokens) return { tokens, stopReason: 'length' };
    throwIfCancelled(o.signal);
    logits = await o.step(id);
  }
}

// --- KV-cache driver -------------------------------------------------------------------------------------------

export interface DecoderDims {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  hiddenSize: number;
  vocabSize: number;
}

/** The decoder outputs that feed the next step's past_key_values: opened with `keepOnDevice: kvOutputNames(n)` they
 *  stay in GPU memory between steps under WebGPU (only the last position's logits come back to the host). */
export function kvOutputNames(numLayers: number): string[] {
  return Array.from({ length: numLayers }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat();
}

/** Whether the decoder graph picks one position's logits per row itself (converted with logits 'at': input
 *  logits_index [B], output [B, 1, V]). Graphs built with logits 'all' (the reference tests, the LLM benches) return
 *  [B, S, V] and the caller slices. */
export function picksLogits(session: ModelSession): boolean {
  return session.inputNames.includes('logits_index');
}

/** The logits_index feed asking for position `at[b]` of row b (none for an 'all' graph). */
export function logitsIndexFeed(session: ModelSession, at: readonly number[]): Record<string, TensorInput> {
  return picksLogits(session) ? { logits_index: { data: BigInt64Array.from(at, (p) => BigInt(p)), dims: [at.length] } } : {};
}

/** Row b's logits at position `at` (of S) from the decoder's logits output: [B, 1, V] from a graph that picks, else
 *  [B, S, V]. */
export function rowLogits(session: ModelSession, logits: Float32Array, b: number, S: number, at: number, V: number): Float32Array {
  const row = picksLogits(session) ? b : b * S + at;
  if ((row + 1) * V > logits.length) throw new AppError('model', `the decoder returned ${logits.length} logits; row ${b} position ${at} of ${S} needs ${(row + 1) * V}`);
  return logits.slice(row * V, (row + 1) * V);
}

/** A decoder's cache at one point (KvDecoder.prefillCache, continueBatch): host past_key_values [1, kv heads, length,
 *  head dim] per layer, the cache length and the M-RoPE delta. onnxruntime never writes into its inputs and the
 *  decoder never disposes host arrays, so a state can be restored any number of times. */
export interface KvState {
  readonly past: Readonly<Record<string, TensorInput>>;
  readonly length: number;
  readonly ropeDelta: number;
}

/** The float data of output `name`, in host memory (a cache output the session kept is host memory off WebGPU). */
export function hostFloats(out: { host: Record<string, { data: unknown }>; device: Record<string, DeviceTensor> }, name: string): Float32Array {
  const d = out.device[name];
  const data = d ? (d.onDevice ? undefined : d.tensor.data) : out.host[name]?.data;
  if (!(data instanceof Float32Array)) throw new AppError('model', `the decoder's ${name} output is not float32 in host memory`);
  return data;
}

/** Drives the decoder graph for one sequence (batch 1): keeps past_key_values, the attention mask length and the
 *  M-RoPE position delta (spec §2.4: decode position = cache position + rope_delta, in all three rows). The cache is
 *  whatever the session returns for present.*: GPU buffers when the session keeps them on the device, else host arrays.
 *  `prefillCache` + `continueBatch` run several continuations of one cached prefix as one batched forward (host arrays). */
export class KvDecoder {
  private past: Record<string, TensorInput | DeviceTensor> = {};
  private length = 0;
  private ropeDelta = 0;

  constructor(
    private readonly session: ModelSession,
    readonly dims: DecoderDims,
  ) {
    this.reset();
  }

  reset(): void {
    const { numLayers, numKvHeads, headDim } = this.dims;
    this.release();
    for (let i = 0; i < numLayers; i++)
      for (const kv of ['key', 'value']) this.past[`past_key_values.${i}.${kv}`] = { data: new Float32Array(0), dims: [1, numKvHeads, 0, headDim] };
    this.length = 0;
    this.ropeDelta = 0;
  }

  /** Frees GPU buffers of the cache (host arrays are left to the GC). */
  private release(): void {
    for (const t of Object.values(this.past)) if (t instanceof DeviceTensor) t.dispose();
    this.past = {};
  }

  /** Tokens in the cache. */
  get cacheLength(): number {
    return this.length;
  }

  /** Whether prefillCache/continueBatch can run here: they need the cache in host memory, which every provider but
   *  WebGPU gives (there it stays in GPU buffers that onnxruntime-node cannot read back). */
  get sharesCache(): boolean {
    return this.session.provider !== 'webgpu';
  }

  /** Makes `state` the cache: the next step() continues from it (the state itself stays usable). */
  restore(state: KvState): void {
    this.release();
    this.past = { ...state.past };
    this.length = state.length;
    this.ropeDelta = state.ropeDelta;
  }

  /** Runs a prompt for its cache only, on the host (no logits: onnxruntime then skips the lm_head over every
   *  position). `positions` as in prefill. For a prefix that several continuations share (continueBatch). */
  async prefillCache(embeds: Float32Array, positions: readonly (readonly number[])[]): Promise<KvState> {
    this.reset();
    const S = embeds.length / this.dims.hiddenSize;
    if (!Number.isInteger(S) || positions.length !== 3 || positions.some((r) => r.length !== S))
      throw new AppError('internal', `decoder input: ${embeds.length} values for hidden ${this.dims.hiddenSize}, positions ${positions.map((r) => r.length)}`);
    const out = await this.session.runOnDevice(
      {
        inputs_embeds: { data: embeds, dims: [1, S, this.dims.hiddenSize] },
        attention_mask: { data: new BigInt64Array(S).fill(1n), dims: [1, S] },
        position_ids: { data: BigInt64Array.from(positions.flat(), (p) => BigInt(p)), dims: [3, 1, S] },
        ...logitsIndexFeed(this.session, [S - 1]),
        ...this.past,
      },
      kvOutputNames(this.dims.numLayers),
    );
    const past: Record<string, TensorInput> = {};
    for (let i = 0; i < this.dims.numLayers; i++)
      for (const kv of ['key', 'value']) {
        const name = `present.${i}.${kv}`;
        past[`past_key_values.${i}.${kv}`] = { data: hostFloats(out, name), dims: [...(out.device[name] ?? out.host[name])!.dims] };
      }
    const state: KvState = { past, length: S, ropeDelta: Math.max(...positions.flat()) + 1 - S };
    this.restore(state);
    return state;
  }

  /**
   * One batched forward of B continuations of the cached prefix `state` (P tokens): row b is `suffixes[b]`
   * (S_b × H embeddings), right-padded to S = max S_b with zero rows that attention_mask hides. The prefix cache is
   * repeated B times; text positions continue as cache position + rope delta (what get_rope_index gives text after
   * an image). Returns each row's logits at its own last token and each row's cache (its P + S_b positions, the
   * padding cut off), ready for `restore` and `step`. Equal to B separate full prefills (tested), in one session call.
   */
  async continueBatch(state: KvState, suffixes: readonly Float32Array[]): Promise<{ logits: Float32Array[]; states: KvState[] }> {
    const { hiddenSize: H, numLayers, numKvHeads, headDim, vocabSize: V } = this.dims;
    const B = suffixes.length;
    const lens = suffixes.map((s) => s.length / H);
    if (B === 0 || lens.some((n) => !Number.isInteger(n) || n < 1)) throw new AppError('internal', `continueBatch: suffix lengths ${lens} for hidden ${H}`);
    const S = Math.max(...lens);
    const P = state.length;
    const embeds = new Float32Array(B * S * H);
    suffixes.forEach((s, b) => embeds.set(s, b * S * H));
    const mask = new BigInt64Array(B * (P + S));
    const positions = new BigInt64Array(3 * B * S);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < P + lens[b]!; j++) mask[b * (P + S) + j] = 1n;
      for (let r = 0; r < 3; r++) for (let k = 0; k < S; k++) positions[(r * B + b) * S + k] = BigInt(P + k + state.ropeDelta);
    }
    const feeds: Record<string, TensorInput> = {
      inputs_embeds: { data: embeds, dims: [B, S, H] },
      attention_mask: { data: mask, dims: [B, P + S] },
      position_ids: { data: positions, dims: [3, B, S] },
      ...logitsIndexFeed(this.session, lens.map((n) => n - 1)), // each row's own last token
    };
    const row = numKvHeads * P * headDim;
    for (const [name, t] of Object.entries(state.past)) {
      const data = new Float32Array(B * row);
      for (let b = 0; b < B; b++) data.set(t.data as Float32Array, b * row);
      feeds[name] = { data, dims: [B, numKvHeads, P, headDim] };
    }
    const out = await this.session.runOnDevice(feeds, ['logits', ...kvOutputNames(numLayers)]);
    const logits = hostFloats(out, 'logits');
    const states = lens.map((n) => ({ past: {} as Record<string, TensorInput>, length: P + n, ropeDelta: state.ropeDelta }));
    for (let i = 0; i < numLayers; i++)
      for (const kv of ['key', 'value']) {
        const present = hostFloats(out, `present.${i}.${kv}`); // [B, kvh, P+S, hd]
        lens.forEach((n, b) => {
          const keep = new Float32Array(numKvHeads * (P + n) * headDim);
          for (let h = 0; h < numKvHeads; h++) {
            const from = (b * numKvHeads + h) * (P + S) * headDim;
            keep.set(present.subarray(from, from + (P + n) * headDim), h * (P + n) * headDim);
          }
          states[b]!.past[`past_key_values.${i}.${kv}`] = { data: keep, dims: [1, numKvHeads, P + n, headDim] };
        });
      }
    return { logits: lens.map((n, b) => rowLogits(this.session, logits, b, S, n - 1, V)), states };
  }

  private async run(embeds: Float32Array, positions: readonly (readonly number[])[]) {
    const S = embeds.length / this.dims.hiddenSize;
    if (!Number.isInteger(S) || positions.length !== 3 || positions.some((r) => r.length !== S))
      throw new AppError('internal', `decoder input: ${embeds.length} values for hidden ${this.dims.hiddenSize}, positions ${positions.map((r) => r.length)}`);
    const { host: out, device } = await this.session.runOnDevice({
      inputs_embeds: { data: embeds, dims: [1, S, this.dims.hiddenSize] },
      attention_mask: { data: new BigInt64Array(this.length + S).fill(1n), dims: [1, this.length + S] },
      position_ids: { data: BigInt64Array.from(positions.flat(), (p) => BigInt(p)), dims: [3, 1, S] },
      ...logitsIndexFeed(this.session, [S - 1]),
      ...this.past,
    });
    const next: Record<string, TensorInput | DeviceTensor> = {};
    for (let i = 0; i < this.dims.numLayers; i++)
      for (const kv of ['key', 'value']) {
        const name = `present.${i}.${kv}`;
        const p = device[name] ?? out[name];
        if (!p) throw new AppError('model', `the decoder graph has no ${name} output`);
        next[`past_key_values.${i}.${kv}`] = p instanceof DeviceTensor ? p : { data: p.data as Float32Array, dims: p.dims };
      }
    this.release();
    this.past = next;
    this.length += S;
    const V = this.dims.vocabSize;
    return { logits: rowLogits(this.session, out.logits!.data as Float32Array, 0, S, S - 1, V), hidden: out.last_hidden_state!.data as Float32Array };
  }

  /** Runs the prompt. `positions` = the (t, h, w) rows (get_rope_index for images); default 1-D 0…S−1.
   *  Returns the last position's logits and every position's last_hidden_state (S × H). */
  async prefill(embeds: Float32Array, positions?: readonly (readonly number[])[]): Promise<{ logits: Float32Array; hidden: Float32Array }> {
    this.reset();
    const S = embeds.length / this.dims.hiddenSize;
    const rows = positions ?? [0, 1, 2].map(() => Array.from({ length: S }, (_, i) => i));
    const max = Math.max(...rows.flat());
    this.ropeDelta = max + 1 - S;
    return this.run(embeds, rows);
  }

  /** One causal pass over `embeds` with 1-D positions, returning only last_hidden_state (S × H): onnxruntime then
   *  skips the lm_head (151668 × S logits) and the KV outputs. Leaves the cache empty. For BLIP3-o's generation
   *  conditioning (spec §3.2), which needs hidden states only. */
  async hiddenStates(embeds: Float32Array): Promise<Float32Array> {
    this.reset();
    const S = embeds.length / this.dims.hiddenSize;
    const out = await this.session.run(
      {
        inputs_embeds: { data: embeds, dims: [1, S, this.dims.hiddenSize] },
        attention_mask: { data: new BigInt64Array(S).fill(1n), dims: [1, S] },
        position_ids: { data: BigInt64Array.from({ length: 3 * S }, (_, i) => BigInt(i % S)), dims: [3, 1, S] },
        ...logitsIndexFeed(this.session, [S - 1]),
        ...this.past,
      },
      ['last_hidden_state'],
    );
    const hidden = out.last_hidden_state?.data;
    if (!(hidden instanceof Float32Array)) throw new AppError('model', 'the decoder graph has no float last_hidden_state output');
    return hidden;
  }

  /** Appends one token's embedding (H values); returns the next logits. */
  async step(embed: Float32Array): Promise<Float32Array> {
    const p = this.length + this.ropeDelta;
    return (await this.run(embed, [[p], [p], [p]])).logits;
  }
}
