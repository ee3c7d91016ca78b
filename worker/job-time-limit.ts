// A job's time limit (queue.jobTimeoutMs) over all the model runs it makes: a /describe up to 5 (a moderation check
// and 4 answers), an /imagine up to 2 × (1 + maxRerolls) per image (worker/review.ts: a draw and a check each try).
// Before 2026-12-07 each run had the whole limit, so one job could run for many limits. The rule:
//   - the limit is spent while at least one of the job's runs is under way: from a run's first room in a thread to its
//     end, a wait to be placed again after a crash included (worker/thread-host.ts);
//   - a wait for a first room is a wait in the queue and spends nothing while none of the job's runs is under way: a
//     job does not time out for the jobs ahead of it;
//   - runs of one job under way at once (the images of an `--n` job under worker.maxBatch.diffusion) spend it once,
//     at the wall clock's pace, not once each: the limit bounds how long a job holds its user, its BullMQ lock and its
//     budget reservation, and batching its images must not make it run out sooner. (GPU-seconds, which split a
//     thread's time between its runs, are worker/job-clock.ts's business.)
// One limit per attempt (worker/processor.ts): a BullMQ retry has a whole limit again.

/** One run's part of its job's limit: from `begin()` (its first room in a thread) to `end()`. */
export interface RunTime {
  /** When the job's limit runs out while this run is under way (epoch ms); undefined before its first room. */
  readonly deadline: number | undefined;
  /** The run has room in a thread: its deadline, set by the first call (a run placed again keeps it). */
  begin(): number;
  /** The run is over (done, failed or stopped); nothing before begin() or a second time. */
  end(): void;
}

export class JobTimeLimit {
  /** Milliseconds spent up to `since`. */
  private spentMs = 0;
  /** Runs of the job under way now. */
  private underWay = 0;
  /** When `underWay` last went from 0 to 1 (meaningful while underWay > 0). */
  private since = 0;

  /** @param limitMs the whole limit (queue.jobTimeoutMs); the timeout's words name it. */
  constructor(readonly limitMs: number) {}

  /** Milliseconds of the limit left now (0 or less once it has run out). */
  leftMs(): number {
    const running = this.underWay > 0 ? Date.now() - this.since : 0;
    return this.limitMs - this.spentMs - running;
  }

  /** A run of the job, counted against the limit from its begin() to its end(). */
  run(): RunTime {
    let deadline: number | undefined;
    let ended = false;
    return {
      get deadline() {
        return deadline;
      },
      // While this run is under way the limit is spent without a pause, so it runs out exactly `leftMs()` from now:
      // the same moment for every run of the job under way at once.
      begin: () => (deadline ??= this.open()),
      end: () => {
        if (deadline === undefined || ended) return;
        ended = true;
        this.close();
      },
    };
  }

  private open(): number {
    const now = Date.now();
    if (this.underWay === 0) this.since = now;
    this.underWay++;
    return now + this.leftMs();
  }

  private close(): void {
    this.underWay--;
    if (this.underWay > 0) return;
    const now = Date.now();
    this.spentMs += now - this.since;
  }
}
