// The one runtime thing bots and workers share. Redis is a trust boundary: both sides parse with these
// schemas, and a payload whose `v` differs from CONTRACT_VERSION is refused rather than guessed at.
// Images never travel in job data: they live in the blob store (src/blobs/) and jobs carry keys.
import { z } from 'zod';
import { AspectRatio } from '../config/schema.ts';
import { AppError } from '../errors.ts';

export const CONTRACT_VERSION = 1 as const;
const version = z.literal(CONTRACT_VERSION);

export const Platform = z.enum(['discord', 'slack', 'cli']);
export type Platform = z.infer<typeof Platform>;

/** Queue names, under config.queue.prefix. One shared job queue; one delivery queue per platform. */
export const QueueNames = {
  jobs: 'jobs',
  delivery: (platform: Platform) => `delivery-${platform}`,
} as const;

const id = z.string().min(1).max(200);
const blobKey = z.string().min(1).max(300);

/** Longest retention TTL a channel may set: 30 days. */
export const MAX_RETENTION_SECONDS = 30 * 86_400;
/**
 * The channel's retention TTL (/settings, admins): everything stored about the job is deleted this many seconds after
 * it was submitted (src/jobs/retention.ts), earlier than the global retention. Absent: the global retention applies.
 */
const retention = z.number().int().min(1).max(MAX_RETENTION_SECONDS).optional();
/** The channel is in no-log mode (/settings, admins): no process writes texts that may quote its prompts to a log. */
const noLog = z.boolean().optional();

// ---- where an answer must go ------------------------------------------------------------------------
// Enough for *any* bot instance of that platform to deliver, so no state lives in one bot process.

export const DiscordDestination = z.strictObject({
  platform: z.literal('discord'),
  guildId: id.nullable(), // null in DMs
  channelId: id,
  userId: id,
  applicationId: id,
  /** Interaction webhook token (slash commands, buttons, modals); absent for mention-replies. */
  interactionToken: z.string().min(1).max(500).optional(),
  /** When the interaction arrived (ms since epoch): tokens expire after 15 minutes. */
  interactionAt: z.number().int().nonnegative().optional(),
  /** The user's message to reply to (mention-replies). */
  replyToMessageId: id.optional(),
  /** A status message the bot posted and keeps editing (mention-replies, expired tokens). */
  statusMessageId: id.optional(),
  /** Results only the requester may see (/settings private): ephemeral, or a DM once the token expired; never the channel. */
  private: z.boolean().optional(),
  /**
   * A private channel's mention-question: the requester's DM with the bot, where its status message and answer are.
   * `channelId` stays the channel asked in, whose settings, limits and retention apply.
   */
  dmChannelId: id.optional(),
  /**
   * Asked in a thread (a forum post, a thread under a message): the thread, where the bot replies and posts. A thread
   * is a channel of its own on Discord, but belongs to `channelId`, its parent, whose settings, limits, allow-list and
   * checks apply to it, as a Slack thread's channel does.
   */
  threadId: id.optional(),
  /** The channel is marked age-restricted (Discord's nsfw flag): the relaxed check policy applies (checks.ageRestricted). */
  nsfw: z.boolean().optional(),
  retentionSeconds: retention,
  noLog,
});

export const SlackDestination = z.strictObject({
  platform: z.literal('slack'),
  teamId: id,
  channelId: id,
  userId: id,
  /** Thread to answer in (the parent's ts). */
  threadTs: z.string().min(1).max(50).optional(),
  /** The Block Kit status message the bot keeps updating. */
  statusMessageTs: z.string().min(1).max(50).optional(),
  /** For ephemeral errors to the invoking user. */
  responseUrl: z.url().optional(),
  /** Results only the requester may see (/settings private): the job's messages go to `dmChannelId`, never the channel. */
  private: z.boolean().optional(),
  /**
   * Private results: the bot's direct-message channel with the requester, where the status message, the images and the
   * answer go (an ephemeral message cannot carry a file, nor be updated). `channelId` stays the channel asked in, whose
   * settings, limits and retention apply.
   */
  dmChannelId: id.optional(),
  retentionSeconds: retention,
  noLog,
});

export const CliDestination = z.strictObject({
  platform: z.literal('cli'),
  /** One id per CLI invocation; the CLI waits on its own delivery. */
  clientId: id,
  channelId: id,
  userId: id,
});

export const Destination = z.discriminatedUnion('platform', [DiscordDestination, SlackDestination, CliDestination]);
export type Destination = z.infer<typeof Destination>;
export type DiscordDestination = z.infer<typeof DiscordDestination>;
export type SlackDestination = z.infer<typeof SlackDestination>;
export type CliDestination = z.infer<typeof CliDestination>;

/** The workspace (guild / team) a destination belongs to: 'dm' for Discord DMs, 'local' for the CLI. */
export function workspaceOf(d: Destination): string {
  if (d.platform === 'discord') return d.guildId ?? 'dm';
  if (d.platform === 'slack') return d.teamId;
  return 'local';
}

/**
 * How a refusal names the workspace scope of `d` (workspaceOf): "This server", "This workspace", or, for Discord's DMs
 * (every DM with the bot is one scope, 'dm'), "Direct messages with this bot", which takes a plural verb.
 */
export function workspaceSubject(d: Destination): { subject: string; possessive: string; plural: boolean } {
  if (d.platform === 'discord' && d.guildId === null) return { subject: 'Direct messages with this bot', possessive: "direct messages'", plural: true };
  const noun = d.platform === 'discord' ? 'server' : 'workspace';
  return { subject: `This ${noun}`, possessive: `this ${noun}'s`, plural: false };
}

/** The destination's retention TTL in seconds, if its channel set one (the CLI has no channels to set it for). */
export function retentionOf(d: Destination): number | undefined {
  return d.platform === 'cli' ? undefined : d.retentionSeconds;
}

/**
 * Seconds left until a retention channel's request must be gone (submitted + its TTL; at least 1): what its images
 * are stored for. The TTL from when they are made let a job that waited in a busy queue keep its PNG that much past
 * the deadline, after the sweep had purged the job (found by an audit, 2026-12-07). Undefined without a TTL.
 */
export function retentionLeft(request: Pick<JobRequest, 'destination' | 'submittedAt'>, now = Date.now()): number | undefined {
  const ttl = retentionOf(request.destination);
  return ttl === undefined ? undefined : Math.max(1, Math.ceil((request.submittedAt + ttl * 1000 - now) / 1000));
}

/** No-log mode for a job: the deployment's (config.noLog) or its channel's. */
export function isNoLog(config: { noLog: boolean }, d: Destination): boolean {
  return config.noLog || (d.platform !== 'cli' && d.noLog === true);
}

/** "platform:workspace:channel": the key for limits, fair scheduling and admin commands. */
export function channelKey(d: Destination): string {
  return `${d.platform}:${workspaceOf(d)}:${d.channelId}`;
}

/** Where a job was asked, as a failure's log line names it: ids for an admin to grep, never a metric label (unbounded). */
export function logPlaceOf(d: Destination): { platform: Destination['platform']; workspace: string; channel: string } {
  return { platform: d.platform, workspace: workspaceOf(d), channel: d.channelId };
}

// ---- commands -----------------------------------------------------------------------------------------
// Hard bounds live here (what any worker will accept); config may set tighter ones at the adapter.

export const MAX_PROMPT_CHARS = 4000;
export const MAX_QUESTION_CHARS = 8000;
/** A negative prompt (`--no`): what the decoder is steered away from. */
export const MAX_NEGATIVE_CHARS = 1000;
/** Images per /imagine (`--n`): one job makes them one after another with seeds s, s+1, … */
export const MAX_IMAGES_PER_JOB = 8;

export const ImagineOptions = z.strictObject({
  seed: z.number().int().min(0).max(2 ** 32 - 1),
  ditSteps: z.number().int().min(1).max(200),
  decoderSteps: z.number().int().min(1).max(500),
  guidance: z.number().min(0).max(50),
  aspect: AspectRatio,
  /**
   * Negative prompt: turned into the decoder's negative features by the same LLM → DiT path as the default " "
   * (spec §3.5), instead of it. Absent or blank = the " " features. Optional: older jobs parse unchanged.
   */
  negative: z.string().max(MAX_NEGATIVE_CHARS).optional(),
  /** How many images (seeds seed, seed+1, …); absent = 1. Each image alone is `count` 1 with its own seed. */
  count: z.number().int().min(1).max(MAX_IMAGES_PER_JOB).optional(),
});
export type ImagineOptions = z.infer<typeof ImagineOptions>;

export const AskOptions = z.strictObject({
  maxNewTokens: z.number().int().min(1).max(8192),
  temperature: z.number().min(0).max(5),
  topP: z.number().gt(0).lte(1),
  topK: z.number().int().min(0),
  repetitionPenalty: z.number().positive().max(5),
  seed: z.number().int().min(0).max(2 ** 32 - 1),
});
export type AskOptions = z.infer<typeof AskOptions>;

export const Turn = z.strictObject({ role: z.enum(['user', 'assistant']), text: z.string().max(MAX_QUESTION_CHARS) });
export type Turn = z.infer<typeof Turn>;

const common = {
  v: version,
  /** Job id; derived from the platform's interaction/message id so duplicate submissions collapse to one job. */
  id,
  destination: Destination,
  submittedAt: z.number().int().nonnegative(),
};

export const ImagineRequest = z.strictObject({
  ...common,
  kind: z.literal('imagine'),
  prompt: z.string().trim().min(1).max(MAX_PROMPT_CHARS),
  options: ImagineOptions,
});

/** Image → image: BLIP3-o's reconstruction prompt over an input image (spec §3.7). */
export const VaryRequest = z.strictObject({
  ...common,
  kind: z.literal('vary'),
  imageKey: blobKey,
  prompt: z.string().max(MAX_PROMPT_CHARS),
  options: ImagineOptions,
});

export const AskRequest = z.strictObject({
  ...common,
  kind: z.literal('ask'),
  imageKey: blobKey,
  question: z.string().trim().min(1).max(MAX_QUESTION_CHARS),
  /** Previous turns about the same image, oldest first. */
  history: z.array(Turn).max(64),
  options: AskOptions,
  /**
   * 'describe' (/describe): the question asks for one text-to-image prompt; the worker answers it DESCRIBE_PROMPTS
   * times with seeds seed, seed+1, … and returns them as `answer.prompts`. Absent = an ordinary question.
   */
  mode: z.enum(['ask', 'describe']).optional(),
});

/** How many prompts /describe writes. */
export const DESCRIBE_PROMPTS = 4;
export const MAX_DESCRIBED_PROMPT_CHARS = 400;

export const JobRequest = z.discriminatedUnion('kind', [ImagineRequest, VaryRequest, AskRequest]);
export type JobRequest = z.infer<typeof JobRequest>;
export type ImagineRequest = z.infer<typeof ImagineRequest>;
export type VaryRequest = z.infer<typeof VaryRequest>;
export type AskRequest = z.infer<typeof AskRequest>;
export type JobKind = JobRequest['kind'];

// ---- progress -------------------------------------------------------------------------------------------

export const Stage = z.enum([
  'queued',
  'loading', // model sessions being opened
  'conditioning', // LLM over prompt + latent queries
  'features', // DiT flow matching → 64×1792 CLIP features
  'decoding', // UNet + VAE → pixels
  'encoding', // vision encoder over the input image
  'answering', // LLM generating text
  'checking', // the model looks at the image it made (caption, prompt match, moderation questions)
  'retrying', // the image scored below the match threshold: drawing it again with a new seed
]);
export type Stage = z.infer<typeof Stage>;

export const JobProgress = z.strictObject({
  v: version,
  jobId: id,
  stage: Stage,
  step: z.number().int().nonnegative(),
  total: z.number().int().nonnegative(),
  /** 1-based position in the queue while stage = queued. */
  queuePosition: z.number().int().positive().optional(),
  /** Answer text so far (ask). */
  partialText: z.string().optional(),
  /** While queued: no GPU worker was ready when the place was read. The bots add it; workers never send it. */
  noWorker: z.literal(true).optional(),
});
export type JobProgress = z.infer<typeof JobProgress>;

// ---- results --------------------------------------------------------------------------------------------

export const ImageResult = z.strictObject({
  blobKey,
  mime: z.literal('image/png'),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  /** Alt text for the attachment: the model's caption of the image (checks.altText), else the prompt. */
  altText: z.string().max(MAX_PROMPT_CHARS + 100),
  /** The model's one-sentence description of the image (also in the PNG's Description text). */
  caption: z.string().max(1000).optional(),
  /** P(yes) to "Does this image show: <prompt>?" (checks.match). */
  matchScore: z.number().min(0).max(1).optional(),
  /** Images drawn for this request (1 + re-rolls); the one delivered scored best. */
  tries: z.number().int().positive().optional(),
  /** What was actually used (defaults filled in), to show and to re-roll from. */
  prompt: z.string().max(MAX_PROMPT_CHARS),
  options: ImagineOptions,
});
export type ImageResult = z.infer<typeof ImageResult>;

export const AnswerResult = z.strictObject({
  text: z.string(),
  tokenCount: z.number().int().nonnegative(),
  /** /describe: the prompts the model wrote (each with an "Imagine this" button). */
  prompts: z.array(z.string().min(1).max(MAX_DESCRIBED_PROMPT_CHARS)).min(1).max(DESCRIBE_PROMPTS).optional(),
});
export type AnswerResult = z.infer<typeof AnswerResult>;

export const ResultError = z.strictObject({
  /** An ErrorCode (src/errors.ts). A plain string, not an enum: a process of an older version reads a code added since. */
  code: z.string(),
  /** Safe to show in chat when userFacing; otherwise the adapter shows "failed, ref <jobId>". */
  message: z.string(),
  userFacing: z.boolean(),
  /** Tell only the user who asked, and leave nothing in the channel (a withheld image). */
  private: z.boolean().optional(),
});

export const JobResult = z.strictObject({
  v: version,
  jobId: id,
  kind: z.enum(['imagine', 'vary', 'ask']),
  destination: Destination,
  status: z.enum(['succeeded', 'failed', 'cancelled']),
  image: ImageResult.optional(),
  /** Every image of a several-image job (`count` > 1), in seed order; `image` is the first of them. */
  images: z.array(ImageResult).min(2).max(MAX_IMAGES_PER_JOB).optional(),
  answer: AnswerResult.optional(),
  error: ResultError.optional(),
  /**
   * Set when no model ran for this requester: 'cache' = an identical earlier result was delivered from the result
   * cache; 'shared' = an identical request was already queued or running and this one joined it (docs/cost.md).
   */
  servedFrom: z.enum(['cache', 'shared']).optional(),
  /** Seconds per stage, for metrics and the footer. */
  timingsMs: z.record(z.string(), z.number().nonnegative()),
  finishedAt: z.number().int().nonnegative(),
});
export type JobResult = z.infer<typeof JobResult>;

/** The blob keys of a result's PNGs, each once (the shown image is also the gallery's first). */
export function outputBlobKeys(result: JobResult): string[] {
  return [...new Set([result.image?.blobKey, ...(result.images ?? []).map((i) => i.blobKey)].filter((k): k is string => k !== undefined))];
}

/** Parse a payload read from Redis; a failure names the fields (a contract error, never retried). */
export function parseContract<T extends z.ZodType>(schema: T, data: unknown, what: string): z.infer<T> {
  const parsed = schema.safeParse(data);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
  throw new ContractError(`${what} does not match contract v${CONTRACT_VERSION}: ${issues}`);
}

/**
 * A value kept in Redis as JSON, if it is JSON and matches `schema`; else undefined. Redis is a trust boundary too: what
 * another version or a hand edit left there is ignored where it is read, never thrown.
 */
export function parseStoredJson<T extends z.ZodType>(schema: T, text: string): z.infer<T> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
    // Stryker disable next-line BlockStatement: equivalent, no schema read this way accepts undefined
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

export class ContractError extends AppError {
  constructor(message: string) {
    super('contract', message);
    this.name = 'ContractError';
  }
}
