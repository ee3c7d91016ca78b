// Discord sharding (docs/discord.md, "Sharding"): real discord.js ↔ the fake Discord, whose gateway routes a server's
// events to the shard Discord's formula names and refuses a shard over its server limit with 4011, as Discord does
// above 2,500 servers. The fake's limits are tiny (2 servers a shard, a recommended shard per server), so that three
// servers need three shards.
import { afterEach, describe, expect, it } from 'vitest';
import { createDiscordAdapter } from '../../bots/discord/adapter.ts';
import { createCore } from '../../bots/core/submit.ts';
import { startDiscordHarness, type DiscordHarness } from '../fakes/discord/bot-harness.ts';
import { FakeDiscord, type FakeInteraction } from '../fakes/discord/server.ts';
import { IDENTIFY_WINDOW_MS } from '../../bots/discord/identify-throttle.ts';
import { closeRedis, createRedis, deleteKeys } from '../../src/redis.ts';
import { randomUUID } from 'node:crypto';
import { shardOf } from '../fakes/discord/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { loadConfig } from '../../src/config/load.ts';
import { capturedLog } from '../doubles/core-harness.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SMALL_SHARDS = { maxGuildsPerShard: 2, guildsPerRecommendedShard: 1, maxConcurrency: 16 };
const harnesses: DiscordHarness[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  for (const h of harnesses.splice(0)) await h.stop();
}, 60_000);

async function harness(options: Parameters<typeof startDiscordHarness>[0]): Promise<DiscordHarness> {
  const h = await startDiscordHarness(options);
  harnesses.push(h);
  return h;
}

function imagineIn(fake: FakeDiscord, channelId: string, prompt: string): FakeInteraction {
  return fake.slashCommand({ name: 'imagine', channelId, options: [{ name: 'prompt', type: 3, value: prompt }] });
}

async function imageOf(fake: FakeDiscord, i: FakeInteraction): Promise<void> {
  await fake.waitFor(() => (fake.original(i)?.attachments.length ?? 0) > 0, 30_000, `the image for the interaction in ${i.guildId}`);
}

const connectedShards = (fake: FakeDiscord) =>
  fake.shards.filter((s) => s.connected).map((s) => s.shard.join('/')).sort();

describe('Discord sharding', () => {
  it('auto: a bot in three servers runs the three shards Discord recommends, and answers in each server', async () => {
    let servers: { guildId: string; channelId: string }[] = [];
    const h = await harness({
      fake: SMALL_SHARDS,
      beforeLogin: (fake) => {
        servers = [fake.addGuild({ onShard: [1, 3] }), fake.addGuild({ onShard: [2, 3] })];
      },
    });
    expect(connectedShards(h.fake)).toEqual(['0/3', '1/3', '2/3']);
    expect(h.adapter.connected()).toBe(true);
    const asks = [{ guildId: h.fake.guildId, channelId: h.fake.channelId }, ...servers].map((s, n) => imagineIn(h.fake, s.channelId, `a lighthouse number ${n}`));
    expect(new Set(asks.map((i) => shardOf(i.guildId, 3))).size).toBeGreaterThanOrEqual(2);
    for (const i of asks) await imageOf(h.fake, i);
    for (const i of asks) expect(i.callbacks[0]?.type).toBe(5);
  }, 90_000);

  it('auto: when the bot outgrows its shards, Discord closes with 4011 and the bot logs in again with the new recommended count', async () => {
    const h = await harness({ fake: SMALL_SHARDS });
    expect(connectedShards(h.fake)).toEqual(['0/1']);
    const grown = [h.fake.addGuild({ onShard: [1, 3] }), h.fake.addGuild({ onShard: [2, 3] })];
    h.fake.invalidateSessions(4000); // a reconnect: the one shard would now hold 3 servers, over the fake's 2
    await h.fake.waitFor(() => connectedShards(h.fake).join() === '0/3,1/3,2/3', 30_000, 'three shards');
    expect(h.fake.gatewayFrames.some((f) => f.op === 2 && JSON.stringify((f.d as { shard?: unknown }).shard) === '[0,1]')).toBe(true);
    await h.fake.waitFor(() => h.adapter.connected() === true, 10_000, 'the adapter ready again');
    const i = imagineIn(h.fake, grown[1]!.channelId, 'a lighthouse after growing');
    await imageOf(h.fake, i);
  }, 90_000);

  it('several processes: each runs the shards DISCORD_SHARDS gives it, and only those servers reach it', async () => {
    let onShard2 = { guildId: '', channelId: '' };
    const h = await harness({
      fake: SMALL_SHARDS,
      config: { discord: { shards: { count: 3, ids: [1, 2] } } },
      beforeLogin: (fake) => {
        fake.addGuild({ onShard: [1, 3] });
        onShard2 = fake.addGuild({ onShard: [2, 3] });
      },
    });
    expect(connectedShards(h.fake)).toEqual(['1/3', '2/3']);
    const missing = shardOf(h.fake.guildId, 3) === 0 ? h.fake.channelId : h.fake.addGuild({ onShard: [0, 3] }).channelId;
    const unheard = imagineIn(h.fake, missing, 'a lighthouse on shard zero');

    // The second process, started as bots/main.ts would be with DISCORD_SHARDS=0/3, on the same Redis queue.
    const { shards: _theFirstProcesses, ...discord } = h.config.discord;
    const config = loadConfig({ env: { DISCORD_SHARDS: '0/3' }, overrides: { ...h.config, discord } as never });
    expect(config.discord.shards).toEqual({ count: 3, ids: [0] });
    const secrets = { REDIS_URL, DISCORD_TOKEN: h.fake.token, DISCORD_APPLICATION_ID: h.fake.appId };
    const log = createLogger('test-discord-shard-0', 'warn');
    const adapter = await createDiscordAdapter({ config, secrets, log });
    const core = createCore({ config, secrets, ports: [adapter.port], log });
    await core.start();
    await adapter.start(core);
    cleanups.push(async () => {
      await adapter.stop();
      await core.stop();
    });
    expect(connectedShards(h.fake)).toEqual(['0/3', '1/3', '2/3']);

    // Sent before shard 0 had a process: nobody heard it (Discord tells the user the application did not respond).
    expect(unheard.callbacks).toEqual([]);
    const heard = [imagineIn(h.fake, missing, 'a lighthouse on shard zero, again'), imagineIn(h.fake, onShard2.channelId, 'a lighthouse on shard two')];
    for (const i of heard) await imageOf(h.fake, i);
    for (const i of heard) expect(i.callbacks.map((c) => c.type)).toEqual([5]); // deferred once: one process each
  }, 90_000);

  it('processes started together identify in turn: one IDENTIFY per 5 s per bucket for the application, not per process', async () => {
    const fake = await FakeDiscord.start({ heartbeatIntervalMs: 5_000, ...SMALL_SHARDS, maxConcurrency: 1 });
    const prefix = `t-${randomUUID().slice(0, 8)}`;
    cleanups.push(async () => {
      await fake.close();
      const redis = createRedis(REDIS_URL, 'test-cleanup');
      await deleteKeys(redis, `${prefix}:*`);
      await closeRedis(redis);
    });
    const start = async (shards: string) => {
      const config = loadConfig({ env: { DISCORD_SHARDS: shards }, overrides: { logLevel: 'warn', queue: { prefix }, http: { botPort: 0 }, discord: { apiBaseUrl: fake.apiBase, registerCommandsOnStart: false } } });
      const secrets = { REDIS_URL, DISCORD_TOKEN: fake.token, DISCORD_APPLICATION_ID: fake.appId };
      const log = createLogger(`test-discord-${shards}`, 'warn');
      const adapter = await createDiscordAdapter({ config, secrets, log });
      const core = createCore({ config, secrets, ports: [adapter.port], log });
      cleanups.push(async () => {
        await adapter.stop();
        await core.stop();
      });
      await core.start();
      await adapter.start(core);
    };
    await Promise.all([start('0/2'), start('1/2')]); // two processes, as compose starts two services
    const identifies = fake.gatewayFrames.filter((f) => f.op === 2).map((f) => f.at);
    expect(identifies).toHaveLength(2);
    // before: both within milliseconds (each process spaced only its own shards), over Discord's limit
    expect(Math.abs(identifies[1]! - identifies[0]!)).toBeGreaterThanOrEqual(IDENTIFY_WINDOW_MS - 50);
    expect(connectedShards(fake)).toEqual(['0/2', '1/2']);
  }, 60_000);

  it('a gateway closed for good on every shard at once is handled once: one login again, not one per shard', async () => {
    const fatal: Error[] = [];
    const log = capturedLog('info');
    const h = await harness({ fake: SMALL_SHARDS, worker: false, log: log.log, onFatal: (e) => fatal.push(e), beforeLogin: (fake) => void [fake.addGuild({ onShard: [1, 3] }), fake.addGuild({ onShard: [2, 3] })] });
    expect(connectedShards(h.fake)).toHaveLength(3);
    const readies = () => log.lines.filter((l) => l.msg === 'discord ready').length;
    h.fake.dropGateway(4012); // every shard at once, with a code discord.js does not reconnect after
    await h.fake.waitFor(() => readies() === 2, 20_000, 'logged in again');
    await new Promise((r) => setTimeout(r, 2_000)); // a second login again would be under way by now
    expect(log.lines.filter((l) => l.msg.startsWith('Discord closed the gateway for good'))).toHaveLength(1);
    expect(readies()).toBe(2);
    expect(fatal).toEqual([]);
    expect(connectedShards(h.fake)).toEqual(['0/3', '1/3', '2/3']);
    expect(h.adapter.connected()).toBe(true);
  }, 60_000);
});
