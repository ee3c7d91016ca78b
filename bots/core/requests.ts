// CommandInput → JobRequest: every check a chat user can fix happens here and throws UserError with a
// sentence they understand. The result is parsed by the contract schema as well (Redis is a trust boundary,
// and the worker parses it again on its side).
import { randomInt } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';
import type { Config } from '../../src/config/schema.ts';
import { AspectRatio } from '../../src/config/schema.ts';
import {
  CONTRACT_VERSION,
  DESCRIBE_PROMPTS,
  JobRequest,
  MAX_IMAGES_PER_JOB,
  MAX_NEGATIVE_CHARS,
  parseContract,
  type AskRequest,
  type Destination,
  type ImagineOptions,
  type ImagineRequest,
  type VaryRequest,
} from '../../src/jobs/contract.ts';
import { UserError } from '../../src/errors.ts';
import { firstChars, lengthRefusal } from '../../src/text.ts';
import type { CommandInput, ImageRef } from './port.ts';

/** Formats we decode on the worker (spec: PNG/JPEG/WebP/GIF). */
const IMAGE_FORMATS = new Set(['png', 'jpeg', 'webp', 'gif']);

/** "20 MiB", "1.5 MiB", "300 KiB": sizes as a chat user reads them. */
export function formatBytes(n: number): string {
  if (n >= 2 ** 20) return `${Number((n / 2 ** 20).toFixed(1))} MiB`;
  if (n >= 1024) return `${Math.round(n / 1024)} KiB`;
  return `${n} bytes`;
}

/**
 * "photo.png is 9 MiB; the limit is 8 MiB." A size that reads the same as the limit once rounded (3 MiB and a few
 * bytes against 3 MiB) is "larger than the 3 MiB limit", not "3 MiB; the limit is 3 MiB". `size` undefined: not known
 * (a body cut off at the cap). `name` as the platform shows it.
 */
export function tooLargeText(name: string, size: number | undefined, max: number): string {
  const [is, limit] = [size === undefined ? undefined : formatBytes(size), formatBytes(max)];
  return is === undefined || is === limit ? `${name} is larger than the ${limit} limit.` : `${name} is ${is}; the limit is ${limit}.`;
}

/** Throws UserError('bad_request') for a text past its limit, in characters (src/text.ts lengthRefusal). */
export function checkLength(what: string, text: string, max: number): void {
  const refusal = lengthRefusal(what, text, max);
  if (refusal) throw new UserError('bad_request', refusal);
}

/** A random seed such that seed … seed+count−1 are all valid seeds. */
// Stryker disable next-line ArithmeticOperator,MethodExpression: a bound off by `count` of 2³² seeds: no test can draw it
export const randomSeed = (count = 1): number => randomInt(0, 2 ** 32 - Math.max(1, count));

function intOption(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) throw new UserError('bad_request', `${name} must be a whole number from ${min} to ${max}.`);
  return value;
}

export function imagineOptions(
  config: Config,
  input: { seed?: number; ditSteps?: number; decoderSteps?: number; guidance?: number; aspect?: string; negative?: string; count?: number },
): ImagineOptions {
  const g = config.generation;
  const guidance = input.guidance ?? g.defaultGuidance;
  if (!Number.isFinite(guidance) || guidance < 0 || guidance > g.maxGuidance) throw new UserError('bad_request', `guidance must be between 0 and ${g.maxGuidance}.`);
  const aspect = AspectRatio.safeParse(input.aspect ?? g.defaultAspect);
  if (!aspect.success) throw new UserError('bad_request', `aspect must be one of ${AspectRatio.options.join(', ')}.`);
  const maxCount = Math.min(g.maxImagesPerRequest, MAX_IMAGES_PER_JOB);
  const count = intOption('the number of images', input.count, Math.min(g.defaultImageCount, maxCount), 1, maxCount);
  const options: ImagineOptions = {
    seed: intOption('seed', input.seed, randomSeed(count), 0, 2 ** 32 - 1),
    ditSteps: intOption('steps', input.ditSteps, g.defaultDitSteps, 1, g.maxDitSteps),
    decoderSteps: intOption('decoder steps', input.decoderSteps, g.defaultDecoderSteps, 1, g.maxDecoderSteps),
    guidance,
    aspect: aspect.data,
  };
  const negative = (input.negative ?? '').trim();
  checkLength('Your negative prompt', negative, Math.min(g.maxNegativeChars, MAX_NEGATIVE_CHARS));
  if (negative) options.negative = negative;
  if (count > 1) {
    if (options.seed + count - 1 > 2 ** 32 - 1) throw new UserError('bad_request', `With ${count} images the seed can be at most ${2 ** 32 - count}.`);
    options.count = count;
  }
  return options;
}

/** Blank, or only control and format characters (a stray \u0001, a zero-width space): queued before 2026-12-07. */
const saysNothing = (text: string): boolean => text.replace(/[\p{Cc}\p{Cf}\s]/gu, '').length === 0;

function checkPrompt(config: Config, prompt: string, required: boolean): string {
  const text = prompt.trim();
  if (required && saysNothing(text)) throw new UserError('bad_request', 'Please describe the image you want.');
  // characters as Discord counts the option's max_length (code points, src/text.ts): 🦊 is one, not two
  checkLength('Your prompt', text, config.generation.maxPromptChars);
  return text;
}

/**
 * Size, format and dimension checks from the header only (decompression-bomb guard), before anything is stored.
 * Returns the image's size as it is shown (EXIF orientation applied).
 */
export async function checkImage(config: Config, bytes: Uint8Array): Promise<{ width: number; height: number }> {
  const u = config.understanding;
  if (bytes.byteLength > u.maxInputImageBytes)
    throw new UserError('bad_image', tooLargeText('That image', bytes.byteLength, u.maxInputImageBytes));
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new UserError('bad_image', 'That file is not an image I can read (PNG, JPEG, WebP or GIF).', { cause: e });
  }
  // Stryker disable next-line LogicalOperator,StringLiteral: `?? 'That'` is defensive: sharp names the format of whatever it reads
  if (!meta.format || !IMAGE_FORMATS.has(meta.format)) throw new UserError('bad_image', `${meta.format ?? 'That'} images are not supported; use PNG, JPEG, WebP or GIF.`);
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  // Stryker disable next-line ConditionalExpression,LogicalOperator,StringLiteral: defensive: sharp refuses a header with a zero side itself ("corrupt header")
  if (w === 0 || h === 0) throw new UserError('bad_image', 'That image has no pixels.');
  if (w * h > u.maxInputPixels) throw new UserError('bad_image', `That image is ${w}×${h}; the limit is ${u.maxInputPixels.toLocaleString('en')} pixels.`);
  // The worker's own check, and the spec's (§2.1: the aspect ratio must be below maxAspectRatio): before 2026-12-07 an
  // image at exactly the limit passed here, was queued, and then was refused on the worker.
  const ratio = Math.max(w, h) / Math.min(w, h);
  if (ratio >= u.maxAspectRatio)
    throw new UserError('bad_image', `That image is ${w}×${h} pixels, an aspect ratio of ${Math.round(ratio)}:1; images must be less than ${u.maxAspectRatio}:1. Crop it and try again.`);
  // Stryker disable next-line OptionalChaining,LogicalOperator: sharp 0.35 reports autoOrient for every image it reads
  return meta.autoOrient ?? { width: w, height: h };
}

/** The output aspect closest to a width×height image's (by the ratio's logarithm: 2:1 is as far from 1:1 as 1:2). */
export function nearestAspect(width: number, height: number): AspectRatio {
  const distance = (a: AspectRatio) => {
    const [w, h] = a.split(':').map(Number) as [number, number];
    return Math.abs(Math.log(width / height) - Math.log(w / h));
  };
  // Stryker disable next-line EqualityOperator: equivalent, no tie for the nearest: it needs (width/height)² = two aspects' product, and each product that is a rational square (4:3·3:4, 1:1·16:9) lands on an option, nearer at distance 0; bounded sizes keep near ties far from float64's rounding
  return AspectRatio.options.reduce((best, a) => (distance(a) < distance(best) ? a : best));
}

export interface RequestBase {
  id: string;
  destination: Destination;
  submittedAt: number;
}

export function imagineRequest(config: Config, base: RequestBase, input: Extract<CommandInput, { command: 'imagine' }>): ImagineRequest {
  const request = { v: CONTRACT_VERSION, ...base, kind: 'imagine', prompt: checkPrompt(config, input.prompt, true), options: imagineOptions(config, input) };
  return parseContract(JobRequest, request, 'imagine request') as ImagineRequest;
}

/**
 * A variation of an image. `kept`: the options it keeps (Midjourney's Vary keeps the image's shape and settings): a
 * result's own job's, or for an upload its nearest aspect and the user's saved defaults. Kept values above today's
 * limits (an operator lowered them since) are used at the limit; a new seed unless one is typed; one image unless the
 * defaults say more.
 */
export function varyRequest(
  config: Config,
  base: RequestBase,
  imageKey: string,
  input: Extract<CommandInput, { command: 'vary' }>,
  kept: { ditSteps?: number; decoderSteps?: number; guidance?: number; aspect?: string; negative?: string; count?: number } = {},
): VaryRequest {
  const g = config.generation;
  const atMost = (value: number | undefined, max: number) => (value === undefined ? undefined : Math.min(value, max));
  const options = imagineOptions(config, {
    ...kept,
    seed: input.seed,
    ditSteps: atMost(kept.ditSteps, g.maxDitSteps),
    decoderSteps: atMost(kept.decoderSteps, g.maxDecoderSteps),
    guidance: atMost(kept.guidance, g.maxGuidance),
    count: atMost(kept.count, Math.min(g.maxImagesPerRequest, MAX_IMAGES_PER_JOB)),
  });
  const request = { v: CONTRACT_VERSION, ...base, kind: 'vary', imageKey, prompt: checkPrompt(config, input.prompt ?? '', false), options };
  return parseContract(JobRequest, request, 'vary request') as VaryRequest;
}

export function checkQuestion(config: Config, question: string): string {
  const text = question.trim();
  if (saysNothing(text)) throw new UserError('bad_request', 'Please ask a question about the image.');
  checkLength('Your question', text, config.understanding.maxQuestionChars);
  return text;
}

/** The newest `max` turns of a conversation; none at 0 (`slice(-0)` would keep them all, past the worker's limit). */
export function newestTurns<T>(turns: readonly T[], max: number): T[] {
  return max > 0 ? turns.slice(-max) : [];
}

export function askRequest(config: Config, base: RequestBase, imageKey: string, input: Extract<CommandInput, { command: 'ask' }>): AskRequest {
  const u = config.understanding;
  const history = newestTurns(input.history ?? [], u.maxHistoryTurns).map((t) => ({ role: t.role, text: firstChars(t.text, u.maxQuestionChars) }));
  const request = {
    v: CONTRACT_VERSION,
    ...base,
    kind: 'ask',
    imageKey,
    question: checkQuestion(config, input.question),
    history,
    options: { maxNewTokens: u.maxNewTokens, temperature: u.temperature, topP: u.topP, topK: u.topK, repetitionPenalty: u.repetitionPenalty, seed: randomSeed() },
  };
  return parseContract(JobRequest, request, 'ask request') as AskRequest;
}

/** What /describe asks the model, once per prompt (the worker asks it DESCRIBE_PROMPTS times with other seeds). */
export const DESCRIBE_QUESTION =
  'Write one short text-to-image prompt (at most 40 words) that would generate an image like this one: subject, style, ' +
  'lighting, composition. Answer with the prompt only.';

export function describeRequest(config: Config, base: RequestBase, imageKey: string): AskRequest {
  const u = config.understanding;
  const request = {
    v: CONTRACT_VERSION,
    ...base,
    kind: 'ask',
    mode: 'describe',
    imageKey,
    question: DESCRIBE_QUESTION,
    history: [],
    options: {
      maxNewTokens: Math.min(u.maxNewTokens, u.describeMaxNewTokens),
      temperature: u.describeTemperature,
      topP: u.topP,
      topK: u.topK,
      repetitionPenalty: u.repetitionPenalty,
      seed: randomSeed(DESCRIBE_PROMPTS),
    },
  };
  return parseContract(JobRequest, request, 'describe request') as AskRequest;
}

/** An image reference must carry bytes, or a URL the adapter's fetcher can download. */
export type FetchImage = (ref: ImageRef, destination: Destination) => Promise<Uint8Array>;
