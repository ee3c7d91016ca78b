// Bytes by reference: input images and output PNGs never travel inside job data. They live here, with a TTL,
// and jobs carry the key. A small interface so an S3-compatible store can be added next to the Redis one.

export interface BlobStore {
  /** Store bytes; returns the key to put in a job. Expires after the configured TTL, or `ttlSeconds` if shorter. */
  put(bytes: Uint8Array, hint: 'input' | 'output', ttlSeconds?: number): Promise<string>;
  /** The bytes, or undefined if the key never existed or has expired. */
  get(key: string): Promise<Uint8Array | undefined>;
  delete(key: string): Promise<void>;
}
