// One Redis, as the compose file runs it (AOF, fsync every second), SIGKILLed mid-load (the kernel's OOM killer, a
// crash) and restarted from its AOF 3 s later, with a real worker process and four in-process cores on the CLI path:
// the most common way a self-hosted deployment loses its Redis. A killed process loses nothing it had written to its
// AOF (the kernel holds it; only a host crash loses the last second), and every connection reconnects and re-sends
// what was in flight: every accepted job is delivered exactly once, and requests sent while Redis is down wait for it
// (a refusal, if one came, must be the plain retry message; in the runs measured all 100 were accepted).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHarness, startWorker, type Proc } from '../doubles/spine-harness.ts';
import { startRedisServer, type RedisProcess } from '../doubles/redis-processes.ts';
import { expectDeliveredOnce, expectServedAfter, loadAcrossKill, startClients, stopAll, type LoadClient } from '../doubles/failover-load.ts';

let redis: RedisProcess;
let worker: Proc | undefined;
let clients: LoadClient[] = [];
let url = '';

const h = makeHarness({
  queue: { attempts: 5, backoffMs: 200, lockDurationMs: 4_000, stalledIntervalMs: 2_000, maxStalledCount: 5 },
  worker: { concurrency: 4, pipelineExtra: { stepDelayMs: 20 } },
});

beforeAll(async () => {
  redis = await startRedisServer('appendonly yes\nappendfsync everysec\n');
  url = `redis://127.0.0.1:${redis.port}`;
  worker = await startWorker(h, { REDIS_URL: url });
}, 180_000);

afterAll(() => stopAll(clients, worker, { stop: () => redis.kill() }));

describe('one Redis with AOF', () => {
  it('SIGKILLed mid-load and restarted from its AOF: every accepted job delivered exactly once', async () => {
    clients = await startClients(h, url, 4);
    const { replies, killedAt, answeredMs } = await loadAcrossKill(clients, 0, 100, 40, async () => {
      await redis.crash();
      setTimeout(() => void redis.restart().then((r) => (redis = r)), 3_000);
    });
    console.log(`crash: every request answered by ${answeredMs} ms`);
    expect(replies.filter((r) => r.i < 40).every((r) => r.reply.kind === 'queued')).toBe(true);
    await expectDeliveredOnce({ label: 'crash', h, url, clients, worker }, replies, killedAt);
    await expectServedAfter(clients, 100);
  }, 240_000);
});
