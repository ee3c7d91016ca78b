// A running job's progress, between the model thread and Redis.
//
//   model thread ──report per step/token──▶ worker: coalesceProgress ──≤ 1 write per interval──▶ job.updateProgress
//                                            (BullMQ: the job's hash + an event on the jobs queue's stream, which
//                                             every bot instance reads) ──▶ bots/core/progress.ts: ≤ 1 edit per
//                                             progressIntervalMs per job
//
// A real /imagine reports every DiT and decoder step (≈ 85 with the defaults), an /ask every token with its partial
// answer (up to 512, the text growing each time). The relay shows at most one of them per destination interval, so
// writing every one costs Redis (and every bot's event reader) far more than the rest of the job's path while
// showing the user nothing more (docs/architecture.md, issue 19's sixth pass).
import type { Config } from '../config/schema.ts';
import type { Destination, JobProgress } from './contract.ts';

/** Minimum milliseconds between two progress edits of one job: each platform's own rate limit; a terminal takes any. */
export function progressIntervalMs(config: Pick<Config, 'discord' | 'slack'>, d: Destination): number {
  return d.platform === 'discord' ? config.discord.progressEditIntervalMs : d.platform === 'slack' ? config.slack.progressUpdateIntervalMs : 100;
}

/**
 * How often the worker writes a job's progress: twice per edit interval, so the edit the relay shows is at most half
 * an interval behind the newest report.
 */
export const progressWriteIntervalMs = (config: Pick<Config, 'discord' | 'slack'>, d: Destination): number => progressIntervalMs(config, d) / 2;

export interface ProgressCoalescer {
  push(progress: JobProgress): void;
  /** The run is over: nothing more is written (its result supersedes any pending report). */
  stop(): void;
}

/**
 * At most one `write` per `intervalMs`: a report is written at once when the last write is that old or when it opens a
 * new stage (so the stage shown changes promptly); otherwise it waits, replaced by any newer one, and the newest is
 * written when the interval ends. intervalMs 0 writes every report.
 */
export function coalesceProgress(intervalMs: number, write: (progress: JobProgress) => void): ProgressCoalescer {
  let lastAt = 0; // unread by the first report: it opens a stage, so it is written at once
  let lastStage: string | undefined;
  let pending: JobProgress | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const send = (p: JobProgress) => {
    clearTimeout(timer);
    timer = undefined;
    pending = undefined;
    lastAt = Date.now();
    lastStage = p.stage;
    write(p);
  };
  return {
    push(p) {
      if (stopped) return;
      const wait = lastAt + intervalMs - Date.now();
      if (wait <= 0 || p.stage !== lastStage) return send(p);
      pending = p;
      timer ??= setTimeout(() => send(pending!), wait);
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
      timer = undefined;
      pending = undefined;
    },
  };
}
