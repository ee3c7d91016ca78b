// Picks the blob store named by config.blobs.store. Add an S3-compatible store as a new case here.
import type { Redis } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import type { JobRequest } from '../jobs/contract.ts';
import { RedisBlobStore } from './redis.ts';
import type { BlobStore } from './store.ts';

export type { BlobStore };

/**
 * Release a request's upload once its job is over (a no-op for an /imagine, which has none), for as long as it is
 * still read: an /ask's by nothing (blobs.keepDeliveredSeconds), a vary's by a Re-roll of it, which the bots accept
 * while the job's data is kept (queue.keepCompletedSeconds once it succeeded or was served without a job,
 * keepFailedSeconds once it failed); a job removed before it ran, by nothing.
 */
export function releaseUpload(blobs: BlobStore, config: Pick<Config, 'blobs' | 'queue'>, request: JobRequest, end: 'succeeded' | 'failed' | 'removed'): Promise<void> {
  if (request.kind === 'imagine') return Promise.resolve();
  const seconds =
    request.kind === 'ask' || end === 'removed' ? config.blobs.keepDeliveredSeconds : end === 'succeeded' ? config.queue.keepCompletedSeconds : config.queue.keepFailedSeconds;
  return blobs.release(request.imageKey, seconds);
}

export function createBlobStore(config: Pick<Config, 'blobs' | 'queue'>, redis: Redis): BlobStore {
  switch (config.blobs.store) {
    case 'redis':
      return new RedisBlobStore(redis, config.queue.prefix, config.blobs.ttlSeconds);
  }
}
