// What a user reads for each stage of a job, the same words on every platform.
import type { Stage } from '../../src/jobs/contract.ts';

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

/** A waiting job's line on every platform: "Queued: 3rd in line." (no place known: "Queued."), and NO_WORKER_NOTE after it with `noWorker`. */
export function queuedLine(position?: number, noWorker?: boolean): string {
  const line = position ? `Queued: ${ordinal(position)} in line.` : 'Queued.';
  return noWorker ? `${line} ${NO_WORKER_NOTE}` : line;
}
