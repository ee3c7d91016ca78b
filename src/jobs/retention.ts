// Per-channel retention TTL (/settings, admins): everything Redis holds about a job of that channel is deleted
// `retentionSeconds` after it was submitted, earlier than the global retention (queue.keep*Seconds, blobs.ttlSeconds).
//
//   submit (bots/core) ──ZADD <prefix>:retention  deadline  {"j":jobId,"q":delivery queue,"t":submittedAt}
//   every queue.retentionSweepMs, in every bot and every worker process: entries past their deadline are purged,
//   then ZREM'd (workers too: while no bot runs, what was delivered before is still deleted on time)
//
// The job and its result keep their queue's removeOn* options, as every job does. BullMQ applies the keep options of
// the job that finishes to the whole completed or failed set (moveToFinished: removeJobsByMaxAge over the set), so a
// TTL as their age (until 2026-12-07) deleted every channel's finished jobs older than the TTL whenever one of these
// finished: the records that find a repeated platform event's job and that Re-roll/Vary read.
// (test/unit/src/jobs/retention-bystanders.redis.test.ts, test/integration/retention-bystanders.redis.test.ts)
//
// What a purge deletes, and what else makes sure nothing outlives the deadline:
//   - blobs (input image, output PNGs)     SET … EX min(blobs.ttlSeconds, retention): Redis expires them itself
//   - the job hash with prompt/question    job.remove() on the jobs queue (hash, logs, state sets)
//   - the result (answer text, blob keys)  job.remove() on the delivery queue
//   - BullMQ event stream entries          XDEL of every entry naming the job (progress carries partial answers)
//   - per-job keys (jobKeys below)         DEL (ledger, progress claim, cancel flag, served record, Slack marker)
//   - result cache / single flight         never written: such requests bypass the cache (src/cache/fanout.ts)
// A job still waiting, running or being delivered at its deadline is purged at the first sweep after it finished:
// deleting it earlier would lose the answer the user asked for. One that failed is purged once its worker's 'failed'
// listener has run (it hands the failure over and settles the job's GPU-seconds just after BullMQ failed it, then
// writes `failure-handled:<jobId>`), or, where that mark never comes (a worker that died in between, one older than
// 2026-12-08), HAND_OVER_WAIT_MS after a sweep first found it failed.
//
// Clocks: a deadline is the bot's submittedAt + TTL, stamped on Redis's clock, and every sweep and the worker's PNG
// expiry read that clock too (src/server-clock.ts). One comparison is left with another host's clock: a job completed
// with no result is waited for from BullMQ's finishedOn, the finishing worker's clock (a worker S ahead keeps one that
// finished just before its deadline up to S longer; one behind, a wait shorter: nothing is handed over after a
// completion).
import type { Job } from 'bullmq';
import type { Redis } from '../redis.ts';
import { z } from 'zod';
import type { Config } from '../config/schema.ts';
import { createDeliveryQueue, createJobsQueue, type DeliveryQueue, type JobsQueue } from './queue.ts';
import { parseStoredJson, retentionOf, type JobRequest } from './contract.ts';
import { deliveryQueueName } from './queue.ts';
import type { Logger } from '../log.ts';
import { ServerClock } from '../server-clock.ts';

/** How soon a purge that found its job unfinished is tried again. */
const RETRY_MS = 2_000;
/** Event stream entries older than the submission by more than this are not searched (clock skew between hosts). */
const STREAM_SLACK_MS = 60_000;
/**
 * How long a job that failed with no mark of its 'failed' listener (markFailureHandled), or finished with no result
 * handed over, is waited for: the worker's 'failed' listener (worker/processor.ts onFinallyFailed) runs just after
 * BullMQ fails a job, hands a failure over for one BullMQ failed on its own (its workers died more than
 * maxStalledCount times) and settles the job's GPU-seconds (a no-op when the processor did). Longer than a failover. A failed job's wait runs from when a sweep first found it failed, on the
 * sweeps' clock (Redis's): its finishedOn is the clock of the host that failed it, and one 2 minutes behind made a
 * failure "2 minutes old" at once (test/unit/src/jobs/retention-clock-skew.redis.test.ts).
 */
export const HAND_OVER_WAIT_MS = 60_000;

const failureHandledKey = (prefix: string, jobId: string) => `${prefix}:failure-handled:${jobId}`;

/**
 * The worker's 'failed' listener, once it has run for a job BullMQ failed for good (worker/processor.ts
 * finallyFailed): a sweep past the job's deadline purges it at once rather than waiting HAND_OVER_WAIT_MS for the
 * listener. Only for a retention channel's job; `now` is Redis's clock, as the deadline is. It lives until
 * HAND_OVER_WAIT_MS past the deadline, when the job is purged by the wait anyway (a purge deletes it with the job).
 */
export async function markFailureHandled(redis: Redis, prefix: string, request: Pick<JobRequest, 'id' | 'destination' | 'submittedAt'>, now: number): Promise<void> {
  const seconds = retentionOf(request.destination);
  if (seconds === undefined) return;
  const ttlMs = Math.max(0, request.submittedAt + seconds * 1000 - now) + HAND_OVER_WAIT_MS;
  // Stryker disable next-line StringLiteral: equivalent, a sweep asks only whether the key exists
  await redis.set(failureHandledKey(prefix, request.id), '1', 'PX', ttlMs);
}

const Entry = z.strictObject({ j: z.string().min(1).max(200), q: z.string().min(1).max(300), t: z.number().int().nonnegative() });
type Entry = z.infer<typeof Entry>;

/**
 * Keys named after a job id that hold something about it, besides BullMQ's own. Kept here, in one list, so a new
 * per-job key is purged too: src/jobs/ledger.ts, src/jobs/cancel.ts, bots/core/progress.ts, bots/core/submit.ts
 * (served), bots/slack/port.ts (finished marker), src/accounting/usage.ts (settled marker: the job's GPU-seconds were counted),
 * this file (failed-seen: when a sweep first found the job failed; failure-handled: the worker's 'failed' listener ran).
 */
export function jobKeys(prefix: string, jobId: string): string[] {
  return ['delivered', 'delivering', 'showing', 'delivery-claim', 'cancelled', 'progress-owner', 'served', 'slack:finished', '{usage}:settled', 'failed-seen', 'failure-handled'].map((k) => `${prefix}:${k}:${jobId}`);
}

export class Retention {
  private readonly key: string;
  private readonly jobs: JobsQueue;
  private readonly deliveries = new Map<string, DeliveryQueue>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<number> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly config: Readonly<Pick<Config, 'queue'>>,
    private readonly log?: Logger,
    /** Redis's clock: deadlines are submittedAt (read on it by the bot, src/server-clock.ts) + TTL. */
    private readonly clock = ServerClock.forDeployment(redis, config.queue.prefix),
  ) {
    this.key = `${config.queue.prefix}:retention`;
    this.jobs = createJobsQueue(config, redis);
  }

  /** Record a request whose channel has a retention TTL (before it is enqueued). No-op without one. */
  async schedule(request: JobRequest): Promise<void> {
    const seconds = retentionOf(request.destination);
    if (seconds === undefined) return;
    const entry: Entry = { j: request.id, q: deliveryQueueName(request.destination), t: request.submittedAt };
    await this.redis.zadd(this.key, request.submittedAt + seconds * 1000, JSON.stringify(entry));
  }

  /**
   * Purge every job past its deadline; returns how many were purged (unfinished ones are tried again later). `now`:
   * Redis's clock, as the deadlines are; not this host's, which may run minutes ahead or behind.
   */
  async sweep(now?: number): Promise<number> {
    if (!this.sweeping) this.sweeping = this.clockOr(now).then((at) => this.sweepOnce(at)).finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async clockOr(now: number | undefined): Promise<number> {
    return now ?? (await this.clock.now());
  }

  private async sweepOnce(now: number): Promise<number> {
    // Stryker disable next-line StringLiteral: equivalent, Redis reads an empty bound as 0 and every deadline is after 1970
    const due = await this.redis.zrangebyscore(this.key, '-inf', now, 'LIMIT', 0, 100);
    let purged = 0;
    for (const member of due) {
      const entry = parseStoredJson(Entry, member);
      if (!entry) {
        await this.redis.zrem(this.key, member); // not ours to interpret: drop it rather than retry forever
        continue;
      }
      if (await this.purge(entry, now)) {
        await this.redis.zrem(this.key, member);
        purged++;
      } else await this.redis.zadd(this.key, 'XX', now + RETRY_MS, member);
    }
    return purged;
  }

  /** Delete everything about one job; false while it is still waiting, running or being delivered. */
  private async purge(e: Entry, now: number): Promise<boolean> {
    const delivery = this.delivery(e.q);
    // Stryker disable next-line StringLiteral: 'unknown' (a hash in no state's set) is not produced by any test; a job so stranded is finished
    const finished = async (j: Job | undefined, state?: string) => !j || ['completed', 'failed', 'unknown'].includes(state ?? (await j.getState()));
    const job = await this.jobs.getJob(e.j);
    const jobState = await job?.getState();
    if (!(await finished(job, jobState))) return false;
    // Its result is read only now that the job is seen finished: the worker hands over before it completes the job, so
    // a finished job without a delivery was delivered and removed, or failed without a destination. (Read together, a
    // job that finished between the two reads looked finished with no delivery, and its result outlived the purge.)
    const result = await delivery.getJob(e.j);
    if (!(await finished(result))) return false;
    // Failed with no result yet: its worker hands one over now. Purged before that, the result came after, naming the
    // job and its user, and stayed. (A job long finished with none was delivered, and its delivery removed.) Failed
    // with one: its worker's 'failed' listener runs now too, and finding the job purged it handed a second failure
    // over and wrote the settle marker again (worker/processor.ts onFinallyFailed), each kept a day. So a failed job
    // waits for the listener's mark, or, should none come, HAND_OVER_WAIT_MS.
    if (job && jobState === 'failed' && !(await this.redis.exists(failureHandledKey(this.config.queue.prefix, e.j))) && !(await this.waitedSinceFailed(e.j, now))) return false;
    // Completed with none: it was delivered, and its delivery removed (there is no 'failed' listener to wait for).
    if (job && !result && jobState !== 'failed' && now - (job.finishedOn ?? 0) < HAND_OVER_WAIT_MS) return false;
    // Its images too, the input and what was made (they expire by the deadline themselves; a result never delivered
    // was never released, and one stored with a longer TTL by an older worker would outlive it)
    const request = job?.data as { imageKey?: string } | undefined;
    const made = result?.data as { image?: { blobKey: string }; images?: { blobKey: string }[] } | undefined;
    const blobs = [request?.imageKey, made?.image?.blobKey, ...(made?.images ?? []).map((i) => i.blobKey)].filter((k): k is string => typeof k === 'string');
    if (job) await job.remove();
    if (result) await result.remove();
    await this.redis.del(...jobKeys(this.config.queue.prefix, e.j), ...blobs);
    // The event streams last: removing a job adds a 'removed' event naming it.
    await Promise.all([this.dropEvents(this.jobs.keys.events!, e), this.dropEvents(delivery.keys.events!, e)]);
    this.log?.info({ jobId: e.j }, 'retention TTL reached: job purged');
    return true;
  }

  /**
   * Whether HAND_OVER_WAIT_MS has passed since a sweep first found job `jobId` failed (that first sweep records `now`).
   * The record lives twice the wait and two sweeps: one that lapsed with every sweeper stopped makes the wait start
   * again, never end. (It lived twice the wait alone until 2026-12-08: with sweeps further apart than that, as
   * queue.retentionSweepMs allows, each sweep found it gone and began the wait again, and the job was never purged.)
   */
  private async waitedSinceFailed(jobId: string, now: number): Promise<boolean> {
    const key = `${this.config.queue.prefix}:failed-seen:${jobId}`;
    const lives = 2 * HAND_OVER_WAIT_MS + 2 * this.config.queue.retentionSweepMs;
    if ((await this.redis.set(key, String(now), 'PX', lives, 'NX')) === 'OK') {
      // Another process's sweep may have purged the job since this one read it (it found the listener's mark): the
      // record would then outlive the job (seen with three test files at once, 2026-12-08). Its purge removes the job
      // before its keys, so a job still here means any purge to come deletes this record too.
      if ((await this.redis.exists(this.jobs.toKey(jobId))) === 0) await this.redis.del(key);
      return false;
    }
    const seenAt = await this.redis.get(key);
    return seenAt !== null && now - Number(seenAt) >= HAND_OVER_WAIT_MS;
  }

  private async dropEvents(stream: string, e: Entry): Promise<void> {
    const entries = (await this.redis.xrange(stream, String(Math.max(0, e.t - STREAM_SLACK_MS)), '+')) as [string, string[]][];
    const ids = entries.filter(([, fields]) => fields.some((f) => f.includes(e.j))).map(([id]) => id);
    if (ids.length > 0) await this.redis.xdel(stream, ...ids);
  }

  private delivery(name: string): DeliveryQueue {
    let q = this.deliveries.get(name);
    // Stryker disable next-line ConditionalExpression: equivalent for what is purged; a Queue made again each time would only be wasteful
    if (!q) this.deliveries.set(name, (q = createDeliveryQueue(this.config, this.redis, name)));
    return q;
  }

  /** Sweep every queue.retentionSweepMs until stop(). */
  start(): void {
    this.timer = setInterval(() => {
      this.sweep().catch((err: unknown) => this.log?.warn({ err: (err as Error).message }, 'retention sweep failed'));
    }, this.config.queue.retentionSweepMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    // Stryker disable next-line ConditionalExpression: equivalent, clearInterval(undefined) does nothing
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping?.catch(() => undefined);
    // Stryker disable next-line ArrayDeclaration,ArrowFunction: equivalent, the queues run on the caller's connection, which BullMQ leaves open
    await Promise.all([this.jobs.close(), ...[...this.deliveries.values()].map((q) => q.close())]);
    this.deliveries.clear();
  }
}
