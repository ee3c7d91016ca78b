// /blip3o-admin limits, queue and checks (bots/core/commands/{limits,queue,checks}.ts) through a real core over real
// Redis, no model worker: the exact texts an admin reads, that nothing of another server or workspace shows up in
// them, the limits' edges, and a purge that stops a running job and tells each removed job's owner once.
// test/integration/limits-admin.redis.test.ts covers the same commands across two bot instances.
import { randomUUID } from 'node:crypto';
import { Job as BullJob, type Job, type Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checksCommand, describePolicy, parseCheckSettings } from '../../../../../bots/core/commands/checks.ts';
import { describeLimit, describeUsage, limitsCommand, targetChannel } from '../../../../../bots/core/commands/limits.ts';
import { queueCommand } from '../../../../../bots/core/commands/queue.ts';
import type { CommandInput, Invocation, Reply } from '../../../../../bots/core/port.ts';
import { createCore, type Core } from '../../../../../bots/core/submit.ts';
import { CheckOverrides, resolvePolicy } from '../../../../../src/checks/policy.ts';
import { loadConfig, loadSecrets } from '../../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../../src/config/schema.ts';
import { isUserError } from '../../../../../src/errors.ts';
import { isCancelRequested } from '../../../../../src/jobs/cancel.ts';
import { QueueNames, type Destination, type JobRequest, type JobResult } from '../../../../../src/jobs/contract.ts';
import { createDeliveryQueue, createQueueWorker } from '../../../../../src/jobs/queue.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../../../src/redis.ts';
import { startOrHold } from '../../../../../src/scheduling/fair.ts';
import { dieAt } from '../../../../doubles/crash-point.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-admin-${randomUUID().slice(0, 8)}`;
const OFF: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
const overrides = {
    logLevel: 'fatal' as const,
    limits: { channel: { requestsPerWindow: 10, windowSeconds: 60, burst: 0, maxConcurrent: 0 }, user: { ...OFF, maxConcurrent: 5 }, workspace: OFF, channelOverrides: { 'discord:g1:from-config': { ...OFF, maxConcurrent: 7 } } },
    checks: { moderation: { enabled: true }, channelOverrides: { 'discord:gk:K2': { thresholds: { violence: 0.3 } } } },
};
const config = loadConfig({ env: {}, overrides: { ...overrides, queue: { prefix } } });
let redis: Redis;
let core: Core;

const discord = (channelId = 'C', userId = 'mod', guildId = 'g1'): Destination => ({ platform: 'discord', guildId, channelId, userId, applicationId: 'app' });
const slack = (channelId = 'SC', userId = 'UMOD'): Destination => ({ platform: 'slack', teamId: 'T1', channelId, userId });
const inv = (input: CommandInput, destination: Destination = discord(), isAdmin = true): Invocation => ({ input, destination, dedupeKey: randomUUID(), isAdmin });
const run = (input: CommandInput, destination?: Destination, isAdmin?: boolean) => core.handle(inv(input, destination, isAdmin));
const textOf = async (reply: Promise<Reply> | Reply) => {
  const r = await reply;
  if (r.kind !== 'text') throw new Error(`not a text reply: ${JSON.stringify(r)}`);
  expect(r.private).toBe(true); // admin answers are for the admin alone
  return r.text;
};
const imagine = async (d: Destination) => {
  const r = await core.handle(inv({ command: 'imagine', prompt: `a lighthouse ${randomUUID()}` }, d, false));
  if (r.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(r)}`);
  return r.jobId;
};

/**
 * A model worker that takes the jobs of one server, reports their start as worker/processor.ts does (unless `silent`:
 * the moment between taking a job and telling the scheduler) and holds them until close(); other jobs it finishes.
 */
function holdingWorker(c: Core, guildIds: string | string[], opts: { silent?: boolean; concurrency?: number } = {}) {
  const held: (() => void)[] = [];
  const taken: string[] = [];
  const scheduler = c.gate.scheduler;
  const worker: Worker = createQueueWorker(c.config, redis, QueueNames.jobs, async (job: Job<JobRequest>, token?: string) => {
    const d = job.data.destination;
    if (d.platform !== 'discord' || ![guildIds].flat().includes(d.guildId ?? '')) return;
    if (!opts.silent) await startOrHold(scheduler, job, token);
    taken.push(job.id!);
    await new Promise<void>((resolve) => held.push(resolve));
  }, { concurrency: opts.concurrency ?? 1 });
  return {
    async took(jobId: string) {
      const end = Date.now() + 10_000;
      while (!taken.includes(jobId)) {
        if (Date.now() > end) throw new Error(`the worker never took ${jobId}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async close() {
      held.forEach((release) => release());
      await worker.close();
    },
  };
}

beforeAll(() => {
  redis = createRedis(REDIS_URL, 'test-admin');
  core = createCore({ config, secrets: loadSecrets({ REDIS_URL }), ports: [], redis });
});
afterAll(async () => {
  await core.stop();
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('limits texts', () => {
  it('describes a limit and its use, with each part turned off', () => {
    expect(describeLimit({ requestsPerWindow: 5, windowSeconds: 60, burst: 8, maxConcurrent: 2 })).toBe('5 requests per minute (bursts of 8), at most 2 jobs queued or running');
    expect(describeLimit({ requestsPerWindow: 5, windowSeconds: 60, burst: 0, maxConcurrent: 0 })).toBe('5 requests per minute (bursts of 5), no cap on jobs queued or running');
    expect(describeLimit({ requestsPerWindow: 0, windowSeconds: 60, burst: 9, maxConcurrent: 1 })).toBe('no rate limit, at most 1 job queued or running'); // was "1 jobs"
    expect(describeLimit({ requestsPerWindow: 1, windowSeconds: 3600, burst: 0, maxConcurrent: 0 })).toBe('1 request per hour (bursts of 1), no cap on jobs queued or running');
    const limit = { requestsPerWindow: 5, windowSeconds: 60, burst: 0, maxConcurrent: 2 };
    expect(describeUsage({ tokens: 3, held: 1, limit })).toBe('3 of 5 requests available now; 1/2 jobs queued or running');
    expect(describeUsage({ tokens: 3, held: 1, limit: { ...limit, burst: 9 } })).toBe('3 of 9 requests available now; 1/2 jobs queued or running');
    expect(describeUsage({ tokens: null, held: 4, limit: { ...limit, maxConcurrent: 0 } })).toBe('4 jobs queued or running');
    expect(describeUsage({ tokens: null, held: 1, limit: { ...limit, maxConcurrent: 0 } })).toBe('1 job queued or running');
  });

  it('acts on this channel, or another of the same server, never one of another server', () => {
    const here = inv({ command: 'limits', action: 'show' });
    expect(targetChannel(here, undefined)).toBe('discord:g1:C');
    expect(targetChannel(here, '')).toBe('discord:g1:C');
    expect(targetChannel(here, 'discord:g1:C')).toBe('discord:g1:C');
    expect(targetChannel(here, 'discord:g1:other')).toBe('discord:g1:other');
    for (const bad of ['discord:g2:other', 'discord:g1:', 'discord:g1', 'slack:g1:other', 'other']) {
      let e: unknown;
      try {
        targetChannel(here, bad);
      } catch (err) {
        e = err;
      }
      expect(isUserError(e) && e.message, bad).toBe('You can only manage channels of this server or workspace.');
    }
  });
});

describe('/blip3o-admin limits', () => {
  it("shows this channel's limits and use, the per-user and whole-server ones, and other channels of this server only", async () => {
    await core.gate.limiter.setChannelLimit('discord:g1:tuned', { ...OFF, requestsPerWindow: 2 });
    await core.gate.limiter.setChannelLimit('discord:g1:tuned-too', { ...OFF, requestsPerWindow: 4 });
    await core.gate.limiter.setChannelLimit('discord:g2:secret', { ...OFF, requestsPerWindow: 3 }); // another server's
    await imagine(discord('L1', 'ann'));
    expect(await textOf(run({ command: 'limits', action: 'show' }, discord('L1', 'ann')))).toBe(
      [
        'Limits for this channel (the default): 10 requests per minute (bursts of 10), no cap on jobs queued or running.',
        '  now: 9 of 10 requests available now; 1 job queued or running',
        'Per user: no rate limit, at most 5 jobs queued or running. You: 1/5 jobs queued or running.',
        'Whole server: no rate limit, no cap on jobs queued or running. Now: 1 job queued or running.',
        'Other channels with limits set by an admin: discord:g1:tuned, discord:g1:tuned-too',
      ].join('\n'),
    );
    // The channel itself is not listed among the "other" ones; on Slack it is the whole workspace, with no others.
    expect(await textOf(run({ command: 'limits', action: 'show', channelKey: 'discord:g1:tuned' }, discord('L1')))).toMatch(/^Limits for discord:g1:tuned \(set by an admin\): 2 requests per minute[^]*\nOther channels with limits set by an admin: discord:g1:tuned-too$/);
    expect(await textOf(run({ command: 'limits', action: 'show', channelKey: 'discord:g1:from-config' }, discord('L1')))).toMatch(/^Limits for discord:g1:from-config \(the config file\): no rate limit, at most 7 jobs queued or running\.\n/);
    await core.gate.limiter.resetChannelLimit('discord:g1:tuned-too');
    expect(await textOf(run({ command: 'limits', action: 'show' }, slack()))).toMatch(/\nWhole workspace: no rate limit, no cap on jobs queued or running\. Now: 0 jobs queued or running\.$/);
  });

  it('sets part of a limit over what applies, and resets to the config file or the default', async () => {
    expect(await textOf(run({ command: 'limits', action: 'set', spec: { maxConcurrent: 4 }, channelKey: 'discord:g1:from-config' }))).toBe(
      'Limits for discord:g1:from-config are now no rate limit, at most 4 jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.',
    );
    expect(await textOf(run({ command: 'limits', action: 'reset', channelKey: 'discord:g1:from-config' }))).toBe(
      'Limits for discord:g1:from-config are back to the config file: no rate limit, at most 7 jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.',
    );
    expect(await textOf(run({ command: 'limits', action: 'set', spec: { burst: 20 } }, discord('S1')))).toBe('Limits for this channel are now 10 requests per minute (bursts of 20), no cap on jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.');
    expect(await textOf(run({ command: 'limits', action: 'reset' }, discord('S1')))).toBe('Limits for this channel are back to the default: 10 requests per minute (bursts of 10), no cap on jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.');
    // Refusals name what the admin typed on their platform (Slack's window=, burst=), never the stored fields.
    const bad = await run({ command: 'limits', action: 'set', spec: { windowSeconds: 0, burst: -1 } }, slack());
    expect(bad.kind === 'error' && bad.text).toBe(
      'Cannot set those limits: `window` must be a whole number of seconds from 1 to 2592000 (30 days); you gave 0; `burst` must be a whole number from 0 to 1000000; you gave -1. ' +
        'Usage: `/blip3o-admin limits set requests=5 window=60 burst=5 concurrent=2` (0 turns one off).',
    );
    const empty = await run({ command: 'limits', action: 'set' });
    expect(empty.kind === 'error' && empty.text).toBe('Say which limits to set. Usage: `/blip3o-admin limits set per-minute:5 concurrent:2` (0 turns one off).');
  });

  it('refuses a window over 30 days or a burst over 1000000, saying the bounds, and keeps the limits', async () => {
    const huge = await run({ command: 'limits', action: 'set', spec: { windowSeconds: 9_007_199_254_740_991, requestsPerWindow: 1, burst: 1 } }, slack('B1'));
    expect(huge.kind === 'error' && huge.text).toBe(
      'Cannot set those limits: `window` must be a whole number of seconds from 1 to 2592000 (30 days); you gave 9007199254740991. Usage: `/blip3o-admin limits set requests=5 window=60 burst=5 concurrent=2` (0 turns one off).',
    );
    // Discord's per-minute sets the rate and its burst: said once
    const big = await run({ command: 'limits', action: 'set', spec: { requestsPerWindow: 1_000_001, windowSeconds: 60, burst: 1_000_001 } }, discord('B1'));
    expect(big.kind === 'error' && big.text).toBe('Cannot set those limits: `per-minute` must be a whole number from 0 to 1000000; you gave 1000001. Usage: `/blip3o-admin limits set per-minute:5 concurrent:2` (0 turns one off).');
    expect(await core.gate.limiter.channelLimit('slack:T1:B1')).toMatchObject({ source: 'default' });
    expect(await core.gate.limiter.channelLimit('discord:g1:B1')).toMatchObject({ source: 'default' });
    expect(await textOf(run({ command: 'limits', action: 'set', spec: { windowSeconds: 30 * 86_400, burst: 1_000_000 } }, discord('B1')))).toBe(
      'Limits for this channel are now 10 requests per 30 days (bursts of 1000000), no cap on jobs queued or running. They count all its users together and apply from the next request on; jobs already queued or running keep their place.',
    );
    await run({ command: 'limits', action: 'reset' }, discord('B1'));
  });
});

describe('/blip3o-admin queue', () => {
  it("shows the whole queue's depth (running, waiting, channels with jobs) but only this server's channels, this one first", async () => {
    // A core on a prefix of its own: the counts are exact.
    const own = `${prefix}-q`;
    const q = createCore({ config: loadConfig({ env: {}, overrides: { ...overrides, queue: { prefix: own } } }), secrets: loadSecrets({ REDIS_URL }), ports: [], redis });
    const holder = holdingWorker(q, 'gq');
    try {
      const submit = async (d: Destination) => {
        const r = await q.handle(inv({ command: 'imagine', prompt: `a lighthouse ${randomUUID()}` }, d, false));
        if (r.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(r)}`);
        return r.jobId;
      };
      await q.cache.publishModel('a-model', 'a-worker'); // the worker that holds the running job
      const runningId = await submit(discord('QR', 'u0', 'gq'));
      await holder.took(runningId);
      await q.gate.scheduler.pause('discord:gq:QA');
      await q.gate.scheduler.pause('discord:gq:QEMPTY'); // paused, nothing waiting: not among the "channels" counted
      await q.gate.scheduler.pause('discord:gq-other:QX');
      for (const d of [discord('QA', 'u1', 'gq'), discord('QA', 'u1', 'gq'), discord('QB', 'u2', 'gq'), discord('QB', 'u2', 'gq'), discord('QX', 'u3', 'gq-other')]) await submit(d);
      await q.gate.scheduler.pause('discord:gq:QB');
      const status = (d: Destination) => textOf(q.handle(inv({ command: 'queue', action: 'status' }, d)));
      const idle = await status(discord('QIDLE', 'mod', 'gq'));
      expect(idle.split('\n')).toEqual([
        'Queue: 1 running, 5 waiting in 3 channels.',
        'GPU workers ready: 1.',
        'this channel: 0 waiting; 10 of 10 requests available now; 0 jobs queued or running',
        'discord:gq:QA: 2 waiting (paused); 8 of 10 requests available now; 2 jobs queued or running',
        'discord:gq:QB: 2 waiting (paused); 8 of 10 requests available now; 2 jobs queued or running',
        'discord:gq:QEMPTY: 0 waiting (paused); 10 of 10 requests available now; 0 jobs queued or running',
      ]);
      // From a channel with jobs: that channel once, named "this channel", in its place.
      const fromQA = (await status(discord('QA', 'mod', 'gq'))).split('\n');
      expect(fromQA.filter((l) => l.startsWith('this channel'))).toEqual(['this channel: 2 waiting (paused); 8 of 10 requests available now; 2 jobs queued or running']);
      expect(fromQA).toHaveLength(5); // the totals, the workers, three channels
      expect(fromQA.join('\n')).not.toContain('gq-other');
    } finally {
      await holder.close();
      await q.stop();
      await deleteKeys(redis, `${own}:*`);
    }
  });

  it('pauses and resumes this channel', async () => {
    const d = discord('P1', 'mod', 'gp');
    expect(await textOf(run({ command: 'queue', action: 'pause' }, d))).toBe('Paused this channel: its jobs keep their place in line and wait; new requests queue behind them. Resume with `/blip3o-admin queue resume`.');
    expect(await core.gate.scheduler.isPaused('discord:gp:P1')).toBe(true);
    expect(await textOf(run({ command: 'queue', action: 'resume' }, d))).toBe('Resumed this channel: its jobs run again, in order.');
    expect(await core.gate.scheduler.isPaused('discord:gp:P1')).toBe(false);
  });

  it("purges a user's waiting jobs in this server (each owner told once) and stops their running one; other users' and servers' are kept", async () => {
    const g = 'gpurge';
    const holder = holdingWorker(core, [g, 'gpurge-other'], { concurrency: 3 });
    try {
      const running = await imagine(discord('PA', 'eve', g));
      const othersRunning = await imagine(discord('PC', 'frank', g));
      await holder.took(running);
      await holder.took(othersRunning);
      const elsewhere = await imagine(discord('PX', 'eve', 'gpurge-other')); // eve's, running in another server
      await holder.took(elsewhere);
      const waiting = [await imagine(discord('PA', 'eve', g)), await imagine(discord('PB', 'eve', g))];
      const kept = [await imagine(discord('PA', 'frank', g)), await imagine(discord('PY', 'eve', 'gpurge-other'))];
      expect(await textOf(run({ command: 'queue', action: 'purge-user', targetUserId: 'eve' }, discord('PA', 'mod', g)))).toBe('Removed 2 waiting jobs of that user; stopping 1 running.');
      for (const id of waiting) expect(await core.queue.getJob(id)).toBeUndefined();
      for (const id of kept) expect(await core.queue.getJob(id)).toBeDefined();
      expect(await isCancelRequested(redis, config, running)).toBe(true);
      for (const id of [...kept, othersRunning, elsewhere]) expect(await isCancelRequested(redis, config, id)).toBe(false);
      // Each removed job's owner is told once: a "result" delivery job under the job's own id.
      const delivery = createDeliveryQueue(config, redis, 'delivery-discord');
      try {
        for (const id of waiting) {
          const job = await delivery.getJob(id);
          expect(job?.name).toBe('result');
          expect(job?.data as JobResult | undefined).toMatchObject({ jobId: id, status: 'cancelled', error: { code: 'cancelled', message: 'Removed from the queue by an admin.', userFacing: true } });
        }
        expect(await textOf(run({ command: 'queue', action: 'purge-user', targetUserId: 'frank' }, discord('PA', 'mod', g)))).toBe('Removed 1 waiting job of that user; stopping 1 running.');
        expect(await delivery.count()).toBe(3);
      } finally {
        await delivery.close();
      }
      const none = await run({ command: 'queue', action: 'purge-user' }, discord('PA', 'mod', g));
      expect(none).toEqual({ kind: 'error', private: true, text: 'Name the user whose jobs to remove.' });
    } finally {
      await holder.close();
    }
  }, 30_000);

  it('tells the owner before removing the job: a bot that dies at the removal has handed the result over already', async () => {
    const id = await imagine(discord('PD', 'hal', 'gdies'));
    const removal = dieAt(BullJob.prototype, 'remove', (job) => (job as Job).id === id); // the process is gone there
    try {
      void run({ command: 'queue', action: 'purge-user', targetUserId: 'hal' }, discord('PD', 'mod', 'gdies'));
      await removal.reached;
    } finally {
      removal.restore();
    }
    const delivery = createDeliveryQueue(config, redis, 'delivery-discord');
    try {
      // before: removed first, and a bot dying before the hand-over left an accepted job with no result at all
      expect((await delivery.getJob(id))?.data).toMatchObject({ jobId: id, status: 'cancelled', error: { message: 'Removed from the queue by an admin.' } });
    } finally {
      await delivery.close();
    }
  });

  it("a retention channel's removed jobs are told so under the channel's TTL (as a cancel's are), with the queue's keep options", async () => {
    const inRetention = { ...discord('PR', 'ida', 'gttl'), retentionSeconds: 120 } as Destination;
    const jobs = [await imagine(inRetention), await imagine(inRetention)];
    expect(await textOf(run({ command: 'queue', action: 'purge-user', targetUserId: 'ida' }, discord('PQ', 'mod', 'gttl')))).toBe('Removed 2 waiting jobs of that user.');
    const delivery = createDeliveryQueue(config, redis, 'delivery-discord');
    try {
      // before: the purge added its own delivery job without the channel's TTL. The TTL travels in the result; BullMQ's
      // options stay the queue's, since a TTL as their age deleted every channel's finished results (src/jobs/retention.ts)
      const kept = { removeOnComplete: { age: config.queue.keepCompletedSeconds }, removeOnFail: { age: config.queue.keepFailedSeconds } };
      for (const id of jobs) expect(await delivery.getJob(id)).toMatchObject({ data: { destination: { retentionSeconds: 120 } }, opts: kept });
    } finally {
      await delivery.close();
    }
  });

  it('counts a running job once, even in the moment between a worker taking it and telling the scheduler', async () => {
    const g = 'gtaken';
    // This worker never reports the start: the job is both "waiting" to the scheduler and active (locked) in BullMQ.
    const holder = holdingWorker(core, g, { silent: true });
    try {
      const id = await imagine(discord('T1', 'gil', g));
      await holder.took(id);
      expect(await textOf(run({ command: 'queue', action: 'purge-user', targetUserId: 'gil' }, discord('T1', 'mod', g)))).toBe('Removed 0 waiting jobs of that user; stopping 1 running.');
      expect(await isCancelRequested(redis, config, id)).toBe(true);
    } finally {
      await holder.close();
    }
  }, 30_000);
});

describe('/blip3o-admin checks', () => {
  const questions = config.checks.moderation.questions.map((q) => q.id);
  const refusal = (text: string) => {
    try {
      parseCheckSettings(text, questions);
    } catch (e) {
      if (isUserError(e)) return e.message;
      throw e;
    }
    throw new Error(`accepted: ${text}`);
  };

  it('reads on/off, fractions and re-rolls, and refuses anything else with what it accepts', () => {
    expect(parseCheckSettings('  alt=YES   match=true moderation=on ', questions)).toEqual({ altText: true, match: true, moderation: true });
    expect(parseCheckSettings('alt=no match=False moderation=OFF', questions)).toEqual({ altText: false, match: false, moderation: false });
    expect(parseCheckSettings('threshold=0 rerolls=10 nudity=1 violence=.25', questions)).toEqual({ matchThreshold: 0, maxRerolls: 10, thresholds: { nudity: 1, violence: 0.25 } });
    expect(parseCheckSettings('threshold=0.75 rerolls=0', questions)).toEqual({ matchThreshold: 0.75, maxRerolls: 0 });
    const usage = 'Settings: alt=on|off, match=on|off, threshold=0…1 (re-roll below it), rerolls=0…10, moderation=on|off, and <question id>=0…1 (withhold above it).';
    for (const text of ['alt=maybe', 'alt=onn', 'alt=xon', 'match=nope', 'match=offf', 'match=xoff'])
      expect(refusal(text), text).toBe(`${text.split('=')[0]} must be on or off. ${usage}`);
    for (const text of ['threshold=1.5', 'threshold=-0.1', 'threshold=abc', 'threshold=0.5x', 'threshold=x0.5', 'threshold=1e-1', 'nudity=2'])
      expect(refusal(text), text).toBe(`${text.split('=')[0]} must be a number from 0 to 1. ${usage}`);
    for (const text of ['rerolls=11', 'rerolls=2.5', 'rerolls=-1', 'rerolls=x3', 'rerolls=3x'])
      expect(refusal(text), text).toBe(`rerolls must be a whole number from 0 to 10. ${usage}`);
    expect(refusal('match')).toBe(`\`match\` is not key=value. ${usage}`);
    expect(refusal('match=')).toBe(`\`match=\` is not key=value. ${usage}`);
    expect(refusal('gore=0.5')).toBe(`Unknown setting \`gore\`. ${usage} Questions here: nudity, violence.`);
    expect(() => parseCheckSettings('gore=0.5', [])).toThrow(`Unknown setting \`gore\`. ${usage} Questions here: none.`);
    expect(refusal('   ')).toBe(`Say what to change. ${usage}`);
    expect(() => parseCheckSettings('match=on', [])).not.toThrow();
  });

  it('describes a policy in one line per check', () => {
    const p = resolvePolicy(config.checks, discord());
    expect(describePolicy({ ...p, altText: true, match: { enabled: true, threshold: 0.7, maxRerolls: 2 }, moderation: { ...p.moderation, enabled: true } })).toBe(
      [
        "• alt text from the model's caption: on",
        '• prompt match: on, re-roll below 0.7 up to 2 times',
        '• moderation: on, withheld when P(yes) is above: nudity 0.5, violence 0.5',
      ].join('\n'),
    );
    expect(describePolicy({ ...p, altText: false, match: { ...p.match, enabled: false }, moderation: { ...p.moderation, enabled: false } })).toBe(
      ["• alt text from the model's caption: off", '• prompt match: off', '• moderation: off'].join('\n'),
    );
    expect(describePolicy({ ...p, moderation: { ...p.moderation, enabled: true, questions: [] } })).toMatch(/moderation: on, withheld when P\(yes\) is above: \(no questions configured\)$/);
  });

  it('shows, sets and resets a channel, says when an admin changed it, and shows another channel without this one\'s age restriction', async () => {
    const here = { ...discord('K1', 'mod', 'gk'), nsfw: true } as Destination;
    const deps = { config, redis };
    const show = (d: Destination, channelKey?: string) => textOf(checksCommand(inv({ command: 'checks', action: 'show', ...(channelKey ? { channelKey } : {}) }, d), deps));
    const configured = describePolicy(resolvePolicy(config.checks, discord('K2', 'mod', 'gk')));
    expect(await show(here)).toBe(`Image checks in this channel:\n${describePolicy(resolvePolicy(config.checks, here))}`);
    // Another channel: its own policy, not this (age-restricted) channel's relaxed one.
    expect(await show(here, 'discord:gk:K2')).toBe(`Image checks in discord:gk:K2:\n${configured}`);
    expect(await textOf(checksCommand(inv({ command: 'checks', action: 'set', channelKey: 'discord:gk:K2', settings: 'match=on' }, here), deps))).toMatch(/^Image checks in discord:gk:K2 are now:\n.*\n• prompt match: on, /);
    expect(await show(here, 'discord:gk:K2')).toMatch(/^Image checks in discord:gk:K2 \(changed by an admin\):\n/);
    expect(await new CheckOverrides(redis, prefix).get('discord:gk:K2')).toEqual({ match: true });
    expect(await textOf(checksCommand(inv({ command: 'checks', action: 'reset', channelKey: 'discord:gk:K2' }, here), deps))).toBe(`Image checks in discord:gk:K2 are back to the configured defaults:\n${configured}`);
    const refused = await checksCommand(inv({ command: 'checks', action: 'show' }, here, false), deps).then(() => undefined, (e: unknown) => e);
    expect(isUserError(refused) && refused.message).toBe("Only admins can view or change this channel's image checks.");
    await expect(checksCommand(inv({ command: 'queue', action: 'status' }), deps)).rejects.toThrow('not a checks command: queue');
    // `set` without settings: asked what to change.
    const bare = await checksCommand(inv({ command: 'checks', action: 'set' }, here), deps).then(() => undefined, (e: unknown) => e);
    expect(isUserError(bare) && bare.message).toMatch(/^Say what to change\. /);
    await expect(limitsCommand(inv({ command: 'queue', action: 'status' }), { config, gate: core.gate })).rejects.toThrow('not a limits command: queue');
    await expect(queueCommand(inv({ command: 'limits', action: 'show' }), core)).rejects.toThrow('not a queue command: limits');
  });
});
