// Issue 20: a channel in no-log mode, through the real processes. `npm run bots` (bots/main.ts, real @slack/bolt
// and discord.js against the fake Slack and the fake Discord) and a worker (worker/main.ts, test double pipeline) run as child processes at log level
// debug; /imagine and an @mention question are driven through the fake, both succeeding and failing with a model
// refusal that quotes the input. Every line either process wrote (stdout and stderr) is grepped: in the no-log
// channel no prompt or question text appears; in a channel without it the refusal is logged verbatim, so the grep
// can fail.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { SettingsStore } from '../../bots/core/settings.ts';
import { loadConfig } from '../../src/config/load.ts';
import { spawnWithConfig, startWorkerProcess, stopProcess, type Proc } from '../doubles/spine-harness.ts';
import { FakeDiscord } from '../fakes/discord/server.ts';
import { FakeSlack } from '../fakes/slack/server.ts';
import { eventCallback, slashCommand } from '../fakes/slack/payloads.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const QUIET = 'C0QUIET';
const LOUD = 'C0LOUD';
const USER = 'U0ALICE';
const prefix = `t-${randomUUID().slice(0, 8)}`;
let fake: FakeSlack;
let discord: FakeDiscord;
let bots: Proc | undefined;
let worker: Proc | undefined;
let redis: Redis;
let dir: string;

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  fake.addUser(USER);
  discord = await FakeDiscord.start({ heartbeatIntervalMs: 5_000 });
  dir = mkdtempSync(join(tmpdir(), 'no-log-'));
  const tree = {
    logLevel: 'debug',
    queue: { prefix, backoffMs: 200, deliveryBackoffMs: 200 },
    cache: { enabled: false, singleFlight: false },
    // One user sends each channel's four requests at once; the mentions' order is the downloads' (concurrent): under
    // the default cap of 3 in flight, whichever came fourth was refused ("3 requests in progress") when the first jobs
    // had not finished yet. This test is about logs, not limits.
    limits: { user: { requestsPerWindow: 100, windowSeconds: 60, burst: 100, maxConcurrent: 10 } },
    discord: { enabled: true, apiBaseUrl: discord.apiBase, downloadHosts: [new URL(discord.origin).host], progressEditIntervalMs: 50, restRetries: 1 },
    slack: { enabled: true, mode: 'socket', apiUrl: fake.apiUrl, downloadHosts: [fake.host], progressUpdateIntervalMs: 50 },
    http: { botPort: 0, host: '127.0.0.1' },
    // 'REFUSE' in a prompt or question: the double throws a UserError that quotes the input (as a model refusal may)
    worker: { pipelineModule: 'test/doubles/pipeline.ts', pipelineExtra: { stepDelayMs: 5, maxSteps: 2, failures: { REFUSE: 'user' } }, healthPort: 0 },
  };
  const configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, stringify(tree));
  redis = createRedis(REDIS_URL, 'test-no-log');
  const config = loadConfig({ env: { BLIP3O_CONFIG: configFile } });
  const store = new SettingsStore(redis, config);
  await store.set('channel', { platform: 'slack', teamId: fake.teamId, channelId: QUIET, userId: USER }, { noLog: true });
  // the fake Discord's one channel is in no-log mode too
  await store.set('channel', { platform: 'discord', guildId: discord.guildId, channelId: discord.channelId, userId: 'u', applicationId: discord.appId }, { noLog: true });
  const env = { LOG_LEVEL: 'debug', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken, DISCORD_TOKEN: discord.token, DISCORD_APPLICATION_ID: discord.appId };
  worker = await startWorkerProcess(configFile);
  bots = spawnWithConfig('bots/main.ts', configFile, [], env);
  await bots.waitFor('bots ready', 120_000);
}, 180_000);

afterAll(async () => {
  await stopProcess(bots);
  await stopProcess(worker);
  await fake?.stop();
  await discord?.close();
  if (redis) {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await closeRedis(redis);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

const logs = () => `${bots?.output() ?? ''}\n${worker?.output() ?? ''}`;

/** Drive an /imagine and a question (each once succeeding, once refused) in `channel`; resolves when all four are answered. */
async function exercise(channel: string, secret: string): Promise<void> {
  const before = fake.calls.length;
  for (const text of [`a ${secret} lantern --seed 1`, `a ${secret} REFUSE lantern --seed 2`])
    await fake.link.ack(fake.sendEnvelope('slash_commands', slashCommand(fake, { text, channel, user: USER })));
  const png = new Uint8Array(await sharp({ create: { width: 20, height: 20, channels: 3, background: '#28c' } }).png().toBuffer());
  for (const question of [`is this a ${secret}?`, `is this a ${secret} REFUSE?`]) {
    const file = fake.seedFile(png, 'blue.png', 'image/png');
    const m = fake.postUserMessage({ channel, user: USER, text: `<@${fake.botUserId}> ${question}`, files: [file] });
    await fake.link.ack(fake.sendEnvelope('events_api', eventCallback(fake, { type: 'app_mention', user: USER, text: m.text, ts: m.ts, channel, files: m.files })));
  }
  // Done: two uploads (the image), one answer, and two refusals told privately.
  let seen = {};
  await fake
    .waitFor(() => {
      const since = fake.calls.slice(before);
      const uploads = since.filter((c) => c.kind === 'api' && c.method === 'files.completeUploadExternal').length;
      const refusals = since.filter((c) => c.kind === 'api' && c.method === 'chat.postEphemeral').length;
      const answers = fake.botMessages(channel).filter((x) => x.metadata?.event_type === 'blip3o_answer').length;
      seen = { uploads, refusals, answers };
      return uploads >= 1 && refusals >= 2 && answers >= 1;
    }, 90_000, 'the four jobs')
    .catch((e: Error) => {
      const told = fake.calls.slice(before).filter((c) => c.method === 'chat.postEphemeral').map((c) => String(c.args.text));
      throw new Error(`${e.message}: ${JSON.stringify(seen)}; told privately ${JSON.stringify(told)}; calls ${fake.calls.slice(before).map((c) => c.method).join(',')}\n${logs().slice(-4000)}`);
    });
}

describe('no-log mode through the bot and worker processes', () => {
  it('in a no-log channel no log line of either process carries a prompt or question; in another channel the refusal is logged', async () => {
    const quiet = `zebra${randomUUID().slice(0, 6)}`;
    await exercise(QUIET, quiet);
    // Discord, in the same bots process: an image and a refusal in its no-log channel.
    const quietDiscord = `ibex${randomUUID().slice(0, 6)}`;
    const done = [`a ${quietDiscord} kite`, `a ${quietDiscord} REFUSE kite`].map((prompt) => discord.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: prompt }] }));
    await discord.waitFor(() => {
      const [ok, refused] = done.map((i) => discord.original(i));
      return (ok?.attachments.length ?? 0) > 0 && refused?.content.includes('refuses') ? true : undefined;
    }, 90_000, 'the Discord image and refusal');
    const loud = `okapi${randomUUID().slice(0, 6)}`;
    await exercise(LOUD, loud);
    await new Promise((r) => setTimeout(r, 500)); // the last log lines of the delivery
    const all = logs();
    const lines = all.split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(20); // both processes did log, at debug level
    expect(lines.filter((l) => l.includes(quiet) || l.includes(quietDiscord))).toEqual([]);
    expect(all).toContain(loud); // without no-log the quoted refusal reaches the worker's log: the grep above can fail
  }, 240_000);
});
