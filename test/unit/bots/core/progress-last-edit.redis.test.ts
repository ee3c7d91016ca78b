// The last progress state before silence is shown, whatever the round trips take: the relay (bots/core/progress.ts)
// with a real ledger and real Redis, and each platform's real port against its fake (Discord: discord.js's REST;
// Slack: @slack/web-api), at a 50 ms edit interval. Users expect the message to end on the newest progress until the
// result replaces it (the steps between may be skipped): a model's silent stretch (the VAE decode after the last
// decoder step takes seconds) showed an older step instead. Then the edit of a job its result was delivered for and
// the retention sweep purged (the bot's event reader missed its end): refused, and no progress lease is made again.
//
// Found by an audit (2026-12): the relay spaced edits by when it started them, the Discord port measured the interval
// from when the previous edit reached it and dropped anything sooner (a first round trip 40 ms slower than the next
// was enough); and an edit started while the previous one was still in flight found the ledger's edit slot taken and
// was dropped (a slow chat.update on Slack). Each test below failed so before the fix.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { LogLevel, WebClient } from '@slack/web-api';
import { Client, GatewayIntentBits, REST } from 'discord.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { ProgressRelay } from '../../../../bots/core/progress.ts';
import { DiscordDelivery } from '../../../../bots/discord/delivery.ts';
import { SlackPort } from '../../../../bots/slack/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type DiscordDestination, type JobProgress, type SlackDestination } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { progressIntervalMs } from '../../../../src/jobs/progress.ts';
import { createJobsQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { jobKeys } from '../../../../src/jobs/retention.ts';
import { createLogger } from '../../../../src/log.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../../src/redis.ts';
import { FakeDiscord } from '../../../fakes/discord/server.ts';
import { FakeSlack } from '../../../fakes/slack/server.ts';

const prefix = `t-lastedit-${randomUUID().slice(0, 8)}`;
const log = createLogger('test', 'silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const INTERVAL_MS = 50;
let redis: Redis;
let queue: JobsQueue;
let discord: FakeDiscord;
let gateway: Client; // a gateway session, so the fake can dispatch the slash command
let slack: FakeSlack;
let config: ReturnType<typeof loadConfig>;

beforeAll(async () => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-last-edit');
  [discord, slack] = [await FakeDiscord.start(), new FakeSlack()];
  await slack.start();
  gateway = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: discord.apiBase } });
  await gateway.login(discord.token);
  config = loadConfig({
    env: {},
    overrides: {
      queue: { prefix },
      discord: { apiBaseUrl: discord.apiBase, progressEditIntervalMs: INTERVAL_MS, restRetries: 1 },
      slack: { progressUpdateIntervalMs: INTERVAL_MS },
    },
  });
  queue = createJobsQueue(config, redis);
});
afterAll(async () => {
  await queue.close();
  await gateway.destroy();
  await discord.close();
  await slack.stop();
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

/**
 * A relay showing through `port`, with a real ledger whose first edit's round trip (before the port is called) is
 * `firstTripSlowerMs` slower than the rest; a job of `destination` in the queue, tracked (its progress lease taken).
 * Edit intervals as configured (50 ms), or `intervalMs`.
 */
async function relayFor(port: PlatformPort, destination: Destination, firstTripSlowerMs = 0, intervalMs?: number) {
  const events = new EventEmitter();
  const ledger = new DeliveryLedger(redis, config);
  const leased = ledger.whileLeasedAndNotDelivered.bind(ledger);
  let trips = 0;
  ledger.whileLeasedAndNotDelivered = async (...args) => {
    if (trips++ === 0) await sleep(firstTripSlowerMs);
    return leased(...args);
  };
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: (d) => intervalMs ?? progressIntervalMs(config, d), ledger,
    instanceId: `i-${randomUUID().slice(0, 6)}`, prefix, log,
  });
  relay.start();
  const jobId = `j-${randomUUID().slice(0, 8)}`;
  await queue.add('imagine', { destination } as never, { jobId });
  relay.track(jobId, destination, undefined);
  const report = (stage: JobProgress['stage'], step: number, total: number) =>
    events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage, step, total } satisfies JobProgress });
  return { relay, events, jobId, report };
}

it('Discord: the newest step is shown though the round trip before the edit ahead of it was 40 ms slower (it was dropped by the port)', async () => {
  const interaction = discord.slashCommand({ name: 'imagine' });
  await gateway.rest.post(`/interactions/${interaction.id}/${interaction.token}/callback`, { body: { type: 5 }, auth: false });
  const destination: DiscordDestination = {
    platform: 'discord', guildId: discord.guildId, channelId: discord.channelId, userId: discord.alice.id, applicationId: discord.appId,
    interactionToken: interaction.token, interactionAt: Date.now(),
  };
  const port = new DiscordDelivery(new REST({ api: discord.apiBase, retries: 1 }).setToken(discord.token), config, log);
  const { relay, report } = await relayFor(port, destination, 40);
  try {
    report('decoding', 29, 31); // shown at once, its round trip 40 ms slow
    await sleep(20);
    report('decoding', 30, 31); // the last report before the silent VAE decode (seconds in production)
    await sleep(20 * INTERVAL_MS);
    const edits = discord.requestsTo('PATCH', new RegExp(`/${interaction.token}/messages/@original$`));
    expect(edits).toHaveLength(2);
    expect(discord.original(interaction)!.content).toBe('⏳ Decoding pixels: step 30/31');
  } finally {
    await relay.stop();
    port.close();
  }
});

it('Slack: the newest step is shown though the update before it took longer than the interval (it found the edit slot taken and was dropped)', async () => {
  const client = new WebClient(slack.botToken, { slackApiUrl: slack.apiUrl, retryConfig: { retries: 0 }, logLevel: LogLevel.ERROR });
  const progressClient = new WebClient(slack.botToken, { slackApiUrl: slack.apiUrl, rejectRateLimitedCalls: true, retryConfig: { retries: 0 }, logLevel: LogLevel.ERROR });
  const update = progressClient.chat.update.bind(progressClient.chat);
  let updates = 0;
  progressClient.chat.update = (async (args: Parameters<typeof update>[0]) => {
    if (updates++ === 0) await sleep(3 * INTERVAL_MS); // Slack slow to answer the first one
    return update(args);
  }) as typeof update;
  const port = new SlackPort(client, config, log, progressClient);
  const posted = await client.chat.postMessage({ channel: 'C0LAST', text: 'Queued' });
  const destination: SlackDestination = {
    platform: 'slack', teamId: slack.teamId, channelId: 'C0LAST', userId: 'U0ALICE', threadTs: String(posted.ts), statusMessageTs: String(posted.ts),
  };
  port.attach({ redis, titleOf: async () => ({ kind: 'imagine', text: 'a red fox' }) });
  const { relay, report } = await relayFor(port, destination);
  try {
    report('decoding', 29, 31);
    await sleep(20);
    report('decoding', 30, 31); // then silence
    await sleep(20 * INTERVAL_MS);
    expect(updates).toBe(2);
    const status = slack.store.find('C0LAST', String(posted.ts));
    expect(status?.text).toBe('Decoding pixels 30/31');
  } finally {
    await relay.stop();
  }
});

it("an edit held back for a job whose end this bot missed, that was delivered and purged meanwhile, is refused and makes no progress lease again", async () => {
  const shown: JobProgress[] = [];
  const port = { platform: 'slack', showProgress: async (_d: Destination, p: JobProgress) => void shown.push(p), deliver: async () => undefined } as unknown as PlatformPort;
  const destination: SlackDestination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
  const { relay, jobId, report } = await relayFor(port, destination, 0, 300); // time enough for the purge below
  try {
    report('decoding', 29, 31);
    for (let i = 0; i < 40 && shown.length === 0; i++) await sleep(5);
    report('decoding', 30, 31); // held for the rest of the 300 ms interval
    // Meanwhile the job finished, its result was delivered and the retention sweep purged it (src/jobs/retention.ts:
    // the job's hash and every key named after it, the ledger's delivered mark and the lease among them); the
    // completed event never reached this relay (its event connection was reconnecting).
    await (await queue.getJob(jobId))!.remove();
    await redis.del(...jobKeys(prefix, jobId));
    await sleep(600);
    expect(shown.map((p) => p.step)).toEqual([29]);
    expect(await redis.exists(`${prefix}:progress-owner:${jobId}`)).toBe(0);
  } finally {
    await relay.stop();
  }
});
