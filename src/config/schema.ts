// The whole configuration, validated at start-up. No defaults here: every key lives in config/default.yaml,
// so a key missing there fails loudly. Secrets are not in this file's YAML part: they come from the
// environment only (see `Secrets` and config/.env.example). Units are in the names.
import { z } from 'zod';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

/** A rate (N requests per window, refilled continuously up to `burst`) plus a cap on jobs queued or running. */
export const LimitSpec = z.strictObject({
  requestsPerWindow: nonNegativeInt,
  windowSeconds: positiveInt,
  burst: nonNegativeInt,
  maxConcurrent: nonNegativeInt,
});
export type LimitSpec = z.infer<typeof LimitSpec>;

export const AspectRatio = z.enum(['1:1', '4:3', '3:4', '3:2', '2:3', '16:9', '9:16', '21:9', '9:21']);
export type AspectRatio = z.infer<typeof AspectRatio>;

export const ConfigSchema = z.strictObject({
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']),

  queue: z.strictObject({
    prefix: z.string().min(1),
    attempts: positiveInt,
    backoffMs: positiveInt,
    jobTimeoutMs: positiveInt,
    lockDurationMs: positiveInt,
    stalledIntervalMs: positiveInt,
    maxStalledCount: nonNegativeInt,
    keepCompletedSeconds: positiveInt,
    keepFailedSeconds: positiveInt,
    deliveryAttempts: positiveInt,
    deliveryBackoffMs: positiveInt,
  }),

  blobs: z.strictObject({
    store: z.enum(['redis']),
    ttlSeconds: positiveInt,
  }),

  worker: z.strictObject({
    concurrency: positiveInt,
    /** Module exporting `createPipeline(options)`; relative to the repo root. */
    pipelineModule: z.string().min(1),
    /** Passed to the pipeline module as PipelineOptions.extra (test doubles read it; the real pipeline ignores it). */
    pipelineExtra: z.record(z.string(), z.unknown()),
    /** After abort (cancel/timeout), how long a model thread may take to stop before it is terminated and recreated. */
    abortGraceMs: positiveInt,
    healthPort: nonNegativeInt,
  }),

  model: z.strictObject({
    /** Hub repo id (BLIP3o/BLIP3o-Model-4B) or '' to use `snapshotDir` as is. */
    hubId: z.string(),
    hubUrl: z.url(),
    /** Branch, tag or commit of `hubId` to download. */
    hubRevision: z.string().min(1),
    /** Tries per file after a dropped connection; each try resumes where the last stopped. */
    downloadRetries: nonNegativeInt,
    snapshotDir: z.string().min(1),
    onnxDir: z.string().min(1),
    dtype: z.enum(['fp32', 'fp16']),
    /** Block quantization of the LLM's Linear weights (onnxruntime MatMulNBits); none keeps them in `dtype`. */
    quant: z.enum(['none', 'int4', 'int8']),
    executionProvider: z.enum(['auto', 'cuda', 'cpu']),
    convertOnStart: z.boolean(),
    intraOpThreads: nonNegativeInt,
  }),

  generation: z.strictObject({
    maxPromptChars: positiveInt,
    defaultDitSteps: positiveInt,
    maxDitSteps: positiveInt,
    defaultDecoderSteps: positiveInt,
    maxDecoderSteps: positiveInt,
    defaultGuidance: z.number().nonnegative(),
    maxGuidance: z.number().nonnegative(),
    defaultAspect: AspectRatio,
  }),

  understanding: z.strictObject({
    maxQuestionChars: positiveInt,
    maxInputImageBytes: positiveInt,
    /** Decompression-bomb guard: width×height read from the header before decoding. */
    maxInputPixels: positiveInt,
    minPixels: positiveInt,
    maxPixels: positiveInt,
    maxAspectRatio: z.number().positive(),
    maxNewTokens: positiveInt,
    maxHistoryTurns: nonNegativeInt,
    temperature: z.number().nonnegative(),
    topP: z.number().gt(0).lte(1),
    topK: nonNegativeInt,
    repetitionPenalty: z.number().positive(),
  }),

  limits: z.strictObject({
    channel: LimitSpec,
    user: LimitSpec,
    workspace: LimitSpec,
    /** Per-channel overrides keyed "platform:workspaceId:channelId"; admins can also set these at runtime. */
    channelOverrides: z.record(z.string(), LimitSpec),
    /** A concurrency slot whose job is not in the queue yet is kept this long before a sweep frees it (admit → enqueue window). */
    admitGraceMs: positiveInt,
    /** How often each bot sweeps for slots and scheduling turns whose release was lost (a process died mid-way). */
    repairIntervalMs: positiveInt,
  }),

  discord: z.strictObject({
    enabled: z.boolean(),
    apiBaseUrl: z.url(),
    allowedGuildIds: z.array(z.string()),
    allowedChannelIds: z.array(z.string()),
    downloadHosts: z.array(z.string().min(1)),
    maxAttachmentBytes: positiveInt,
    progressEditIntervalMs: positiveInt,
    /** Interaction tokens live 15 minutes; after this we post a channel message instead. */
    interactionTokenTtlMs: positiveInt,
    /** Ask for the privileged Message Content intent (falls back to without it if the portal refuses). */
    messageContentIntent: z.boolean(),
    allowDirectMessages: z.boolean(),
    /** Gateway/REST timeouts and retries for discord.js's REST client. */
    restTimeoutMs: positiveInt,
    restRetries: nonNegativeInt,
  }),

  slack: z.strictObject({
    enabled: z.boolean(),
    mode: z.enum(['socket', 'http']),
    httpPort: nonNegativeInt,
    apiUrl: z.url(),
    downloadHosts: z.array(z.string().min(1)),
    maxFileBytes: positiveInt,
    progressUpdateIntervalMs: positiveInt,
  }),

  http: z.strictObject({
    /** Port for /healthz, /readyz and /metrics on bots (workers use worker.healthPort). 0 disables. */
    botPort: nonNegativeInt,
    /** Address the health/metrics server binds: 0.0.0.0 in containers, 127.0.0.1 on a shared host. */
    host: z.string().min(1),
  }),
});
export type Config = z.infer<typeof ConfigSchema>;

/** Secrets and deployment wiring: environment only, never in YAML or git. */
export const SecretsSchema = z.object({
  REDIS_URL: z.string().min(1).default('redis://127.0.0.1:6379'),
  DISCORD_TOKEN: z.string().optional(),
  DISCORD_APPLICATION_ID: z.string().optional(),
  SLACK_BOT_TOKEN: z.string().optional(),
  SLACK_APP_TOKEN: z.string().optional(),
  SLACK_SIGNING_SECRET: z.string().optional(),
  HF_TOKEN: z.string().optional(),
});
export type Secrets = z.infer<typeof SecretsSchema>;
