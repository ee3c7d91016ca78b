// One place that opens Redis connections. BullMQ needs `maxRetriesPerRequest: null` on connections it
// blocks on (workers, QueueEvents), so every connection we hand it is made here.
import { Redis } from 'ioredis';

export type { Redis };

/** A new connection to `url` (REDIS_URL). Callers own it and must `quit()` it. */
export function createRedis(url: string, name?: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, ...(name ? { connectionName: name } : {}) });
}

/** Close a connection without throwing if it is already gone. */
export async function closeRedis(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}
