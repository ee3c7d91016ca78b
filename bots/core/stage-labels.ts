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
