// BlobStore on Redis: one string key per blob, `<prefix>:blob:<input|output>:<uuid>`, SET … EX ttlSeconds; a shared
// copy is `<that key>:<reader id>` (same hash tag, so the same Redis Cluster slot).
import { randomUUID } from 'node:crypto';
import type { Redis } from '../redis.ts';
import type { BlobStore, PreparedBlob } from './store.ts';

/** KEYS blob · ARGV seconds: expire within `seconds`, never later than the blob's own TTL (any Redis; EXPIRE LT is 7.0+). */
const RELEASE_LUA = `local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then return 0 end
if ttl == -1 or ttl > tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1`;
/** KEYS blob, copy · ARGV seconds → 1 copied (or copied before), 0 the blob is gone. COPY: Redis 6.2+. */
const SHARE_LUA = `if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
if redis.call('COPY', KEYS[1], KEYS[2]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1`;

interface BlobCommands {
  blip3oBlobRelease(key: string, seconds: number): Promise<number>;
  blip3oBlobShare(key: string, copy: string, seconds: number): Promise<number>;
}

function withCommands(redis: Redis): Redis & BlobCommands {
  const r = redis as Redis & Partial<BlobCommands>;
  // Stryker disable next-line ConditionalExpression: defining the commands again defines the same scripts
  if (typeof r.blip3oBlobRelease !== 'function') {
    redis.defineCommand('blip3oBlobRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
    redis.defineCommand('blip3oBlobShare', { numberOfKeys: 2, lua: SHARE_LUA });
  }
  return r as Redis & BlobCommands;
}

export class RedisBlobStore implements BlobStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** Seconds a blob lives. @defaultValue config.blobs.ttlSeconds */
    private readonly ttlSeconds: number,
  ) {}

  async put(bytes: Uint8Array, hint: 'input' | 'output', ttlSeconds?: number): Promise<string> {
    const { key, set } = this.prepare(this.redis, bytes, hint, ttlSeconds)!;
    await this.redis.set(...set);
    return key;
  }

  prepare(redis: Redis, bytes: Uint8Array, hint: 'input' | 'output', ttlSeconds?: number): PreparedBlob | undefined {
    if (redis !== this.redis) return undefined; // another connection: a MULTI there would not carry this store's write
    const key = `${this.prefix}:blob:${hint}:${randomUUID()}`;
    const ttl = Math.min(this.ttlSeconds, ttlSeconds ?? this.ttlSeconds); // a channel's retention TTL only shortens it
    return { key, set: [key, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 'EX', ttl] };
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    if (!this.ours(key)) return undefined;
    const buf = await this.redis.getBuffer(key);
    return buf ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) : undefined;
  }

  async delete(key: string): Promise<void> {
    if (this.ours(key)) await this.redis.del(key);
  }

  async release(key: string, graceSeconds: number): Promise<void> {
    if (this.ours(key)) await withCommands(this.redis).blip3oBlobRelease(key, Math.max(1, Math.ceil(graceSeconds)));
  }

  async share(key: string, readerId: string, ttlSeconds?: number): Promise<string | undefined> {
    if (!this.ours(key)) return undefined;
    const copy = `${key}:${readerId}`;
    const ttl = Math.min(this.ttlSeconds, ttlSeconds ?? this.ttlSeconds);
    return (await withCommands(this.redis).blip3oBlobShare(key, copy, ttl)) === 1 ? copy : undefined;
  }

  /** Keys come from Redis job data: never touch one outside our space. */
  private ours(key: string): boolean {
    return key.startsWith(`${this.prefix}:blob:`);
  }
}
