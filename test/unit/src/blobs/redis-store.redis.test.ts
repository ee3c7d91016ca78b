// The Redis blob store over real Redis: put, get and delete within the prefix only, a SET prepared for its own
// connection only; release shortens a blob's life to a
// grace and never lengthens it; share copies a blob for another reader under a key derived from both, once, with the
// store's TTL (or a shorter one), and answers undefined for a blob that is gone.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../../../src/blobs/index.ts';
import type { BlobStore } from '../../../../src/blobs/store.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../../src/redis.ts';

const prefix = `t-blobs-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix }, blobs: { ttlSeconds: 3600 } } });
let redis: Redis;
let blobs: BlobStore;
const png = Uint8Array.from([137, 80, 78, 71, 1, 2, 3]);
/** A key outside the blobs' space (under this file's prefix, so afterAll deletes it whatever a run leaves behind). */
const elsewhere = `${prefix}:not-a-blob`;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  blobs = createBlobStore(config, redis);
});
afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('RedisBlobStore', () => {
  it('puts under the prefix with the configured TTL, or a shorter one asked for, and reads nothing outside it', async () => {
    const key = await blobs.put(png, 'output');
    expect(key.startsWith(`${prefix}:blob:output:`)).toBe(true);
    expect(await redis.ttl(key)).toBeGreaterThan(3590);
    expect(await redis.ttl(await blobs.put(png, 'input', 60))).toBeLessThanOrEqual(60);
    expect(await redis.ttl(await blobs.put(png, 'input', 7200))).toBeLessThanOrEqual(3600); // never longer than the store's
    await redis.set(elsewhere, 'x');
    expect(await blobs.get(elsewhere)).toBeUndefined();
    await blobs.delete(elsewhere);
    await blobs.release(elsewhere, 1);
    expect(await redis.get(elsewhere)).toBe('x');
    expect(await redis.ttl(elsewhere)).toBe(-1);
    await redis.del(elsewhere);
    await blobs.delete(key);
    expect(await blobs.get(key)).toBeUndefined();
  });

  it('prepares a SET only for its own connection (another connection\'s MULTI would not carry it)', async () => {
    const prepared = blobs.prepare!(redis, png, 'output', 60);
    expect(prepared?.key.startsWith(`${prefix}:blob:output:`)).toBe(true);
    expect(prepared?.set.slice(2)).toEqual(['EX', 60]);
    const other = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'other');
    try {
      expect(blobs.prepare!(other, png, 'output')).toBeUndefined();
    } finally {
      await closeRedis(other);
    }
  });

  it('release: the blob goes within the grace, a shorter TTL stays as it was, a missing blob is no error', async () => {
    const key = await blobs.put(png, 'output');
    await blobs.release(key, 120);
    const ttl = await redis.ttl(key);
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
    expect(await blobs.get(key)).toEqual(png); // still readable in the grace
    const short = await blobs.put(png, 'output', 30); // a channel's retention TTL
    await blobs.release(short, 120);
    expect(await redis.ttl(short)).toBeLessThanOrEqual(30);
    const forever = `${prefix}:blob:output:no-ttl`;
    await redis.set(forever, 'x'); // written by hand, without a TTL: released all the same
    await blobs.release(forever, 120);
    expect(await redis.ttl(forever)).toBeLessThanOrEqual(120);
    await blobs.release(`${prefix}:blob:output:gone`, 120);
    expect(await redis.exists(`${prefix}:blob:output:gone`)).toBe(0); // not created
  });

  it('share: a copy per reader with the full TTL, the same key on a repeat, undefined once the blob is gone', async () => {
    const key = await blobs.put(png, 'output');
    await blobs.release(key, 5); // the leader's delivery released it first
    const copy = await blobs.share(key, 'j2');
    expect(copy).toBe(`${key}:j2`);
    expect(await blobs.get(copy!)).toEqual(png);
    expect(await redis.ttl(copy!)).toBeGreaterThan(3590); // not the leader's 5 s
    await redis.set(copy!, 'changed', 'KEEPTTL');
    expect(await blobs.share(key, 'j2')).toBe(copy); // a repeat (a worker's re-run) copies nothing again
    expect(await redis.get(copy!)).toBe('changed');
    expect(await redis.ttl((await blobs.share(key, 'j3', 60))!)).toBeLessThanOrEqual(60); // a reader's retention TTL
    await redis.del(key);
    expect(await blobs.share(key, 'j4')).toBeUndefined();
    expect(await redis.exists(`${key}:j4`)).toBe(0);
    await redis.set(elsewhere, 'x');
    expect(await blobs.share(elsewhere, 'j5')).toBeUndefined(); // outside the prefix: not copied
    expect(await redis.exists(`${elsewhere}:j5`)).toBe(0);
    await redis.del(elsewhere);
  });
});
