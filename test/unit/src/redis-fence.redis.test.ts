// ReplicaFence (src/redis.ts): an acceptance is confirmed to replicas by a write of the fence's own and a WAIT on a
// connection of its own, so the connection that wrote the job is never held up; callers arriving while a round is out
// share the next round. On the shared test Redis (no replica) every WAIT times out with 0; a real primary with a
// replica (own redis-server processes) answers 1 once the replica has what was written before the call.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AcceptanceLost, closeRedis, createRedis, isRedisConnectionError, ReplicaFence, type Redis } from '../../../src/redis.ts';
import { startRedisServer, type RedisProcess } from '../../doubles/redis-processes.ts';

const prefix = `t-fence-${randomUUID().slice(0, 8)}`;
let redis: Redis;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'fence-test');
});

afterAll(async () => {
  await redis.del(`${prefix}:fence`, `${prefix}:other`);
  await closeRedis(redis);
});

describe('ReplicaFence', () => {
  it('waits on a connection of its own: the shared connection answers while a WAIT is out', async () => {
    const fence = new ReplicaFence(redis, `${prefix}:fence`);
    try {
      const order: string[] = [];
      const confirmed = fence.confirm(1, 400).then((n) => (order.push('confirmed'), n)); // no replica: 400 ms, then 0
      await new Promise((r) => setTimeout(r, 50)); // the round's WAIT is out
      await redis.set(`${prefix}:other`, 'x').then(() => order.push('shared answered'));
      expect(await confirmed).toBe(0);
      expect(order).toEqual(['shared answered', 'confirmed']);
    } finally {
      await fence.close();
    }
  });

  it('lets every caller that arrives during a round share the next one: two fence writes for eleven callers', async () => {
    const key = `${prefix}:fence`;
    await redis.del(key);
    const fence = new ReplicaFence(redis, key);
    try {
      const first = fence.confirm(1, 300);
      await new Promise((r) => setTimeout(r, 50));
      // These may have written after the first round's fence: they must not be answered by that round.
      const later = Array.from({ length: 10 }, () => fence.confirm(1, 300).then(async (n) => ({ n, fenceAt: Number(await redis.get(key)) })));
      expect(await first).toBe(0);
      for (const { n, fenceAt } of await Promise.all(later)) expect({ n, fenceAt }).toEqual({ n: 0, fenceAt: 2 });
      expect(await redis.get(key)).toBe('2');
      // and a caller after both rounds starts a third
      expect(await fence.confirm(1, 50)).toBe(0);
      expect(await redis.get(key)).toBe('3');
    } finally {
      await fence.close();
    }
  });

  it('passes on an error other than a full Redis, and closes its own connection', async () => {
    const key = `${prefix}:wrong-type`;
    const name = `fence-${randomUUID().slice(0, 8)}`;
    const named = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', name);
    const fence = new ReplicaFence(named, key);
    const clients = async () => ((await redis.client('LIST')) as string).split('\n').filter((l) => l.includes(` name=${name} `)).length;
    try {
      await redis.hset(key, 'not', 'a counter');
      await expect(fence.confirm(1, 50)).rejects.toThrow(/WRONGTYPE/);
      expect(await clients()).toBe(2); // the shared one and the fence's own
      await fence.close();
      expect(await clients()).toBe(1);
    } finally {
      await redis.del(key);
      await closeRedis(named);
    }
  });

  it("refuses a caller whose job is not on the server it answers from (a failover took it): AcceptanceLost, the others' count", async () => {
    const fence = new ReplicaFence(redis, `${prefix}:fence`);
    try {
      await redis.set(`${prefix}:job-here`, 'accepted');
      const here = fence.confirm(1, 50, `${prefix}:job-here`);
      const gone = fence.confirm(1, 50, `${prefix}:job-gone`);
      const none = fence.confirm(1, 50);
      expect(await here).toBe(0);
      const lost = await gone.catch((e: unknown) => e);
      expect(lost).toBeInstanceOf(AcceptanceLost);
      expect((lost as Error).message).toBe(`${prefix}:job-gone is not on the Redis primary that answers now: the acceptance was lost in a failover`);
      expect(isRedisConnectionError(lost)).toBe(true); // the user is told nothing was queued, and to try again
      expect(await none).toBe(0);
    } finally {
      await redis.del(`${prefix}:job-here`);
      await fence.close();
    }
  });

  it('asks nothing when no replica is wanted', async () => {
    const key = `${prefix}:none`;
    const fence = new ReplicaFence(redis, key);
    expect(await fence.confirm(0, 1_000)).toBe(0);
    expect(await redis.exists(key)).toBe(0);
    await fence.close();
  });

  describe('with a real replica', () => {
    let primary: RedisProcess;
    let replica: RedisProcess;
    beforeAll(async () => {
      primary = await startRedisServer('repl-diskless-sync-delay 0\n');
      replica = await startRedisServer(`replicaof 127.0.0.1 ${primary.port}\nenable-debug-command yes\n`);
    });
    afterAll(async () => {
      await replica?.kill();
      await primary?.kill();
    });

    it('answers 1 once the replica holds what the shared connection wrote before the call; 0 while it cannot, or Redis is full', async () => {
      const shared = createRedis(`redis://127.0.0.1:${primary.port}`, 'fence-primary');
      const onReplica = createRedis(`redis://127.0.0.1:${replica.port}`, 'fence-replica');
      const fence = new ReplicaFence(shared, 'fence');
      try {
        for (let i = 0; ; i++) {
          if ((await shared.info('replication')).includes('connected_slaves:1') && (await onReplica.info('replication')).includes('master_link_status:up')) break;
          if (i > 200) throw new Error('the replica never synced');
          await new Promise((r) => setTimeout(r, 50));
        }
        for (let i = 0; i < 20; i++) {
          await shared.set(`job:${i}`, `accepted ${i}`);
          expect(await fence.confirm(1, 5_000)).toBe(1);
          expect(await onReplica.get(`job:${i}`)).toBe(`accepted ${i}`);
        }
        // A replica that cannot answer (asleep for 1 s) has not confirmed the write before the call: 0 after the wait.
        const asleep = onReplica.call('DEBUG', 'SLEEP', '1');
        await new Promise((r) => setTimeout(r, 50));
        await shared.set('job:late', 'accepted late');
        expect(await fence.confirm(1, 200)).toBe(0);
        await asleep;
        expect(await fence.confirm(1, 5_000)).toBe(1);
        expect(await onReplica.get('job:late')).toBe('accepted late');
        // A full Redis refuses the fence's write (the job before it was written): 0, the caller's warning, no throw.
        await shared.config('SET', 'maxmemory', '1');
        try {
          expect(await fence.confirm(1, 100)).toBe(0);
        } finally {
          await shared.config('SET', 'maxmemory', '0');
        }
      } finally {
        await fence.close();
        await closeRedis(shared);
        await closeRedis(onReplica);
      }
    });
  });
});
