// Ctrl-C when the cancel cannot get through (audit 2026-12-07): with Redis gone after the job was queued, the first
// Ctrl-C's cancel waits on Redis, and a second was ignored, so the terminal had no way out but `kill -9`. Now the first
// says it is cancelling and how to quit, the second quits at once with 130.
import { afterAll, describe, expect, it } from 'vitest';
import { startRedisServer, type RedisProcess } from '../doubles/redis-processes.ts';
import { exitWithin, makeHarness, sleep, spawnTs, type Proc } from '../doubles/spine-harness.ts';

let redis: RedisProcess | undefined;
let cli: Proc | undefined;

afterAll(async () => {
  cli?.child.kill('SIGKILL');
  await redis?.kill();
});

describe('CLI stop', () => {
  it('a second Ctrl-C quits at once when the cancel cannot reach Redis', async () => {
    redis = await startRedisServer();
    const h = makeHarness({});
    cli = spawnTs('bots/cli/main.ts', h, ['imagine', 'a fox', '--out', `${h.dir}/fox.png`], { REDIS_URL: `redis://127.0.0.1:${redis.port}` });
    await cli.waitFor('No GPU worker is running', 60_000); // queued; no worker in this test
    await redis.crash();
    cli.child.kill('SIGINT');
    await sleep(1500);
    cli.child.kill('SIGINT');
    const code = await exitWithin(cli, 10_000);
    expect(code).toBe(130);
    expect(cli.output()).toContain('Cancelling… (Ctrl-C again to quit without waiting)');
    expect(cli.output()).toMatch(/Stopped without waiting for the cancel \(job \S+ may still run\)\./);
  }, 90_000);
});
