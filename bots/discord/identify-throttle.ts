// Gateway IDENTIFY spacing shared by every bot process of one Discord application, through Redis.
//
// Discord lets an application's shards start sessions `max_concurrency` at a time per 5 seconds: a shard belongs to
// the bucket `shard_id % max_concurrency`, and one IDENTIFY per bucket is allowed every 5 s (discord.com/developers/
// docs/events/gateway, "Session Start Limit" and "Max Concurrency"), counted over the application, not the process.
// discord.js spaces the shards of one process (its SimpleIdentifyThrottler); processes that each run some shards
// (discord.shards `0-3/8`, `4-7/8`) and start together would identify at once. Here each bucket is a Redis key that
// one IDENTIFY holds for 5 s, whichever process sends it.
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebSocketOptions } from 'discord.js';
import type { Redis } from '../../src/redis.ts';

/** Discord's window for one IDENTIFY per bucket. */
export const IDENTIFY_WINDOW_MS = 5_000;

type BuildThrottler = NonNullable<WebSocketOptions['buildIdentifyThrottler']>;

export class RedisIdentifyThrottler {
  /**
   * @param keyPrefix `<queue prefix>:discord-identify:<application id>`: one set of buckets per application, in the
   *   deployment's hash slot on a Cluster.
   * @param windowMs how long one IDENTIFY holds its bucket; shorter only against a fake Discord. @defaultValue IDENTIFY_WINDOW_MS
   */
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly maxConcurrency: number,
    private readonly windowMs = IDENTIFY_WINDOW_MS,
  ) {}

  /** This process's last IDENTIFY per bucket (ms since epoch): the spacing kept while Redis does not answer. */
  private readonly identifiedAt = new Map<number, number>();

  /**
   * Resolves when shard `shardId` may identify: its bucket's key was free and is now held for the window. While Redis
   * does not answer (an outage: the connection queues commands until it is back), the buckets are spaced in this
   * process only, as discord.js's own throttler does, rather than keeping the shard off the gateway until Redis is back;
   * an abort (the shard closed) ends the wait at once either way.
   */
  async waitForIdentify(shardId: number, signal: AbortSignal): Promise<void> {
    const bucket = shardId % this.maxConcurrency;
    const key = `${this.keyPrefix}:${bucket}`;
    for (;;) {
      signal.throwIfAborted();
      const held = await answerOf(this.redis.set(key, String(shardId), 'PX', this.windowMs, 'NX'), signal);
      if (held === undefined) return this.waitHere(bucket, signal);
      if (held === 'OK') return void this.identifiedAt.set(bucket, Date.now());
      // Held by another shard's IDENTIFY, here or in another process: wait out what is left of its window.
      const left = (await answerOf(this.redis.pttl(key), signal)) ?? this.windowMs;
      await sleep(Math.max(left, 0) + 25 + Math.random() * 250, undefined, { signal });
    }
  }

  private async waitHere(bucket: number, signal: AbortSignal): Promise<void> {
    const left = (this.identifiedAt.get(bucket) ?? 0) + this.windowMs - Date.now();
    if (left > 0) await sleep(left, undefined, { signal });
    this.identifiedAt.set(bucket, Date.now());
  }
}

/**
 * `call`'s answer; undefined if Redis failed or did not answer within the window; rejects at once on `signal`'s abort.
 * The window is a plain timer, not `AbortSignal.any([signal, AbortSignal.timeout(…)])`: Node holds a timeout signal
 * only weakly once it is a source of `any`, so after a garbage collection it never fired and the wait hung for the whole
 * outage (seen on Node 20.20 in CI, 2026-12-07).
 */
async function answerOf<T>(call: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  const answer = call.then((v) => v, () => undefined); // handled before anything can throw: no unhandled rejection
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  let window: NodeJS.Timeout | undefined;
  try {
    return await new Promise<T | undefined>((resolve, reject) => {
      onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      window = setTimeout(() => resolve(undefined), IDENTIFY_WINDOW_MS);
      void answer.then(resolve);
    });
  } finally {
    clearTimeout(window);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

/** discord.js's `ws.buildIdentifyThrottler`: the buckets of `applicationId` in Redis, sized by GET /gateway/bot. */
export function redisIdentifyThrottler(redis: Redis, queuePrefix: string, applicationId: string, windowMs = IDENTIFY_WINDOW_MS): BuildThrottler {
  return async (manager) => {
    const { session_start_limit: limit } = await manager.fetchGatewayInformation();
    return new RedisIdentifyThrottler(redis, `${queuePrefix}:discord-identify:${applicationId}`, Math.max(1, limit.max_concurrency), windowMs);
  };
}
