// The worker is a trust boundary: a job in Redis may come from a bot with another config, an older version or
// anyone who can write to Redis. The contract (src/jobs/contract.ts) holds only hard bounds any worker accepts;
// this file holds the worker's own configured limits, checked before any model runs. A job past them fails at
// once with a UserError the chat user can read (never retried).
import type { Config } from '../src/config/schema.ts';
import type { JobRequest } from '../src/jobs/contract.ts';
import { UserError } from '../src/errors.ts';
import { lengthRefusal } from '../src/text.ts';

const MiB = 2 ** 20;
const size = (n: number) => (n >= MiB ? `${Number((n / MiB).toFixed(1))} MiB` : `${Math.round(n / 1024)} KiB`);

/** Throws UserError('bad_request') naming the first setting of `request` past this worker's configured limits. */
export function enforceConfiguredLimits(config: Readonly<Config>, request: JobRequest): void {
  const refuse = (what: string) => {
    throw new UserError('bad_request', `${what} This worker does not run requests past its configured limits.`);
  };
  // characters as the bots count them, in the bots' own words (src/text.ts lengthRefusal)
  const refuseLong = (what: string, text: string, max: number) => {
    const refusal = lengthRefusal(what, text, max);
    if (refusal) refuse(refusal);
  };
  if (request.kind === 'ask') {
    const u = config.understanding;
    const o = request.options;
    refuseLong('Your question', request.question, u.maxQuestionChars);
    if (request.history.length > u.maxHistoryTurns) refuse(`The conversation carries ${request.history.length} earlier turns; the limit is ${u.maxHistoryTurns}.`);
    for (const turn of request.history) refuseLong('An earlier turn', turn.text, u.maxQuestionChars);
    if (o.maxNewTokens > u.maxNewTokens) refuse(`An answer of up to ${o.maxNewTokens} tokens was asked for; the limit is ${u.maxNewTokens}.`);
    return;
  }
  const g = config.generation;
  const o = request.options;
  refuseLong('Your prompt', request.prompt, g.maxPromptChars);
  if (o.ditSteps > g.maxDitSteps) refuse(`steps is ${o.ditSteps}; the limit is ${g.maxDitSteps}.`);
  if (o.decoderSteps > g.maxDecoderSteps) refuse(`decoder steps is ${o.decoderSteps}; the limit is ${g.maxDecoderSteps}.`);
  if (o.guidance > g.maxGuidance) refuse(`guidance is ${o.guidance}; the limit is ${g.maxGuidance}.`);
  // Each image is a full generation and each new negative text one more LLM + DiT pass: GPU time a worker's owner caps.
  if ((o.count ?? 1) > g.maxImagesPerRequest) refuse(`${o.count} images were asked for; the limit is ${g.maxImagesPerRequest}.`);
  refuseLong('Your negative prompt', o.negative ?? '', g.maxNegativeChars);
}

/** Throws UserError('bad_image') for an input image larger than `understanding.maxInputImageBytes`. */
export function enforceImageBytes(config: Readonly<Config>, bytes: Uint8Array): void {
  const max = config.understanding.maxInputImageBytes;
  if (bytes.byteLength > max) throw new UserError('bad_image', `That image is ${size(bytes.byteLength)}; the limit is ${size(max)}.`);
}
