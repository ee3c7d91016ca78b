// Handing one job's result to every request that joined it (single flight), and to the result cache. Used by the
// worker when a job ends (worker/after-job.ts) and by the bots when a queued leader is removed (cancel, purge).
// Each follower gets its own delivery job under its own job id, so the delivery consumer's ledger posts it exactly
// once, and a repeat of this hand-over (a worker re-running after a crash) adds nothing new. Each also gets its own
// copy of the leader's PNGs (BlobStore.share): a delivery releases the PNGs it posted (bots/core/delivery.ts), and the
// leader's may be posted, and released, before its followers' are.
import type { Redis } from '../redis.ts';
import type { BlobStore } from '../blobs/store.ts';
import type { Config } from '../config/schema.ts';
import { JobRequest, outputBlobKeys, parseStoredJson, retentionOf, type Destination, type JobResult } from '../jobs/contract.ts';
import { createDeliveryQueue, DELIVERY_JOB_NAME, deliveryQueueName, handOverTogether, type DeliveryQueue } from '../jobs/queue.ts';
import type { CheckOverrides, SharingConfig } from '../checks/policy.ts';
import { requestDigest, scopedDigest, sha256Hex } from './key.ts';
import type { ResultCache } from './results.ts';

/** Delivery queues by name, opened once and closed together. */
export class DeliveryQueues {
  private readonly queues = new Map<string, DeliveryQueue>();
  constructor(
    private readonly config: Pick<Config, 'queue' | 'blobs'>,
    private readonly redis: Redis,
  ) {}
  /**
   * Hand a result to its destination's delivery queue under its job id (a repeat is ignored by BullMQ). A CLI run's
   * queue takes this one result and is closed: kept, each left a Queue, and BullMQ's listeners on the shared
   * connection, until the process stopped. Its keys get the blobs' lifetime, as the worker's hand-over gives them
   * (worker/processor.ts): a CLI that was killed never deletes its queue.
   */
  async handOver(result: JobResult): Promise<void> {
    const options = { jobId: result.jobId }; // the queue's keep options, whatever the channel's TTL (src/jobs/retention.ts)
    const name = deliveryQueueName(result.destination as Destination);
    if (result.destination.platform === 'cli') {
      const once = createDeliveryQueue(this.config, this.redis, name, true); // the CLI's queue: its meta is the CLI's
      await handOverTogether(this.redis, once, result, options, { expireSeconds: this.config.blobs.ttlSeconds }).finally(() => once.close().catch(() => undefined)); // a close only removes its listeners from the shared connection
      return;
    }
    let q = this.queues.get(name);
    if (!q) this.queues.set(name, (q = createDeliveryQueue(this.config, this.redis, name)));
    await q.add(DELIVERY_JOB_NAME, result, options);
  }
  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}

/**
 * The request's digest, reading its input image from the blob store (undefined: not cacheable, or the image expired).
 * A channel with a retention TTL bypasses the cache and single flight: an entry or a flight would keep its prompt and
 * result past the TTL, and serve them to another channel.
 */
export async function digestOf(blobs: BlobStore, request: JobRequest, imageBytes?: Uint8Array): Promise<string | undefined> {
  if (retentionOf(request.destination) !== undefined) return undefined;
  if (request.kind === 'imagine') return requestDigest(request);
  const bytes = imageBytes ?? (await blobs.get(request.imageKey));
  return bytes ? requestDigest(request, sha256Hex(bytes)) : undefined;
}

/**
 * Where a leader's flight (and its result's cache entry) lives: as recorded when it was queued (ResultCache.recordFlight),
 * else (a job queued without a record) its digest in its channel's sharing scope now (src/checks/policy.ts sharingScope:
 * its checks and tenant). `queuedIn`: that scope; `current`: the scope its run used: `ranIn` when the caller knows it
 * (the worker's processor read it), else its channel's scope now (the same unless an admin changed it during the run).
 * Undefined: not cacheable.
 */
export async function leaderAddress(
  deps: { blobs: BlobStore; cache: ResultCache; overrides: CheckOverrides; config: SharingConfig },
  request: JobRequest,
  ranIn?: string,
): Promise<{ digest: string; queuedIn: string; current: string } | undefined> {
  if (retentionOf(request.destination) !== undefined) return undefined; // as digestOf: never cached, never a flight
  // The channel's policy is read only when the run's is not known: a Redis read saved per job the worker ends
  const [recorded, current] = await Promise.all([deps.cache.flightOf(request.id), ranIn ?? deps.overrides.scopeFor(deps.config, request.destination)]);
  if (recorded) return { digest: recorded.digest, queuedIn: recorded.scope, current };
  const digest = await digestOf(deps.blobs, request);
  return digest ? { digest: scopedDigest(digest, current), queuedIn: current, current } : undefined;
}

export const CHECKS_DIFFER =
  'The identical request yours joined was made under content checks that differ from this channel\'s (they may have changed while it waited), so its result was not shared with you; please send yours again.';

export const JOINED_CANCELLED = 'The identical request yours joined was cancelled by the person who sent it; please send yours again.';

/** What a follower receives: the leader's result under its own id and destination. */
export function followerResult(leader: JobResult, follower: JobRequest): JobResult {
  const base = { ...leader, jobId: follower.id, destination: follower.destination, servedFrom: 'shared' as const };
  if (leader.status !== 'cancelled') return base;
  return { ...base, status: 'failed', error: { code: 'cancelled', message: JOINED_CANCELLED, userFacing: true } };
}

/** What a follower whose content checks differ from the leader's receives: no image, no answer, a private note. */
function notShared(leader: JobResult, follower: JobRequest): JobResult {
  const { v, kind, timingsMs, finishedAt } = leader;
  return {
    v, jobId: follower.id, kind, destination: follower.destination, status: 'failed', servedFrom: 'shared', timingsMs, finishedAt,
    error: { code: 'bad_request', message: CHECKS_DIFFER, userFacing: true, private: true },
  };
}

/**
 * End the flight `leader` led and deliver `result` to each follower. Returns how many followers there were.
 * Safe to call again for the same leader (the same followers, the same delivery ids).
 */
export async function handOverToFollowers(
  deps: { cache: ResultCache; queues: DeliveryQueues; blobs: BlobStore },
  digest: string,
  leader: JobRequest,
  result: JobResult,
): Promise<number> {
  return handOverEach(deps, await deps.cache.close(digest, leader.id), result);
}

/**
 * Deliver `result` to each follower (their JSON, as ResultCache.close answers it). Returns how many there were.
 * `sharedWith`: whether a follower's channel may be handed what the leader's job made (its content checks alike);
 * one that may not is told to send its request again (CHECKS_DIFFER), privately.
 */
export async function handOverEach(
  deps: { queues: DeliveryQueues; blobs: BlobStore },
  followers: readonly string[],
  result: JobResult,
  sharedWith?: (follower: JobRequest) => Promise<boolean>,
): Promise<number> {
  for (const json of followers) {
    const follower = parseStoredJson(JobRequest, json);
    if (!follower) continue;
    if (sharedWith && !(await sharedWith(follower))) {
      await deps.queues.handOver(notShared(result, follower));
      continue;
    }
    await deps.queues.handOver(await withOwnImages(deps.blobs, followerResult(result, follower)));
  }
  return followers.length;
}

/**
 * A follower's result naming its own copies of the leader's PNGs. A PNG already gone (the leader's delivery released
 * it more than blobs.keepDeliveredSeconds before a crashed worker's re-run got here) keeps the leader's key: the
 * follower's delivery then says the image expired.
 */
async function withOwnImages(blobs: BlobStore, result: JobResult): Promise<JobResult> {
  if (!result.image) return result;
  const ttl = retentionOf(result.destination);
  const copies = new Map(await Promise.all(outputBlobKeys(result).map(async (k) => [k, (await blobs.share(k, result.jobId, ttl)) ?? k] as const)));
  const own = <T extends { blobKey: string }>(image: T): T => ({ ...image, blobKey: copies.get(image.blobKey)! });
  return { ...result, image: own(result.image), ...(result.images ? { images: result.images.map(own) } : {}) };
}
