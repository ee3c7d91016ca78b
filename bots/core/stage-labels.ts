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

/** A waiting job's line on every platform: "Queued: 3rd in line." (no place known: "Queued."). */
export function queuedLine(position?: number): string {
  return position ? `Queued: ${ordinal(position)} in line.` : 'Queued.';
}
