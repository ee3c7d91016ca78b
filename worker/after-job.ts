// What a worker does once a job's result is handed over (worker/processor.ts calls it): count its measured
// GPU-seconds per channel, user and workspace (src/accounting/usage.ts), store a reproducible
// result in the result cache under this worker's model, then hand the result to every identical request that
// joined the job while it was queued or running (single flight). Throwing here makes BullMQ retry the job, whose
// re-run finds the result already handed over and calls this again: the cache put and the follower hand-over are
// both idempotent, so followers are delivered exactly once even if the worker dies in between.
// The three writes (usage settle, cache put, flight close) are one script: one round trip and one script call per job.
// Then the job's upload is released (releaseUpload): an /ask's at once, a vary's once its Re-roll window closes.
// The rate limits' slots are not freed here: the bot that posts the result frees them as its delivery starts
// (src/jobs/ledger.ts startDelivery), and the bots' completed/failed listener and sweep after (src/limits/gate.ts).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { combinedPreamble, NO_CALL, runCombined, type Redis, type ScriptCall } from '../src/redis.ts';
import { releaseUpload } from '../src/blobs/index.ts';
import type { BlobStore } from '../src/blobs/store.ts';
import { DeliveryQueues, handOverEach, leaderAddress } from '../src/cache/fanout.ts';
import { CheckOverrides } from '../src/checks/policy.ts';
import { closeLua, putLua, ResultCache } from '../src/cache/results.ts';
import type { Config } from '../src/config/schema.ts';
import { isWithheldCode } from '../src/errors.ts';
import { JobRequest, parseStoredJson, type JobResult } from '../src/jobs/contract.ts';
import type { Logger } from '../src/log.ts';
import { settleLua, Usage } from '../src/accounting/usage.ts';
import { MANIFEST_FILE } from './builder/manifest.ts';
import { inputWithheld } from './review.ts';

/**
 * The identity of the model this worker runs, for cache addresses: sha256 of the converted model's manifest.json
 * (graphs, dtype, builder version, source config hash). A swapped-in pipeline module (tests) has no manifest; it
 * is identified by its module path.
 */
export function modelIdentity(onnxDir: string | undefined, pipelineModule: string): string {
  const manifest = onnxDir ? join(onnxDir, MANIFEST_FILE) : undefined;
  if (manifest && existsSync(manifest)) return createHash('sha256').update(readFileSync(manifest)).digest('hex');
  return createHash('sha256').update(`pipeline:${pipelineModule}`).digest('hex');
}

/**
 * A job's completion in one script: the usage settle, then the cache put, then the close of the flight it led, each its
 * own module's script run as a function of its own KEYS and ARGV (a part with no keys is skipped: nothing to store,
 * or no flight). ARGV starts with the three parts' KEYS and ARGV counts, then their ARGV, in that order.
 * → {settled 1|0, evicted (or -1: too large, 0: skipped), follower JSON…}. The put comes before the close, so a
 * request arriving once the flight is over finds the entry. All keys are under queue.prefix (one slot in Cluster).
 */
const doneLua = `${combinedPreamble(3)}
local function usageSettle(KEYS, ARGV) ${settleLua} end
local function cachePut(KEYS, ARGV) ${putLua} end
local function closeFlight(KEYS, ARGV) ${closeLua} end
local out = { run(1, usageSettle), 0 }
if #calls[2][1] > 0 then out[2] = run(2, cachePut) end
if #calls[3][1] > 0 then for _, v in ipairs(run(3, closeFlight)) do table.insert(out, v) end end
return out
`;

/** Runs `calls` as doneLua's three parts, in one script call. */
const jobDone = (redis: Redis, calls: readonly ScriptCall[]) => runCombined(redis, 'blip3oJobDone', doneLua, calls) as Promise<(number | string)[]>;

/**
 * Whether a result holds what the leader's run made or decided under its content checks (an image, an answer, a
 * withheld verdict): followers get it only where the checks are alike. A cancel or an internal failure says nothing
 * about the content and goes to every follower.
 */
const carriesWork = (result: JobResult): boolean => result.status === 'succeeded' || isWithheldCode(result.error?.code);

export interface AfterJob {
  /** `png`: result.image's bytes when the caller has them (else they are read back from the blob store). */
  (request: JobRequest, result: JobResult, ranMs: number, png?: Uint8Array, checksScope?: string): Promise<void>;
}

export interface AfterJobService {
  afterHandOver: AfterJob;
  /** Publish the model identity now and every cache.manifestRefreshMs, until close(). */
  start(workerId: string): Promise<void>;
  close(): Promise<void>;
}

export function createAfterJob(deps: { config: Readonly<Config>; redis: Redis; blobs: BlobStore; log: Logger; manifestHash: string }): AfterJobService {
  const { config, redis, blobs, log, manifestHash } = deps;
  const cache = new ResultCache(redis, config);
  const queues = new DeliveryQueues(config, redis);
  const usage = new Usage(redis, config);
  const overrides = new CheckOverrides(redis, config.queue.prefix);
  let timer: NodeJS.Timeout | undefined;

  /** The cache put of a reproducible result under this worker's model, as a script call (NO_CALL: nothing to store). */
  async function store(digest: string, result: JobResult, made?: Uint8Array): Promise<ScriptCall> {
    // Stryker disable next-line ConditionalExpression,LogicalOperator: the status check is a second line, equivalent today: no failure carries an answer or an image
    if (!config.cache.enabled || result.status !== 'succeeded' || result.servedFrom) return NO_CALL;
    if (result.answer) return cache.putCall(manifestHash, digest, { kind: 'answer', text: result.answer.text, tokenCount: result.answer.tokenCount });
    if (!result.image) return NO_CALL;
    const png = made ?? (await blobs.get(result.image.blobKey));
    const { width, height, options, caption } = result.image;
    return png ? cache.putCall(manifestHash, digest, { kind: 'image', width, height, options, ...(caption ? { caption } : {}) }, png) : NO_CALL;
  }

  /** A follower's uploaded image, deleted now (one that has none, or cannot be read: nothing). */
  async function deleteUpload(follower: JobRequest | undefined): Promise<void> {
    if (follower && follower.kind !== 'imagine') await blobs.delete(follower.imageKey);
  }

  return {
    async afterHandOver(request, result, ranMs, png, checksScope) {
      // GPU-seconds: counted once per job (a re-run counts nothing again), and the admission estimate released;
      // the result stored; the flight ended and its followers read: one script
      // The flight is closed where it was claimed (the scope the job was queued in). The result is stored, and handed
      // to followers, only within the scope its run used (as the processor read it; else the channel's now): a channel
      // whose content checks differ, or another tenant (src/checks/policy.ts sharingScope), gets none of it.
      const address = await leaderAddress({ blobs, cache, overrides, config }, request, checksScope);
      const ranIn = address?.current;
      const sameChecksThroughout = address !== undefined && address.queuedIn === ranIn;
      const [, , ...followers] = await jobDone(redis, [
        usage.settleCall(request, result, ranMs),
        address && sameChecksThroughout ? await store(address.digest, result, png) : NO_CALL,
        address ? cache.closeCall(address.digest, request.id) : NO_CALL,
      ]);
      const sharedWith = async (follower: JobRequest) => (await overrides.scopeFor(config, follower.destination)) === ranIn;
      const handed = await handOverEach({ queues, blobs }, followers.map(String), result, carriesWork(result) ? sharedWith : undefined);
      if (handed > 0) log.info({ jobId: request.id, followers: handed }, 'result handed to identical requests that joined this job');
      // The checks flagged the input image: each follower's upload holds the same bytes, and goes as the leader's did.
      if (inputWithheld(result.error)) await Promise.all(followers.map((json) => deleteUpload(parseStoredJson(JobRequest, String(json)))));
      // Last: a re-run after a crash before this point still finds the upload for the digest above.
      // Stryker disable next-line StringLiteral: equivalent, releaseUpload treats every end but 'succeeded' and 'removed' as 'failed'
      await releaseUpload(blobs, config, request, result.status === 'succeeded' ? 'succeeded' : 'failed').catch((e: unknown) =>
        log.warn({ jobId: request.id, err: (e as Error).message }, 'could not release the uploaded image; it expires with blobs.ttlSeconds'));
    },
    async start(workerId) {
      const publish = () => cache.publishModel(manifestHash, workerId);
      await publish();
      timer = setInterval(() => void publish().catch((e: unknown) => log.warn({ err: (e as Error).message }, 'could not publish the model identity')), config.cache.manifestRefreshMs);
      timer.unref();
    },
    async close() {
      clearInterval(timer); // undefined before start()
      await queues.close();
    },
  };
}
