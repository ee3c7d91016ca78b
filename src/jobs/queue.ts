// Typed BullMQ factories: every Queue/Worker/QueueEvents of the bot is made here, so job ids, retention,
// retries and lock timing come from config in one place. Bots and workers both import this (src/ is shared).
//
//   bots ──add(JobRequest, jobId = jobIdFor(dedupeKey))──▶ <prefix>:jobs ──Worker (worker/main.ts)──┐
//   bots ◀──Worker (bots/core/delivery.ts)── <prefix>:delivery-<platform> ◀──add(JobResult, same jobId)┘
import { createHash } from 'node:crypto';
import { createIORedisClient, Job, Queue, QueueEvents, Worker, type IRedisTransaction, type JobsOptions, type Processor, type WorkerOptions } from 'bullmq';
import type { ChainableCommander } from 'ioredis';
import { addressOf, closeRedis, defineScript, duplicateRedis, isCluster, isRedisConnectionError, noteRedisError, runScript, type Redis } from '../redis.ts';
import type { Logger } from '../log.ts';
import type { PreparedBlob } from '../blobs/store.ts';
import type { Config } from '../config/schema.ts';
import { QueueNames, type Destination, type JobRequest, type JobResult, type Platform } from './contract.ts';

type QueueConfig = Pick<Config, 'queue'>;

/**
 * The job id for a submission: a hash of platform + the platform's interaction/message id, so a platform
 * that delivers the same interaction twice (or a user double-clicking) makes one job. BullMQ ignores
 * `add` for an id that already exists. BullMQ ids may not contain ':' nor be all digits, hence hex with a letter.
 */
export function jobIdFor(platform: Platform, dedupeKey: string): string {
  return 'j' + createHash('sha256').update(`${platform}\u0000${dedupeKey}`).digest('hex').slice(0, 24);
}

/**
 * The delivery queue a result goes to. Discord and Slack: one per platform, consumed by every bot instance of
 * that platform. CLI: one per CLI invocation (`clientId`), so a result reaches only the process that asked.
 */
export function deliveryQueueName(destination: Destination): string {
  return destination.platform === 'cli' ? `${QueueNames.delivery('cli')}-${destination.clientId}` : QueueNames.delivery(destination.platform);
}

/** Retries with exponential backoff for transient faults; finished jobs kept a while for dedupe and for Re-roll/Vary. */
export function jobOptions(config: QueueConfig): JobsOptions {
  const q = config.queue;
  return {
    attempts: q.attempts,
    backoff: { type: 'exponential', delay: q.backoffMs },
    removeOnComplete: { age: q.keepCompletedSeconds },
    removeOnFail: { age: q.keepFailedSeconds },
  };
}

export function deliveryJobOptions(config: QueueConfig): JobsOptions {
  const q = config.queue;
  return {
    attempts: q.deliveryAttempts,
    backoff: { type: 'exponential', delay: q.deliveryBackoffMs },
    removeOnComplete: { age: q.keepCompletedSeconds },
    removeOnFail: { age: q.keepFailedSeconds },
  };
}

/** Lock and stall timing shared by every worker (jobs and delivery). */
export function lockOptions(config: QueueConfig): Pick<WorkerOptions, 'lockDuration' | 'stalledInterval' | 'maxStalledCount'> {
  return {
    lockDuration: config.queue.lockDurationMs,
    stalledInterval: config.queue.stalledIntervalMs,
    maxStalledCount: config.queue.maxStalledCount,
  };
}

export type JobsQueue = Queue<JobRequest>;
export type DeliveryQueue = Queue<JobResult>;

/**
 * Every BullMQ object gets an error listener: without one BullMQ prints each failed reconnect as a multi-line stack.
 * Unreachable Redis becomes one log line per state change (src/redis.ts); other errors stay with the owner's listeners.
 */
function reportConnectionErrors<T extends { on(event: 'error', listener: (err: Error) => void): unknown }>(emitter: T, connection: Redis): T {
  const address = addressOf(connection); // the redacted REDIS_URL address: sentinels or cluster nodes, not one host
  emitter.on('error', (err: Error) => void noteRedisError(err, address));
  return emitter;
}

/**
 * Redis Cluster keeps a multi-key command or script on one node only when its keys share a hash slot: BullMQ's keys
 * of a queue, and ours, do when queue.prefix is a hash tag. Refuse to start otherwise, with a message saying so.
 */
export function assertClusterPrefix(config: QueueConfig, connection: Redis): void {
  if (isCluster(connection) && !/\{[^}]+\}/.test(config.queue.prefix))
    throw new Error(`queue.prefix "${config.queue.prefix}" must be a hash tag with Redis Cluster, e.g. "{${config.queue.prefix}}" (docs/high-availability.md).`);
}

export function createJobsQueue(config: QueueConfig, connection: Redis): JobsQueue {
  assertClusterPrefix(config, connection);
  return reportConnectionErrors(new Queue<JobRequest>(QueueNames.jobs, { connection, prefix: config.queue.prefix, defaultJobOptions: jobOptions(config) }), connection);
}

/** KEYS: one queue's keys (one hash slot) · ARGV ttlSeconds: EXPIRE only the keys that exist and have no TTL. */
const EXPIRE_PERSISTENT = `local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, ARGV[1]) n = n + 1 end
end
return n`;
/** EXPIRE_PERSISTENT defined on a connection (EVALSHA, not the script's text on every call), also in its MULTIs. */
const EXPIRE_COMMAND = 'blip3oExpirePersistent';

type Scripted = Record<string, (...args: (string | number)[]) => unknown>;

/**
 * The keys BullMQ writes for a delivery queue as we use one (no priorities, repeats, flows, rate limit or pause; a
 * retry waits in `delayed`): the only ones a hand-over, or the delivery worker after it, can leave without a TTL
 * (test/unit/src/jobs/queue-leftovers.redis.test.ts runs a queue through both and finds no other). The hand-over's
 * expiry looks at these and the job's hash, 11 keys where the queue has 19 (the script's work is per key); the CLI's
 * cleanup after deleting its queue looks at them all.
 */
export const DELIVERY_QUEUE_KEYS = ['wait', 'active', 'delayed', 'completed', 'failed', 'stalled', 'meta', 'id', 'events', 'marker'] as const;

async function expireKeys(redis: Redis, keys: readonly string[], ttlSeconds: number): Promise<number> {
  return Number(await runScript(redis, EXPIRE_COMMAND, EXPIRE_PERSISTENT, keys, [ttlSeconds]));
}

/**
 * Give every key of `queue` (and `extraKeys`, e.g. a job's hash) that would otherwise live for ever a TTL, in one
 * command. Keys with a TTL of their own keep it: BullMQ's `stalled-check` timer lives one stalledInterval, and a
 * day-long one would stop the queue's worker from ever recovering a stalled job. Used for a CLI's delivery queue, by
 * the worker's hand-over (there inside its MULTI, DELIVERY_QUEUE_KEYS only: handOverTogether) and by the CLI after
 * deleting it (a write that raced the deletion re-creates keys). Returns how many keys got the TTL.
 */
// Stryker disable next-line ArrayDeclaration: equivalent, a default naming a key that doesn't exist gives nothing a TTL
export async function expireQueueKeys(redis: Redis, queue: Queue, ttlSeconds: number, extraKeys: readonly string[] = []): Promise<number> {
  // queue.keys includes the queue's base "<prefix>:<name>:", which BullMQ never writes: TTL -2, so it is left alone.
  return expireKeys(redis, [...Object.values(queue.keys), ...extraKeys], ttlSeconds);
}

/** What the worker sends with a delivery job: the result's blobs before it, a CLI queue's expiry after it. */
export interface HandOverWrites {
  /** The result's PNGs, prepared by a blob store on the same connection (BlobStore.prepare). */
  blobs?: readonly PreparedBlob[];
  /** Give the queue's keys and the job's hash this TTL if they have none (expireQueueKeys): a CLI's queue. */
  expireSeconds?: number | undefined;
}

/**
 * Adds `result` to `queue` under its job id, with `writes`, in one MULTI on `connection` (the queue's own): one round
 * trip where blob SET → add → expiry took three, and Redis applies all of them or none. So a blob that is not stored
 * leaves no delivery job naming it: the caller throws, BullMQ retries the job, and the re-run finds nothing handed
 * over and runs again, as when a SET failed before the add was sent.
 *   - A command refused while queued (OOM, NOPERM) makes EXEC discard the transaction (EXECABORT): nothing applied.
 *   - A connection lost before EXEC arrived applies nothing; ioredis sends the whole transaction again when none of
 *     it was answered, else rejects it. Lost after EXEC ran: applied, and a resend adds nothing (same key and bytes,
 *     the same job id); a rejection is retried and the re-run finds the job handed over.
 *   - Inside EXEC a command that fails leaves the others applied (no rollback). SET cannot fail there (it overwrites
 *     any type); the add and the expiry can only with NOSCRIPT (the server's script cache flushed, which ioredis cannot
 *     see inside a MULTI): then the same writes go one after another (blobs, add, expiry; ioredis loads the scripts
 *     again), the order used before they were sent together. Any other error throws (an orphaned blob expires).
 *   - With Sentinel, a command answered READONLY is re-sent by ioredis on its own to the new primary (src/redis.ts
 *     reconnectOnError), outside the transaction: the add alone only if the old primary was demoted between queuing
 *     the SET and the add (one client's batch read in two parts). Then the delivery says the image expired. The
 *     sequential order had its own such case: a SET acknowledged but not yet replicated when the primary failed.
 */
export async function handOverTogether(connection: Redis, queue: DeliveryQueue, result: JobResult, opts: JobsOptions, writes: HandOverWrites): Promise<void> {
  const { blobs = [], expireSeconds } = writes;
  const expiring = [...DELIVERY_QUEUE_KEYS.map((k) => queue.keys[k]!), queue.toKey(result.jobId)];
  defineScript(connection, EXPIRE_COMMAND, EXPIRE_PERSISTENT);
  await queue.waitUntilReady(); // BullMQ's scripts are defined on the connection (a MULTI copies them when made)
  // BullMQ's adapter of the connection's MULTI (Job.addJob queues the add script on it); the raw one for ours.
  const bull = createIORedisClient(connection).multi() as unknown as IRedisTransaction;
  const tx = bull as unknown as ChainableCommander & Scripted;
  for (const blob of blobs) tx.set(...blob.set);
  // As Queue.add does: the queue's default options under the caller's, the job id given. Its promise settles at once
  // (a MULTI answers when EXEC does): the add's reply is checked below. BullMQ's add answers a negative code only for
  // a job with a parent (flows), which a delivery never has.
  new Job<JobResult>(queue, DELIVERY_JOB_NAME, result, { ...queue.defaultJobOptions, ...opts, jobId: result.jobId }, result.jobId).addJob(bull).catch(() => undefined);
  if (expireSeconds !== undefined) tx[EXPIRE_COMMAND]!(expiring.length, ...expiring, expireSeconds);
  const replies = (await tx.exec())!; // EXECABORT and a lost connection reject here; null only after WATCH, unused
  if (replies.some(([e]) => e?.message.startsWith('NOSCRIPT'))) {
    for (const blob of blobs) await connection.set(...blob.set);
    await queue.add(DELIVERY_JOB_NAME, result, opts);
    if (expireSeconds !== undefined) await expireKeys(connection, expiring, expireSeconds);
    return;
  }
  const failed = replies.find(([e]) => e); // e.g. a key of the wrong type: what did run stays (no rollback)
  if (failed) throw failed[0]!;
}

/** The name of every delivery job (a label for dashboards; the delivery worker reads only its data). */
export const DELIVERY_JOB_NAME = 'result';

/**
 * A delivery queue. `handOnly`: this process only hands results to it, the queue being another's (a CLI run's, which
 * deletes it as it exits): BullMQ's meta hash, which every Queue writes as it is made, is left to that owner. Written by
 * a worker that looked at a job after the CLI had gone, it came back with no TTL and stayed for good.
 */
export function createDeliveryQueue(config: QueueConfig, connection: Redis, name: string, handOnly = false): DeliveryQueue {
  assertClusterPrefix(config, connection);
  const queue = new Queue<JobResult>(name, { connection, prefix: config.queue.prefix, defaultJobOptions: deliveryJobOptions(config), skipMetasUpdate: handOnly });
  return reportConnectionErrors(queue, connection);
}

/** QueueEvents blocks on its connection, so it gets its own; BullMQ leaves a passed-in connection open, so close() closes it. */
class OwnedQueueEvents extends QueueEvents {
  constructor(name: string, private readonly owned: Redis, prefix: string) {
    super(name, { connection: owned, prefix });
  }
  override async close(): Promise<void> {
    await super.close();
    await closeRedis(this.owned);
  }
}

export function createJobsEvents(config: QueueConfig, connection: Redis): QueueEvents {
  assertClusterPrefix(config, connection);
  return reportConnectionErrors(new OwnedQueueEvents(QueueNames.jobs, duplicateRedis(connection), config.queue.prefix), connection);
}

/** BullMQ's errors for a job whose lock lapsed under its worker: Redis failed over (or paused), or the process stalled. */
const LOCK_LOST = /^(could not renew lock for job|Missing lock for job|Lock mismatch for job)/;

/**
 * What a BullMQ Worker's `error` event means for the log: unreachable Redis is one line from src/redis.ts; a lock lost
 * (every job in flight across a failover) is a warning, since the job runs again and its result is posted once (the
 * delivery ledger); anything else is an error.
 */
export function logWorkerError(log: Logger, err: Error, what: string): void {
  if (isRedisConnectionError(err)) return;
  if (LOCK_LOST.test(err.message)) log.warn({ err: err.message }, `${what}: a job's lock lapsed (Redis failed over, or this process stalled); it runs again, and its result is posted once`);
  else log.error({ err: err.message }, what);
}

/** How many jobs each worker made by createQueueWorker is running now (its processor entered and not yet returned). */
const runningJobs = new WeakMap<Worker, () => number>();

/** The jobs `worker` (from createQueueWorker) is running now. */
export function runningJobsOf(worker: Worker): number {
  const count = runningJobs.get(worker);
  if (!count) throw new Error('runningJobsOf: not a worker made by createQueueWorker');
  return count();
}

/**
 * A BullMQ Worker with our lock timing. `connection` is duplicated for the blocking connection by BullMQ. Its running
 * jobs are counted (runningJobsOf), for the fetch-loop watchdog (src/jobs/fetch-watchdog.ts).
 */
export function createQueueWorker<D, R>(
  config: QueueConfig,
  connection: Redis,
  name: string,
  processor: Processor<D, R>,
  options: Partial<WorkerOptions> = {},
): Worker<D, R> {
  assertClusterPrefix(config, connection);
  let running = 0;
  const counted: Processor<D, R> = async (job, token, signal) => {
    running++;
    try {
      return await processor(job, token, signal);
    } finally {
      running--;
    }
  };
  const worker = new Worker<D, R>(name, counted, { connection, prefix: config.queue.prefix, ...lockOptions(config), ...options });
  runningJobs.set(worker, () => running);
  return reportConnectionErrors(worker, connection);
}
