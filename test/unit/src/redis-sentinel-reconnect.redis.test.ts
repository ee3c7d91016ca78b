// A Sentinel connection that ioredis ends in a failover connects again (src/redis.ts, reconnectWhenDropped).
// ioredis 6's failover detector answers the sentinels' +switch-master with connector.disconnect(); when that lands
// while the connection, which lost its primary, is asking a sentinel where the primary is, the connector gives up
// ("Connection is closed.") and the connection ends for good. The Sentinel failover test hit it under load (a bot's
// connection ended, and the results handed to its delivery queue were never taken). Here the detector's call is made
// at exactly that moment (the connection's 'connecting' event), on real redis-server / redis-sentinel processes.
import { randomUUID } from 'node:crypto';
import type { Redis as SingleRedis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeRedis, createRedis, disconnectRedis, duplicateRedis } from '../../../src/redis.ts';
import { startSentinelSet, type SentinelSet } from '../../doubles/redis-processes.ts';

let set: SentinelSet;

beforeAll(async () => {
  set = await startSentinelSet(`r${randomUUID().slice(0, 6)}`);
}, 60_000);

afterAll(async () => {
  await set?.stop();
});

/** Lose the connection, and close its connector while it asks the sentinels for the primary, as +switch-master does. */
async function dropInFailover(redis: SingleRedis): Promise<void> {
  const connector = (redis as unknown as { connector: { disconnect(): void } }).connector;
  const ended = new Promise<void>((resolve) => redis.once('end', () => resolve()));
  redis.once('connecting', () => connector.disconnect());
  redis.disconnect(true); // as the primary dying does: ioredis reconnects, asking the sentinels again
  await ended;
}

describe.each([
  ['a connection from createRedis', async () => createRedis(set.url, 'reconnect-test')],
  [
    'its duplicate (QueueEvents, subscribers)',
    async () => {
      const first = createRedis(set.url, 'reconnect-test');
      const copy = duplicateRedis(first);
      await closeRedis(first);
      return copy;
    },
  ],
])('Sentinel: %s', (_, open) => {
  it('connects again after ioredis ends it mid-failover, and stays closed once closed on purpose', async () => {
    const redis = (await open()) as SingleRedis;
    const key = `reconnect-test:${randomUUID()}`;
    expect(await redis.set(key, '1', 'EX', 60)).toBe('OK');
    await dropInFailover(redis);
    // Without the reconnect every command from here on fails with "Connection is closed.", for ever.
    expect(await redis.get(key)).toBe('1');
    expect(redis.status).toBe('ready');
    await closeRedis(redis);
    await new Promise((r) => setTimeout(r, 200));
    expect(redis.status).toBe('end');
  }, 30_000);
});

describe('Sentinel: a connection closed on purpose while it looks for the primary', () => {
  it('stays closed (disconnectRedis: the CLI giving up on an unreachable Redis)', async () => {
    const redis = createRedis(set.url, 'reconnect-test') as SingleRedis;
    await redis.ping();
    const ended = new Promise<void>((resolve) => redis.once('end', () => resolve()));
    redis.once('connecting', () => disconnectRedis(redis));
    redis.disconnect(true);
    await ended;
    await new Promise((r) => setTimeout(r, 300));
    expect(redis.status).toBe('end');
  }, 30_000);
});
