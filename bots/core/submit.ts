/**
 * The platform-neutral core every adapter (Discord, Slack, CLI) talks to.
 *
 * ```ts
 * const core = createCore({ config, secrets, ports: [myPort] });
 * await core.start();                       // delivery consumer(s) + progress relay
 * const reply = await core.handle(invocation); // never throws: a Reply to show right away
 * …
 * await core.stop();
 * ```
 *
 * `handle(invocation)` runs these steps, in this order (each a named function below, so the limits helper
 * can insert admission and priority without touching the rest):
 *   1. validate   CommandInput → job fields; bad options → UserError (shown to the user, nothing enqueued)
 *   2. admit      `options.admit(invocation)`: rate limits / concurrency caps; throws UserError('rate_limited')
 *   3. store      input image bytes → blob store (jobs carry keys, never bytes)
 *   4. jobOptions `options.jobOptions(invocation, request)`: BullMQ priority etc. (fair scheduling)
 *   5. enqueue    jobId = jobIdFor(platform, dedupeKey): a duplicate interaction/message makes no second job
 *   6. reply      `{ kind: 'queued', jobId, position, text }`
 * Errors are caught here, once: a UserError becomes `{ kind: 'error', text }` with its message; anything else
 * becomes "Something went wrong (ref <id>)" and is logged with its cause.
 *
 * `start()` consumes the delivery queue(s) of the ports' platforms (for the CLI: only `delivery-cli-<clientId>`)
 * and calls `PlatformPort.deliver` exactly once per result (see bots/core/delivery.ts), and relays progress
 * to `PlatformPort.showProgress`, throttled per job (bots/core/progress.ts).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Job, JobsOptions, QueueEvents, Worker } from 'bullmq';
import type { BlobStore } from '../../src/blobs/store.ts';
import { createBlobStore, releaseUpload } from '../../src/blobs/index.ts';
import { DeliveryQueues, digestOf, handOverToFollowers, leaderAddress } from '../../src/cache/fanout.ts';
import { scopedDigest } from '../../src/cache/key.ts';
import { CheckOverrides, scopeOf } from '../../src/checks/policy.ts';
import { noWorkerReady, ResultCache, type Lookup } from '../../src/cache/results.ts';
import { createGate, type Gate } from '../../src/limits/gate.ts';
import type { QueuePlace, Reservation } from '../../src/scheduling/fair.ts';
import type { Config, Secrets } from '../../src/config/schema.ts';
import { channelKey, CONTRACT_VERSION, JobRequest, logPlaceOf, retentionOf, workspaceOf, type Destination, type JobResult, type ImagineRequest } from '../../src/jobs/contract.ts';
import { requestCancel } from '../../src/jobs/cancel.ts';
import { DeliveryLedger } from '../../src/jobs/ledger.ts';
import { Retention } from '../../src/jobs/retention.ts';
import { ServerClock } from '../../src/server-clock.ts';
import { queuePosition } from '../../src/jobs/position.ts';
import { progressIntervalMs } from '../../src/jobs/progress.ts';
import { QueueNames } from '../../src/jobs/contract.ts';
import {
  createJobsEvents,
  createJobsQueue,
  jobIdFor,
  type JobsQueue,
} from '../../src/jobs/queue.ts';
import { UserError, isUserError, asAppError } from '../../src/errors.ts';
import { failureReason } from '../../src/observability/hooks.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import { closeRedis, createRedis, isRedisConnectionError, isRedisOutOfMemory, ReplicaFence, waitForRedis, type Redis } from '../../src/redis.ts';
import { startDeliveryWorker } from './delivery.ts';
import { checksCommand } from './commands/checks.ts';
import { limitsCommand } from './commands/limits.ts';
import { queueCommand } from './commands/queue.ts';
import { within } from './deadline.ts';
import { budgetCommand, usageCommand } from './commands/usage.ts';
import { stripControlChars } from './plain-text.ts';
import { PAUSED_LINE, queuedLine } from './stage-labels.ts';
import type { CommandInput, DisplayNames, ImageRef, Invocation, NameQuery, PlatformPort, Reply } from './port.ts';
import { ProgressRelay } from './progress.ts';
import { SettingsStore, settingsCommand, withDefaults, type SavedSettings } from './settings.ts';
import { askRequest, checkImage, describeRequest, formatBytes, imagineRequest, nearestAspect, randomSeed, varyRequest, type FetchImage, type RequestBase } from './requests.ts';

/** Step 2: throw UserError('rate_limited' | 'forbidden') to refuse. Resolves to nothing when admitted. */
export type Admission = (invocation: Invocation, request: JobRequest) => Promise<void>;
/** Step 4: BullMQ options for this job (priority for fair scheduling). Must not set jobId. */
export type JobOptionsFor = (invocation: Invocation, request: JobRequest) => Promise<Pick<JobsOptions, 'priority' | 'lifo'>>;
/** Admin commands (`limits`, `queue`, `budget`, `usage`): a handler given here replaces the built-in one. */
export type CommandHandler = (invocation: Invocation, core: Core) => Promise<Reply>;

export interface CoreOptions {
  config: Readonly<Config>;
  secrets: Readonly<Secrets>;
  /** One per platform this process serves. A CLI port also needs `cliClientId`. */
  ports: PlatformPort[];
  /** The CLI invocation's id: this core then consumes only `delivery-cli-<cliClientId>`. */
  cliClientId?: string;
  /** Downloads an ImageRef that has a url but no bytes (adapters check hosts and sizes). */
  fetchImage?: FetchImage;
  admit?: Admission;
  jobOptions?: JobOptionsFor;
  commands?: Partial<Record<'limits' | 'queue' | 'budget' | 'usage', CommandHandler>>;
  /** Redis connection to use (shared); by default the core opens and closes its own from secrets.REDIS_URL. */
  redis?: Redis;
  log?: Logger;
  /** Redis's clock, for submittedAt and the retention sweep (src/server-clock.ts). @defaultValue one on `redis` */
  clock?: ServerClock;
  /** Parallel deliveries per delivery queue. @defaultValue 4 */
  deliveryConcurrency?: number;
  /** How long a request whose add may have been lost waits for Redis to say whether its job exists. @defaultValue ANSWER_WITHIN_MS */
  answerWithinMs?: number;
  /**
   * Called for each command answered with a failure that is not the user's own (bots/main.ts counts it in
   * blip3o_command_failures_total). `reason`: redis_unavailable, redis_full, answer_unknown, or for a "Something went
   * wrong (ref …)" the error's code or name (failureReason): bounded, as a metric label must be.
   */
  onCommandFailed?: (failure: { platform: Destination['platform']; command: CommandLabel; reason: string }) => void;
}

/**
 * The `command` of a failure's metric label: the command asked for, or 'admin' (a /blip3o-admin an adapter failed on
 * before its subcommand was read) or 'other' (a button of another version): a small fixed set, as a label must be.
 */
export type CommandLabel = CommandInput['command'] | 'admin' | 'other';

/** The commands that queue a job (under jobIdFor(platform, dedupeKey)). */
const SUBMITS = new Set<CommandInput['command']>(['imagine', 'ask', 'vary', 'reroll', 'describe']);

/**
 * How long a request whose add may have been lost (its connection failed) waits for Redis to say whether the job
 * exists, before the user is told that nobody can tell yet (ANSWER_UNKNOWN_TEXT). A Sentinel or Cluster failover takes
 * 1–15 s (docs/high-availability.md); a chat platform's deferred reply can wait that long.
 */
export const ANSWER_WITHIN_MS = 30_000;
export const ANSWER_UNKNOWN_TEXT = 'I lost my connection to the job queue while queueing this, and it is not back yet, so I cannot tell whether your request was queued. If it was, the result will still come here; if nothing comes within a few minutes, please send it again.';

/** Redis did not say within answerWithinMs whether a job whose add lost its reply exists (the request settles later). */
class AnswerUnknown extends Error {
  override readonly name = 'AnswerUnknown';
  constructor(readonly jobId: string) {
    super(`whether job ${jobId} was queued is not known yet: Redis has not answered`);
  }
}

export interface Core {
  handle(invocation: Invocation): Promise<Reply>;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** 1-based position of a waiting job; undefined once it runs or is gone. */
  position(jobId: string): Promise<number | undefined>;
  /**
   * Run an adapter's own status edit for a job (the first "Queued: 2nd" edit) only if the job's result is not being
   * or has not been delivered, by any bot instance; a delivery waits for it to finish. Returns whether it ran.
   */
  showBeforeResult(jobId: string, edit: () => Promise<void>): Promise<boolean>;
  readonly config: Readonly<Config>;
  readonly queue: JobsQueue;
  readonly redis: Redis;
  readonly blobs: BlobStore;
  /** Limits (admission, slots) and fair scheduling (src/limits/gate.ts); the admin commands use it. */
  readonly gate: Gate;
  /** Saved defaults per user and channel (/settings); adapters read `private` before showing anything. */
  readonly settings: SettingsStore;
  /** The delivery consumers, filled by start() (bots/main.ts attaches delivery metrics to them). */
  readonly deliveryWorkers: readonly Worker[];
  /** Result cache and single flight (src/cache/results.ts); bots/main.ts counts its lookups. */
  readonly cache: ResultCache;
  /**
   * A queued job was removed before it ran (cancel, purge): the identical requests that joined it are told so, and
   * its upload is released. Returns how many followers there were.
   */
  releaseFollowers(request: JobRequest, result: JobResult): Promise<number>;
  /**
   * Remove a job that has not started (cancel, an admin's purge): its owner is handed `message` as its cancelled
   * result, then the job is removed, its slot freed and its followers told. False if a worker took it meanwhile.
   */
  removeQueued(job: Job<JobRequest>, message: string): Promise<boolean>;
  /** A job's request, or that of a request served without a job (cache hit, joined flight); undefined once gone. */
  requestOf(jobId: string): Promise<JobRequest | undefined>;
  /**
   * Names for channel and user ids of the destination's workspace (the usage report), from its platform's port:
   * empty maps where the port names nothing, fails, or takes longer than NAMES_TIMEOUT_MS (the ids are shown then).
   */
  displayNames(destination: Destination, ids: NameQuery): Promise<DisplayNames>;
  /**
   * An adapter answered "Something went wrong (ref …)" itself (its handler failed around core.handle, not in it):
   * counted as the core's own are (CoreOptions.onCommandFailed), by the error's code or name (failureReason).
   */
  commandFailed(failure: { platform: Destination['platform']; command: CommandLabel; error: unknown }): void;
}

/** How long a report waits for the platform to name its rows before it shows ids: an admin is waiting for it. */
export const NAMES_TIMEOUT_MS = 3000;
const NO_NAMES: DisplayNames = { channels: new Map(), users: new Map() };

/** What a request served without a job of its own (cache hit, joined flight) leaves behind: dedupe and re-roll read it. */
interface Served {
  request: JobRequest;
  text: string;
}

/** A queued reply for a job a worker took before the reply was made: its progress says the rest. */
export const STARTED_TEXT = 'Started.';
export const CACHED_TEXT = 'Found in the cache: delivering the earlier identical result, no GPU time used.';
export const JOINED_TEXT = 'An identical request is already queued or running; you will get its result too, without a second run.';

/** The same person: the same user id on the same platform. */
const sameUser = (a: Destination, b: Destination) => a.platform === b.platform && a.userId === b.userId;

/** The port that shows a destination's progress: this process's port for its platform; a CLI core serves only its own client. */
export function portForDestination(ports: ReadonlyMap<string, PlatformPort>, cliClientId: string | undefined, d: Destination): PlatformPort | undefined {
  if (d.platform === 'cli' && d.clientId !== cliClientId) return undefined;
  return ports.get(d.platform);
}

export function createCore(options: CoreOptions): Core {
  const { config } = options;
  const log = options.log ?? createLogger('core', config.logLevel);
  const ownsRedis = !options.redis;
  const redis = options.redis ?? createRedis(options.secrets.REDIS_URL, 'bots-core');
  const fence = new ReplicaFence(redis, `${config.queue.prefix}:replica-fence`);
  const blobs = createBlobStore(config, redis);
  const queue = createJobsQueue(config, redis);
  const gate = createGate(redis, config, queue);
  const ledger = new DeliveryLedger(redis, config);
  const settings = new SettingsStore(redis, config);
  const cache = new ResultCache(redis, config);
  const checkOverrides = new CheckOverrides(redis, config.queue.prefix);
  const handOvers = new DeliveryQueues(config, redis);
  const clock = options.clock ?? ServerClock.forDeployment(redis, config.queue.prefix);
  const retention = new Retention(redis, config, log, clock);
  const servedKey = (jobId: string) => `${config.queue.prefix}:served:${jobId}`;
  const instanceId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const ports = new Map(options.ports.map((p) => [p.platform, p]));
  let events: QueueEvents | undefined;
  let relay: ProgressRelay | undefined;
  let stopping = false;
  const answerWithinMs = options.answerWithinMs ?? ANSWER_WITHIN_MS;
  const deliveryWorkers: Worker[] = [];

  const portFor = (d: Destination): PlatformPort | undefined => portForDestination(ports, options.cliClientId, d);
  const intervalMs = (d: Destination): number => progressIntervalMs(config, d);

  // ---- steps of handle() ------------------------------------------------------------------------------

  async function imageBytes(ref: ImageRef, destination: Destination): Promise<Uint8Array> {
    if ((ref.sizeBytes ?? 0) > config.understanding.maxInputImageBytes)
      throw new UserError('bad_image', `That image is too large; the limit is ${formatBytes(config.understanding.maxInputImageBytes)}.`);
    if (ref.bytes) return ref.bytes;
    if (ref.url && options.fetchImage) return options.fetchImage(ref, destination);
    throw new UserError('bad_image', 'Please attach an image.');
  }

  /** Step 1 (and 3 for image commands): validate and build the request. */
  /** storeImage: an upload to store for the request; copiedImage: a blob already made for it (a Re-roll's copy). */
  async function validate(inv: Invocation, base: RequestBase, saved: SavedSettings): Promise<{ request: JobRequest; storeImage?: Uint8Array; copiedImage?: string }> {
    const input = inv.input;
    switch (input.command) {
      case 'imagine':
        return { request: imagineRequest(config, await basedOn(base, input.from), withDefaults(input, saved, config.generation)) }; // the request's options win
      case 'ask': {
        const bytes = await imageBytes(input.image, inv.destination);
        await checkImage(config, bytes);
        return { request: askRequest(config, base, 'pending', input), storeImage: bytes };
      }
      case 'describe': {
        const bytes = await imageBytes(input.image, inv.destination);
        await checkImage(config, bytes);
        return { request: describeRequest(config, base, 'pending'), storeImage: bytes };
      }
      case 'vary': {
        const bytes = await imageBytes(input.image, inv.destination);
        const size = await checkImage(config, bytes);
        // What a variation keeps (Midjourney's Vary keeps the shape and settings): the options of the result it was
        // pressed on (not its seed, nor its image count: that is the user's default, as for /imagine); for an upload,
        // its nearest aspect; the rest from the user's saved defaults. Before 2026-12-07 every Vary came back square
        // at the defaults, a 16:9 result's too, its negative prompt dropped.
        const original = input.from === undefined ? undefined : await previousRequest(input.from);
        const from = original && original.kind !== 'ask' ? original.options : undefined;
        const shape = from ? { aspect: from.aspect, ditSteps: from.ditSteps, decoderSteps: from.decoderSteps, guidance: from.guidance, negative: from.negative } : { aspect: nearestAspect(size.width, size.height) };
        const kept = withDefaults(shape, saved, config.generation);
        return { request: varyRequest(config, original ? { ...base, destination: asPrivateAs(base.destination, original.destination) } : base, 'pending', input, kept), storeImage: bytes };
      }
      case 'reroll': {
        const data = await previousRequest(input.jobId);
        if (!data || data.kind === 'ask') throw new UserError('bad_request', 'That image is too old to re-roll; please run /imagine again.');
        const destination = asPrivateAs(base.destination, data.destination);
        const request: ImagineRequest = { v: CONTRACT_VERSION, ...base, destination, kind: 'imagine', prompt: data.prompt, options: { ...data.options, seed: randomSeed(data.options.count) } };
        if (data.kind !== 'vary') return { request };
        // Its own copy of the upload, living blobs.ttlSeconds: the first vary's is released once that job's re-roll
        // window closes (worker/after-job.ts), which may come before this job runs.
        const imageKey = await blobs.share(data.imageKey, base.id, retentionOf(destination));
        if (!imageKey) throw new UserError('bad_request', 'That image is too old to re-roll; please press Vary on the original again.');
        return { request: { ...request, kind: 'vary', imageKey }, copiedImage: imageKey };
      }
      default:
        // Stryker disable next-line StringLiteral: unreachable, handle() routes only the job commands above here
        throw new Error(`not a job command: ${input.command}`);
    }
  }

  /**
   * The destination of a job started from another job's button (Re-roll, Vary, "Imagine this"), at least as private
   * as that job: the shorter retention TTL, and no-log if either has it. A private channel's results (and their
   * buttons) are in the asker's DM, which has no settings of its own: a job started there must not log the prompt or
   * keep the job a day where the channel forbids it.
   */
  function asPrivateAs(destination: Destination, original: Destination): Destination {
    if (destination.platform === 'cli' || original.platform === 'cli') return destination;
    const ttls = [destination.retentionSeconds, original.retentionSeconds].filter((t): t is number => t !== undefined);
    return {
      ...destination,
      ...(ttls.length > 0 ? { retentionSeconds: Math.min(...ttls) } : {}),
      ...(destination.noLog || original.noLog ? { noLog: true } : {}),
    };
  }

  /** `base` of a job started from another job's button (Vary, "Imagine this"): at least as private as that job. */
  async function basedOn(base: RequestBase, from: string | undefined): Promise<RequestBase> {
    const original = from === undefined ? undefined : await previousRequest(from);
    return original ? { ...base, destination: asPrivateAs(base.destination, original.destination) } : base;
  }

  /** A job's request, or that of a request served from the cache or by joining another job. */
  async function previousRequest(jobId: string): Promise<JobRequest | undefined> {
    const job = await queue.getJob(jobId);
    if (job?.data) return job.data;
    const served = await redis.get(servedKey(jobId));
    return served ? (JSON.parse(served) as Served).request : undefined;
  }

  async function served(request: JobRequest, text: string): Promise<Reply> {
    await redis.set(servedKey(request.id), JSON.stringify({ request, text } satisfies Served), 'EX', config.queue.keepCompletedSeconds);
    // Answered without reading the upload (a vary's Re-roll reads this request from the served key, kept as a job's is)
    void releaseUpload(blobs, config, request, 'succeeded').catch(() => undefined);
    await gate.usage.count('hits', request.destination).catch(() => undefined); // for the usage report
    log.info({ jobId: request.id, kind: request.kind, channel: request.destination.channelId, served: text === CACHED_TEXT ? 'cache' : 'joined' }, 'served without a job');
    return { kind: 'queued', jobId: request.id, position: 0, text };
  }

  /** A cache hit: the stored result goes to this request's delivery queue under its own id; no job, no worker. */
  async function deliverFromCache(request: JobRequest, hit: Extract<Lookup, { kind: 'hit' }>): Promise<Reply | undefined> {
    const base = {
      v: CONTRACT_VERSION, jobId: request.id, kind: request.kind, destination: request.destination, status: 'succeeded' as const,
      servedFrom: 'cache' as const, timingsMs: {}, finishedAt: Date.now(),
    };
    let result: JobResult;
    if (hit.meta.kind === 'answer' && request.kind === 'ask') result = { ...base, answer: { text: hit.meta.text, tokenCount: hit.meta.tokenCount } };
    else if (hit.meta.kind === 'image' && request.kind !== 'ask' && hit.png) {
      const blobKey = await blobs.put(hit.png, 'output');
      // The options that drew it (a re-roll's seed) and the model's caption, as the job that made it delivered them
      const { width, height, options = request.options, caption } = hit.meta;
      const altText = caption ?? (request.prompt || 'A variation of your image');
      result = { ...base, image: { blobKey, mime: 'image/png', width, height, altText, ...(caption ? { caption } : {}), prompt: request.prompt, options } };
    } else return undefined; // cannot happen (the kind is part of the address); treat as a miss
    // The result first, then the record that it was served: a bot that dies between the two leaves a delivery and no
    // record, and the platform's retry of the interaction hands the same id over again (idempotent). The other way
    // round, the retry read the record, promised a delivery, and none came.
    await handOvers.handOver(result);
    return served(request, CACHED_TEXT);
  }

  /** A lookup that found the result cached or a flight to join: served without a job; undefined to go on as a miss. */
  async function servedFrom(request: JobRequest, found: Lookup): Promise<Reply | undefined> {
    if (found.kind === 'joined') return served(request, JOINED_TEXT);
    if (found.kind === 'hit') return deliverFromCache(request, found);
    return undefined;
  }

  /** The flight this job leads lives on (no digest: it leads none). */
  const confirmFlight = (digest: string | undefined, jobId: string) => (digest ? cache.confirm(digest, jobId) : undefined);

  /** The job exists: the scheduler lines it up and the flight it leads is confirmed, in the same round trip. */
  async function lineUp(inv: Invocation, request: JobRequest, estimate: number, digest: string | undefined): Promise<QueuePlace> {
    const [place] = await Promise.all([gate.enqueued(request.id, inv.destination, estimate), confirmFlight(digest, request.id)]);
    return place;
  }

  /**
   * The place to tell: the scheduler's, or for a job it does not line up (held in a paused channel: submit says so;
   * started already) wherever BullMQ has it, 0 if nowhere. A held job is parked in BullMQ's delayed set, where
   * queuePosition finds no place either.
   */
  async function placeToTell(jobId: string, place: QueuePlace | undefined): Promise<number> {
    if (place?.state === 'queued') return place.position;
    return (await queuePosition(redis, queue, jobId)) ?? 0;
  }

  /**
   * `digest`: the flight this request leads (claimed), confirmed once its job is in the queue. `reserved`: admission
   * released the job already (its channel was idle): it is added once, with that priority, and nothing follows the add.
   */
  async function enqueue(inv: Invocation, request: JobRequest, estimate: number, digest: string | undefined, reserved: Reservation | undefined): Promise<number> {
    let place: QueuePlace;
    let added = false;
    try {
      const extra = options.jobOptions ? await options.jobOptions(inv, request) : {};
      // Before the job exists: a crash in between leaves an entry, never an unpurged job. The job keeps the queue's keep
      // options, whatever the channel's TTL: the sweep deletes it (src/jobs/retention.ts).
      await retention.schedule(request);
      if (reserved) {
        // Added released, and the flight confirmed in the same round trip.
        const sent = await Promise.allSettled([queue.add(request.kind, request, { ...extra, priority: reserved.priority, delay: 0, jobId: request.id }), confirmFlight(digest, request.id)]);
        added = sent[0].status === 'fulfilled';
        for (const r of sent) if (r.status === 'rejected') throw r.reason;
        place = reserved.place;
      } else {
        await queue.add(request.kind, request, { ...extra, ...gate.jobOptions(), jobId: request.id });
        place = await lineUp(inv, request, estimate, digest);
      }
    } catch (e) {
      // A released job that was never added: its turn passes on now, not at repair a minute later. (One that was added
      // keeps it: it runs.)
      if (reserved && !added) await gate.scheduler.forget(request.id).catch(() => undefined);
      throw e;
    }
    // The job and its admission records are written: the fence's round covers them (its WAIT on a connection of its
    // own, so nothing else of this bot waits behind it), and throws AcceptanceLost if a failover took the job's hash
    // (the user is told nothing was queued). acceptReplicas 0: 0 at once, and 0 < 0 says nothing.
    const { acceptReplicas, acceptReplicaWaitMs } = config.redis;
    if ((await fence.confirm(acceptReplicas, acceptReplicaWaitMs, queue.toKey(request.id))) < acceptReplicas)
      log.warn({ jobId: request.id, acceptReplicas, acceptReplicaWaitMs }, 'accepted before enough replicas held the job: a failover now could lose it');
    return placeToTell(request.id, place);
  }

  /**
   * `enqueue` failed with `e`, and whether the add took effect is not known from `e`: a lost connection (a failover, a
   * restart) may have taken the add's reply, and an error after the add (lining the job up, confirming its flight, a
   * script Redis refused while a slot migrated) leaves a job that runs. Answering "Nothing was queued" or "Something
   * went wrong" then is untrue, and the user who tries again gets two images. So ask, once Redis answers: a job that
   * exists is lined up (again: both steps are idempotent) and its flight and admission kept, and the request is queued
   * after all (its turn comes from the scheduler's repair if the line-up fails again). A job that does not exist leaves
   * `e` standing, and then it is true. (AcceptanceLost, the fence finding the job gone from the new primary, finds no
   * job here either.) Redis silent for `answerWithinMs`: AnswerUnknown (the user is told that nobody can tell yet), and
   * the request is settled as above once it answers.
   */
  async function settleUncertainEnqueue(e: unknown, inv: Invocation, request: JobRequest, estimate: number, digest: string | undefined): Promise<number> {
    // A check that failed otherwise (Redis answered with an error): as before, not there.
    // Stryker disable next-line ArrowFunction: equivalent, `() => undefined` is as falsy as `() => false`
    const exists = jobExists(request.id).catch(() => false);
    const known = await within(exists.then((there) => ({ there })), answerWithinMs);
    if (!known) {
      void exists.then((there) => (there ? lineUpLate(inv, request, estimate, digest) : withdrawLate(request, digest))).catch(() => undefined);
      throw new AnswerUnknown(request.id);
    }
    if (!known.there) throw e;
    log.warn({ jobId: request.id, err: (e as Error).message }, 'enqueueing failed after the add, and the job exists: queued');
    const place = await lineUp(inv, request, estimate, digest).catch(() => undefined);
    return placeToTell(request.id, place).catch(() => 0);
  }

  /**
   * Whether job `id` exists, asked until Redis answers. The check can meet the same failover as the add: ioredis ends a
   * Sentinel connection whose primary changed while it waited, and what waited in its offline queue fails with
   * "Connection is closed." (src/redis.ts connects it again). That is no answer: ask again. (Before, it counted as "not
   * there", and a job the new primary held ran after its user was told "Nothing was queued": a CI run of the Sentinel
   * failover test, 2026-12-07.) Other errors, and a core stopping, reject.
   */
  async function jobExists(id: string): Promise<boolean> {
    // Stryker disable next-line MethodExpression,ArithmeticOperator: the pauses' lengths, only how soon it asks again
    for (let pauseMs = 50; ; pauseMs = Math.min(2 * pauseMs, 1_000)) {
      try {
        return (await queue.getJob(id)) !== undefined;
      } catch (e) {
        if (stopping || !isRedisConnectionError(e)) throw e;
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  }

  /** A job whose user was told nobody could tell, found in the queue once Redis answered: it runs, in its turn. */
  async function lineUpLate(inv: Invocation, request: JobRequest, estimate: number, digest: string | undefined): Promise<void> {
    log.warn({ jobId: request.id }, 'a request whose enqueueing could not be confirmed was queued after all: it runs');
    await lineUp(inv, request, estimate, digest);
  }

  /** …and one found not there: withdrawn as a refused one is. */
  async function withdrawLate(request: JobRequest, digest: string | undefined): Promise<void> {
    log.warn({ jobId: request.id }, 'a request whose enqueueing could not be confirmed was not queued: its admission is given back');
    await withdraw(request, digest);
  }

  /** A request not queued after admission: its admission given back, and whoever joined its flight told. */
  async function withdraw(request: JobRequest, digest: string | undefined): Promise<void> {
    await gate.abandon(request.id);
    if (digest) await failFollowers(digest, request, 'Something went wrong with the identical request yours joined; please send yours again.');
  }

  async function submit(inv: Invocation): Promise<Reply> {
    const id = jobIdFor(inv.destination.platform, inv.dedupeKey);
    // The saved settings and the channel's check override are read in the same round trip: a duplicate (below) does
    // not need them, a new request does (the override decides the result cache's scope).
    const [existing, servedBefore, saved, checkOverride] = await Promise.all([
      queue.getJob(id), redis.get(servedKey(id)), settings.effective(inv.destination), checkOverrides.get(channelKey(inv.destination)),
    ]);
    // Stryker disable next-line ConditionalExpression,BlockStatement: equivalent, admission, queue.add and the scheduler are idempotent per jobId; this only saves their round trips
    if (existing) {
      // A duplicate of an interaction we already accepted: same job, no second admission. (A place that cannot be read,
      // the connection ending under it, is not a refusal: the job is queued.)
      const position = await queuePosition(redis, queue, id).then((p) => p ?? 0, () => undefined);
      if (position === undefined) return { kind: 'queued', jobId: id, position: 0, text: queuedLine() };
      return await queuedReply(id, position);
    }
    if (servedBefore) return { kind: 'queued', jobId: id, position: 0, text: (JSON.parse(servedBefore) as Served).text };
    // A channel's retention TTL travels with the job, so the worker and every bot instance honour it (src/jobs/retention.ts).
    // So does its no-log mode.
    // Stryker disable next-line ConditionalExpression: equivalent, `retentionSeconds: undefined` is dropped by JSON and by zod alike
    const retention = saved.retentionSeconds !== undefined ? { retentionSeconds: saved.retentionSeconds } : {};
    const destination: Destination = inv.destination.platform === 'cli' ? inv.destination : { ...inv.destination, ...retention, ...(saved.noLog ? { noLog: true } : {}) };
    // Redis's clock, not this host's: a worker and the sweepers on other hosts compare it with theirs (src/server-clock.ts)
    const base: RequestBase = { id, destination, submittedAt: await clock.now() };
    let { request, storeImage, copiedImage } = await validate(inv, base, saved);
    // The input image is stored first: a request served from the cache or by another job is re-rolled from it later.
    if (storeImage) request = { ...request, imageKey: await blobs.put(storeImage, 'input', retentionOf(request.destination)) } as JobRequest;
    const stored = storeImage ? (request as Extract<JobRequest, { imageKey: string }>).imageKey : copiedImage;
    let position: number;
    let digest: string | undefined;
    let enqueueing = false;
    try {
      // Result cache and single flight (docs/cost.md): an identical request is served without a job of its own.
      // …within its sharing scope (src/checks/policy.ts sharingScope): a result made under other checks, or (unless
      // cache.shareAcrossWorkspaces) in another server, workspace or user's DMs, is never served here.
      const contentDigest = await digestOf(blobs, request, storeImage);
      const scope = contentDigest ? scopeOf(config, request.destination, checkOverride) : undefined;
      digest = contentDigest && scope ? scopedDigest(contentDigest, scope) : undefined;
      const follower = JSON.stringify(request); // what a finished leader delivers to this request, if it joins one
      // With no admit hook between them, the lookup runs first in the admission script (one round trip fewer); with
      // one, the lookup goes first on its own, so a flight claimed during the hook is joined at the claim.
      const lookup = digest && !options.admit ? await cache.lookupCall(digest, id, follower) : undefined;
      if (digest && !lookup) {
        const reply = await servedFrom(request, await cache.lookup(digest, id, follower));
        if (reply) return reply;
      }
      if (options.admit) await options.admit(inv, request);
      try {
        // The lookup (above, or here), GPU-second budgets, rate limits, then the claim of the flight, in one round trip
        // (the claim, as it leads, also records the flight and the checks it was queued under: see below)
        const claim = digest ? cache.claimCall(digest, id, follower, scope) : undefined;
        let admitted = await gate.admit(id, inv.destination, request, claim, lookup).catch((e: unknown) => {
          if (lookup && isUserError(e)) cache.missed(lookup); // refused: the lookup missed (counted as before)
          throw e;
        });
        if (lookup && admitted.found) {
          const reply = await servedFrom(request, cache.lookupResult(lookup, admitted.found));
          if (reply) return reply;
          // A cached entry of the other kind (cannot happen: the kind is part of the address): admitted as a miss
          if (admitted.found[0] !== 0) admitted = await gate.admit(id, inv.destination, request, claim);
        }
        const { estimate, joined, reserved } = admitted;
        if (joined) return await served(request, JOINED_TEXT); // joined a flight claimed a moment ago: no job, no slot (given back)
        // The flight it claimed, and in which checks, for whoever closes it (the channel's checks may change meanwhile):
        // written by the claim above, or here without single flight (no claim)
        if (digest && scope && !claim) await cache.recordFlight(id, digest, scope);
        enqueueing = true;
        position = await enqueue(inv, request, estimate, digest, reserved).catch((e: unknown) => settleUncertainEnqueue(e, inv, request, estimate, digest));
      } catch (e) {
        // A refusal (a UserError from gate.admit) took nothing. After anything else the admission and the claim may be
        // held (the script ran, its reply was lost): both are given back, and whoever joined the flight is told.
        // Stryker disable next-line ConditionalExpression,LogicalOperator,BooleanLiteral: equivalent, a refusal holds no slot or reservation and leads no flight, so giving them back changes nothing (the condition only saves round trips)
        if ((enqueueing || !isUserError(e)) && !(e instanceof AnswerUnknown)) await withdraw(request, digest).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      if (stored && !enqueueing) await blobs.delete(stored).catch(() => undefined); // refused: nothing will read it
      throw e;
    }
    relay?.track(id, inv.destination, position);
    log.info({ jobId: id, kind: request.kind, channel: inv.destination.channelId, position }, 'queued');
    // Stryker disable next-line ConditionalExpression: equivalent, it only saves a round trip (a job with a place in line is not held)
    if (position === 0) {
      // The job is queued: a read that fails now (the connection ended under it) must not turn this into a refusal.
      if ((await gate.scheduler.position(id).catch(() => undefined))?.state === 'held')
        return { kind: 'queued', jobId: id, position: 0, text: PAUSED_LINE };
    }
    return await queuedReply(id, position);
  }

  async function failFollowers(digest: string, request: JobRequest, message: string): Promise<number> {
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: request.id, kind: request.kind, destination: request.destination, status: 'failed',
      error: { code: 'internal', message, userFacing: true }, timingsMs: {}, finishedAt: Date.now(),
    };
    return handOverToFollowers({ cache, queues: handOvers, blobs }, digest, request, result);
  }

  async function releaseFollowers(request: JobRequest, result: JobResult): Promise<number> {
    const address = await leaderAddress({ blobs, cache, overrides: checkOverrides, config }, request);
    const followers = address ? await handOverToFollowers({ cache, queues: handOvers, blobs }, address.digest, request, result) : 0;
    await releaseUpload(blobs, config, request, 'removed').catch(() => undefined);
    return followers;
  }

  /** A queued job's answer: its place in line (or "Started."), and whether any worker is there to run it. */
  async function queuedReply(jobId: string, position: number): Promise<Reply> {
    if (position === 0) return { kind: 'queued', jobId, position, text: STARTED_TEXT };
    if (await noWorkerReady(() => cache.readyWorkers())) return { kind: 'queued', jobId, position, text: queuedLine(position, true), noWorker: true };
    return { kind: 'queued', jobId, position, text: queuedLine(position) };
  }

  async function cancel(inv: Invocation, jobId: string): Promise<Reply> {
    const job = await queue.getJob(jobId);
    const data = job?.data as JobRequest | undefined;
    if (!job || !data) throw new UserError('bad_request', 'That job has already finished or does not exist.');
    // An admin's say is over their own server or workspace only.
    const adminThere = inv.isAdmin && data.destination.platform === inv.destination.platform && workspaceOf(data.destination) === workspaceOf(inv.destination);
    if (!sameUser(data.destination, inv.destination) && !adminThere) throw new UserError('forbidden', 'Only the person who started a job (or an admin) can cancel it.');
    await requestCancel(redis, config, jobId);
    const state = await job.getState();
    // Kept for keepCompletedSeconds, a finished job is still found: a Cancel button left on a message the result did
    // not replace (its interaction token expired in the queue) was answered "Cancelling…", and nothing followed.
    if (state === 'completed' || state === 'failed') throw new UserError('bad_request', 'That job has already finished.');
    if (state === 'waiting' || state === 'prioritized' || state === 'delayed') {
      // Not started: removed here (a worker that took it meanwhile sees the cancel flag instead).
      await removeQueued(job, 'Cancelled.');
    }
    return { kind: 'text', text: 'Cancelling…', private: true };
  }

  async function removeQueued(job: Job<JobRequest>, message: string): Promise<boolean> {
    const request = job.data;
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: request.id, kind: request.kind, destination: request.destination, status: 'cancelled',
      error: { code: 'cancelled', message, userFacing: true }, timingsMs: {}, finishedAt: Date.now(),
    };
    // Handed over first: a bot that died between the two once left an accepted job with no result at all; now it
    // leaves a job whose run finds its result handed over and does nothing.
    await handOvers.handOver(result);
    const removed = await job.remove().then(
      () => true,
      // Stryker disable next-line ArrowFunction: equivalent, `() => undefined` is as falsy as `() => false`
      () => false,
    );
    if (removed) {
      await gate.removed(request.id);
      await releaseFollowers(request, result);
    }
    return removed;
  }

  const core: Core = {
    config,
    queue,
    redis,
    blobs,
    gate,
    settings,
    deliveryWorkers,
    cache,
    releaseFollowers,
    removeQueued,
    requestOf: previousRequest,
    commandFailed: ({ error, ...asked }) => options.onCommandFailed?.({ ...asked, reason: failureReason(error) }),

    async displayNames(destination: Destination, ids: NameQuery): Promise<DisplayNames> {
      const port = portFor(destination);
      if (!port?.displayNames) return NO_NAMES;
      const named = port.displayNames(destination, ids).catch((e: unknown) => {
        log.warn({ platform: destination.platform, err: asAppError(e).message }, 'naming the usage report\'s channels and users failed: showing ids');
        return NO_NAMES;
      });
      const names = await within(named, NAMES_TIMEOUT_MS);
      if (names) return names;
      log.warn({ platform: destination.platform, timeoutMs: NAMES_TIMEOUT_MS }, 'the platform did not name the usage report\'s channels and users in time: showing ids');
      return NO_NAMES;
    },

    async handle(inv: Invocation): Promise<Reply> {
      try {
        const input: CommandInput = inv.input;
        switch (input.command) {
          case 'imagine':
          case 'ask':
          case 'vary':
          case 'reroll':
          case 'describe':
            return await submit(inv);
          case 'cancel':
            return await cancel(inv, input.jobId);
          case 'checks':
            return await checksCommand(inv, core);
          case 'settings':
            return await settingsCommand(inv, settings, config);
          case 'limits':
          case 'queue':
          case 'budget':
          case 'usage': {
            const handler = options.commands?.[input.command] ?? { limits: limitsCommand, queue: queueCommand, budget: budgetCommand, usage: usageCommand }[input.command];
            return await handler(inv, core);
          }
        }
      } catch (e) {
        if (isUserError(e)) return { kind: 'error', text: stripControlChars(e.message), private: true }; // may quote what was typed
        const failed = (reason: string) => options.onCommandFailed?.({ platform: inv.destination.platform, command: inv.input.command, reason });
        if (e instanceof AnswerUnknown) {
          failed('answer_unknown');
          log.warn({ jobId: e.jobId, answerWithinMs }, 'Redis did not answer whether a request was queued: the user is told so; it is settled once Redis answers');
          return { kind: 'error', text: ANSWER_UNKNOWN_TEXT, private: true };
        }
        if (isRedisConnectionError(e)) {
          failed('redis_unavailable');
          log.warn({ command: inv.input.command, ...(SUBMITS.has(inv.input.command) ? { jobId: jobIdFor(inv.destination.platform, inv.dedupeKey) } : {}), err: (e as Error).message }, 'command refused: Redis connection lost');
          return { kind: 'error', text: 'I lost my connection to the job queue for a moment (it may be failing over). Nothing was queued; please try again in a few seconds.', private: true };
        }
        if (isRedisOutOfMemory(e)) {
          failed('redis_full');
          log.error({ err: (e as Error).message }, 'command refused: Redis is out of memory (maxmemory reached); free memory or raise maxmemory (README: Sizing Redis)');
          return { kind: 'error', text: 'My job store is full, so nothing was queued. Please tell an admin; it works again once they make room.', private: true };
        }
        const ref = randomUUID().slice(0, 8);
        failed(failureReason(e));
        // The line the user's ref points to: the cause (its stack in `cause`), the command and where it was asked.
        const job = SUBMITS.has(inv.input.command) ? { jobId: jobIdFor(inv.destination.platform, inv.dedupeKey) } : {};
        log.error({ ref, command: inv.input.command, ...logPlaceOf(inv.destination), ...job, err: asAppError(e).message, cause: e }, 'command failed');
        return { kind: 'error', text: `Something went wrong (ref ${ref}).`, private: true };
      }
    },

    async start(): Promise<void> {
      // A refused REDIS_URL (credentials, an untrusted certificate) ends the start here, saying so; BullMQ's objects
      // would wait on it for ever.
      await waitForRedis(redis, options.secrets.REDIS_URL);
      events = createJobsEvents(config, redis);
      gate.start(events);
      relay = new ProgressRelay({ queue, events, redis, portFor, intervalMs, ledger, instanceId, prefix: config.queue.prefix, log, readyWorkers: () => cache.readyWorkers() });
      relay.start();
      for (const port of ports.values()) {
        if (port.platform === 'cli' && !options.cliClientId) throw new Error('a CLI port needs cliClientId');
        const name = port.platform === 'cli' ? `${QueueNames.delivery('cli')}-${options.cliClientId}` : QueueNames.delivery(port.platform);
        deliveryWorkers.push(startDeliveryWorker({ config, redis, blobs, ledger, port, log }, name, options.deliveryConcurrency ?? 4));
      }
      retention.start();
      await Promise.all([events.waitUntilReady(), ...deliveryWorkers.map((w) => w.waitUntilReady())]);
    },

    async stop(): Promise<void> {
      stopping = true;
      await relay?.stop(); // first: it hands its progress leases back over the connection closed below
      gate.stop();
      await Promise.all(deliveryWorkers.map((w) => w.close()));
      deliveryWorkers.length = 0;
      await events?.close();
      await handOvers.close();
      await retention.stop();
      await queue.close();
      await fence.close();
      if (ownsRedis) await closeRedis(redis);
    },

    position: (jobId: string) => queuePosition(redis, queue, jobId),
    showBeforeResult: (jobId: string, edit: () => Promise<void>) => ledger.whileNotDelivered(jobId, edit),
  };
  return core;
}

