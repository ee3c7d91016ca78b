// What a user reads for each stage of a job, the same words on every platform.
import type { JobProgress, Stage } from '../../src/jobs/contract.ts';

export const STAGE_LABEL: Readonly<Record<Stage, string>> = {
  queued: 'Queued',
  loading: 'Loading the model',
  conditioning: 'Reading the prompt',
  features: 'Drawing',
  decoding: 'Decoding pixels',
  encoding: 'Looking at the image',
  answering: 'Writing the answer',
  checking: 'Checking the image',
  retrying: 'Retrying with a new seed',
};

/** 1 → 1st, 2 → 2nd, 11 → 11th, 21 → 21st. */
export function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return `${n}${teen ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th')}`;
}

/** Said after a queued job's place in line while no worker is ready (none running, or a first start still converting the model). */
export const NO_WORKER_NOTE = 'No GPU worker is running right now; your request starts as soon as one is.';

/** A waiting job's line while an admin has paused its channel (the same words submit answers a job queued then). */
export const PAUSED_LINE = 'Queued. An admin paused this channel; your request waits until they resume it.';

/**
 * Progress as the bots' relay hands it to a platform: a queued job whose channel is paused carries `paused` (it has no
 * place in line meanwhile). Only the relay sets it, in-process; workers never send it (JobProgress is their contract).
 */
export type ShownProgress = JobProgress & { paused?: true };

/**
 * A waiting job's line on every platform: "Queued: 3rd in line." (no place known: "Queued."), and NO_WORKER_NOTE after
 * it with `noWorker`; PAUSED_LINE with `paused`.
 */
export function queuedLine(position?: number, noWorker?: boolean, paused?: boolean): string {
  if (paused) return PAUSED_LINE;
  const line = position ? `Queued: ${ordinal(position)} in line.` : 'Queued.';
  return noWorker ? `${line} ${NO_WORKER_NOTE}` : line;
}
