// The delivery consumer: a BullMQ Worker on a delivery queue that posts each JobResult through the platform's
// PlatformPort, exactly once:
//   1. parse the result (a malformed one fails at once, never retried);
//   2. skip it if the delivered-ledger already has its jobId (it was posted; only the ack was lost), else take the
//      delivery claim (one run at a time, even if BullMQ starts the job twice at once): one round trip;
//   3. fetch the PNG from the blob store (read in the same round trip as 2), call port.deliver (retried with
//      backoff on any throw);
//   4. record it in the ledger and give the claim back (one round trip); then BullMQ marks the delivery job completed;
//   5. release the result's PNGs: they were kept only for this delivery, and now go within blobs.keepDeliveredSeconds
//      instead of blobs.ttlSeconds (a day by default: a busy server's Redis would hold a day of images).
// A crash between 3 and 4 calls deliver again on the next try; PlatformPort.deliver is idempotent per jobId. A crash
// between 4 and 5 leaves the PNGs to their TTL.
import { randomUUID } from 'node:crypto';
import { UnrecoverableError, type Job, type Worker } from 'bullmq';
import type { Redis } from '../../src/redis.ts';
import type { BlobStore } from '../../src/blobs/store.ts';
import type { Config } from '../../src/config/schema.ts';
import { JobResult, logPlaceOf, outputBlobKeys, parseContract } from '../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../src/jobs/ledger.ts';
import { createQueueWorker, logWorkerError } from '../../src/jobs/queue.ts';
import type { Logger } from '../../src/log.ts';
import type { DeliveredAside, PlatformPort } from './port.ts';

export interface DeliveryDeps {
  config: Readonly<Config>;
  redis: Redis;
  blobs: BlobStore;
  ledger: DeliveryLedger;
  port: PlatformPort;
  log: Logger;
}

/**
 * 'delivered', 'duplicate' when the ledger shows it was already posted, or where the port says it went instead
 * (DeliveredAside: the requester's DM, or nowhere).
 */
export async function deliverOne(deps: DeliveryDeps, data: unknown): Promise<'delivered' | 'duplicate' | DeliveredAside> {
  let result: JobResult;
  try {
    result = parseContract(JobResult, data, 'job result');
  } catch (e) {
    throw new UnrecoverableError((e as Error).message); // parsing is pure: a retry would fail the same way
  }
  // One run posts at a time, even when BullMQ starts the same delivery job twice (its lock lapsed). One round trip:
  // the ledger check, the claim and the "delivering" mark (no progress edit may land on top of the result).
  const owner = randomUUID();
  const claimMs = deps.config.queue.lockDurationMs;
  // The image is read in the same round trip (only a read: wasted on a duplicate, which is rare).
  const firstImage = result.image ? deps.blobs.get(result.image.blobKey) : undefined;
  firstImage?.catch(() => undefined); // awaited below unless this run does not post; a failure is thrown there
  const start = await deps.ledger.startDelivery(result.jobId, owner, claimMs);
  const outputs = outputBlobKeys(result);
  if (start === 'duplicate') {
    await releaseOutputs(deps, result.jobId, outputs); // a run that posted may have died before releasing them
    return 'duplicate';
  }
  if (start === 'busy') throw new DeliveryInProgress(result.jobId);
  const renew = setInterval(() => void deps.ledger.renewClaim(result.jobId, owner, claimMs).catch(() => undefined), claimMs / 2);
  let finished = false;
  let aside: DeliveredAside | undefined;
  try {
    let image: Uint8Array | undefined;
    let gallery: Uint8Array[] | undefined;
    if (result.image) {
      image = await firstImage;
      if (image && result.images) {
        const all = await Promise.all(result.images.map((i) => (i.blobKey === result.image!.blobKey ? image : deps.blobs.get(i.blobKey))));
        if (all.every((b): b is Uint8Array => b !== undefined)) gallery = all;
        else image = undefined; // part of the gallery expired: treated like an expired image
      }
      if (!image) {
        // The PNG expired before anyone could post it (bots down longer than blobs.ttlSeconds): say so rather than fail silently.
        deps.log.warn({ jobId: result.jobId, kind: result.kind, ...logPlaceOf(result.destination) }, 'the image expired before it could be posted (blobs.ttlSeconds passed while no bot delivered it)');
        result = { ...result, status: 'failed', image: undefined, images: undefined, error: { code: 'internal', message: 'The image expired before it could be posted. Please try again.', userFacing: true } };
      }
    }
    aside = (await (gallery ? deps.port.deliver(result, image, gallery) : deps.port.deliver(result, image))) ?? undefined;
    // Posted: the ledger mark now answers every later run, and the claim is given back in the same round trip.
    await deps.ledger.finishDelivery(result.jobId, owner);
    // Stryker disable next-line BooleanLiteral: equivalent, finishDelivery gave the claim back, so releasing it again is a no-op
    finished = true;
  } finally {
    clearInterval(renew);
    // Failed (the retry may post at once, without waiting for the claim to expire).
    // Stryker disable next-line ConditionalExpression: equivalent, after finishDelivery the claim is no longer ours to release
    if (!finished) await deps.ledger.releaseClaim(result.jobId, owner).catch(() => undefined);
  }
  deps.log.info({ jobId: result.jobId, status: result.status, ...(aside ? { to: aside } : {}) }, aside === 'nowhere' ? 'not delivered: nowhere takes it' : 'delivered');
  await releaseOutputs(deps, result.jobId, outputs);
  return aside ?? 'delivered';
}

/** After the ledger mark: no run posts these again. A failure only leaves them to their TTL, as before this step existed. */
async function releaseOutputs(deps: DeliveryDeps, jobId: string, keys: readonly string[]): Promise<void> {
  const grace = deps.config.blobs.keepDeliveredSeconds;
  await Promise.all(keys.map((k) => deps.blobs.release(k, grace))).catch((e: unknown) =>
    deps.log.warn({ jobId, err: (e as Error).message }, 'could not release the delivered images; they expire with blobs.ttlSeconds'));
}

/** Another run of this delivery is posting it right now: retry later (then the ledger says 'duplicate'). */
export class DeliveryInProgress extends Error {
  override readonly name = 'DeliveryInProgress';
  constructor(jobId: string) {
    super(`the result of ${jobId} is being posted by another delivery run`);
  }
}

/**
 * How often a delivery job may be taken back from a bot that died holding it. Not queue.maxStalledCount (2, meant for
 * GPU jobs that may be what kills their worker): past it BullMQ fails a job without running it, and a result whose
 * bot crashed three times while posting it (a crash-looping pod during a long 429 wait) was dropped, never posted. A
 * re-run is safe (the claim and the ledger post it once); the bound only ends a delivery that itself kills every bot.
 */
export const DELIVERY_MAX_STALLED = 50;

export function startDeliveryWorker(deps: DeliveryDeps, queueName: string, concurrency = 4): Worker<JobResult, string> {
  const worker = createQueueWorker<JobResult, string>(deps.config, deps.redis, queueName, (job: Job<JobResult>) => deliverOne(deps, job.data), {
    concurrency,
    maxStalledCount: DELIVERY_MAX_STALLED,
  });
  worker.on('failed', (job, err) => {
    const attempt = { jobId: job?.id, attempts: job?.attemptsMade, err: err.message };
    const final = !job || err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    if (!final) return void deps.log.warn(attempt, 'delivery attempt failed');
    // Nothing posts it now: the one line an admin asked "my result never came" finds by the job id.
    const parsed = JobResult.safeParse(job?.data);
    const where = parsed.success ? { kind: parsed.data.kind, status: parsed.data.status, ...logPlaceOf(parsed.data.destination) } : {};
    deps.log.error({ ...attempt, ...where, stack: err.stack }, 'delivery failed for good: the result was not posted');
  });
  worker.on('error', (err) => logWorkerError(deps.log, err, 'delivery worker error'));
  return worker;
}
