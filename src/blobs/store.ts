// Bytes by reference: input images and output PNGs never travel inside job data. They live here, with a TTL,
// and jobs carry the key. A small interface so an S3-compatible store can be added next to the Redis one.
import type { Redis } from '../redis.ts';

export interface BlobStore {
  /** Store bytes; returns the key to put in a job. Expires after the configured TTL, or `ttlSeconds` if shorter. */
  put(bytes: Uint8Array, hint: 'input' | 'output', ttlSeconds?: number): Promise<string>;
  /**
   * Only a store kept in Redis has this, and only for its own connection `redis` (else undefined): the key chosen now
   * and the SET that stores `bytes` under it, for a caller that sends the SET inside its own MULTI on `redis` (the
   * worker's hand-over: the PNG and the delivery job that names it land together or not at all, in one round trip).
   * A store elsewhere (S3) leaves it out; its callers await put before writing anything that names the key.
   */
  prepare?(redis: Redis, bytes: Uint8Array, hint: 'input' | 'output', ttlSeconds?: number): PreparedBlob | undefined;
  /** The bytes, or undefined if the key never existed or has expired. */
  get(key: string): Promise<Uint8Array | undefined>;
  delete(key: string): Promise<void>;
  /**
   * Its last reader is done (an output PNG whose delivery is recorded): the blob goes `graceSeconds` from now, or
   * when it would have anyway if that is sooner (a channel's retention TTL is never lengthened).
   */
  release(key: string, graceSeconds: number): Promise<void>;
  /**
   * A copy of `key` for another reader (an identical request's delivery, which releases its own copy), under a key
   * made of `key` and `readerId` (a repeat finds the first copy), living the store's TTL, or `ttlSeconds` if shorter.
   * Undefined when `key` is gone.
   */
  share(key: string, readerId: string, ttlSeconds?: number): Promise<string | undefined>;
}

/** A blob not stored yet: its key, and the arguments of the SET that stores it (key, bytes, 'EX', seconds). */
export interface PreparedBlob {
  key: string;
  set: [key: string, value: Buffer, expiry: 'EX', seconds: number];
}
