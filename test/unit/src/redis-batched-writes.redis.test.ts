// Commands sent to one connection in one turn of the event loop leave in one socket write (src/redis.ts,
// batchWrites), on every connection createRedis makes: the first, its duplicates (BullMQ's blocking connections,
// QueueEvents) and what it reconnects with. Counted at the socket: each call of its _write or _writev is one write to
// the kernel. Without the batching, N commands are N writes. The Cluster case is in
// test/integration/redis-cluster.redis.test.ts, which has a cluster running.
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Redis as SingleRedis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { closeRedis, createRedis, duplicateRedis, type Redis } from '../../../src/redis.ts';
import { countWrites } from '../../doubles/socket-writes.ts';

const URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const open: Redis[] = [];

afterEach(async () => {
  for (const r of open.splice(0)) await closeRedis(r).catch(() => undefined);
});

/** Twenty INCRs sent in one turn: their replies, and the writes they took. */
async function twentyInOneTurn(redis: SingleRedis): Promise<{ replies: number[]; writes: number }> {
  await redis.ping(); // connected, its handshake written
  const writes = countWrites(redis.stream as Socket);
  const base = `batched-writes-test:${randomUUID()}`;
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => redis.incrby(`${base}:${i}`, i + 1)));
  await redis.del(...replies.map((_, i) => `${base}:${i}`));
  return { replies, writes: writes() - 1 }; // less the DEL's
}

const expected = Array.from({ length: 20 }, (_, i) => i + 1);

describe('batched writes', () => {
  it('sends the commands of one turn in one socket write, each with its own reply', async () => {
    const redis = createRedis(URL, 'batched-writes-test') as SingleRedis;
    open.push(redis);
    expect(await twentyInOneTurn(redis)).toEqual({ replies: expected, writes: 1 });
  });

  it('writes each turn when that turn ends: commands of two turns are two writes', async () => {
    const redis = createRedis(URL, 'batched-writes-test') as SingleRedis;
    open.push(redis);
    await redis.ping();
    const writes = countWrites(redis.stream as Socket);
    expect(await redis.echo('one')).toBe('one');
    expect(await redis.echo('two')).toBe('two');
    expect(writes()).toBe(2);
  });

  it("batches a duplicate's writes (BullMQ's blocking connections, QueueEvents), made either way", async () => {
    const redis = createRedis(URL, 'batched-writes-test') as SingleRedis;
    const copies = [duplicateRedis(redis) as SingleRedis, redis.duplicate(), (redis.duplicate() as SingleRedis).duplicate()];
    open.push(redis, ...copies);
    for (const copy of copies) expect(await twentyInOneTurn(copy)).toEqual({ replies: expected, writes: 1 });
  });

  it('batches the writes of the socket a reconnect opens', async () => {
    const redis = createRedis(URL, 'batched-writes-test') as SingleRedis;
    open.push(redis);
    await redis.ping();
    const first = redis.stream;
    const ready = new Promise<void>((resolve) => redis.once('ready', () => resolve()));
    redis.disconnect(true);
    await ready;
    expect(redis.stream).not.toBe(first);
    expect(await twentyInOneTurn(redis)).toEqual({ replies: expected, writes: 1 });
  });
});
