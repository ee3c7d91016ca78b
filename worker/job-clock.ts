// A job's GPU clock (GPU-seconds, docs/cost.md) over every model run it makes, one after another or several at once.
// The thread host keeps one ShareMeter per run (worker/thread-host.ts: 1/n while n runs share its thread, 0 while it
// waits for room, and it keeps a thread's meters in a Set, so two runs of one job cannot share one meter). Each run
// here gets a meter of its own, and the job is charged the sum: k of its runs among n on a thread count k/n; time
// while none of its runs is under way (the processor's own work between them) counts in full. So the images of an
// `--n` job are charged the same GPU time whether they run one after another or at once.
import { ShareMeter, type RunOptions, type ThreadHost } from './thread-host.ts';

export type ModelHost = Pick<ThreadHost, 'generate' | 'understand' | 'check'>;

export class JobClock {
  /** Milliseconds while no run was under way, up to `idleSince`. */
  private outside = 0;
  /** When the last run ended (or the clock started); undefined while a run is under way. */
  private idleSince: number | undefined = Date.now();
  /** Milliseconds charged to the runs that ended. */
  private ended = 0;
  private readonly running = new Set<ShareMeter>();

  /** The job's GPU milliseconds since the clock was made. */
  now(): number {
    let ms = this.outside + this.ended;
    if (this.idleSince !== undefined) ms += Date.now() - this.idleSince;
    for (const meter of this.running) ms += meter.now();
    return ms;
  }

  /** Runs `work` on a meter of its own, charged to this job until it settles. */
  async run<T>(work: (meter: ShareMeter) => Promise<T>): Promise<T> {
    if (this.idleSince !== undefined) {
      this.outside += Date.now() - this.idleSince;
      this.idleSince = undefined;
    }
    const meter = new ShareMeter();
    this.running.add(meter);
    try {
      return await work(meter);
    } finally {
      this.running.delete(meter);
      this.ended += meter.now();
      if (this.running.size === 0) this.idleSince = Date.now();
    }
  }
}

/** `host` with each run timed on `clock` (a meter of its own per run; a meter in the caller's options is replaced). */
export function timedHost(host: ModelHost, clock: JobClock): ModelHost {
  const metered = (options: RunOptions, meter: ShareMeter): RunOptions => ({ ...options, meter });
  return {
    generate: (request, options) => clock.run((meter) => host.generate(request, metered(options, meter))),
    understand: (request, options) => clock.run((meter) => host.understand(request, metered(options, meter))),
    check: (request, options) => clock.run((meter) => host.check(request, metered(options, meter))),
  };
}
