// The pool of model threads one worker process runs (one per `worker.concurrency` slot). Each thread loads
// the pipeline once and stays warm. `run()` borrows room on a thread and enforces the job's end conditions:
//   - cancel:  the caller's AbortSignal fires → the thread is told to abort that run → AppError('cancelled')
//   - timeout: the job's limit runs out       → the thread is told to abort that run → AppError('timeout')
//     (worker/job-time-limit.ts: jobTimeoutMs for all the job's runs together, each counted from when it first has
//     room in a thread; a run placed again below gets only what is left)
//   - a thread that has not stopped a run abortGraceMs after its abort is terminated and a fresh one is started,
//     so a stuck native call cannot hold a slot forever; its other runs (batched with it, or joined during the
//     grace) are run again, from the start, on the fresh thread or another one: not failed, since a failure costs
//     their jobs a BullMQ attempt (worker/processor.ts rethrows it) for another job's fault. A run placed again keeps
//     the deadline its first placement set, its wait for room again included: its job's lock, budget reservation and
//     user are held all that time, and before 2026-12 each placement had the whole limit again;
//   - a thread that exits on its own (crash) is replaced, also when it held no run. A run it held alone fails with a
//     retryable AppError('internal'), so its job is retried (one attempt), on this worker's fresh thread or
//     elsewhere. The runs of a batch are each run again alone instead: which one crashed the thread is unknown, and
//     an input that reliably crashes it (a malformed image that kills native code) would otherwise fail every
//     batch-mate's attempts with its own. So only a run that crashes its thread alone is charged an attempt, and a
//     poison job crashes its thread at most twice per attempt.
//
// Batching (worker.maxBatch, docs/batching.md): a thread takes up to `maxBatch[stage]` runs of one stage at once
// (decode: understand and check; diffusion: generate) and the pipeline steps them together. A thread never mixes
// stages. Runs are granted strictly in arrival order: a run that does not fit the first free room waits, and
// nothing behind it overtakes it, so a stream of asks cannot starve an imagine.
import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { AppError, UserError } from '../src/errors.ts';
import type { Logger } from '../src/log.ts';
import type { JobTimeLimit, RunTime } from './job-time-limit.ts';
import type { Answer, CheckRequest, CheckResult, GeneratedImage, GenerateRequest, PipelineOptions, ProgressReport, UnderstandRequest } from './pipeline/types.ts';
import type { FromThread, ThreadData, ToThread, WireError } from './thread.ts';

export type Stage = 'decode' | 'diffusion';

export interface ThreadHostOptions {
  /** Number of threads. */
  size: number;
  /** Runs of one stage a thread takes at once (worker.maxBatch). @defaultValue 1 each */
  maxBatch?: { decode: number; diffusion: number };
  /** Absolute path of the pipeline module. */
  pipelineModule: string;
  pipelineOptions: PipelineOptions;
  /** Milliseconds an aborted thread gets to stop before it is terminated. */
  abortGraceMs: number;
  log: Logger;
  /**
   * Called once when a thread could not be restarted `respawnTries` times in a row (≈ 30 s): the GPU is gone for this
   * process, and the jobs waiting for room would wait for ever while the worker looks ready. worker/main.ts stops
   * (jobs back to the queue, for other workers) and exits 1 for its supervisor.
   */
  onThreadLost?: (error: Error) => void;
  /** @defaultValue 5 */
  respawnTries?: number;
  /** The restart back-off (worker.threadRestartMs): base × 2^attempt, at most 30 s. @defaultValue 1000 */
  respawnBaseMs?: number;
}

export interface RunOptions {
  signal: AbortSignal;
  /** Its job's time limit (queue.jobTimeoutMs), shared by all the job's runs: the run spends it from when it first has
   *  room in a thread to its end, a run again on another thread included (worker/job-time-limit.ts). */
  timeLimit: JobTimeLimit;
  onProgress(report: ProgressReport): void;
  /** The job's fair-share clock: while the run shares its thread with others, its time counts 1/n (GPU-seconds). */
  meter?: ShareMeter;
}

/**
 * A job's clock for GPU-seconds (src/accounting/usage.ts) under batching: milliseconds that pass while the job's run
 * shares its thread with n − 1 others count 1/n, so the jobs of a batch split the thread's time instead of each being
 * charged all of it; while its run waits for room in a thread they count 0 (it is queued, not computing: with
 * worker.maxBatch a worker holds more jobs than its threads run); outside runs time counts in full. The processor
 * times its stages with `now()`.
 */
export class ShareMeter {
  private accrued = 0;
  private since = Date.now();
  /** Fraction of each millisecond charged: 1/n while n runs share the thread, 0 while waiting for room. */
  private rate = 1;

  /** Fair-share milliseconds since the meter was made. */
  now(): number {
    return this.accrued + (Date.now() - this.since) * this.rate;
  }

  /** From now on, `runs` runs (this one included) share the thread; 1 outside the thread. */
  share(runs: number): void {
    this.charge(1 / Math.max(1, runs));
  }

  /** From now on the job's run waits for room in a thread: nothing is charged until the next share(). */
  waitForRoom(): void {
    this.charge(0);
  }

  private charge(rate: number): void {
    const t = Date.now();
    this.accrued += (t - this.since) * this.rate;
    this.since = t;
    this.rate = rate;
  }
}

interface Slot {
  thread: Worker;
  /** Runs on the thread now. */
  active: number;
  /** Their share meters (runs given one). */
  meters: Set<ShareMeter>;
  /** Their stage (meaningful while active > 0). */
  stage: Stage;
  /** Being replaced: takes no runs until the fresh thread is ready. */
  respawning: boolean;
  /** Held by a run that must run alone (its batch crashed): takes no companions (meaningful while active > 0). */
  alone: boolean;
}

/**
 * How a run asks for room: 'new', at the end of the line; 'again' (its thread was terminated for another run) and
 * 'alone' (its batch crashed its thread) at the head of the line, ahead of runs that never had room, and 'alone' on
 * an idle thread that it keeps to itself.
 */
type Placement = 'new' | 'again' | 'alone';

/** Thrown inside the host when a run's thread went down through no fault of the run known: it is placed again. */
class RunAgain {
  constructor(readonly placement: 'again' | 'alone') {}
}

interface Waiter {
  stage: Stage;
  placement: Placement;
  grant(slot: Slot): void;
  /** Ends the wait without room: the host is closing (a cancel or a passed deadline leaves the line in acquire()). */
  fail(e: AppError): void;
}

const stageOf = (kind: 'generate' | 'understand' | 'check'): Stage => (kind === 'generate' ? 'diffusion' : 'decode');

// Node 20 does not hand --import module hooks to worker threads, so each thread first imports the same
// TypeScript loader (tsx) its process was started with (`npx tsx`, `node --import tsx`, or the Docker images'
// TSX_LOADER path), then its TypeScript entry. Specifiers are resolved here, absolute. `argv`: the process's
// execArgv (a parameter for the tests).
export function loaderUrl(argv: readonly string[] = process.execArgv): string {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = arg === '--import' ? argv[i + 1] : arg.startsWith('--import=') ? arg.slice('--import='.length) : undefined;
    if (!value || !value.includes('tsx')) continue;
    if (value.startsWith('file:')) return value;
    if (isAbsolute(value)) return pathToFileURL(value).href;
    return import.meta.resolve(value);
  }
  // started some other way: the repo's own tsx (vitest's module runner has no import.meta.resolve)
  // Stryker disable next-line ConditionalExpression,StringLiteral: both resolve the same tsx; vitest's module runner has no import.meta.resolve
  return typeof import.meta.resolve === 'function' ? import.meta.resolve('tsx') : pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
}
// tsx's loader skips registration off the main thread, so the thread calls the same installation's esm API.
const THREAD_BOOTSTRAP = `
  import(${JSON.stringify(new URL('./esm/api/index.mjs', loaderUrl()).href)})
    .then(({ register }) => { register(); return import(${JSON.stringify(new URL('./thread.ts', import.meta.url).href)}); });
`;

/** A job's time limit as its timeout message says it: "1 second", "45 seconds", from 2 minutes on "N minutes". */
export function formatDuration(ms: number): string {
  if (ms >= 120_000) return `${Math.round(ms / 60_000)} minutes`;
  const s = Math.max(1, Math.round(ms / 1000));
  return s === 1 ? '1 second' : `${s} seconds`;
}

function fromWire(e: WireError): AppError {
  const Ctor = e.userFacing ? UserError : AppError;
  const error = new Ctor(e.code as AppError['code'], e.message);
  if (e.stack) error.stack = e.stack;
  return error;
}

export class ThreadHost {
  private readonly slots: Slot[] = [];
  private readonly waiters: Waiter[] = [];
  /** Threads the host terminated because a run ignored its abort: their other runs are not to blame. */
  private readonly terminatedForStuckRun = new WeakSet<Worker>();
  private nextRunId = 1;
  private closed = false;

  private constructor(private readonly options: ThreadHostOptions) {}

  /** Start every thread and wait until each has loaded the pipeline (fails if any cannot). */
  static async start(options: ThreadHostOptions): Promise<ThreadHost> {
    const host = new ThreadHost(options);
    try {
      for (let i = 0; i < options.size; i++) {
        const slot: Slot = { thread: await host.spawn(), active: 0, meters: new Set(), stage: 'decode', respawning: false, alone: false };
        host.slots.push(slot);
        host.watch(slot);
      }
    } catch (e) {
      await host.close();
      throw e;
    }
    return host;
  }

  private spawn(): Promise<Worker> {
    const data: ThreadData = { pipelineModule: this.options.pipelineModule, options: this.options.pipelineOptions };
    const thread = new Worker(THREAD_BOOTSTRAP, { eval: true, workerData: data });
    return new Promise((resolve, reject) => {
      const onMessage = (msg: FromThread) => {
        if (msg.type === 'ready') {
          cleanup();
          resolve(thread);
        } else if (msg.type === 'fatal') {
          cleanup();
          void thread.terminate();
          reject(new AppError('model', `the pipeline failed to load: ${msg.error.message}`));
        }
      };
      const onError = (e: Error) => {
        cleanup();
        reject(new AppError('model', `the model thread failed to start: ${e.message}`, { cause: e }));
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new AppError('model', `the model thread exited with code ${code} while loading`));
      };
      // Stryker disable next-line BlockStatement,StringLiteral: a listener left on a loaded thread only leaks (each settles a settled promise)
      const cleanup = () => {
        // Stryker disable next-line StringLiteral: as above
        thread.off('message', onMessage);
        // Stryker disable next-line StringLiteral: as above
        thread.off('error', onError);
        // Stryker disable next-line StringLiteral: as above
        thread.off('exit', onExit);
      };
      thread.on('message', onMessage);
      thread.on('error', onError);
      thread.on('exit', onExit);
    });
  }

  /**
   * Replaces the slot's thread when it exits, also while it holds no run (a fault in work a finished run left behind):
   * before 2026-12 the next run was posted to the dead thread and waited out its whole time limit, failing as "took
   * longer than …" (not retried). Exits during runs are also seen by each run's own listener, and exits that respawn()
   * or close() cause are their own: respawn() runs once for a thread either way.
   */
  private watch(slot: Slot): void {
    const thread = slot.thread;
    thread.once('exit', () => {
      if (!this.closed && slot.thread === thread) void this.respawn(slot);
    });
  }

  /** Runs of `stage` one thread takes at once. */
  capacity(stage: Stage): number {
    return this.options.maxBatch?.[stage] ?? 1;
  }

  /** Total runs the host can hold at once: what the queue worker's concurrency should be. */
  get maxRuns(): number {
    return this.options.size * Math.max(this.capacity('decode'), this.capacity('diffusion'));
  }

  /** A slot with room for a run of `stage`: an idle one, else one already running that stage with room (not one
   *  held by a run alone, and none for a run that must run alone). */
  private fit(stage: Stage, placement: Placement): Slot | undefined {
    const open = this.slots.filter((s) => !s.respawning);
    const batch = placement === 'alone' ? undefined : open.find((s) => s.active > 0 && !s.alone && s.stage === stage && s.active < this.capacity(stage));
    // Stryker disable next-line ConditionalExpression,EqualityOperator: which of two threads takes the run (a batch with room, or an idle thread of that stage left by an earlier batch): it runs at once either way
    return batch ?? open.find((s) => s.active === 0); // join a batch first
  }

  private take(slot: Slot, stage: Stage, placement: Placement): Slot {
    // Stryker disable next-line ConditionalExpression: equivalent, a run joins a busy slot only of its own stage, and never one held alone
    if (slot.active === 0) {
      slot.stage = stage;
      slot.alone = placement === 'alone';
    }
    slot.active++;
    return slot;
  }

  /**
   * Room for a run of `stage`, in strict arrival order. A run cancelled while it waits leaves the line at once (a
   * user's Cancel must not wait for the runs ahead of it to finish), and those behind it may then fit. A run placed
   * again had room before: it goes ahead of the runs that never had, behind those placed again before it, and leaves
   * the line with `expiry.timedOut()` when its deadline `expiry.at` (epoch ms) passes first.
   */
  private acquire(stage: Stage, signal: AbortSignal, placement: Placement, expiry?: { at: number; timedOut: () => AppError }): Promise<Slot> {
    // Stryker disable next-line ConditionalExpression: without it the run would be stopped as soon as it has room (run() checks the signal too); it only takes no room
    if (signal.aborted) return Promise.reject(new AppError('cancelled', 'Cancelled.'));
    const ahead = placement === 'new' ? this.waiters.length : this.waiters.filter((w) => w.placement !== 'new').length;
    const slot = ahead === 0 ? this.fit(stage, placement) : undefined;
    if (slot) return Promise.resolve(this.take(slot, stage, placement));
    return new Promise((resolve, reject) => {
      const leave = (why: AppError) => {
        const at = this.waiters.indexOf(waiter);
        // Stryker disable next-line ConditionalExpression: defensive, grant() and fail() remove this listener before a waiter leaves the line
        if (at < 0) return; // granted or failed already
        this.waiters.splice(at, 1);
        stopWaiting();
        reject(why);
        this.pump();
      };
      const onAbort = () => leave(new AppError('cancelled', 'Cancelled.'));
      const expires = expiry && setTimeout(() => leave(expiry.timedOut()), expiry.at - Date.now());
      const stopWaiting = () => {
        // Stryker disable next-line StringLiteral: equivalent, leave() does nothing once the waiter is out of the line
        signal.removeEventListener('abort', onAbort);
        clearTimeout(expires);
      };
      const waiter: Waiter = {
        stage,
        placement,
        grant: (granted) => {
          stopWaiting();
          resolve(granted);
        },
        fail: (e) => {
          stopWaiting();
          reject(e);
        },
      };
      // Stryker disable next-line ObjectLiteral,BooleanLiteral: equivalent, a signal aborts once
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.splice(ahead, 0, waiter);
    });
  }

  /** Grants waiting runs in arrival order while the first of them fits somewhere. */
  private pump(): void {
    for (;;) {
      const first = this.waiters[0];
      if (!first) return;
      const slot = this.fit(first.stage, first.placement);
      if (!slot) return;
      this.waiters.shift();
      first.grant(this.take(slot, first.stage, first.placement));
    }
  }

  private release(slot: Slot): void {
    slot.active--;
    this.pump();
  }

  /** Replace a slot's thread (terminated or crashed) with a fresh one. Terminating it ends every other run on it
   *  (their 'exit' listeners fail them retryably); the slot takes no runs until the new thread is ready. */
  private async respawn(slot: Slot): Promise<void> {
    // Stryker disable next-line ConditionalExpression: a second respawn of the same slot spawns a thread that replaces the first one's, which leaks: not visible through the host's API
    if (slot.respawning) return;
    slot.respawning = true;
    await slot.thread.terminate().catch(() => undefined);
    // Keep trying (a GPU can be briefly out of memory while the old thread's allocations are released).
    // Stryker disable next-line UpdateOperator: the back-off's growth shows from the second retry on (6 s into a test)
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        const thread = await this.spawn();
        if (this.closed) {
          // close() ran while it loaded, and terminated only the old thread
          await thread.terminate().catch(() => undefined);
          return;
        }
        slot.thread = thread;
        this.watch(slot);
        slot.respawning = false;
        this.pump();
        return;
      } catch (e) {
        this.options.log.error({ err: (e as Error).message, attempt }, 'could not restart a model thread; retrying');
        if (attempt === (this.options.respawnTries ?? 5)) this.options.onThreadLost?.(e as Error);
        await new Promise((r) => setTimeout(r, Math.min(30_000, (this.options.respawnBaseMs ?? 1000) * 2 ** attempt)));
      }
    }
  }

  generate(request: GenerateRequest, run: RunOptions): Promise<GeneratedImage> {
    return this.run('generate', request, run) as Promise<GeneratedImage>;
  }

  understand(request: UnderstandRequest, run: RunOptions): Promise<Answer> {
    return this.run('understand', request, run) as Promise<Answer>;
  }

  check(request: CheckRequest, run: RunOptions): Promise<CheckResult> {
    return this.run('check', request, run) as Promise<CheckResult>;
  }

  private async run(kind: 'generate' | 'understand' | 'check', request: GenerateRequest | UnderstandRequest | CheckRequest, run: RunOptions): Promise<unknown> {
    // Ends: the run's own outcome, or a failure that is its own. A run placed alone is never placed again (a crash is
    // then its own), and one placed again for a stuck companion only once per other run that gets stuck: no loop.
    // The run spends its job's limit from its first room to here, every placement and wait to be placed again included.
    const time = run.timeLimit.run();
    try {
      for (let placement: Placement = 'new'; ; ) {
        try {
          return await this.runOnce(kind, request, run, placement, time);
        } catch (e) {
          if (!(e instanceof RunAgain)) throw e;
          placement = e.placement;
        }
      }
    } finally {
      time.end();
    }
  }

  /**
   * One placement of a run on a thread. `time.deadline` (epoch ms): undefined for the first, whose part of the job's
   * limit starts when it has room (a wait for a first room is a wait in the queue: a job must not time out for the jobs
   * ahead of it); then the first's, for the wait for room again too. A BullMQ retry of the job has a new limit.
   */
  private async runOnce(kind: 'generate' | 'understand' | 'check', request: GenerateRequest | UnderstandRequest | CheckRequest, run: RunOptions, placement: Placement, time: RunTime): Promise<unknown> {
    if (this.closed) throw new AppError('internal', 'the worker is shutting down');
    // The words say the job's whole limit, however much of it this run had.
    const timedOut = () => new AppError('timeout', `This took longer than ${formatDuration(run.timeLimit.limitMs)} and was stopped.`);
    // a job whose limit its earlier runs spent (the last one ended as it ran out) waits for no room
    if (time.deadline === undefined && run.timeLimit.leftMs() <= 0) throw timedOut();
    const deadline = time.deadline;
    const meter = run.meter;
    meter?.waitForRoom();
    let slot: Slot;
    try {
      slot = await this.acquire(stageOf(kind), run.signal, placement, deadline === undefined ? undefined : { at: deadline, timedOut });
    } catch (e) {
      meter?.share(1); // no room given (cancelled, timed out, or closing): back outside the thread
      throw e;
    }
    const ends = time.begin();
    if (meter) {
      slot.meters.add(meter);
      // every run's share changes when one joins (runs without a meter still count in `active`)
      for (const m of slot.meters) m.share(slot.active);
    }
    // Stryker disable next-line UpdateOperator: equivalent, ids only need to differ
    const runId = this.nextRunId++;
    const thread = slot.thread;
    let needsRespawn = false;
    try {
      // room given as the deadline passed (its expiry timer not run yet): not posted, for a stop at once
      if (Date.now() >= ends) throw timedOut();
      return await new Promise<unknown>((resolve, reject) => {
        let stopReason: AppError | undefined;
        let graceTimer: NodeJS.Timeout | undefined;
        const stop = (reason: AppError) => {
          if (stopReason) return;
          stopReason = reason;
          thread.postMessage({ type: 'abort', runId } satisfies ToThread);
          graceTimer = setTimeout(() => {
            this.options.log.warn({ runId, abortGraceMs: this.options.abortGraceMs }, 'model thread ignored abort; terminating it');
            needsRespawn = true;
            this.terminatedForStuckRun.add(thread);
            finish(() => reject(reason));
          }, this.options.abortGraceMs);
        };
        const onAbort = () => stop(new AppError('cancelled', 'Cancelled.'));
        const timeout = setTimeout(() => stop(timedOut()), ends - Date.now());
        const onMessage = (msg: FromThread) => {
          if (!('runId' in msg) || msg.runId !== runId) return;
          if (msg.type === 'progress') {
            if (!stopReason) run.onProgress(msg.report); // none once the run was told to stop
            return;
          }
          if (msg.type === 'done') return finish(() => (stopReason ? reject(stopReason) : resolve(msg.value)));
          // Stryker disable next-line ConditionalExpression: equivalent, the thread sends a run only progress, done or error
          if (msg.type === 'error') finish(() => reject(stopReason ?? fromWire(msg.error)));
        };
        // The thread went down under the run: a failure of its own, or it is placed again. Every run on the thread
        // hears this before any of them leaves it, so `slot.active` still counts the whole batch.
        const blame = (crash: AppError): AppError | RunAgain => {
          if (stopReason) return stopReason;
          if (this.closed) return crash; // close() terminated it: retryable, the job goes back to the queue
          if (this.terminatedForStuckRun.has(thread)) return new RunAgain('again');
          // which run of a batch crashed it is unknown: each runs again alone, where a crash is its own
          if (placement !== 'alone' && slot.active > 1) return new RunAgain('alone');
          return crash;
        };
        const wentDown = (crash: AppError) => {
          needsRespawn = true;
          const why = blame(crash);
          if (why instanceof RunAgain) this.options.log.warn({ runId, placement: why.placement, leftMs: ends - Date.now() }, 'model thread went down under a run not to blame; running it again');
          finish(() => reject(why));
        };
        const onExit = (code: number) => wentDown(new AppError('internal', `the model thread exited (code ${code}) during the job`));
        const onError = (e: Error) => wentDown(new AppError('internal', `the model thread crashed: ${e.message}`, { cause: e }));
        let done = false;
        const finish = (settle: () => void) => {
          if (done) return;
          // Stryker disable next-line BooleanLiteral: equivalent, a second finish settles a settled promise and removes removed listeners
          done = true;
          clearTimeout(timeout);
          clearTimeout(graceTimer); // undefined unless the run was told to stop
          run.signal.removeEventListener('abort', onAbort);
          // Stryker disable next-line StringLiteral: a listener left on the thread only leaks (finish() is guarded)
          thread.off('message', onMessage);
          // Stryker disable next-line StringLiteral: a listener left on the thread only leaks (finish() is guarded)
          thread.off('exit', onExit);
          // Stryker disable next-line StringLiteral: a listener left on the thread only leaks (finish() is guarded)
          thread.off('error', onError);
          settle();
        };
        thread.on('message', onMessage);
        thread.on('exit', onExit);
        thread.on('error', onError);
        // Stryker disable next-line ConditionalExpression: acquire() refuses an aborted signal; only an abort in the same microtask reaches here
        if (run.signal.aborted) onAbort();
        // Stryker disable next-line ObjectLiteral,BooleanLiteral: equivalent, a signal aborts once (and an aborted one never again)
        run.signal.addEventListener('abort', onAbort, { once: true });
        thread.postMessage({ type: 'run', runId, kind, request } as ToThread);
      });
    } finally {
      // Off the job's critical path: the job's outcome is already decided; the slot takes runs again once a new
      // thread is warm. (The thread may already be a fresh one if a companion run replaced it first.) respawn()
      // marks the slot before its first await, so release() below grants nothing on the dying thread.
      // Stryker disable next-line ConditionalExpression: a companion run that ends after its thread was already replaced: not reachable by timing in a test
      if (needsRespawn && slot.thread === thread) void this.respawn(slot);
      if (meter) {
        slot.meters.delete(meter);
        meter.share(1);
      }
      this.release(slot);
      for (const m of slot.meters) m.share(slot.active);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    // Runs still waiting for room: retryable, so BullMQ gives their jobs to another worker (or this one restarted).
    for (const waiter of this.waiters.splice(0)) waiter.fail(new AppError('internal', 'the worker is shutting down'));
    await Promise.all(this.slots.map((s) => s.thread.terminate().catch(() => undefined)));
  }
}
