// Continuous batching of LLM decode steps (issue 18, docs/batching.md): the sequences of all requests a model thread
// runs at once share ONE batched KV cache and take each decode step as one decoder forward. A sequence that finishes
// leaves; a new one joins between steps. Built on the rendezvous primitive of worker/pipeline/batch.ts.
//
//   request A ─prefill chunks─┐              ┌─ A: token ─┐      ┌─ A: token ─┐
//   request B ─prefill chunks─┼─ one call ──▶│  B: token  ├─────▶│  (B left)  ├─ …
//                             │  per step    └─ C: chunk ─┘      └─ C: token ─┘ (C joined)
//
// The cache, per layer, is [B, kvHeads, T, headDim] in host memory, one row per sequence. Row b holds its own tokens'
// keys/values in some of the T columns; attention_mask[b] marks which (the decoder graph masks any column whose
// attention_mask is 0, worker/builder/architectures/qwen2_5_vl_text.ts causalMask). Rows are right-aligned when the
// cache is rebuilt (a sequence joins or leaves: the only time it is copied); between rebuilds every step appends one
// column to every row. Keys carry their rotary position already, so a row's padding never shifts its positions:
// each sequence's next token gets its own M-RoPE position, cache length + its own rope delta (spec §2.4), in all
// three rows of position_ids.
//
// A call of the batcher: first at most one prefill chunk of a joining sequence (batch 1, on that sequence's own
// cache: a long prompt stalls the others by one chunk per step, not by its whole prefill) or one task (exclusive():
// the checks' batched questions), then one batched decode
// forward of every sequence that stepped. A sequence in the cache that did not step this call (it was still busy)
// rides along with a masked dummy column. Nothing is committed until the session calls succeeded, so the batcher can
// re-run members one by one after a failure (a bad member fails alone).
//
// Companions and results: a sequence's logits depend on its own tokens only, but not bit for bit on its batch.
// onnxruntime's CPU kernels (MLAS GEMM tiles, vectorised softmax/reductions) group the additions of a dot product by
// the tensor's shape and alignment, so the batch size B, the padding columns and the prefill chunking change the
// rounding (at most 2.4e-6 on the tiny checkpoint's logits, which are of order 1: test/unit/worker/pipeline/
// decode-batch.test.ts); a greedy or seeded token changes only where two candidates are that close.
// docs/batching.md gives the measured bound.
import { AppError } from '../../src/errors.ts';
import type { ModelSession, TensorInput } from '../runtime/session.ts';
import { StepBatcher } from './batch.ts';
import { cancelledError, hostFloats, kvOutputNames, logitsIndexFeed, rowLogits, type DecoderDims, type KvState } from './sampling.ts';

/** Prompt tokens one prefill chunk runs: the longest stall a joining request adds to the others' decode step. */
export const PREFILL_CHUNK_TOKENS = 64;

/** One sequence (one request's answer, or a caption) in the batch. Use through DecodeBatch. */
export interface Sequence {
  readonly id: number;
  /** Tokens in its cache (prompt + decoded). */
  readonly length: number;
}

interface Seq extends Sequence {
  length: number;
  ropeDelta: number;
  /** Its own cache ([1, kvh, length, hd] per layer) until it joins the batched cache; then undefined. */
  own: Record<string, Float32Array> | undefined;
  /** Row in the batched cache, or −1. */
  row: number;
  closed: boolean;
}

type Input =
  | { kind: 'prefill'; seq: Seq; embeds: Float32Array; positions: number[][]; wantLogits: boolean }
  | { kind: 'task'; run: () => Promise<unknown> }
  | { kind: 'decode'; seq: Seq; token: number };

/** undefined: a prefill chunk or task deferred to the next call (one per call), step it again. Tasks resolve with
 *  `{ value }`. */
type Output = Float32Array | { value: unknown } | undefined;

export interface DecodeBatchOptions {
  /** Most sequences stepping in one forward (worker.maxBatch.decode). */
  maxBatch: number;
  /** @defaultValue PREFILL_CHUNK_TOKENS */
  prefillChunkTokens?: number;
}

/** What the batch did (benches and tests read it). */
export interface DecodeBatchStats {
  forwards: number;
  prefillChunks: number;
  rebuilds: number;
  /** Sum of rows stepping over all forwards (÷ forwards = mean batch). */
  steppedRows: number;
}

export class DecodeBatch {
  private readonly batcher: StepBatcher<Input, Output>;
  private nextId = 1;
  /** The batched cache: rows[b] is the sequence in row b; past[name] is [B, kvh, T, hd]; mask[b] has T entries. */
  private rows: Seq[] = [];
  private past: Record<string, Float32Array> = {};
  private mask: Uint8Array[] = [];
  private T = 0;
  readonly stats: DecodeBatchStats = { forwards: 0, prefillChunks: 0, rebuilds: 0, steppedRows: 0 };

  constructor(
    private readonly session: ModelSession,
    readonly dims: DecoderDims,
    /** input ids → embeddings [ids.length, H] (the embedding graph). */
    private readonly embed: (ids: readonly number[]) => Promise<Float32Array>,
    private readonly options: DecodeBatchOptions,
  ) {
    this.batcher = new StepBatcher<Input, Output>({ maxBatch: options.maxBatch, run: (inputs) => this.call(inputs) });
  }

  get batcherStats() {
    return this.batcher.stats;
  }

  /** Sequences in the batched cache now. */
  get size(): number {
    return this.rows.length;
  }

  private names(): string[] {
    return Array.from({ length: this.dims.numLayers }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat();
  }

  /**
   * Starts a sequence from a prompt (embeddings S × H and its (t, h, w) position rows, mropes.ts ropeIndex): prefills
   * it in chunks between the others' decode steps and returns it with the logits of its last prompt token.
   */
  async start(embeds: Float32Array, positions: readonly (readonly number[])[], signal?: AbortSignal): Promise<{ seq: Sequence; logits: Float32Array }> {
    const { seq, logits } = await this.prefill(embeds, positions, true, signal);
    return { seq, logits: logits! };
  }

  /** Prefills a prompt for its cache only (no logits), in chunks between the others' steps, and returns the cache
   *  as a KvState (the checks' shared image prefix, continued with KvDecoder.continueBatch). */
  async prefillState(embeds: Float32Array, positions: readonly (readonly number[])[], signal?: AbortSignal): Promise<KvState> {
    const { seq } = await this.prefill(embeds, positions, false, signal);
    const s = seq as Seq;
    const { numKvHeads, headDim } = this.dims;
    const past = Object.fromEntries(Object.entries(s.own!).map(([name, data]) => [name, { data, dims: [1, numKvHeads, s.length, headDim] }]));
    this.close(s);
    return { past, length: s.length, ropeDelta: s.ropeDelta };
  }

  /** Runs `fn` (other work on the decoder's session, e.g. KvDecoder.continueBatch) between two of the batch's
   *  steps, one task or prefill chunk per step, instead of beside them. `fn` must be safe to run again (a failed
   *  call is re-run member by member). */
  async exclusive<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let out: Output;
    do out = await this.queued({ kind: 'task', run: fn }, signal);
    while (out === undefined);
    return (out as { value: T }).value;
  }

  private async prefill(
    embeds: Float32Array,
    positions: readonly (readonly number[])[],
    wantLogits: boolean,
    signal: AbortSignal | undefined,
  ): Promise<{ seq: Sequence; logits: Float32Array | undefined }> {
    const H = this.dims.hiddenSize;
    const S = embeds.length / H;
    if (!Number.isInteger(S) || S < 1 || positions.length !== 3 || positions.some((r) => r.length !== S))
      throw new AppError('internal', `decoder input: ${embeds.length} values for hidden ${H}, positions ${positions.map((r) => r.length)}`);
    const seq: Seq = { id: this.nextId++, length: 0, ropeDelta: Math.max(...positions.flat()) + 1 - S, own: this.emptyOwn(), row: -1, closed: false };
    try {
      // Chunks of the prompt; the last one's logits start the answer (the chunks before it compute none). The split
      // depends on the prompt length only, never on the companions. A prompt of at most one chunk costs exactly
      // what an unbatched prefill costs (one forward).
      const chunk = this.options.prefillChunkTokens ?? PREFILL_CHUNK_TOKENS;
      const cuts: number[] = [];
      for (let at = 0; at < S; at += chunk) cuts.push(at);
      let logits: Output;
      for (let k = 0; k < cuts.length; k++) {
        const from = cuts[k]!;
        const to = k + 1 < cuts.length ? cuts[k + 1]! : S;
        const input: Input = {
          kind: 'prefill',
          seq,
          embeds: embeds.subarray(from * H, to * H),
          positions: positions.map((r) => r.slice(from, to)),
          wantLogits: wantLogits && to === S,
        };
        do logits = await this.queued(input, signal);
        while (logits === undefined);
      }
      return { seq, logits: wantLogits ? (logits as Float32Array) : undefined };
    } catch (e) {
      this.close(seq);
      throw e;
    }
  }

  /** Starts a sequence from a cache state made elsewhere (KvDecoder.continueBatch: the checks' caption row). */
  adopt(state: KvState): Sequence {
    const own: Record<string, Float32Array> = {};
    for (const name of this.names()) {
      const t = state.past[name];
      if (!t || !(t.data instanceof Float32Array) || t.dims[0] !== 1) throw new AppError('internal', `adopt: state has no batch-1 host ${name}`);
      own[name] = t.data;
    }
    const seq: Seq = { id: this.nextId++, length: state.length, ropeDelta: state.ropeDelta, own, row: -1, closed: false };
    return seq;
  }

  /** Appends `token` to `seq` (one decode step, batched with whoever steps now) and returns the next logits. */
  next(seq: Sequence, token: number, signal?: AbortSignal): Promise<Float32Array> {
    const s = seq as Seq;
    if (s.closed) return Promise.reject(new AppError('internal', `sequence ${s.id} is closed`));
    return this.queued({ kind: 'decode', seq: s, token }, signal) as Promise<Float32Array>;
  }

  /** batcher.step, with an abort while queued reported as generateTokens reports it (UserError 'cancelled'). */
  private queued(input: Input, signal: AbortSignal | undefined): Promise<Output> {
    return this.batcher.step(input, signal).catch((e: unknown) => {
      throw signal?.aborted && e === signal.reason ? cancelledError(signal) : e;
    });
  }

  /** The sequence leaves: its row is dropped at the next call (always call this, also on errors). */
  close(seq: Sequence): void {
    const s = seq as Seq;
    s.closed = true;
    s.own = undefined;
    if (s.row < 0) return;
    if (this.rows.every((r) => r.closed)) this.clear(); // last one out: free the cache now
  }

  private clear(): void {
    for (const r of this.rows) r.row = -1;
    this.rows = [];
    this.past = {};
    this.mask = [];
    this.T = 0;
  }

  private emptyOwn(): Record<string, Float32Array> {
    return Object.fromEntries(this.names().map((n) => [n, new Float32Array(0)]));
  }

  // ---- one call of the batcher ----------------------------------------------------------------------------------

  private async call(inputs: Input[]): Promise<Output[]> {
    const outputs: Output[] = inputs.map(() => undefined);
    const commits: (() => void)[] = [];
    // 1. at most one prefill chunk or task (the oldest waiting); the others wait for the next call
    const p = inputs.findIndex((x) => x.kind !== 'decode');
    if (p >= 0 && inputs[p]!.kind === 'task') {
      outputs[p] = { value: await (inputs[p] as Extract<Input, { kind: 'task' }>).run() };
    } else if (p >= 0) {
      const x = inputs[p] as Extract<Input, { kind: 'prefill' }>;
      const { logits, own, length } = await this.prefillChunk(x);
      outputs[p] = logits ?? new Float32Array(0);
      commits.push(() => {
        x.seq.own = own;
        x.seq.length = length;
      });
    }
    // 2. one batched decode step of every sequence that stepped
    const steps = inputs.map((x, i) => ({ x, i })).filter((e): e is { x: Extract<Input, { kind: 'decode' }>; i: number } => e.x.kind === 'decode');
    if (steps.length > 0) {
      const logits = await this.decodeStep(steps.map((s) => s.x));
      steps.forEach((s, k) => (outputs[s.i] = logits.rows[k]));
      commits.push(logits.commit);
    }
    for (const c of commits) c();
    return outputs;
  }

  /** One chunk of a joining sequence's prompt on its own cache (batch 1). Commits nothing. */
  private async prefillChunk(x: Extract<Input, { kind: 'prefill' }>) {
    const { hiddenSize: H, numLayers, numKvHeads, headDim } = this.dims;
    const own = x.seq.own;
    if (!own) throw new AppError('internal', `sequence ${x.seq.id} has no cache of its own`);
    const P = x.seq.length;
    const S = x.embeds.length / H;
    const feeds: Record<string, TensorInput> = {
      inputs_embeds: { data: x.embeds, dims: [1, S, H] },
      attention_mask: { data: new BigInt64Array(P + S).fill(1n), dims: [1, P + S] },
      position_ids: { data: BigInt64Array.from(x.positions.flat(), (v) => BigInt(v)), dims: [3, 1, S] },
      ...logitsIndexFeed(this.session, [S - 1]),
    };
    for (const [name, data] of Object.entries(own)) feeds[name] = { data, dims: [1, numKvHeads, P, headDim] };
    const out = await this.session.runOnDevice(feeds, [...(x.wantLogits ? ['logits'] : []), ...kvOutputNames(numLayers)]);
    this.stats.prefillChunks++;
    const next: Record<string, Float32Array> = {};
    for (let i = 0; i < numLayers; i++) for (const kv of ['key', 'value']) next[`past_key_values.${i}.${kv}`] = hostFloats(out, `present.${i}.${kv}`);
    const V = this.dims.vocabSize;
    const logits = x.wantLogits ? rowLogits(this.session, hostFloats(out, 'logits'), 0, S, S - 1, V) : undefined;
    return { logits, own: next, length: P + S };
  }

  /** The rows the cache must hold for this step: the open ones already in it, then the newcomers among `steps`. */
  private layout(steps: Extract<Input, { kind: 'decode' }>[]): Seq[] {
    const kept = this.rows.filter((r) => !r.closed);
    const joining = steps.map((s) => s.seq).filter((s) => s.row < 0);
    return [...kept, ...joining];
  }

  /**
   * The batched cache for `rows` (right-aligned, compacted): each row's valid columns, in order. Copies only when
   * the rows change. Returns new arrays; the live cache is untouched until commit.
   */
  private rebuild(rows: Seq[]): { past: Record<string, Float32Array>; mask: Uint8Array[]; T: number } {
    const { numKvHeads: kvh, headDim: hd } = this.dims;
    const T = Math.max(...rows.map((r) => r.length));
    const B = rows.length;
    const past: Record<string, Float32Array> = {};
    for (const name of this.names()) {
      const to = new Float32Array(B * kvh * T * hd);
      rows.forEach((r, b) => {
        const off = T - r.length; // right-aligned
        if (r.row >= 0) {
          // from the live cache: its valid columns (in order) of its old row
          const from = this.past[name]!;
          const cols: number[] = [];
          this.mask[r.row]!.forEach((m, j) => m && cols.push(j));
          for (let h = 0; h < kvh; h++)
            cols.forEach((j, k) => {
              const src = ((r.row * kvh + h) * this.T + j) * hd;
              to.set(from.subarray(src, src + hd), ((b * kvh + h) * T + off + k) * hd);
            });
        } else {
          const own = r.own![name]!; // [1, kvh, length, hd]
          for (let h = 0; h < kvh; h++) to.set(own.subarray(h * r.length * hd, (h + 1) * r.length * hd), ((b * kvh + h) * T + off) * hd);
        }
      });
      past[name] = to;
    }
    const mask = rows.map((r) => {
      const m = new Uint8Array(T);
      m.fill(1, T - r.length);
      return m;
    });
    return { past, mask, T };
  }

  private async decodeStep(steps: Extract<Input, { kind: 'decode' }>[]): Promise<{ rows: Float32Array[]; commit: () => void }> {
    const { hiddenSize: H, numLayers, numKvHeads: kvh, headDim: hd, vocabSize: V } = this.dims;
    const rows = this.layout(steps);
    const changed = rows.length !== this.rows.length || rows.some((r, b) => this.rows[b] !== r);
    const cache = changed ? this.rebuild(rows) : { past: this.past, mask: this.mask, T: this.T };
    if (changed) this.stats.rebuilds++;
    const B = rows.length;
    const T = cache.T;
    const stepping = new Map(steps.map((s) => [s.seq, s.token]));
    const ids = steps.map((s) => s.token);
    const tokenEmbeds = await this.embed(ids); // [n, H]
    const embeds = new Float32Array(B * H);
    const attention = new BigInt64Array(B * (T + 1));
    const positions = new BigInt64Array(3 * B);
    rows.forEach((r, b) => {
      cache.mask[b]!.forEach((m, j) => (attention[b * (T + 1) + j] = BigInt(m)));
      const k = steps.findIndex((s) => s.seq === r);
      if (k < 0) return; // not stepping: a zero input in a masked column, position 0
      embeds.set(tokenEmbeds.subarray(k * H, (k + 1) * H), b * H);
      attention[b * (T + 1) + T] = 1n;
      const p = r.length + r.ropeDelta;
      for (let row = 0; row < 3; row++) positions[row * B + b] = BigInt(p);
    });
    const feeds: Record<string, TensorInput> = {
      inputs_embeds: { data: embeds, dims: [B, 1, H] },
      attention_mask: { data: attention, dims: [B, T + 1] },
      position_ids: { data: positions, dims: [3, B, 1] },
      ...logitsIndexFeed(this.session, new Array<number>(B).fill(0)),
    };
    for (const [name, data] of Object.entries(cache.past)) feeds[name] = { data, dims: [B, kvh, T, hd] };
    const out = await this.session.runOnDevice(feeds, ['logits', ...kvOutputNames(numLayers)]);
    const logits = hostFloats(out, 'logits'); // [B, 1, V]
    const past: Record<string, Float32Array> = {};
    for (let i = 0; i < numLayers; i++) for (const kv of ['key', 'value']) past[`past_key_values.${i}.${kv}`] = hostFloats(out, `present.${i}.${kv}`);
    this.stats.forwards++;
    this.stats.steppedRows += steps.length;
    return {
      rows: steps.map((s) => {
        const b = rows.indexOf(s.seq);
        return logits.slice(b * V, (b + 1) * V);
      }),
      commit: () => {
        for (const r of this.rows) if (!rows.includes(r)) r.row = -1;
        this.rows = rows;
        this.past = past;
        this.T = T + 1;
        this.mask = rows.map((r, b) => {
          const m = new Uint8Array(T + 1);
          m.set(cache.mask[b]!);
          if (stepping.has(r)) m[T] = 1;
          return m;
        });
        rows.forEach((r, b) => {
          r.row = b;
          r.own = undefined;
          if (stepping.has(r)) r.length++;
        });
        if (rows.every((r) => r.closed)) this.clear();
      },
    };
  }
}
