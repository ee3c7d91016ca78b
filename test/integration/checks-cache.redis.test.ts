// A channel's content checks (docs/checks.md) against the result cache and single flight (docs/cost.md), over real
// Redis, real worker processes (the test double pipeline, whose check() flags every image for nudity) and the core:
// an image made where the checks are off (or relaxed: an age-restricted channel) must not reach a channel whose checks
// would withhold it, neither from the cache nor by joining its job; a request in a channel without checks must not be
// told another channel's checks withheld its image; checks changed while a shared job waits; and a flagged input
// image shared by an identical request (its follower answered, its upload deleted as the leader's is).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CACHED_TEXT, JOINED_TEXT, createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation, Reply } from '../../bots/core/port.ts';
import { CHECKS_DIFFER } from '../../src/cache/fanout.ts';
import { CheckOverrides } from '../../src/checks/policy.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { DiscordDestination } from '../../src/jobs/contract.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, runs, startWorker, stopProcess, until, type Harness, type Proc } from '../doubles/spine-harness.ts';

const harness = (moderation = false): Harness => makeHarness({
  cache: { enabled: true, singleFlight: true },
  checks: { altText: false, moderation: { enabled: moderation } },
  // every check answers "yes, nudity": any channel with moderation on withholds every image
  worker: { pipelineExtra: { stepDelayMs: 40, maxSteps: 3, checkScores: { answers: { nudity: 0.97 } } } },
});
const h = harness();
const secrets = loadSecrets({ REDIS_URL });
let redis: Redis;
let worker: Proc | undefined;
let core: Core;
const port = new RecordingPort('discord');

const dest = (channelId: string, userId = 'u1'): DiscordDestination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const imagine = (prompt: string, channelId: string): Invocation => ({
  input: { command: 'imagine', prompt, seed: 7, ditSteps: 3, decoderSteps: 3 }, destination: dest(channelId), dedupeKey: randomUUID(), isAdmin: false,
});
const jobIdOf = (r: Reply) => {
  if (r.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(r)}`);
  return r.jobId;
};
const moderate = (channelId: string, on = true, prefix = h.prefix) => new CheckOverrides(redis, prefix).set(`discord:g1:${channelId}`, { moderation: on });
const completed = (jobId: string) => until(async () => (await core.queue.getJobState(jobId)) === 'completed' || undefined, 20_000, `job ${jobId} to complete`);

beforeAll(async () => {
  redis = createRedis(REDIS_URL);
  worker = await startWorker(h);
  core = createCore({ config: h.config, secrets, ports: [port] });
  await core.start();
}, 150_000);
afterAll(async () => {
  await core?.stop();
  await stopProcess(worker);
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('content checks and the result cache', () => {
  it('an image cached in a channel without checks is not served to a channel whose checks withhold it', async () => {
    await moderate('strict-1');
    const open = jobIdOf(await core.handle(imagine('a lake at noon', 'open-1')));
    expect(await port.waitFor(open)).toMatchObject({ status: 'succeeded' });
    await completed(open); // the entry is stored once the job is completed
    const strict = await core.handle(imagine('a lake at noon', 'strict-1'));
    expect(strict.kind === 'queued' && strict.text).not.toBe(CACHED_TEXT);
    const result = await port.waitFor(jobIdOf(strict));
    expect(result).toMatchObject({ status: 'failed', error: { code: 'withheld', private: true } });
    expect(result.image).toBeUndefined();
  });

  it('an image cached before an admin turned the checks on is not served in that channel after', async () => {
    const before = jobIdOf(await core.handle(imagine('a cliff at dusk', 'turned-on')));
    expect(await port.waitFor(before)).toMatchObject({ status: 'succeeded' });
    await completed(before);
    await moderate('turned-on');
    const after = await core.handle(imagine('a cliff at dusk', 'turned-on'));
    expect(after.kind === 'queued' && after.text).not.toBe(CACHED_TEXT);
    expect(await port.waitFor(jobIdOf(after))).toMatchObject({ status: 'failed', error: { code: 'withheld' } });
  });
});

// Found by an audit (2026-12-08): the whole deployment shared entries and flights, so a reply or footer told one
// server what someone in another had asked. Sharing across workspaces is an operator's choice (cache.shareAcrossWorkspaces).
describe('the result cache and single flight across guilds', () => {
  const inGuild = (guildId: string, channelId: string, prompt: string): Invocation => ({ ...imagine(prompt, channelId), destination: { ...dest(channelId), guildId } });
  const textOf = (r: Reply) => (r.kind === 'queued' ? r.text : undefined);

  it('a result made in guild g1 reaches g2 neither by joining its job nor from the cache; within g1 it does both', async () => {
    const first = jobIdOf(await core.handle(inGuild('g1', 'ten-1', 'an otter at play')));
    const sameGuild = await core.handle(inGuild('g1', 'ten-2', 'an otter at play'));
    const otherGuild = await core.handle(inGuild('g2', 'ten-1', 'an otter at play'));
    expect(textOf(sameGuild)).toBe(JOINED_TEXT);
    expect(textOf(otherGuild)).not.toBe(JOINED_TEXT);
    for (const id of [first, jobIdOf(sameGuild), jobIdOf(otherGuild)]) expect(await port.waitFor(id)).toMatchObject({ status: 'succeeded' });
    await completed(first);
    await completed(jobIdOf(otherGuild));
    // the worker stored g1's result where g1's bot looks (the same scope on both sides), and g3 does not find it
    expect(textOf(await core.handle(inGuild('g1', 'ten-3', 'an otter at play')))).toBe(CACHED_TEXT);
    const third = await core.handle(inGuild('g3', 'ten-1', 'an otter at play'));
    expect(textOf(third)).not.toBe(CACHED_TEXT);
    const ran = await port.waitFor(jobIdOf(third));
    expect(ran).toMatchObject({ status: 'succeeded' });
    expect(ran.servedFrom).toBeUndefined(); // made for g3, not shared
    expect(runs(h).filter((r) => r.kind === 'generate' && r.prompt === 'an otter at play')).toHaveLength(3); // g1, g2, g3
  });
});

describe('content checks and single flight', () => {
  it('a request in a checked channel does not join, and is not handed, an unchecked channel\'s job', async () => {
    await moderate('strict-2');
    const open = jobIdOf(await core.handle(imagine('a field of poppies', 'open-2')));
    const strict = await core.handle(imagine('a field of poppies', 'strict-2'));
    expect(strict.kind === 'queued' && strict.text).not.toBe(JOINED_TEXT);
    expect(await port.waitFor(open)).toMatchObject({ status: 'succeeded' });
    const result = await port.waitFor(jobIdOf(strict));
    expect(result).toMatchObject({ status: 'failed', error: { code: 'withheld' } });
    expect(result.image).toBeUndefined();
    expect(runs(h).filter((r) => r.kind === 'generate' && r.prompt === 'a field of poppies')).toHaveLength(2);
  });

  it('a request in a channel without checks is not told that another channel\'s checks withheld its image', async () => {
    await moderate('strict-3');
    const strict = jobIdOf(await core.handle(imagine('a harbour in fog', 'strict-3')));
    const open = await core.handle(imagine('a harbour in fog', 'open-3'));
    expect(await port.waitFor(strict)).toMatchObject({ status: 'failed', error: { code: 'withheld' } });
    const result = await port.waitFor(jobIdOf(open));
    expect(result).toMatchObject({ status: 'succeeded' });
  });
});

describe('a flagged input image shared by an identical request', () => {
  it('the follower is told the verdict (it waited for ever), and its upload is deleted too, as the leader\'s is', async () => {
    const { default: sharp } = await import('sharp');
    const png = new Uint8Array(await sharp({ create: { width: 32, height: 32, channels: 3, background: '#a05030' } }).png().toBuffer());
    await moderate('strict-7'); // checkInputs is on by default: the input is asked the questions too, and flagged
    const vary = (): Invocation => ({ input: { command: 'vary', image: { bytes: png }, prompt: 'in the rain', seed: 3 }, destination: dest('strict-7'), dedupeKey: randomUUID(), isAdmin: false });
    const leader = jobIdOf(await core.handle(vary()));
    const follower = await core.handle(vary());
    expect(follower.kind === 'queued' && follower.text).toBe(JOINED_TEXT);
    const served = JSON.parse((await redis.get(`${h.prefix}:served:${jobIdOf(follower)}`))!) as { request: { imageKey: string } };
    expect(await redis.exists(served.request.imageKey)).toBe(1);
    expect(await port.waitFor(leader)).toMatchObject({ status: 'failed', error: { code: 'input_withheld', message: expect.stringMatching(/can't work with that image/) } });
    expect(await port.waitFor(jobIdOf(follower))).toMatchObject({ status: 'failed', error: { code: 'input_withheld' } });
    const leaderUpload = ((await core.queue.getJob(leader))!.data as { imageKey: string }).imageKey;
    expect(await redis.exists(leaderUpload)).toBe(0);
    await until(async () => (await redis.exists(served.request.imageKey)) === 0 || undefined, 5_000, "the follower's flagged upload to be deleted");
  });
});

describe('content checks changed while a shared job waits in the queue', () => {
  // No worker until the checks have changed: the jobs wait in the queue meanwhile.
  const q = harness();
  const queuedPort = new RecordingPort('discord');
  let queuedCore: Core;
  let queuedWorker: Proc | undefined;
  beforeAll(async () => {
    queuedCore = createCore({ config: q.config, secrets, ports: [queuedPort] });
    await queuedCore.start();
  });
  afterAll(async () => {
    await queuedCore?.stop();
    await stopProcess(queuedWorker);
    await cleanup(redis, q.prefix);
  });

  it('a follower whose channel turned its checks on is not handed the image; one in the leader\'s channel gets its verdict', async () => {
    await queuedCore.cache.publishModel('a-model', 'a-worker'); // a worker is running, as far as the bot knows
    const leader = jobIdOf(await queuedCore.handle(imagine('a meadow at dawn', 'lead-5')));
    const other = await queuedCore.handle(imagine('a meadow at dawn', 'other-5')); // checks alike (off): joins
    expect(other.kind === 'queued' && other.text).toBe(JOINED_TEXT);
    const sameChannel = await queuedCore.handle(imagine('a meadow at dawn', 'lead-5'));
    expect(sameChannel.kind === 'queued' && sameChannel.text).toBe(JOINED_TEXT);
    await moderate('other-5', true, q.prefix); // while the job waits
    queuedWorker = await startWorker(q);
    expect(await queuedPort.waitFor(leader, 20_000)).toMatchObject({ status: 'succeeded' });
    const told = await queuedPort.waitFor(jobIdOf(other), 20_000);
    expect(told).toMatchObject({ status: 'failed', error: { message: CHECKS_DIFFER, private: true } });
    expect(told.image).toBeUndefined();
    expect(await queuedPort.waitFor(jobIdOf(sameChannel), 20_000)).toMatchObject({ status: 'succeeded', servedFrom: 'shared' });
  });

  it('a leader whose channel turned its checks on while it waited still ends its flight: the follower gets the verdict', async () => {
    await stopProcess(queuedWorker);
    queuedWorker = undefined;
    const leader = jobIdOf(await queuedCore.handle(imagine('a bay at night', 'lead-6')));
    const follower = await queuedCore.handle(imagine('a bay at night', 'lead-6'));
    expect(follower.kind === 'queued' && follower.text).toBe(JOINED_TEXT);
    await moderate('lead-6', true, q.prefix);
    queuedWorker = await startWorker(q);
    expect(await queuedPort.waitFor(leader, 20_000)).toMatchObject({ status: 'failed', error: { code: 'withheld' } });
    expect(await queuedPort.waitFor(jobIdOf(follower), 20_000)).toMatchObject({ status: 'failed', error: { code: 'withheld' } });
    // turned off again: the flight is over, nothing was cached, and the request runs under the checks now
    await moderate('lead-6', false, q.prefix);
    const again = await queuedCore.handle(imagine('a bay at night', 'lead-6'));
    expect(again.kind === 'queued' && [JOINED_TEXT, CACHED_TEXT]).not.toContain(again.text);
    expect(await queuedPort.waitFor(jobIdOf(again), 20_000)).toMatchObject({ status: 'succeeded' });
  });
});

describe('an age-restricted channel (checks.ageRestricted: nudity never withheld) beside a moderated one', () => {
  const m = harness(true); // moderation on everywhere; Discord channels marked nsfw relax nudity to 1 (the default)
  const moderatedPort = new RecordingPort('discord');
  let moderatedCore: Core;
  let moderatedWorker: Proc | undefined;
  beforeAll(async () => {
    moderatedWorker = await startWorker(m);
    moderatedCore = createCore({ config: m.config, secrets, ports: [moderatedPort] });
    await moderatedCore.start();
  }, 150_000);
  afterAll(async () => {
    await moderatedCore?.stop();
    await stopProcess(moderatedWorker);
    await cleanup(redis, m.prefix);
  });
  const inChannel = (prompt: string, channelId: string, nsfw: boolean): Invocation => ({ ...imagine(prompt, channelId), destination: { ...dest(channelId), ...(nsfw ? { nsfw: true } : {}) } });

  it('its images reach the moderated channel neither from the cache nor by sharing its job', async () => {
    const adult = jobIdOf(await moderatedCore.handle(inChannel('a figure study', 'adult', true)));
    expect(await moderatedPort.waitFor(adult)).toMatchObject({ status: 'succeeded' });
    await until(async () => (await moderatedCore.queue.getJobState(adult)) === 'completed' || undefined, 20_000, 'the job to complete');
    const cached = await moderatedCore.handle(inChannel('a figure study', 'general', false));
    expect(await moderatedPort.waitFor(jobIdOf(cached))).toMatchObject({ status: 'failed', error: { code: 'withheld' } });

    const leader = jobIdOf(await moderatedCore.handle(inChannel('a second study', 'adult', true)));
    const follower = await moderatedCore.handle(inChannel('a second study', 'general', false));
    expect(await moderatedPort.waitFor(leader)).toMatchObject({ status: 'succeeded' });
    expect(await moderatedPort.waitFor(jobIdOf(follower))).toMatchObject({ status: 'failed', error: { code: 'withheld' } });
  });
});
