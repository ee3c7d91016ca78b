// createJobsEvents owns the blocking connection it duplicates: closing the QueueEvents must close that connection
// too (BullMQ leaves a passed-in connection open), or every bot restart inside one process leaks a Redis client.
import { randomUUID } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import type { Redis } from 'ioredis';
import { loadConfig } from '../../../../src/config/load.ts';
import pino from 'pino';
import { createJobsEvents, createJobsQueue } from '../../../../src/jobs/queue.ts';
import { closeRedis, createRedis, setRedisLogger } from '../../../../src/redis.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('createJobsEvents', () => {
  it('closes its own duplicated connection on close(), and leaves the caller’s open', async () => {
    const config = loadConfig({ env: {} });
    const redis = createRedis(url) as Redis; // a single-node connection: its duplicate() is what createJobsEvents calls
    const duplicates: Redis[] = [];
    const duplicate = redis.duplicate.bind(redis);
    vi.spyOn(redis, 'duplicate').mockImplementation((...args) => {
      const d = duplicate(...args);
      duplicates.push(d);
      return d;
    });
    const events = createJobsEvents({ queue: { ...config.queue, prefix: `t-qe-${randomUUID().slice(0, 8)}` } }, redis);
    await events.waitUntilReady();
    expect(duplicates).toHaveLength(1);
    const owned = duplicates[0]!;
    await vi.waitFor(() => expect(owned.status).toBe('ready'), { timeout: 5_000 }); // BullMQ may be ready before it is (seen at load ≈ 13)
    await events.close();
    await vi.waitFor(() => expect(owned.status).toBe('end'), { timeout: 5_000 }); // 'end' follows QUIT's reply once the socket closes
    expect(await redis.ping()).toBe('PONG');
    await closeRedis(redis);
  });

  it('still closes its connection when QUIT fails (a connection lost mid-way): it disconnects instead', async () => {
    const config = loadConfig({ env: {} });
    const redis = createRedis(url) as Redis;
    let owned: Redis | undefined;
    const duplicate = redis.duplicate.bind(redis);
    vi.spyOn(redis, 'duplicate').mockImplementation((...args) => (owned = duplicate(...args)));
    const events = createJobsEvents({ queue: { ...config.queue, prefix: `t-qe-${randomUUID().slice(0, 8)}` } }, redis);
    await events.waitUntilReady();
    const quit = vi.spyOn(owned!, 'quit').mockRejectedValue(new Error('Connection is closed.'));
    await events.close();
    expect(quit).toHaveBeenCalledOnce();
    await vi.waitFor(() => expect(owned!.status).toBe('end'), { timeout: 5_000 }); // without disconnect() it stays 'ready'
    await closeRedis(redis);
  });
});

describe('BullMQ objects made here', () => {
  it('report a lost Redis connection once, through the Redis logger, naming the redacted address', async () => {
    const config = loadConfig({ env: {} });
    const redis = createRedis(url);
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    setRedisLogger(logger);
    const queue = createJobsQueue({ queue: { ...config.queue, prefix: `t-qe-${randomUUID().slice(0, 8)}` } }, redis);
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    queue.emit('error', refused);
    queue.emit('error', refused);
    expect(warnings.filter((l) => l.includes('cannot reach Redis at 127.0.0.1:6379'))).toHaveLength(1);
    await queue.close();
    await closeRedis(redis);
  });
});
