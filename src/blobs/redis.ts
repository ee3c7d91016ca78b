// BlobStore on Redis: one string key per blob, `<prefix>:blob:<input|output>:<uuid>`, SET … EX ttlSeconds.
import { randomUUID } from 'node:crypto';
import type { Redis } from '../redis.ts';
import type { BlobStore, PreparedBlob } from './store.ts';

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
    if (!key.startsWith(`${this.prefix}:blob:`)) return undefined; // keys come from Redis job data: never read outside our space
    const buf = await this.redis.getBuffer(key);
    return buf ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) : undefined;
  }

  async delete(key: string): Promise<void> {
    if (key.startsWith(`${this.prefix}:blob:`)) await this.redis.del(key);
  }
}
