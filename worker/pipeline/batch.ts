// A rendezvous step batcher: several requests running as coroutines in one model thread each call
// `await batcher.step(input)` once per model step; the batcher runs ONE batched call `run(inputs) → outputs` for the
// members waiting at that moment, and hands each member its own output. Members join and leave between steps simply
// by calling step() or not calling it any more (docs/batching.md).
//
//   const decode = new StepBatcher<Row, Float32Array>({ maxBatch: 4, run: (rows) => forwardAll(rows) });
//   // in each request's own loop:
//   for (;;) { const logits = await decode.step(row); … pick a token …; if (done) break; }
//
// Scheduling, exactly:
//   - step() queues the input. A call starts once the thread's event loop has turned once (setImmediate) after the
//     first waiting input, and never while another call of the same batcher runs. There is no timer that waits
//     for stragglers: a member whose previous output resolved in the same turn and that steps again synchronously
//     (or after awaiting only already-settled promises) is in the next call; one doing real async work in between
//     (another session run, I/O) simply joins a later call. A request alone is not slowed.
//   - One call takes at most `maxBatch` members, oldest first, and only members whose `key(input)` equals the oldest
//     one's (inputs of different shapes, e.g. two image sizes, cannot share one tensor). The rest wait for the next
//     call, which starts right after (again after one event-loop turn).
//   - A member whose `signal` aborts while it waits leaves the queue at once and its step() rejects with the
//     signal's reason; a member already inside a running call gets its output (it checks its signal itself after).
//   - When a call of more than one member throws and `isolateFailures` is on (the default), each of its members is
//     re-run alone, in order, so only the member whose input fails gets the error. `run` must therefore leave no
//     state behind when it throws (commit per-member state only after the session call succeeded).
//   - `run` must return exactly one output per input, in order; anything else rejects every member of the call.
//
// This file knows nothing about models: worker/pipeline/decode-batch.ts (LLM decode with a shared KV cache) and the
// diffusion steps build on it.

export interface StepBatcherOptions<I, O> {
  /** Most members in one call (≥ 1). 1 = every step runs alone (today's behaviour, through the same code path). */
  maxBatch: number;
  /** The batched call: outputs[i] belongs to inputs[i]. */
  run(inputs: I[]): Promise<O[]>;
  /** Members with different keys never share a call. @defaultValue every input has the same key */
  key?(input: I): string;
  /** Re-run each member of a failed multi-member call alone, so one bad input fails alone. @defaultValue true */
  isolateFailures?: boolean;
}

interface Waiting<I, O> {
  input: I;
  key: string;
  resolve(output: O): void;
  reject(error: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** Counters of what ran (benches and tests read them). */
export interface BatcherStats {
  /** Batched calls made (re-runs of an isolated failure included). */
  calls: number;
  /** Member-steps served (sum of call sizes). */
  steps: number;
  /** Largest call so far. */
  largest: number;
}

export class StepBatcher<I, O> {
  private readonly queue: Waiting<I, O>[] = [];
  private running = false;
  private scheduled = false;
  readonly stats: BatcherStats = { calls: 0, steps: 0, largest: 0 };

  constructor(private readonly options: StepBatcherOptions<I, O>) {
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new RangeError(`maxBatch must be a positive integer, got ${options.maxBatch}`);
  }

  get maxBatch(): number {
    return this.options.maxBatch;
  }

  /** Inputs waiting for a call (not counting those inside the running call). */
  get waiting(): number {
    return this.queue.length;
  }

  /** Queues `input` for the next call and resolves with its own output. */
  step(input: I, signal?: AbortSignal): Promise<O> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<O>((resolve, reject) => {
      const entry: Waiting<I, O> = { input, key: this.options.key?.(input) ?? '', resolve, reject, signal, onAbort: undefined };
      if (signal) {
        entry.onAbort = () => {
          const at = this.queue.indexOf(entry);
          if (at < 0) return; // already inside a call: it gets its output
          this.queue.splice(at, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.queue.push(entry);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running || this.scheduled || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  /** The oldest waiting member and up to maxBatch − 1 more with its key, removed from the queue. */
  private take(): Waiting<I, O>[] {
    const key = this.queue[0]!.key;
    const taken: Waiting<I, O>[] = [];
    for (let i = 0; i < this.queue.length && taken.length < this.options.maxBatch; ) {
      if (this.queue[i]!.key === key) taken.push(...this.queue.splice(i, 1));
      else i++;
    }
    for (const e of taken) if (e.signal && e.onAbort) e.signal.removeEventListener('abort', e.onAbort);
    return taken;
  }

  private async call(members: Waiting<I, O>[]): Promise<O[]> {
    this.stats.calls++;
    this.stats.steps += members.length;
    this.stats.largest = Math.max(this.stats.largest, members.length);
    const outputs = await this.options.run(members.map((m) => m.input));
    if (!Array.isArray(outputs) || outputs.length !== members.length)
      throw new Error(`StepBatcher: run returned ${Array.isArray(outputs) ? outputs.length : typeof outputs} outputs for ${members.length} inputs`);
    return outputs;
  }

  private async flush(): Promise<void> {
    if (this.running || this.queue.length === 0) return;
    this.running = true;
    const members = this.take();
    try {
      let outputs: O[] | undefined;
      let failure: unknown;
      try {
        outputs = await this.call(members);
      } catch (e) {
        failure = e;
      }
      if (outputs) members.forEach((m, i) => m.resolve(outputs[i]!));
      else if (members.length > 1 && (this.options.isolateFailures ?? true)) {
        for (const m of members) {
          try {
            m.resolve((await this.call([m]))[0]!);
          } catch (e) {
            m.reject(e);
          }
        }
      } else for (const m of members) m.reject(failure);
    } finally {
      this.running = false;
      this.schedule();
    }
  }
}
