// The fetch watchdog's exit, in the real processes (worker/main.ts, bots/main.ts), not only the watchdog alone
// (test/unit/src/jobs/fetch-watchdog.redis.test.ts). The process reaches Redis through a proxy that silences every
// connection that sends a blocking fetch: BullMQ's fetch loop waits on it, its own watchdog's reconnect goes silent
// the same way, and no job is ever taken while the rest of the process works. With `queue.fetchStallMs` at 1.5 s the
// process must log why and exit 1 (compose's restart policy then starts it again); the jobs wait in Redis, and the
// process started again delivers each one once. The bot stops as SIGTERM stops it first (at most 5 s): the progress
// lease of a job still running goes back, so the bot started again can show its progress at once. Without the exit
// (checked by hand, for each process) nothing takes the jobs: BullMQ's own watchdog reconnects into the same silence;
// they still waited 30 s (worker) and 60 s (bot) later.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startBlackholeProxy, type BlackholeProxy } from '../doubles/blackhole-proxy.ts';
import { expectDeliveredOnce, startClients, stopAll, submit, type LoadClient } from '../doubles/failover-load.ts';
import { exitWithin, makeHarness, REDIS_URL, runs, spawnTs, startWorker, stopProcess, type Proc } from '../doubles/spine-harness.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';
import { createJobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';

const target = new URL(REDIS_URL);
const procs: Proc[] = [];
let proxy: BlackholeProxy | undefined;
let clients: LoadClient[] = [];
let discord: FakeDiscord | undefined;

afterAll(async () => {
  for (const p of procs) await stopProcess(p);
  await stopAll(clients, undefined, undefined);
  await proxy?.close();
  await discord?.close();
}, 60_000);

describe('a process whose fetch loop has stopped says why and exits 1; started again, it delivers each job once', () => {
  it('a worker', async () => {
    const h = makeHarness({ queue: { fetchStallMs: 1_500 }, worker: { concurrency: 2 } });
    proxy ??= await startBlackholeProxy({ host: target.hostname, port: Number(target.port || 6379) });
    const silencedBefore = proxy.silenced();
    const stuck = await startWorker(h, { REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    procs.push(stuck);
    clients = await startClients(h, REDIS_URL, 1);
    const replies = await Promise.all([0, 1, 2].map((i) => submit(clients, i)));
    expect(replies.map((r) => r.reply.kind)).toEqual(['queued', 'queued', 'queued']);
    const readyAt = Date.now();

    const code = await exitWithin(stuck, 30_000);
    console.log(`the stuck worker: ${code} ${Date.now() - readyAt} ms after the jobs were queued (fetchStallMs 1500)`);
    expect(code).toBe(1);
    expect(stuck.output()).toMatch(/this worker has taken no job for \d+ s while [1-9]\d* waited and it had room: exiting so that it is restarted/);
    expect(proxy.silenced()).toBeGreaterThan(silencedBefore); // its blocking fetch did go silent
    expect(runs(h)).toEqual([]); // it took nothing

    const worker = await startWorker(h); // as its supervisor would: started again (here straight on Redis)
    procs.push(worker);
    await expectDeliveredOnce({ label: 'after the worker exit', h, url: REDIS_URL, clients, worker }, replies, readyAt);
  }, 180_000);

  it('a bot, whose delivery worker stopped: the Discord image is posted once by the bot started again', async () => {
    discord = await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
    const hold = join(mkdtempSync(join(tmpdir(), 'watchdog-exit-')), 'hold');
    writeFileSync(hold, '');
    const h = makeHarness({
      queue: { fetchStallMs: 1_500 },
      discord: { enabled: true, apiBaseUrl: discord.apiBase, downloadHosts: [new URL(discord.origin).host], progressEditIntervalMs: 50, restRetries: 1 },
      http: { botPort: 0, host: '127.0.0.1' },
      // a prompt with SLOW waits while `hold` exists: still running when the stuck bot exits, however late that comes
      // (a SLOW job of 3 s a step had finished before it in a CI run of 2026-12-08; of 1 s a step, in two earlier ones)
      // Two at a time: the commands come from one channel, whose jobs fair scheduling releases one after the other, so
      // with one slot a SLOW job taken first held the heron's behind it, and no result ever waited for the bot (seen with
      // three test files at once, 2026-12-08: the stuck bot 'still running' at 60 s)
      worker: { concurrency: 2, pipelineExtra: { holdWhile: { SLOW: hold } } },
    });
    proxy ??= await startBlackholeProxy({ host: target.hostname, port: Number(target.port || 6379) });
    const silencedBefore = proxy.silenced();
    const env = { DISCORD_TOKEN: discord.token, DISCORD_APPLICATION_ID: discord.appId };
    procs.push(await startWorker(h));
    const stuck = spawnTs('bots/main.ts', h, [], { ...env, REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    procs.push(stuck);
    await stuck.waitFor('bots ready', 120_000);
    const interaction = discord.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'a heron at dawn' }] });
    const slow = discord.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'a SLOW owl' }] });
    const sentAt = Date.now();
    const code = await exitWithin(stuck, 60_000);
    console.log(`the stuck bot: ${code} ${Date.now() - sentAt} ms after the commands (fetchStallMs 1500)`);
    expect(code).toBe(1);
    expect(stuck.output()).toMatch(/the delivery worker of delivery-discord has taken no result for \d+ s while \d+ waited and it had room: exiting so that it is restarted/);
    expect(proxy.silenced()).toBeGreaterThan(silencedBefore);
    expect(discord.original(interaction)?.attachments ?? []).toHaveLength(0); // the image waits in Redis
    // It stopped as SIGTERM stops it before exiting: the running job's progress lease went back (else the bot started
    // again could show its progress only once the lease lapsed, 60 s).
    expect(stuck.output()).toMatch(/"reason":"a stuck delivery worker".*"msg":"shutting down"/);
    const redis = createRedis(REDIS_URL, 'test-leases');
    const queue = createJobsQueue(h.config, redis);
    try {
      const running = (await queue.getJobs(['active'])).find((j) => j.data.kind === 'imagine' && j.data.prompt.includes('SLOW'));
      expect(running, 'the SLOW job still runs').toBeDefined();
      expect(await redis.exists(`${h.config.queue.prefix}:progress-owner:${running!.id}`)).toBe(0);
    } finally {
      await queue.close();
      await closeRedis(redis);
    }

    rmSync(hold); // the SLOW job goes on
    const bot = spawnTs('bots/main.ts', h, [], env); // started again, straight on Redis
    procs.push(bot);
    await bot.waitFor('bots ready', 120_000);
    for (const i of [interaction, slow]) {
      const posted = await discord.waitFor(() => (discord!.original(i)?.attachments.length ?? 0) > 0 && discord!.original(i), 60_000, 'the image');
      expect(posted.attachments).toHaveLength(1);
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(discord.channelMessages().filter((m) => m.attachments.length > 0)).toHaveLength(2); // each posted once
  }, 300_000);
});
