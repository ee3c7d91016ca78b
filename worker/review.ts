// The worker's side of issue 16: draw, let the model check what it drew, re-roll when it does not match the prompt,
// and withhold what the channel's moderation questions flag (policy: src/checks/policy.ts; the checks themselves:
// worker/pipeline/checks.ts, one vision encoding and one prefill per round).
//
//   try k = 0…maxRerolls (seed, seed+1, …):  generate → check (caption, match, moderation questions)
//     flagged by moderation → stop (a re-roll is not a way around the policy); deliver the best earlier image, if any
//     match ≥ threshold (or match off) → stop
//   deliver the best-scoring unflagged image once, with how many tries it took.
import type { CheckPolicy } from '../src/checks/policy.ts';
import { flaggedBy } from '../src/checks/policy.ts';
import { UserError } from '../src/errors.ts';
import type { ImagineOptions } from '../src/jobs/contract.ts';
import type { CheckRequest, CheckResult, GeneratedImage, GenerateRequest } from './pipeline/types.ts';
import type { RunOptions, ThreadHost } from './thread-host.ts';

export type ReviewHost = Pick<ThreadHost, 'generate' | 'check'>;

export interface Candidate {
  image: GeneratedImage;
  /** The options it was drawn with (a re-roll's seed differs). */
  options: ImagineOptions;
  check?: CheckResult;
}

export interface Reviewed {
  /** The image to deliver: unflagged, best match score. */
  best: Candidate;
  /** Images drawn (1 + re-rolls). */
  tries: number;
  /** Each try's match score, in order (absent where not asked). */
  scores: (number | undefined)[];
}

/** The seed of re-roll k (k ≥ 1): the next seeds in order, so each delivered image names a seed that reproduces it. */
export const rerollSeed = (seed: number, k: number): number => (seed + k) % 2 ** 32;

function questionsOf(policy: CheckPolicy): CheckRequest['questions'] {
  return policy.moderation.enabled ? policy.moderation.questions.map(({ id, question }) => ({ id, question })) : [];
}

/**
 * Thrown when the channel's moderation questions flag an image: the user is told privately, nothing is posted. The
 * code tells the image the user sent (`input_withheld`) from one the model made (`withheld`); the words are for people.
 */
export function withheldError(flagged: readonly string[], input: boolean): UserError {
  const what = flagged.join(', ');
  if (input) return new UserError('input_withheld', `I can't work with that image here: this channel's content checks flagged it (${what}).`, { context: { flagged } });
  return new UserError('withheld', `I made an image but did not post it: this channel's content checks flagged it (${what}). Try a different prompt.`, { context: { flagged } });
}

/**
 * Whether a job's error says the checks flagged the image its user sent (withheldError with `input`). By its code only:
 * before 2026-12-07 this matched the message's first words, and a rewording would have silently kept flagged uploads.
 */
export const inputWithheld = (error: { code: string } | undefined): boolean => error?.code === 'input_withheld';

/** Draws `req` under `policy`; throws withheldError when every image drawn was flagged. */
export async function generateReviewed(host: ReviewHost, req: GenerateRequest, policy: CheckPolicy, run: RunOptions): Promise<Reviewed> {
  const prompt = req.prompt.trim();
  const match = policy.match.enabled && prompt.length > 0;
  const questions = questionsOf(policy);
  const needCheck = policy.altText || match || questions.length > 0;
  const maxRerolls = match ? policy.match.maxRerolls : 0;
  const scores: (number | undefined)[] = [];
  let best: Candidate | undefined;
  // Stryker disable next-line ArrayDeclaration: equivalent, every try assigns it before it is read
  let flagged: string[] = [];
  for (let k = 0; k <= maxRerolls; k++) {
    if (k > 0) run.onProgress({ stage: 'retrying', step: k, total: maxRerolls });
    const options = k === 0 ? req.options : { ...req.options, seed: rerollSeed(req.options.seed, k) };
    const image = await host.generate({ ...req, options }, run);
    const check = needCheck
      ? await host.check({ image: image.png, prompt, match, questions, ...(policy.altText ? { captionMaxTokens: policy.captionMaxTokens } : {}) }, run)
      : undefined;
    scores.push(check?.match);
    flagged = check && questions.length > 0 ? flaggedBy(policy, check.answers) : [];
    if (flagged.length > 0) break;
    if (!best || (check?.match ?? 0) > (best.check?.match ?? 0)) best = { image, options, ...(check ? { check } : {}) };
    if (!match || (check?.match ?? 0) >= policy.match.threshold) break;
  }
  if (!best) throw withheldError(flagged, false);
  return { best, tries: scores.length, scores };
}

/** Asks the moderation questions of an image a user sent (/ask, vary); returns the flagged question ids. */
export async function moderateInput(host: Pick<ThreadHost, 'check'>, image: Uint8Array, policy: CheckPolicy, run: RunOptions): Promise<string[]> {
  if (!policy.moderation.enabled || !policy.moderation.checkInputs) return [];
  const questions = questionsOf(policy);
  if (questions.length === 0) return [];
  const check = await host.check({ image, match: false, questions }, run);
  return flaggedBy(policy, check.answers);
}
