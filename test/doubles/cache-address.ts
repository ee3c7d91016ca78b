// The address a request's cache entry and flight live under: its digest within its channel's sharing scope
// now (what bots/core/submit.ts computes), for tests that put or look up entries themselves.
import type { BlobStore } from '../../src/blobs/store.ts';
import { digestOf } from '../../src/cache/fanout.ts';
import { scopedDigest } from '../../src/cache/key.ts';
import { CheckOverrides } from '../../src/checks/policy.ts';
import type { Config } from '../../src/config/schema.ts';
import type { JobRequest } from '../../src/jobs/contract.ts';
import type { Redis } from '../../src/redis.ts';

export async function cacheAddress(deps: { redis: Redis; config: Readonly<Config>; blobs: BlobStore }, request: JobRequest): Promise<string | undefined> {
  const { redis, config, blobs } = deps;
  const digest = await digestOf(blobs, request);
  return digest && scopedDigest(digest, await new CheckOverrides(redis, config.queue.prefix).scopeFor(config, request.destination));
}
