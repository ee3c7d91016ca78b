// Picks the blob store named by config.blobs.store. Add an S3-compatible store as a new case here.
import type { Redis } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import { RedisBlobStore } from './redis.ts';
import type { BlobStore } from './store.ts';

export type { BlobStore };

export function createBlobStore(config: Pick<Config, 'blobs' | 'queue'>, redis: Redis): BlobStore {
  switch (config.blobs.store) {
    case 'redis':
      return new RedisBlobStore(redis, config.queue.prefix, config.blobs.ttlSeconds);
  }
}
