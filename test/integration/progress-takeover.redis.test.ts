// A bot process killed with SIGKILL while a job it submitted runs: it hands nothing back, and its progress lease on the
// job is good for 60 s (PROGRESS_LEASE_MS). Another instance of the platform shows the job's progress once the dead
// one's alive time is over (OWNER_ALIVE_MS, 15 s after its last heartbeat; bots/core/progress.ts), not after those
// 60 s, and posts its result once. Real processes for the dead bot (bots/main.ts, Discord against the fake) and the
// worker; the second instance is a core in this process whose Discord port records what it shows and posts.
// Before the alive times (issue 19, twelfth pass) no one else showed its progress until the lease lapsed: this fails.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { PlatformPort } from '../../bots/core/port.ts';
import { createCore, type Core } from '../../bots/core/submit.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { JobProgress, JobResult } from '../../src/jobs/contract.ts';
import { createJobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, REDIS_URL, spawnTs, startWorker, stopProcess, until, type Proc } from '../doubles/spine-harness.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';

const procs: Proc[] = [];
let discord: FakeDiscord | undefined;
let other: Core | undefined;
let redis: Redis | undefined;
let prefix: string | undefined;
// The SLOW job steps while this file exists (the double's stepWhile): it runs until the takeover has been seen.
const stepping = join(mkdtempSync(join(tmpdir(), 'takeover-')), 'stepping');

afterAll(async () => {
  rmSync(stepping, { force: true }); // a failed run's job ends, so the worker stops at once
  for (const p of procs) await stopProcess(p);
  await other?.stop();
  await discord?.close();
  if (redis && prefix) await cleanup(redis, prefix);
  if (redis) await closeRedis(redis);
}, 60_000);

it("a SIGKILLed bot's running job shows its progress in another instance within ≈ 20 s, and is posted once", async () => {
  discord = await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
  const h = makeHarness({
    discord: { enabled: true, apiBaseUrl: discord.apiBase, downloadHosts: [new URL(discord.origin).host], progressEditIntervalMs: 50, restRetries: 1 },
    http: { botPort: 0, host: '127.0.0.1' },
    // a prompt with SLOW: a step, and a progress report, every 0.5 s for as long as `stepping` exists (however long the
    // takeover takes on a slow machine), then a few more
    worker: { pipelineExtra: { failures: { SLOW: 'slow' }, slowStepMs: 500, stepWhile: { SLOW: stepping } } },
  });
  writeFileSync(stepping, '');
  prefix = h.prefix;
  redis = createRedis(REDIS_URL, 'test-takeover');
  const queue = createJobsQueue(h.config, redis);
  procs.push(await startWorker(h));
  const dying = spawnTs('bots/main.ts', h, [], { DISCORD_TOKEN: discord.token, DISCORD_APPLICATION_ID: discord.appId });
  procs.push(dying);
  await dying.waitFor('bots ready', 120_000);

  const shown: JobProgress[] = [];
  const posted: JobResult[] = [];
  const port: PlatformPort = {
    platform: 'discord',
    async showProgress(_d, p) {
      shown.push(p);
    },
    async deliver(r) {
      posted.push(r);
    },
  };
  other = createCore({ config: h.config, secrets: loadSecrets({ REDIS_URL }), ports: [port] });
  await other.start();

  const interaction = discord.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'a SLOW owl' }] });
  const job = await until(async () => (await queue.getJobs(['active'])).find((j) => j.data.kind === 'imagine' && j.data.prompt.includes('SLOW')), 30_000, 'the job running');
  const lease = `${h.prefix}:progress-owner:${job.id}`;
  const holder = await until(async () => (await redis!.get(lease)) ?? undefined, 30_000, 'the dying bot holding the progress lease');
  await until(() => discord!.requestsTo('PATCH', /messages\/@original/).length > 1, 30_000, 'a progress edit by the dying bot');
  expect(shown.filter((p) => p.jobId === job.id)).toEqual([]); // its lease is respected while it lives

  await dying.kill('SIGKILL');
  const killedAt = Date.now();
  await until(() => shown.some((p) => p.jobId === job.id), 45_000, 'the other instance showing the progress');
  const takeoverMs = Date.now() - killedAt;
  console.log(`progress shown by the other instance ${takeoverMs} ms after the SIGKILL (alive time 15 s, retry ≤ 5 s, a step every 0.5 s)`);
  expect(takeoverMs).toBeLessThan(30_000);
  expect(await redis.get(lease)).not.toBe(holder);
  rmSync(stepping); // the job may end now

  await until(() => posted.some((r) => r.jobId === job.id), 60_000, 'the result posted');
  await new Promise((r) => setTimeout(r, 500));
  expect(posted.filter((r) => r.jobId === job.id)).toHaveLength(1);
  expect(posted.find((r) => r.jobId === job.id)?.status).toBe('succeeded');
  expect(discord.original(interaction)).toBeDefined();
  await queue.close();
}, 180_000);
