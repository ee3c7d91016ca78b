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
import type { JobsOptions, QueueEvents, Worker } from 'bullmq';
import type { BlobStore } from '../../src/blobs/store.ts';
import { createBlobStore } from '../../src/blobs/index.ts';
import { createGate, type Gate } from '../../src/limits/gate.ts';
import type { Config, Secrets } from '../../src/config/schema.ts';
import { CONTRACT_VERSION, JobRequest, type Destination, type JobResult, type ImagineRequest } from '../../src/jobs/contract.ts';
import { requestCancel } from '../../src/jobs/cancel.ts';
import { DeliveryLedger } from '../../src/jobs/ledger.ts';
import { queuePosition } from '../../src/jobs/position.ts';
import { QueueNames } from '../../src/jobs/contract.ts';
import {
  createDeliveryQueue,
  createJobsEvents,
  createJobsQueue,
  deliveryQueueName,
  jobIdFor,
  type JobsQueue,
} from '../../src/jobs/queue.ts';
import { UserError, isUserError, asAppError } from '../../src/errors.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { startDeliveryWorker } from './delivery.ts';
import { limitsCommand } from './commands/limits.ts';
import { queueCommand } from './commands/queue.ts';
import type { CommandInput, ImageRef, Invocation, PlatformPort, Reply } from './port.ts';
import { ProgressRelay } from './progress.ts';
import { askRequest, checkImage, describeRequest, formatBytes, imagineRequest, randomSeed, varyRequest, type FetchImage, type RequestBase } from './requests.ts';

/** Step 2: throw UserError('rate_limited' | 'forbidden') to refuse. Resolves to nothing when admitted. */
export type Admission = (invocation: Invocation, request: JobRequest) => Promise<void>;
/** Step 4: BullMQ options for this job (priority for fair scheduling). Must not set jobId. */
export type JobOptionsFor = (invocation: Invocation, request: JobRequest) => Promise<Pick<JobsOptions, 'priority' | 'lifo'>>;
/** Admin commands (`limits`, `queue`) are provided by the limits area; unlisted ones answer "not enabled". */
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
  commands?: Partial<Record<'limits' | 'queue', CommandHandler>>;
  /** Redis connection to use (shared); by default the core opens and closes its own from secrets.REDIS_URL. */
  redis?: Redis;
  log?: Logger;
  /** Parallel deliveries per delivery queue. @defaultValue 4 */
  deliveryConcurrency?: number;
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
  /** The delivery consumers, filled by start() (bots/main.ts attaches delivery metrics to them). */
  readonly deliveryWorkers: readonly Worker[];
}

const ordinal = (n: number) => `${n}${n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th')}`;

export function createCore(options: CoreOptions): Core {
  const { config } = options;
  const log = options.log ?? createLogger('core', config.logLevel);
  const ownsRedis = !options.redis;
  const redis = options.redis ?? createRedis(options.secrets.REDIS_URL, 'bots-core');
  const blobs = createBlobStore(config, redis);
  const queue = createJobsQueue(config, redis);
  const gate = createGate(redis, config, queue);
  const ledger = new DeliveryLedger(redis, config);
  const instanceId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const ports = new Map(options.ports.map((p) => [p.platform, p]));
  let events: QueueEvents | undefined;
  let relay: ProgressRelay | undefined;
  const deliveryWorkers: Worker[] = [];

  const portFor = (d: Destination): PlatformPort | undefined => {
    if (d.platform === 'cli' && d.clientId !== options.cliClientId) return undefined;
    return ports.get(d.platform);
  };
  const intervalMs = (d: Destination): number =>
    d.platform === 'discord' ? config.discord.progressEditIntervalMs : d.platform === 'slack' ? config.slack.progressUpdateIntervalMs : 100;

  // ---- steps of handle() ------------------------------------------------------------------------------

  async function imageBytes(ref: ImageRef, destination: Destination): Promise<Uint8Array> {
    if (ref.sizeBytes !== undefined && ref.sizeBytes > config.understanding.maxInputImageBytes)
      throw new UserError('bad_image', `That image is too large; the limit is ${formatBytes(config.understanding.maxInputImageBytes)}.`);
    if (ref.bytes) return ref.bytes;
    if (ref.url && options.fetchImage) return options.fetchImage(ref, destination);
    throw new UserError('bad_image', 'Please attach an image.');
  }

  /** Step 1 (and 3 for image commands): validate and build the request. */
  async function validate(inv: Invocation, base: RequestBase): Promise<{ request: JobRequest; storeImage?: Uint8Array }> {
    const input = inv.input;
    switch (input.command) {
      case 'imagine':
        return { request: imagineRequest(config, base, input) };
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
        await checkImage(config, bytes);
        return { request: varyRequest(config, base, 'pending', input), storeImage: bytes };
      }
      case 'reroll': {
        const previous = await queue.getJob(input.jobId);
        const data = previous?.data as JobRequest | undefined;
        if (!data || data.kind === 'ask') throw new UserError('bad_request', 'That image is too old to re-roll; please run /imagine again.');
        const request: ImagineRequest = { v: CONTRACT_VERSION, ...base, kind: 'imagine', prompt: data.prompt, options: { ...data.options, seed: randomSeed(data.options.count) } };
        if (data.kind === 'vary') return { request: { ...request, kind: 'vary', imageKey: data.imageKey } };
        return { request };
      }
      default:
        throw new Error(`not a job command: ${input.command}`);
    }
  }

  async function enqueue(inv: Invocation, request: JobRequest): Promise<number> {
    const extra = options.jobOptions ? await options.jobOptions(inv, request) : {};
    await queue.add(request.kind, request, { ...extra, ...gate.jobOptions(), jobId: request.id });
    await gate.enqueued(request.id, inv.destination);
    return (await queuePosition(redis, queue, request.id)) ?? 0;
  }

  async function submit(inv: Invocation): Promise<Reply> {
    const id = jobIdFor(inv.destination.platform, inv.dedupeKey);
    const existing = await queue.getJob(id);
    if (existing) {
      // A duplicate of an interaction we already accepted: same job, no second admission.
      const position = (await queuePosition(redis, queue, id)) ?? 0;
      return queuedReply(id, position);
    }
    const base: RequestBase = { id, destination: inv.destination, submittedAt: Date.now() };
    let { request, storeImage } = await validate(inv, base);
    if (options.admit) await options.admit(inv, request);
    await gate.admit(id, inv.destination, request.kind === 'ask' ? 1 : (request.options.count ?? 1)); // N images count as N
    let position: number;
    try {
      if (storeImage) request = { ...request, imageKey: await blobs.put(storeImage, 'input') } as JobRequest;
      position = await enqueue(inv, request);
    } catch (e) {
      await gate.abandon(id);
      throw e;
    }
    relay?.track(id, inv.destination, position);
    log.info({ jobId: id, kind: request.kind, channel: inv.destination.channelId, position }, 'queued');
    if (position === 0 && (await gate.scheduler.position(id)).state === 'held')
      return { kind: 'queued', jobId: id, position: 0, text: 'Queued. An admin paused this channel; your request waits until they resume it.' };
    return queuedReply(id, position);
  }

  function queuedReply(jobId: string, position: number): Reply {
    const text = position > 0 ? `Queued: ${ordinal(position)} in line.` : 'Started.';
    return { kind: 'queued', jobId, position, text };
  }

  async function cancel(inv: Invocation, jobId: string): Promise<Reply> {
    const job = await queue.getJob(jobId);
    const data = job?.data as JobRequest | undefined;
    if (!job || !data) throw new UserError('bad_request', 'That job has already finished or does not exist.');
    if (data.destination.userId !== inv.destination.userId && !inv.isAdmin) throw new UserError('forbidden', 'Only the person who started a job (or an admin) can cancel it.');
    await requestCancel(redis, config, jobId);
    const state = await job.getState();
    if (state === 'waiting' || state === 'prioritized' || state === 'delayed') {
      // Not started: remove it here and tell the destination. If a worker took it meanwhile, remove fails and
      // the worker sees the cancel flag instead.
      const removed = await job.remove().then(() => true, () => false);
      if (removed) {
        await gate.removed(jobId);
        await deliverCancelled(data);
      }
    }
    return { kind: 'text', text: 'Cancelling…', private: true };
  }

  async function deliverCancelled(request: JobRequest): Promise<void> {
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: request.id, kind: request.kind, destination: request.destination, status: 'cancelled',
      error: { code: 'cancelled', message: 'Cancelled.', userFacing: true }, timingsMs: {}, finishedAt: Date.now(),
    };
    const q = createDeliveryQueue(config, redis, deliveryQueueName(request.destination));
    try {
      await q.add('result', result, { jobId: request.id });
    } finally {
      await q.close();
    }
  }

  const core: Core = {
    config,
    queue,
    redis,
    blobs,
    gate,
    deliveryWorkers,

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
          case 'limits':
          case 'queue': {
            const handler = options.commands?.[input.command] ?? { limits: limitsCommand, queue: queueCommand }[input.command];
            if (!handler) throw new UserError('bad_request', `/${input.command} is not enabled on this bot.`);
            return await handler(inv, core);
          }
        }
      } catch (e) {
        if (isUserError(e)) return { kind: 'error', text: e.message, private: true };
        const ref = randomUUID().slice(0, 8);
        log.error({ ref, err: asAppError(e).message, cause: e }, 'command failed');
        return { kind: 'error', text: `Something went wrong (ref ${ref}).`, private: true };
      }
    },

    async start(): Promise<void> {
      events = createJobsEvents(config, redis);
      gate.start(events);
      relay = new ProgressRelay({ queue, events, redis, portFor, intervalMs, ledger, instanceId, prefix: config.queue.prefix, log });
      relay.start();
      for (const port of ports.values()) {
        if (port.platform === 'cli' && !options.cliClientId) throw new Error('a CLI port needs cliClientId');
        const name = port.platform === 'cli' ? `${QueueNames.delivery('cli')}-${options.cliClientId}` : QueueNames.delivery(port.platform);
        deliveryWorkers.push(startDeliveryWorker({ config, redis, blobs, ledger, port, log }, name, options.deliveryConcurrency ?? 4));
      }
      await Promise.all([events.waitUntilReady(), ...deliveryWorkers.map((w) => w.waitUntilReady())]);
    },

    async stop(): Promise<void> {
      relay?.stop();
      gate.stop();
      await Promise.all(deliveryWorkers.map((w) => w.close()));
      deliveryWorkers.length = 0;
      await events?.close();
      await queue.close();
      if (ownsRedis) await closeRedis(redis);
    },

    position: (jobId: string) => queuePosition(redis, queue, jobId),
    showBeforeResult: (jobId: string, edit: () => Promise<void>) => ledger.whileNotDelivered(jobId, edit),
  };
  return core;
}

