// A stop asked for again, and a stop asked for before the bot has started, in the real processes (worker/main.ts,
// bots/main.ts). Before: a second SIGTERM or Ctrl-C during a stop was ignored, so the worker waited out its whole
// stop grace (a minute by default) and the bot waited for Redis up to its 50 s bound; and a bot stopped while it
// waited for Redis at start was killed by the signal with no line in its log. Now:
//   - the worker, asked again, hands its running jobs back at once (another worker runs them, delivered once), and
//     asked again with nothing to hand back, exits 1 at once;
//   - the bot, asked again, exits 1 at once (what it was delivering waits in Redis);
//   - the bot, stopped before its core has started, says so and exits 0.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { startRedisServer, type RedisProcess } from '../doubles/redis-processes.ts';
import { exitWithin, makeHarness, runs, spawnTs, startWorker, startWorkerProcess, until, type Proc } from '../doubles/spine-harness.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';

const procs: Proc[] = [];
const servers: RedisProcess[] = [];
let discord: FakeDiscord | undefined;
afterAll(async () => {
  for (const p of procs) await p.kill('SIGKILL');
  for (const s of servers) await s.kill();
  await discord?.close();
}, 60_000);

describe('a worker asked again to stop', () => {
  it('hands its running job back at once, not after worker.stopGraceMs, and another worker delivers it once', async () => {
    // A's steps take 20 s each and its stop grace is a minute; B's steps are quick.
    const h = makeHarness({ worker: { stopGraceMs: 60_000, abortGraceMs: 1_000, pipelineExtra: { slowStepMs: 20_000, failures: { '[slow]': 'slow' } } } });
    const tree = parse(readFileSync(h.configFile, 'utf8')) as { worker: { pipelineExtra: Record<string, unknown> } };
    const configB = join(h.dir, 'b.yaml');
    writeFileSync(configB, stringify({ ...tree, worker: { ...tree.worker, pipelineExtra: { ...tree.worker.pipelineExtra, failures: {} } } }));
    const a = await startWorker(h);
    procs.push(a);
    const out = join(h.dir, 'fox.png');
    const cli = spawnTs('bots/cli/main.ts', h, ['imagine', '[slow] a fox', '--seed', '7', '--out', out]);
    procs.push(cli);
    await until(() => runs(h).length > 0, 60_000, 'the job running on A');
    const b = await startWorkerProcess(configB);
    procs.push(b);

    a.child.kill('SIGTERM');
    await a.waitFor('shutting down', 10_000);
    a.child.kill('SIGTERM');
    expect(await exitWithin(a, 15_000)).toBe(0);
    expect(a.output()).toMatch(/asked again to stop: handing the running jobs back now/);
    await cli.waitFor(`wrote ${out}`, 20_000);
    expect(cli.output().match(/wrote /g)).toHaveLength(1);
    expect(runs(h).filter((r) => r.kind === 'generate').map((r) => r.pid === b.child.pid)).toEqual([false, true]); // A's run, then B's
  }, 180_000);

  it('with nothing to hand back and Redis down, exits 1 at once, not at its stop bound', async () => {
    const redis = await startRedisServer();
    servers.push(redis);
    const h = makeHarness({ worker: { stopGraceMs: 30_000, abortGraceMs: 1_000 } }); // bound: 34 s
    const worker = await startWorker(h, { REDIS_URL: `redis://127.0.0.1:${redis.port}` });
    procs.push(worker);
    await redis.crash();
    await worker.waitFor('cannot reach Redis', 10_000);

    worker.child.kill('SIGTERM');
    await worker.waitFor('shutting down', 10_000);
    worker.child.kill('SIGINT');
    expect(await exitWithin(worker, 5_000)).toBe(1);
    expect(worker.output()).toMatch(/"signal":"SIGINT".*"msg":"asked again to stop: exiting now"/);
  }, 120_000);
});

describe('a bot', () => {
  const botHarness = () => {
    const h = makeHarness({
      discord: { enabled: true, apiBaseUrl: discord!.apiBase, downloadHosts: [new URL(discord!.origin).host], registerCommandsOnStart: false },
      http: { botPort: 0, host: '127.0.0.1' },
    });
    return (redisUrl: string) => spawnTs('bots/main.ts', h, [], { DISCORD_TOKEN: discord!.token, DISCORD_APPLICATION_ID: discord!.appId, REDIS_URL: redisUrl });
  };

  it('asked again to stop while its stop waits for Redis exits 1 at once, not at its 50 s bound', async () => {
    discord ??= await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
    const redis = await startRedisServer();
    servers.push(redis);
    const bot = botHarness()(`redis://127.0.0.1:${redis.port}`);
    procs.push(bot);
    await bot.waitFor('bots ready', 120_000);
    await redis.crash();
    await bot.waitFor('cannot reach Redis', 10_000);

    bot.child.kill('SIGTERM');
    await bot.waitFor('shutting down', 10_000);
    bot.child.kill('SIGTERM');
    expect(await exitWithin(bot, 5_000)).toBe(1);
    expect(bot.output()).toMatch(/"msg":"asked again to stop: exiting now"/);
  }, 180_000);

  it('stopped while it waits for Redis at start says so and exits 0', async () => {
    discord ??= await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
    const redis = await startRedisServer();
    servers.push(redis);
    const url = `redis://127.0.0.1:${redis.port}`;
    await redis.crash(); // nothing listens on its port: the start waits for Redis (compose may start Redis later)
    const bot = botHarness()(url);
    procs.push(bot);
    await bot.waitFor('cannot reach Redis', 60_000);

    bot.child.kill('SIGTERM');
    expect(await exitWithin(bot, 5_000)).toBe(0);
    expect(bot.output()).toMatch(/"signal":"SIGTERM".*"msg":"stopping during start-up"/);
  }, 120_000);
});
