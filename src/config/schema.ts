// The whole configuration, validated at start-up. No defaults here: every key lives in config/default.yaml,
// so a key missing there fails loudly. Secrets are not in this file's YAML part: they come from the
// environment only (see `Secrets` and config/.env.example). Units are in the names.
import { z } from 'zod';
import { parseRedisUrl, redactRedisUrl } from '../redis.ts';
import { LOG_LEVELS } from './env.ts';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();
/** An http(s) address: the hub, Discord's and Slack's APIs (z.url() alone let ftp:// or javascript: load, to fail later). */
const httpUrl = z.url({ protocol: /^https?$/, error: 'an http:// or https:// address' });
/** A TCP port to listen on; 0 turns the server off (the health/metrics servers). Past 65535 listen() threw at start. */
const port = nonNegativeInt.max(65_535, 'a port is at most 65535');
/**
 * A port something outside must reach (Slack's Request URL). 0 was allowed as `port` is (tests used it for a free
 * port), and Bolt then listened on a random port nothing could point at; tests now pick a free port themselves.
 */
const reachablePort = port.min(1, 'Slack must reach this port: 0 would listen on a random one. Set the port your Request URL (or proxy) forwards to, 1 to 65535');

/** The longest rate window, in seconds: 30 days. */
export const MAX_WINDOW_SECONDS = 30 * 86_400;
/** The most requests per window and the largest burst. */
export const MAX_BURST = 1_000_000;

/**
 * A rate (N requests per window, refilled continuously up to `burst`) plus a cap on jobs queued or running. The window
 * and the bucket are bounded (admins set them at runtime, /limits set): the limiter's Lua works in float milliseconds,
 * and a window like 2^53 seconds made it write a key lifetime Redis refused (src/limits/scripts.ts caps that too).
 */
export const LimitSpec = z.strictObject({
  requestsPerWindow: nonNegativeInt.max(MAX_BURST, `at most ${MAX_BURST}`),
  windowSeconds: positiveInt.max(MAX_WINDOW_SECONDS, `at most ${MAX_WINDOW_SECONDS} (30 days)`),
  burst: nonNegativeInt.max(MAX_BURST, `at most ${MAX_BURST}`),
  maxConcurrent: nonNegativeInt,
});
export type LimitSpec = z.infer<typeof LimitSpec>;

export const AspectRatio = z.enum(['1:1', '4:3', '3:4', '3:2', '2:3', '16:9', '9:16', '21:9', '9:21']);
export type AspectRatio = z.infer<typeof AspectRatio>;

/** Discord asks for a new shard every 2,500 servers; a bigger count than any bot needs is a typo. */
export const MAX_DISCORD_SHARDS = 4096;

/**
 * Which gateway shards this bot process runs (docs/discord.md, "Sharding"). `auto`: all of them, as many as Discord
 * recommends (re-read at every login). Otherwise a total and the ids this process runs, written `8` (all 8 here) or
 * `0-3/8` / `0,2,4,6/8` (some of 8, the others in other processes) as env DISCORD_SHARDS takes it, or as YAML.
 */
export const DiscordShards = z.preprocess(
  (raw) => (typeof raw === 'string' && raw !== 'auto' ? readShardSpec(raw) : typeof raw === 'number' ? { count: raw } : raw),
  z.union([
    z.literal('auto'),
    z
      .strictObject({
        count: z.number().int().min(1).max(MAX_DISCORD_SHARDS, `at most ${MAX_DISCORD_SHARDS}`),
        ids: z.array(z.number().int().nonnegative()).min(1).optional(),
      })
      .superRefine((s, ctx) => {
        if (!(s.count >= 1)) return; // refused above
        const outside = s.ids?.filter((id) => id >= s.count) ?? [];
        if (outside.length > 0) ctx.addIssue({ code: 'custom', path: ['ids'], message: `shard ids run from 0 to ${s.count - 1} when the count is ${s.count} (got ${outside.join(', ')})` });
        if (s.ids && new Set(s.ids).size !== s.ids.length) ctx.addIssue({ code: 'custom', path: ['ids'], message: 'a shard id is listed twice' });
      }),
  ], { error: 'shards is auto, a shard count (8), or the ids this process runs and the count (0-3/8, 0,2,4/8)' }),
);
export type DiscordShards = z.infer<typeof DiscordShards>;

/** `8` → all of 8; `0-3/8`, `0,2,5-6/8` → those ids of 8. Anything else is left for the schema to refuse. */
function readShardSpec(text: string): unknown {
  const match = /^\s*(?:([\d,\s-]+)\/)?\s*(\d+)\s*$/.exec(text);
  if (!match) return text;
  const count = Number(match[2]);
  if (match[1] === undefined) return { count };
  const ids: number[] = [];
  for (const part of match[1].split(',')) {
    const range = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!range) return text;
    const from = Number(range[1]);
    const to = Number(range[2] ?? range[1]);
    if (to < from || to - from > MAX_DISCORD_SHARDS) return text;
    for (let id = from; id <= to; id++) ids.push(id);
  }
  return { count, ids };
}

/** A channel's changes to the deployment's check policy (config or admins at runtime); absent keys keep the default. */
export const CheckPolicyOverride = z.strictObject({
  altText: z.boolean().optional(),
  match: z.boolean().optional(),
  matchThreshold: z.number().min(0).max(1).optional(),
  maxRerolls: z.number().int().min(0).max(10).optional(),
  moderation: z.boolean().optional(),
  /** Per moderation question id. */
  thresholds: z.record(z.string(), z.number().min(0).max(1)).optional(),
});
export type CheckPolicyOverride = z.infer<typeof CheckPolicyOverride>;

/**
 * A key of limits.channelOverrides / checks.channelOverrides: "platform:workspaceId:channelId" as src/jobs/contract.ts's
 * channelKey() writes it (Discord DMs: "discord:dm:<channelId>"). Any other key never matched a channel, so the override
 * silently did nothing.
 */
function byChannelKey<T extends z.ZodType>(value: T) {
  return z.record(z.string(), value).superRefine((overrides, ctx) => {
    for (const key of Object.keys(overrides))
      if (!/^(discord|slack|cli):[^:\s]+:[^:\s]+$/.test(key))
        ctx.addIssue({ code: 'custom', path: [key], message: 'a channel key is "platform:workspaceId:channelId", e.g. "discord:<guildId>:<channelId>" or "slack:<teamId>:<channelId>"' });
  });
}

export const ModerationQuestion = z.strictObject({
  id: z.string().regex(/^[a-z0-9_-]{1,32}$/, 'lowercase letters, digits, _ or -, at most 32'),
  question: z.string().min(1).max(300),
  threshold: z.number().min(0).max(1),
});

export const ConfigSchema = z.strictObject({
  logLevel: z.enum(LOG_LEVELS),
  /** No-log mode: user-facing error texts (which may quote a prompt or question) are left out of every log line. */
  noLog: z.boolean(),

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
    cliRedisWaitMs: positiveInt,
    /**
     * A bot's delivery worker or a GPU worker that takes no job for this long while jobs are ready and it has room has a
     * stuck fetch loop: the service exits so its supervisor restarts it (src/jobs/fetch-watchdog.ts).
     */
    fetchStallMs: positiveInt,
    /** How often each bot looks for jobs past their channel's retention TTL and deletes them (src/jobs/retention.ts). */
    retentionSweepMs: positiveInt,
  }),

  redis: z.strictObject({
    /** Replicas that must hold an accepted job before the user is told "Queued" (Redis WAIT); 0: do not wait. */
    acceptReplicas: nonNegativeInt,
    /** Longest wait for them; past it the job is accepted anyway, with a warning in the log. */
    acceptReplicaWaitMs: positiveInt,
  }),

  blobs: z.strictObject({
    store: z.enum(['redis']),
    ttlSeconds: positiveInt,
    /** An output PNG's life once its delivery is recorded, an /ask's upload's once answered (each kept only for that). */
    keepDeliveredSeconds: positiveInt,
  }),

  worker: z.strictObject({
    concurrency: positiveInt,
    /** Module exporting `createPipeline(options)`; relative to the repo root. */
    pipelineModule: z.string().min(1),
    /** Passed to the pipeline module as PipelineOptions.extra (test doubles read it; the real pipeline ignores it). */
    pipelineExtra: z.record(z.string(), z.unknown()),
    /** After abort (cancel/timeout), how long a model thread may take to stop before it is terminated and recreated. */
    abortGraceMs: positiveInt,
    /** On SIGTERM, how long running jobs may take to finish before they are handed back to the queue for another worker. */
    stopGraceMs: positiveInt,
    /** A model thread that exits is restarted; after the n-th failed restart the next is tried this × 2^n later (at most
     *  30 s). After 5 failed restarts in a row (≈ 30 s at 1000: the GPU lost) the worker hands its jobs back and exits 1. */
    threadRestartMs: positiveInt,
    /** Jobs one model thread runs at once with their model steps batched together (docs/batching.md), per stage:
     *  `decode` for ask answers and the model's own checks, `diffusion` for imagine/vary. 1 = one job at a time. */
    maxBatch: z.strictObject({ decode: positiveInt, diffusion: positiveInt }),
    healthPort: port,
  }),

  model: z.strictObject({
    /** Hub repo id (BLIP3o/BLIP3o-Model-4B) or '' to use `snapshotDir` as is. */
    hubId: z.string(),
    hubUrl: httpUrl,
    /** Branch, tag or commit of `hubId` to download. */
    hubRevision: z.string().min(1),
    /** Tries per file after a dropped connection; each try resumes where the last stopped. */
    downloadRetries: nonNegativeInt,
    snapshotDir: z.string().min(1),
    onnxDir: z.string().min(1),
    dtype: z.enum(['fp32', 'fp16']),
    /** Block quantization of the LLM's Linear weights (onnxruntime MatMulNBits); none keeps them in `dtype`. */
    quant: z.enum(['none', 'int4', 'int8']),
    executionProvider: z.enum(['auto', 'cuda', 'webgpu', 'cpu']),
    convertOnStart: z.boolean(),
    intraOpThreads: nonNegativeInt,
  }),

  generation: z.strictObject({
    /** The job format's hard bounds (src/jobs/contract.ts, which imports this file) cap every maximum here: a request
     * between the two passed the bot's checks and then failed as "Something went wrong". */
    maxPromptChars: positiveInt.max(4000, 'at most 4000 (the job format\'s bound)'),
    defaultDitSteps: positiveInt,
    maxDitSteps: positiveInt.max(200, 'at most 200 (the job format\'s bound)'),
    defaultDecoderSteps: positiveInt,
    maxDecoderSteps: positiveInt.max(500, 'at most 500 (the job format\'s bound)'),
    defaultGuidance: z.number().nonnegative(),
    maxGuidance: z.number().nonnegative().max(50, 'at most 50 (the job format\'s bound)'),
    defaultAspect: AspectRatio,
    /** Images per /imagine when neither the request nor saved settings say (`--n`). */
    defaultImageCount: positiveInt.max(8),
    /** Most images one /imagine may ask for (the contract's hard bound is 8). */
    maxImagesPerRequest: positiveInt.max(8),
    /** Longest negative prompt (`--no`), in characters (the contract's hard bound is 1000). */
    maxNegativeChars: positiveInt.max(1000),
  }).superRefine((g, ctx) => {
    // A default above its maximum refused every request that left the value to it, over a number nobody typed
    for (const [value, max] of [['defaultDitSteps', 'maxDitSteps'], ['defaultDecoderSteps', 'maxDecoderSteps'], ['defaultGuidance', 'maxGuidance']] as const)
      if (g[value] > g[max]) ctx.addIssue({ code: 'custom', path: [value], message: `at most generation.${max} (${g[max]})` });
  }),

  understanding: z.strictObject({
    maxQuestionChars: positiveInt.max(8000, 'at most 8000 (the job format\'s bound)'),
    maxInputImageBytes: positiveInt,
    /** Decompression-bomb guard: width×height read from the header before decoding. */
    maxInputPixels: positiveInt,
    minPixels: positiveInt,
    maxPixels: positiveInt,
    maxAspectRatio: z.number().positive(),
    maxNewTokens: positiveInt.max(8192, 'at most 8192 (the job format\'s bound)'),
    maxHistoryTurns: nonNegativeInt.max(64, 'at most 64 (the job format\'s bound)'),
    /** /describe samples its four prompts at this temperature (0 would give four identical ones). */
    describeTemperature: z.number().positive().max(5),
    /** Longest prompt /describe writes, in tokens. */
    describeMaxNewTokens: positiveInt,
    temperature: z.number().nonnegative().max(5, 'at most 5 (the job format\'s bound)'),
    topP: z.number().gt(0).lte(1),
    topK: nonNegativeInt,
    repetitionPenalty: z.number().positive().max(5, 'at most 5 (the job format\'s bound)'),
  }).superRefine((u, ctx) => {
    // Crossed, smart_resize (worker/pipeline/image.ts) brought small images up past maxPixels: more vision tokens
    // than the budget the operator meant to set
    if (u.minPixels > u.maxPixels) ctx.addIssue({ code: 'custom', path: ['minPixels'], message: `at most understanding.maxPixels (${u.maxPixels})` });
  }),

  checks: z.strictObject({
    altText: z.boolean(),
    captionMaxTokens: positiveInt.max(256),
    match: z.strictObject({ enabled: z.boolean(), threshold: z.number().min(0).max(1), maxRerolls: z.number().int().min(0).max(10) }),
    moderation: z.strictObject({
      enabled: z.boolean(),
      checkInputs: z.boolean(),
      questions: z.array(ModerationQuestion).max(16).refine((qs) => new Set(qs.map((q) => q.id)).size === qs.length, 'question ids must be unique'),
    }),
    ageRestricted: CheckPolicyOverride,
    channelOverrides: byChannelKey(CheckPolicyOverride),
  }),

  limits: z.strictObject({
    channel: LimitSpec,
    user: LimitSpec,
    workspace: LimitSpec,
    /** Per-channel overrides keyed "platform:workspaceId:channelId"; admins can also set these at runtime. */
    channelOverrides: byChannelKey(LimitSpec),
    /** A concurrency slot whose job is not in the queue yet is kept this long before a sweep frees it (admit → enqueue window). */
    admitGraceMs: positiveInt,
    /** How often each bot sweeps for slots and scheduling turns whose release was lost (a process died mid-way). */
    repairIntervalMs: positiveInt,
  }),

  cache: z.strictObject({
    /** Content-addressed result cache (PNGs and greedy answers) in Redis. */
    enabled: z.boolean(),
    /** Bytes of cached results kept; the least recently used are evicted beyond this. */
    maxBytes: positiveInt,
    /** An entry expires this long after it was stored, used or not. */
    ttlSeconds: positiveInt,
    /** An identical request arriving while the first is queued or running joins it instead of starting a job. */
    singleFlight: z.boolean(),
    /** Workers publish their converted model's manifest hash this often; bots re-read it this often. */
    manifestRefreshMs: positiveInt,
    /**
     * Share cached results and running jobs between Discord servers, Slack workspaces, users' DMs and the CLI. Off, each
     * shares only within itself: a cache hit or a joined job tells the asker that someone there asked the same.
     */
    shareAcrossWorkspaces: z.boolean(),
  }),

  usage: z.strictObject({
    /** GPU-seconds per UTC day for every channel / user / workspace without an admin override; 0 = no budget. */
    budgets: z.strictObject({ channel: z.number().nonnegative(), user: z.number().nonnegative(), workspace: z.number().nonnegative() }),
    /** Weight of the newest measurement in a kind/options cost estimate (exponential moving average). */
    estimateSmoothing: z.number().gt(0).lte(1),
    /** Fair scheduling: a job moves its channel's virtual clock by its estimated GPU time in units of this many ms. */
    fairCostUnitMs: positiveInt,
    /** Per-day usage counters (GPU-seconds, jobs, cache hits, refusals) are kept this many days. */
    retainDays: positiveInt,
  }),

  bots: z.strictObject({
    /**
     * On SIGTERM, the longest a bot process may take to stop (deliveries in flight, progress leases, Redis connections:
     * with Redis down they wait for ever) before it exits 1 anyway. Under the supervisor's kill timeout: compose's
     * stop_grace_period, Kubernetes' terminationGracePeriodSeconds.
     */
    stopMs: positiveInt,
  }),

  discord: z.strictObject({
    enabled: z.boolean(),
    apiBaseUrl: httpUrl,
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
    /** How long one gateway IDENTIFY holds its bucket (bots/discord/identify-throttle.ts): Discord's 5 s; lower only for a
     *  Discord-compatible server at apiBaseUrl with a shorter window (the fake Discord). */
    identifyWindowMs: positiveInt,
    /** At start the bot compares its slash commands with Discord's and PUTs them only when they differ. */
    registerCommandsOnStart: z.boolean(),
    /** Register in these guilds (instant) instead of globally (up to an hour to show); [] = globally. */
    commandGuildIds: z.array(z.string().regex(/^\d+$/, 'a guild id is a number (Discord: right-click the server → Copy Server ID)')),
    shards: DiscordShards,
  }),

  slack: z.strictObject({
    enabled: z.boolean(),
    mode: z.enum(['socket', 'http']),
    /** HTTP mode's listen port; refused at 0 in either mode, so a config switched to http later cannot carry it. */
    httpPort: reachablePort,
    apiUrl: httpUrl,
    downloadHosts: z.array(z.string().min(1)),
    maxFileBytes: positiveInt,
    progressUpdateIntervalMs: positiveInt,
  }),

  http: z.strictObject({
    /** Port for /healthz, /readyz and /metrics on bots (workers use worker.healthPort). 0 disables. */
    botPort: port,
    /** Address the health/metrics server binds: 0.0.0.0 in containers, 127.0.0.1 on a shared host. */
    host: z.string().min(1),
  }),
});
export type Config = z.infer<typeof ConfigSchema>;

/** Secrets and deployment wiring: environment only, never in YAML or git. */
export const SecretsSchema = z.object({
  REDIS_URL: z
    .string()
    .min(1)
    .default('redis://127.0.0.1:6379')
    .superRefine((url, ctx) => {
      try {
        parseRedisUrl(url);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return;
      }
      // parseRedisUrl takes any redis:// or rediss:// as one server; a port past 65535 or not a number, or a password
      // with a "/" in it, then failed at the first connection as a bare "Invalid URL".
      if (/^rediss?:\/\//.test(url) && !URL.canParse(url))
        ctx.addIssue({
          code: 'custom',
          message: `REDIS_URL "${redactRedisUrl(url)}" is not a valid address: write redis://host:6379 (a port is a number up to 65535); a password goes in REDIS_PASSWORD, or in the URL with / # ? @ : percent-encoded.`,
        });
    }),
  /** The Redis servers' password, put into REDIS_URL (withRedisPassword) when set: compose's Redis asks for it. */
  REDIS_PASSWORD: z.string().optional(),
  DISCORD_TOKEN: z.string().optional(),
  DISCORD_APPLICATION_ID: z.string().optional(),
  SLACK_BOT_TOKEN: z.string().optional(),
  SLACK_APP_TOKEN: z.string().optional(),
  SLACK_SIGNING_SECRET: z.string().optional(),
  HF_TOKEN: z.string().optional(),
});
export type Secrets = z.infer<typeof SecretsSchema>;
