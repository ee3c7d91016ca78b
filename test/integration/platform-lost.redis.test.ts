// A platform connection lost for good while the bot runs, in the real process (bots/main.ts): a Discord token reset
// in the Developer Portal, a Slack app-level token revoked. Each client gives up (discord.js after close code 4004,
// Slack's Socket Mode client on invalid_auth); without bots/main.ts's onFatal the Discord bot ran on hearing nothing
// (healthy to compose, "The application did not respond" to users), and the Slack bot died of an unhandled rejection
// with a stack. Now each says what to do, stops as SIGTERM stops it, and exits 1 for compose's restart: on-failure.
// A Slack app uninstalled (its bot token revoked) ran on too, each delivery spending its attempts on token_revoked
// until it was dropped: now the bot exits, and the results wait in Redis for the bot started with the new token.
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { QueueNames } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';
import { makeHarness, REDIS_URL, spawnTs, startWorker, stopProcess, until, type Proc } from '../doubles/spine-harness.ts';
import { slashCommand } from '../fakes/slack/payloads.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';
import { FakeSlack } from '../fakes/slack/server.ts';

const STACK = /\n\s+at .+\(.+:\d+:\d+\)/;
const procs: Proc[] = [];
afterAll(async () => {
  for (const p of procs) await stopProcess(p);
});

/**
 * Runs bots/main.ts until 'bots ready', then `revoke()`s: it must log `fatal` (the start of the error's message) as the
 * reason it exits, stop as SIGTERM stops it, and exit 1 without a stack. Resolves with its output.
 */
async function exitsForRestart(bot: Proc, revoke: () => void, fatal: string): Promise<string> {
  procs.push(bot);
  await bot.waitFor('bots ready', 120_000);
  revoke();
  const code = await Promise.race([
    new Promise<number | null>((resolve) => (bot.child.exitCode !== null ? resolve(bot.child.exitCode) : bot.child.once('exit', resolve))),
    new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 30_000)),
  ]);
  const out = bot.output();
  expect(code).toBe(1);
  const escaped = fatal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  expect(out).toMatch(new RegExp(`"err":"${escaped}[^"]*","msg":"a platform connection is lost for good: exiting so that it is restarted"`));
  expect(out).toMatch(/"reason":"a platform connection lost","msg":"shutting down"/);
  expect(out).not.toMatch(STACK);
  return out;
}

describe('a platform token revoked while the bot runs: it says what to do, stops as SIGTERM would, and exits 1', () => {
  it('Discord: the token reset in the Developer Portal', async () => {
    const fake = await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
    try {
      const h = makeHarness({
        discord: { enabled: true, apiBaseUrl: fake.apiBase, restRetries: 0, registerCommandsOnStart: false },
        slack: { enabled: false },
        http: { botPort: 0, host: '127.0.0.1' },
      });
      const bot = spawnTs('bots/main.ts', h, [], { DISCORD_TOKEN: fake.token, DISCORD_APPLICATION_ID: fake.appId, SLACK_BOT_TOKEN: '' });
      const out = await exitsForRestart(bot, () => fake.resetToken(), 'Discord refused DISCORD_TOKEN (invalid token). Set DISCORD_TOKEN to the bot token');
      expect(out).toMatch(/"code":4004,"msg":"Discord closed the gateway for good \(it refused the token: was it reset in the Developer Portal\?\); logging in again"/);
    } finally {
      await fake.close();
    }
  }, 180_000);

  it('Slack: the app-level token revoked (Socket Mode)', async () => {
    const fake = new FakeSlack();
    await fake.start();
    try {
      const h = makeHarness({ slack: { enabled: true, mode: 'socket', apiUrl: fake.apiUrl }, discord: { enabled: false }, http: { botPort: 0, host: '127.0.0.1' } });
      const bot = spawnTs('bots/main.ts', h, [], { SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken, DISCORD_TOKEN: '' });
      await exitsForRestart(bot, () => fake.revokeAppToken(), 'Slack refused SLACK_APP_TOKEN (invalid_auth). Set SLACK_APP_TOKEN to an app-level token');
    } finally {
      await fake.stop();
    }
  }, 180_000);

  it('Slack: the app uninstalled while a job runs; reinstalled, the restarted bot posts the result that waited, once', async () => {
    const fake = new FakeSlack();
    await fake.start();
    const redis = createRedis(REDIS_URL, 'platform-lost');
    // The job is held before its first step (holdWhile) until the bot that queued it has exited: it runs past the bot's
    // exit however slow the machine, and is over as soon as it is let go.
    const hold = join(tmpdir(), `platform-lost-hold-${process.pid}-${Date.now()}`);
    writeFileSync(hold, '');
    try {
      const h = makeHarness({ slack: { enabled: true, mode: 'socket', apiUrl: fake.apiUrl }, discord: { enabled: false }, http: { botPort: 0, host: '127.0.0.1' }, worker: { pipelineExtra: { holdWhile: { 'a fox in the snow': hold } } } });
      procs.push(await startWorker(h));
      const jobs = createJobsQueue(h.config, redis);
      const env = { SLACK_APP_TOKEN: fake.appToken, DISCORD_TOKEN: '' };
      const bot = spawnTs('bots/main.ts', h, [], { ...env, SLACK_BOT_TOKEN: fake.botToken });
      procs.push(bot);
      await bot.waitFor('bots ready', 120_000);
      fake.addUser('U0ASKER');
      await fake.link.ack(fake.sendEnvelope('slash_commands', slashCommand(fake, { text: 'a fox in the snow', channel: 'C0LOST', user: 'U0ASKER' })));
      const status = await fake.waitFor(() => fake.botMessages('C0LOST').find((m) => m.metadata?.event_type === 'blip3o_status'), 20_000, 'the status message');
      const jobId = String(status.metadata!.event_payload.job_id);
      // The status message is posted before the job is queued: uninstalled in between, the bot's next calls are refused
      // and no job is ever made (under load that left this test waiting for a job that did not exist).
      await until(async () => (await jobs.getJobState(jobId)) === 'active' || undefined, 30_000, 'the job running on the worker');
      // Its app_uninstalled event, or the first edit Slack refuses, whichever comes first
      await exitsForRestart(bot, () => fake.uninstall(), 'Slack refused SLACK_BOT_TOKEN (');
      expect(await jobs.getJobState(jobId)).toBe('active');
      rmSync(hold);
      await until(async () => (await jobs.getJobState(jobId)) === 'completed' || undefined, 60_000, 'the job to finish with no bot running');
      const posted = () => fake.store.thread('C0LOST', status.ts).filter((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`));
      expect(posted()).toEqual([]);
      // An admin reinstalls the app and puts the new token in .env; compose starts the bot again.
      fake.reinstall();
      const again = spawnTs('bots/main.ts', h, [], { ...env, SLACK_BOT_TOKEN: fake.botToken });
      procs.push(again);
      await fake.waitFor(() => posted().length > 0 || undefined, 60_000, 'the result');
      // Its delivery is over (a retry after a post, a second post, would come before this): no second post is coming.
      const deliveries = createDeliveryQueue(h.config, redis, QueueNames.delivery('slack'));
      await until(async () => (await deliveries.getJobState(jobId)) === 'completed' || undefined, 30_000, 'the delivery to be done');
      await Promise.all([jobs.close(), deliveries.close()]);
      expect(posted()).toHaveLength(1);
    } finally {
      rmSync(hold, { force: true });
      await closeRedis(redis);
      await fake.stop();
    }
  }, 300_000);
});
