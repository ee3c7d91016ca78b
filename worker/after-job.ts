// What a worker does once a job's result is handed over (worker/processor.ts calls it): count its measured
// GPU-seconds per channel, user and workspace (src/accounting/usage.ts), store a reproducible
// result in the result cache under this worker's model, then hand the result to every identical request that
// joined the job while it was queued or running (single flight). Throwing here makes BullMQ retry the job, whose
// re-run finds the result already handed over and calls this again: the cache put and the follower hand-over are
// both idempotent, so followers are delivered exactly once even if the worker dies in between.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from '../src/redis.ts';
import type { BlobStore } from '../src/blobs/store.ts';
import { DeliveryQueues, digestOf, handOverToFollowers } from '../src/cache/fanout.ts';
import { ResultCache } from '../src/cache/results.ts';
import type { Config } from '../src/config/schema.ts';
import type { JobRequest, JobResult } from '../src/jobs/contract.ts';
import type { Logger } from '../src/log.ts';
import { Usage } from '../src/accounting/usage.ts';
import { MANIFEST_FILE } from './builder/manifest.ts';

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

export interface AfterJob {
  (request: JobRequest, result: JobResult, ranMs: number): Promise<void>;
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
  let timer: NodeJS.Timeout | undefined;

  async function store(digest: string, result: JobResult): Promise<void> {
    if (!config.cache.enabled || result.status !== 'succeeded' || result.servedFrom) return;
    if (result.answer) {
      await cache.put(manifestHash, digest, { kind: 'answer', text: result.answer.text, tokenCount: result.answer.tokenCount });
      return;
    }
    if (!result.image) return;
    const png = await blobs.get(result.image.blobKey);
    if (png) await cache.put(manifestHash, digest, { kind: 'image', width: result.image.width, height: result.image.height }, png);
  }

  return {
    async afterHandOver(request, result, ranMs) {
      // GPU-seconds: counted once per job (a re-run counts nothing again), and the admission estimate released
      await usage.settle(request, result, ranMs);
      const digest = await digestOf(blobs, request);
      if (!digest) return;
      await store(digest, result); // first, so a request arriving after the flight ends finds the entry
      const followers = await handOverToFollowers({ cache, queues }, digest, request, result);
      if (followers > 0) log.info({ jobId: request.id, followers }, 'result handed to identical requests that joined this job');
    },
    async start(workerId) {
      const publish = () => cache.publishModel(manifestHash, workerId);
      await publish();
      timer = setInterval(() => void publish().catch((e: unknown) => log.warn({ err: (e as Error).message }, 'could not publish the model identity')), config.cache.manifestRefreshMs);
      timer.unref();
    },
    async close() {
      if (timer) clearInterval(timer);
      await queues.close();
    },
  };
}
