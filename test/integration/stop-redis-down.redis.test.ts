// SIGTERM while Redis is unreachable (down, or a failover under way), in the real processes (worker/main.ts,
// bots/main.ts). Every close step that speaks to Redis waits for it (our connections retry for ever,
// maxRetriesPerRequest: null), so the graceful stop cannot end: before, the process logged "shutting down" and then
// nothing, until compose's SIGKILL 60 s later (each test, without the bound: 'still running' when it gave up, 5–10 s
// past the bound, with no word of why). Now the stop is bounded: past its bound the process says what it still waited
// for and that Redis was unreachable, and exits 1 before compose's SIGKILL; a job it could not hand back is run by
// another worker once Redis is back and its lock has expired, and delivered once. Each test has its own redis-server,
// killed under the process.
import { mkdtempSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startRedisServer, type RedisProcess } from '../doubles/redis-processes.ts';
import { makeHarness, runs, exitWithin, spawnTs, startWorker, until, type Proc } from '../doubles/spine-harness.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';

const procs: Proc[] = [];
const servers: RedisProcess[] = [];
let discord: FakeDiscord | undefined;
afterAll(async () => {
  for (const p of procs) await p.kill('SIGKILL');
  for (const s of servers) await s.kill();
  await discord?.close();
}, 60_000);

describe('SIGTERM while Redis is down: the stop is bounded, says why, and exits 1 before compose\'s SIGKILL', () => {
  it('a worker: within worker.stopGraceMs + worker.abortGraceMs and a few seconds', async () => {
    const redis = await startRedisServer();
    servers.push(redis);
    const h = makeHarness({ worker: { stopGraceMs: 100, abortGraceMs: 100 } }); // a bound of 0.2 s + STOP_CLOSE_MS (3 s)
    const worker = await startWorker(h, { REDIS_URL: `redis://127.0.0.1:${redis.port}` });
    procs.push(worker);
    await redis.crash();
    await worker.waitFor('cannot reach Redis', 10_000);

    worker.child.kill('SIGTERM');
    const exit = await exitWithin(worker, 15_000);
    console.log(worker.output().split('\n').filter((l) => l.includes('could not stop')).join('\n'));
    expect(exit).toBe(1);
    expect(worker.output()).toMatch(/"msg":"could not stop within 3 s \(still waiting for [^)]+; Redis is unreachable\): exiting 1/);
  }, 120_000);

  it('a worker with a job running: the job, not handed back, is run by another worker once Redis is back, and delivered once', async () => {
    const redis = await startRedisServer('appendonly yes\nappendfsync always\n'); // the job outlives the crash
    servers.push(redis);
    const url = `redis://127.0.0.1:${redis.port}`;
    // A's run of the [held] job waits while `hold` exists: still running at the SIGTERM however slow the machine, and
    // ended only by the hand-back's abort. B's run, with `hold` gone, takes no time: the wait is for the lock alone.
    const hold = join(mkdtempSync(join(tmpdir(), 'stop-redis-down-')), 'hold');
    writeFileSync(hold, '');
    const h = makeHarness({
      queue: { lockDurationMs: 3_000, stalledIntervalMs: 1_000 },
      worker: { stopGraceMs: 100, abortGraceMs: 100, pipelineExtra: { holdWhile: { '[held]': hold } } },
    });
    const a = await startWorker(h, { REDIS_URL: url });
    procs.push(a);
    const out = join(h.dir, 'fox.png');
    const cli = spawnTs('bots/cli/main.ts', h, ['imagine', '[held] a fox', '--seed', '7', '--steps', '3', '--out', out], { REDIS_URL: url });
    procs.push(cli);
    await until(() => runs(h).length > 0, 60_000, 'the job running on A');
    await redis.crash();
    await a.waitFor('cannot reach Redis', 10_000);

    a.child.kill('SIGTERM');
    const exit = await exitWithin(a, 15_000);
    console.log(a.output().split('\n').filter((l) => l.includes('could not stop')).join('\n'));
    expect(exit).toBe(1);
    expect(a.output()).toMatch(/"running":1,.*"msg":"could not stop within 3 s \(still waiting for [^)]+; Redis is unreachable\): exiting 1/);

    servers.push(await redis.restart());
    unlinkSync(hold);
    const b = await startWorker(h, { REDIS_URL: url });
    procs.push(b);
    await cli.waitFor(`wrote ${out}`, 30_000);
    expect(cli.output().match(/wrote /g)).toHaveLength(1);
    expect(runs(h).filter((r) => r.kind === 'generate').map((r) => r.pid === b.child.pid)).toEqual([false, true]); // A's run, then B's
  }, 120_000);

  it('a bot: within bots.stopMs', async () => {
    discord = await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
    const redis = await startRedisServer();
    servers.push(redis);
    const h = makeHarness({
      discord: { enabled: true, apiBaseUrl: discord.apiBase, downloadHosts: [new URL(discord.origin).host], registerCommandsOnStart: false },
      http: { botPort: 0, host: '127.0.0.1' },
      bots: { stopMs: 2_000 }, // 50 s by default
    });
    const bot = spawnTs('bots/main.ts', h, [], { DISCORD_TOKEN: discord.token, DISCORD_APPLICATION_ID: discord.appId, REDIS_URL: `redis://127.0.0.1:${redis.port}` });
    procs.push(bot);
    await bot.waitFor('bots ready', 120_000);
    await redis.crash();
    await bot.waitFor('cannot reach Redis', 10_000);

    bot.child.kill('SIGTERM');
    const exit = await exitWithin(bot, 2_000 + 5_000);
    console.log(bot.output().split('\n').filter((l) => l.includes('could not stop')).join('\n'));
    expect(exit).toBe(1);
    expect(bot.output()).toMatch(/"msg":"could not stop within 2 s \(still waiting for [^)]+; Redis is unreachable\): exiting 1/);
  }, 180_000);
});
