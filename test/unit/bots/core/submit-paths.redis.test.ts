// The rest of core.handle()'s paths over real Redis: /describe, the image size limit's edge, channel settings that
// travel with the job (retention, no-log; never onto a CLI destination), BullMQ options from jobOptions, the place
// in line when the scheduler has none, cancelling a held or a plain waiting job, how errors are answered and logged,
// the admin command routing, the delivery consumers start() opens, and whose Redis stop() closes.
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import type { Invocation } from '../../../../bots/core/port.ts';
import { DESCRIBE_QUESTION } from '../../../../bots/core/requests.ts';
import { ANSWER_UNKNOWN_TEXT, CACHED_TEXT, createCore, NAMES_TIMEOUT_MS } from '../../../../bots/core/submit.ts';
import { cacheAddress } from '../../../doubles/cache-address.ts';
import { UserError } from '../../../../src/errors.ts';
import { QueueNames, type Destination, type JobRequest } from '../../../../src/jobs/contract.ts';
import { createDeliveryQueue, jobIdFor } from '../../../../src/jobs/queue.ts';
import { capturedLog, coreDest as dest, coreHarness, invocation as inv, recordingPort, REDIS_URL, SILENT_LOG } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-paths');
const { core, config: configFor, data } = h;
const cliDest = (clientId = 'cli-1'): Destination => ({ platform: 'cli', clientId, channelId: 'local', userId: 'me' });
const imagine = (prompt = 'a fox'): Invocation['input'] => ({ command: 'imagine', prompt });
const queuedId = (reply: unknown) => (reply as { jobId: string }).jobId;

describe('core.handle: requests', () => {
  it('queues /describe as a describe-mode question about the stored image', async () => {
    const c = core();
    const d = await data(c, queuedId(await c.handle(inv({ command: 'describe', image: { bytes: h.png } }))));
    expect(d).toMatchObject({ kind: 'ask', mode: 'describe', question: DESCRIBE_QUESTION });
    expect(await c.blobs.get((d as Extract<JobRequest, { kind: 'ask' }>).imageKey)).toEqual(h.png);
    for (const command of ['describe', 'ask'] as const) {
      const bad = await c.handle(inv({ command, question: 'q', image: { bytes: Uint8Array.from([1, 2, 3]) } } as Invocation['input']));
      expect(bad).toMatchObject({ kind: 'error', private: true }); // not an image: checked before anything is stored
    }
  });

  it('accepts an image of exactly the size limit', async () => {
    const c = core({}, { understanding: { maxInputImageBytes: h.png.byteLength } });
    expect(await c.handle(inv({ command: 'ask', question: 'q', image: { bytes: h.png, sizeBytes: h.png.byteLength } }))).toMatchObject({ kind: 'queued' });
    expect(await c.handle(inv({ command: 'ask', question: 'q', image: { bytes: h.png, sizeBytes: h.png.byteLength + 1 } }))).toMatchObject({ kind: 'error' });
  });

  // An admin lowers generation.max* after users saved their defaults: before 2026-12-07 every /imagine of such a user was
  // refused with "steps must be a whole number from 1 to 40.", steps the user had not typed, and nothing said why.
  it('a saved default above a limit lowered since is used at the limit; a typed value over it is still refused', async () => {
    const c = core({}, { generation: { maxDitSteps: 40, maxGuidance: 10, maxImagesPerRequest: 2 } });
    await c.settings.set('user', dest(), { steps: 80, guidance: 15, count: 4 });
    const job = await data(c, queuedId(await c.handle(inv(imagine('a lighthouse')))));
    expect(job).toMatchObject({ kind: 'imagine', options: { ditSteps: 40, guidance: 10, count: 2 } });
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a lighthouse', ditSteps: 80 } as Invocation['input']))).toMatchObject({ kind: 'error', text: 'steps must be a whole number from 1 to 40.' });
  });

  // Before 2026-12-07 every Vary came back square at the default steps and guidance, its negative prompt dropped.
  it('a Vary keeps the shape and settings of the result it was pressed on (a new seed); an upload\'s Vary, its nearest aspect', async () => {
    const c = core();
    const first = queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a harbour', aspect: '16:9', ditSteps: 7, decoderSteps: 9, guidance: 4.5, negative: 'boats', seed: 3 } as Invocation['input'])));
    const vary = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: h.png }, from: first }))));
    expect(vary!.options).toMatchObject({ aspect: '16:9', ditSteps: 7, decoderSteps: 9, guidance: 4.5, negative: 'boats' });
    expect(vary!.options.seed).not.toBe(3);
    const wide = await sharp({ create: { width: 210, height: 90, channels: 3, background: '#08f' } }).png().toBuffer();
    const upload = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: new Uint8Array(wide) } }))));
    expect(upload!.options).toMatchObject({ aspect: '21:9', ditSteps: c.config.generation.defaultDitSteps });
  });

  it('carries the channel\'s retention and no-log settings in the job, and keeps the image no longer than the retention', async () => {
    const c = core();
    await c.settings.set('channel', dest(), { retentionSeconds: 3600, noLog: true });
    const a = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: h.png } }))));
    expect(a!.destination).toEqual({ ...dest(), retentionSeconds: 3600, noLog: true });
    const ttl = await h.redis.ttl((a as Extract<JobRequest, { kind: 'vary' }>).imageKey);
    expect(ttl).toBeGreaterThan(3000);
    expect(ttl).toBeLessThanOrEqual(3600);
    await c.settings.set('channel', dest(), { retentionSeconds: 3600 });
    expect((await data(c, queuedId(await c.handle(inv(imagine())))))!.destination).toEqual({ ...dest(), retentionSeconds: 3600 });
    expect(await h.redis.zcard(`${c.config.queue.prefix}:retention`)).toBe(2); // both scheduled for purging
    await c.settings.set('channel', dest('u1', 'c2'), {});
    expect((await data(c, queuedId(await c.handle(inv(imagine(), { destination: dest('u1', 'c2') })))))!.destination).toEqual(dest('u1', 'c2'));
    expect(await h.redis.zcard(`${c.config.queue.prefix}:retention`)).toBe(2);
  });

  it('a Re-roll is at least as private as the job it repeats, wherever its button was pressed (a private result\'s DM has no settings)', async () => {
    const c = core();
    await c.settings.set('channel', dest(), { retentionSeconds: 3600, noLog: true });
    const first = queuedId(await c.handle(inv(imagine())));
    const inDm = dest('u1', 'dm-u1');
    const again = await data(c, queuedId(await c.handle(inv({ command: 'reroll', jobId: first }, { destination: inDm }))));
    expect(again!.destination).toEqual({ ...inDm, retentionSeconds: 3600, noLog: true });
    const entries: string[] = await h.redis.zrange(`${c.config.queue.prefix}:retention`, '0', '-1');
    const scheduled = entries.map((e) => (JSON.parse(e) as { j: string }).j);
    expect(scheduled).toContain(again!.id); // purged with the channel's TTL
    // the shorter TTL of the two wins; no-log stays on when only the original had it
    await c.settings.set('channel', inDm, { retentionSeconds: 600 });
    const shorter = await data(c, queuedId(await c.handle(inv({ command: 'reroll', jobId: first }, { destination: inDm }))));
    expect(shorter!.destination).toEqual({ ...inDm, retentionSeconds: 600, noLog: true });
    await c.settings.set('channel', dest(), { retentionSeconds: 7200 });
    const second = queuedId(await c.handle(inv(imagine('a cat'))));
    const longer = await data(c, queuedId(await c.handle(inv({ command: 'reroll', jobId: second }, { destination: inDm }))));
    expect(longer!.destination).toEqual({ ...inDm, retentionSeconds: 600 });
    // a vary's Re-roll: its copy of the upload lives no longer than the channel allows
    await c.settings.set('channel', inDm, {});
    await c.settings.set('channel', dest(), { retentionSeconds: 1800 });
    const vary = queuedId(await c.handle(inv({ command: 'vary', image: { bytes: h.png } })));
    const varied = await data(c, queuedId(await c.handle(inv({ command: 'reroll', jobId: vary }, { destination: inDm }))));
    expect(varied!.destination).toEqual({ ...inDm, retentionSeconds: 1800 });
    const ttl = await h.redis.ttl((varied as Extract<JobRequest, { kind: 'vary' }>).imageKey);
    expect(ttl).toBeGreaterThan(1700);
    expect(ttl).toBeLessThanOrEqual(1800);
    // and a channel with no settings re-rolling a job of a channel with none keeps none
    await c.settings.set('channel', dest(), {});
    const plain = queuedId(await c.handle(inv(imagine('a dog'))));
    expect((await data(c, queuedId(await c.handle(inv({ command: 'reroll', jobId: plain }, { destination: inDm })))))!.destination).toEqual(inDm);
  });

  it('so is a Vary or an "Imagine this" pressed in a DM: its upload too lives no longer than the channel allows', async () => {
    const c = core();
    await c.settings.set('channel', dest(), { retentionSeconds: 1200, noLog: true });
    const first = queuedId(await c.handle(inv(imagine('a lantern'))));
    const inDm = dest('u1', 'dm-u1b');
    const vary = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: h.png }, from: first }, { destination: inDm }))));
    expect(vary!.destination).toEqual({ ...inDm, retentionSeconds: 1200, noLog: true });
    const ttl = await h.redis.ttl((vary as Extract<JobRequest, { kind: 'vary' }>).imageKey);
    expect(ttl).toBeGreaterThan(1100);
    expect(ttl).toBeLessThanOrEqual(1200);
    const described = await data(c, queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a lantern at dusk', from: first }, { destination: inDm }))));
    expect(described!.destination).toEqual({ ...inDm, retentionSeconds: 1200, noLog: true });
    // a job that is gone (or never was) leaves the button's own channel settings
    const orphan = await data(c, queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a lantern at dawn', from: 'no-such-job' }, { destination: inDm }))));
    expect(orphan!.destination).toEqual(inDm);
    await c.settings.reset('channel', dest());
  });

  it('never puts channel settings onto a CLI destination', async () => {
    const c = core({ ports: [recordingPort('cli')], cliClientId: 'cli-1' });
    await c.settings.set('channel', cliDest(), { retentionSeconds: 3600, noLog: true });
    const reply = await c.handle(inv(imagine(), { destination: cliDest() }));
    expect(reply).toMatchObject({ kind: 'queued' });
    expect((await data(c, queuedId(reply)))!.destination).toEqual(cliDest());
  });

  it('adds the job with the options jobOptions gives', async () => {
    const c = core({ jobOptions: async () => ({ lifo: true }) });
    const job = await c.queue.getJob(queuedId(await c.handle(inv(imagine()))));
    expect(job!.opts.lifo).toBe(true);
  });

  it('adds an idle channel’s job released at once (never parked); the next job of that channel parked, released in its turn', async () => {
    const c = core();
    const states: string[] = [];
    const add = c.queue.add.bind(c.queue);
    c.queue.add = (async (...args: Parameters<typeof add>) => {
      const job = await add(...args);
      states.push(await job.getState());
      return job;
    }) as typeof c.queue.add;
    const first = queuedId(await c.handle(inv(imagine())));
    const second = queuedId(await c.handle(inv(imagine('a hare'))));
    expect(states).toEqual(['prioritized', 'delayed']);
    expect((await c.queue.getJob(first))!.priority).toBe(1);
    expect(await c.gate.scheduler.position(second)).toEqual({ state: 'queued', position: 2 });
  });

  it('gives the turn back when the add of a released job fails: the channel’s next request is released at once', async () => {
    const c = core();
    const add = c.queue.add.bind(c.queue);
    c.queue.add = (async () => Promise.reject(new Error('redis blip'))) as typeof c.queue.add;
    expect(await c.handle(inv(imagine()))).toMatchObject({ kind: 'error' });
    expect(await c.gate.scheduler.waitingJobs()).toEqual([]);
    c.queue.add = add;
    const next = queuedId(await c.handle(inv(imagine('a hare'))));
    expect(await c.queue.getJobState(next)).toBe('prioritized');
  });

  it('says "Queued" and keeps the turn of a job that was added when what came with the add failed, released or parked (it runs)', async () => {
    const { log, lines } = capturedLog('warn');
    const c = core({ log });
    const confirm = c.cache.confirm.bind(c.cache);
    let failing = 2; // sent with the add, and again when the settle lines the job up: fails both times
    c.cache.confirm = async (...args) => (failing-- > 0 ? Promise.reject(new Error('redis blip')) : confirm(...args));
    const released = await c.handle(inv(imagine()));
    // Before: "Something went wrong (ref …)" for a job that then ran and was delivered
    expect(released).toMatchObject({ kind: 'queued' });
    expect(await c.queue.getJobState(queuedId(released))).toBe('prioritized');
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId)).toEqual([queuedId(released)]); // it runs, in its turn
    expect(lines.at(-1)).toMatchObject({ level: 40, jobId: queuedId(released), err: 'redis blip', msg: 'enqueueing failed after the add, and the job exists: queued' });
    c.cache.confirm = confirm;
    const parked = queuedId(await c.handle(inv(imagine('a hare')))); // the channel is busy: added parked, then lined up
    c.cache.confirm = async () => Promise.reject(new Error('redis blip'));
    const third = await c.handle(inv(imagine('a stoat')));
    expect(third).toMatchObject({ kind: 'queued' });
    expect(await c.queue.getJobState(queuedId(third))).toBe('delayed'); // parked, lined up (its flight's confirm failed)
    c.cache.confirm = confirm;
    // their admissions are kept (they run): the user holds three slots
    expect((await c.gate.limiter.usage('user', 'discord:u1', { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 9 })).held).toBe(3);
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId).sort()).toEqual([queuedId(released), parked, queuedId(third)].sort());
  });

  it('says "Queued" when the connection failed after the add but the job exists (it runs): released or parked, lined up', async () => {
    const { log, lines } = capturedLog('warn');
    const c = core({ log });
    const closed = () => new Error('Connection is closed.'); // the connection ended under the command (a failover)
    const add = c.queue.add.bind(c.queue);
    // The add reached Redis; its reply was lost with the connection. Before: "… Nothing was queued; please try again".
    c.queue.add = (async (...args: Parameters<typeof add>) => {
      await add(...args);
      throw closed();
    }) as typeof c.queue.add;
    const released = await c.handle(inv(imagine()));
    expect(released).toMatchObject({ kind: 'queued' });
    expect(await c.queue.getJobState(queuedId(released))).toBe('prioritized');
    expect(lines.at(-1)).toMatchObject({
      level: 40, jobId: queuedId(released), err: 'Connection is closed.',
      msg: 'enqueueing failed after the add, and the job exists: queued',
    });
    c.queue.add = add;
    // The channel is busy now: the next job is added parked and lined up; the lining-up's connection fails once.
    const enqueued = c.gate.enqueued.bind(c.gate);
    let fail = true;
    c.gate.enqueued = async (...args) => (fail ? ((fail = false), Promise.reject(closed())) : enqueued(...args));
    const parked = await c.handle(inv(imagine('a hare')));
    expect(parked).toMatchObject({ kind: 'queued', position: 2 }); // as without the failure: behind the released one
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId).sort()).toEqual([queuedId(released), queuedId(parked)].sort());
  });

  it('still says "Nothing was queued" when the connection failed and the job does not exist, and gives the turn back', async () => {
    const c = core();
    const add = c.queue.add.bind(c.queue);
    c.queue.add = (async () => Promise.reject(new Error('Connection is closed.'))) as typeof c.queue.add;
    const reply = await c.handle(inv(imagine()));
    expect(reply).toMatchObject({ kind: 'error', text: expect.stringMatching(/^I lost my connection to the job queue for a moment .*Nothing was queued/) });
    expect(await c.gate.scheduler.waitingJobs()).toEqual([]);
    c.queue.add = add;
    expect(await c.queue.getJobState(queuedId(await c.handle(inv(imagine('a hare')))))).toBe('prioritized');
  });

  it('asks again when its check meets the failover too (what waited on the connection failed with it): "Queued" if the job is there', async () => {
    const c = core();
    const closed = () => new Error('Connection is closed.');
    const add = c.queue.add.bind(c.queue);
    const getJob = c.queue.getJob.bind(c.queue);
    let failChecks = 0;
    let checks = 0;
    // After the add, the next two checks fail as the add did; then Redis answers.
    c.queue.getJob = (async (id: string) => {
      if (failChecks === 0) return getJob(id);
      failChecks--;
      checks++;
      throw closed();
    }) as typeof c.queue.getJob;
    c.queue.add = (async (...args: Parameters<typeof add>) => {
      await add(...args);
      failChecks = 2;
      throw closed();
    }) as typeof c.queue.add;
    // Before: "… Nothing was queued; please try again", and the job ran (a CI run of the Sentinel failover test)
    const queued = await c.handle(inv(imagine()));
    expect(queued).toMatchObject({ kind: 'queued' });
    expect(checks).toBe(2);
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId)).toEqual([queuedId(queued)]);
    // An add that never reached Redis, checked through the same failures: "Nothing was queued", and true.
    c.queue.add = (async () => {
      failChecks = 2;
      throw closed();
    }) as typeof c.queue.add;
    const refused = await c.handle(inv(imagine('a hare')));
    expect(refused).toMatchObject({ kind: 'error', text: expect.stringMatching(/Nothing was queued/) });
    expect(checks).toBe(4);
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId)).toEqual([queuedId(queued)]);
    // A check Redis answers with an error (not the connection) is no reason to ask again: the add's error stands.
    let refusedChecks = 0;
    c.queue.add = (async () => Promise.reject(closed())) as typeof c.queue.add;
    const input = inv(imagine('a stoat'));
    c.queue.getJob = ((id: string) => (id === jobIdFor(input.destination.platform, input.dedupeKey) && refusedChecks++ > 0 ? Promise.reject(new Error('NOPERM no permissions')) : getJob(id))) as typeof c.queue.getJob;
    expect(await c.handle(input)).toMatchObject({ kind: 'error', text: expect.stringMatching(/Nothing was queued/) });
    expect(refusedChecks).toBe(2); // the duplicate look-up, then one check
  });

  it('stops asking once the core stops (a Redis that never answers again)', async () => {
    const c = core({ answerWithinMs: 100 });
    let checks = 0;
    let failing = false;
    const getJob = c.queue.getJob.bind(c.queue);
    c.queue.getJob = ((id: string) => (failing ? (checks++, Promise.reject(new Error('Connection is closed.'))) : getJob(id))) as typeof c.queue.getJob;
    c.queue.add = (async () => {
      failing = true;
      throw new Error('Connection is closed.');
    }) as typeof c.queue.add;
    expect(await c.handle(inv(imagine()))).toMatchObject({ text: ANSWER_UNKNOWN_TEXT });
    await c.stop();
    const atStop = checks;
    await new Promise((r) => setTimeout(r, 1_300)); // longer than the longest pause between two checks
    expect(checks - atStop).toBeLessThanOrEqual(1); // the one that was waiting, if any
  });

  it('says "Queued" of a job that is queued when a read after it fails (the held check of a paused channel)', async () => {
    const c = core();
    await c.gate.scheduler.pause('discord:g:c1');
    c.gate.scheduler.position = async () => Promise.reject(new Error('Connection is closed.'));
    const reply = await c.handle(inv(imagine())); // before: "… Nothing was queued", of a job that then ran
    expect(reply).toMatchObject({ kind: 'queued', position: 0 });
    expect(await c.queue.getJobState(queuedId(reply))).toBe('delayed');
  });

  it('says nobody can tell yet when Redis stays silent past answerWithinMs, and settles the request once it answers', async () => {
    const { log, lines } = capturedLog('warn');
    const c = core({ log, answerWithinMs: 150 });
    const closed = () => new Error('Connection is closed.');
    const add = c.queue.add.bind(c.queue);
    const getJob = c.queue.getJob.bind(c.queue);
    let silent = false;
    const answers: (() => void)[] = [];
    c.queue.getJob = ((id: string) => (silent ? new Promise((resolve) => answers.push(() => resolve(getJob(id)))) : getJob(id))) as typeof c.queue.getJob;
    const answer = async () => {
      silent = false;
      for (const a of answers.splice(0)) a();
      await new Promise((r) => setTimeout(r, 300)); // the settling, in the background
    };
    const held = async () => (await c.gate.limiter.usage('user', 'discord:u1', { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 9 })).held;
    // The add reached Redis, and Redis then stays silent: the user is told so, and the admission stays held.
    c.queue.add = (async (...args: Parameters<typeof add>) => {
      await add(...args);
      silent = true;
      throw closed();
    }) as typeof c.queue.add;
    const asked = inv(imagine());
    expect(await c.handle(asked)).toEqual({ kind: 'error', text: ANSWER_UNKNOWN_TEXT, private: true });
    expect(lines.at(-1)).toMatchObject({ level: 40, answerWithinMs: 150, msg: expect.stringMatching(/^Redis did not answer whether a request was queued/) });
    expect(await held()).toBe(1);
    await answer(); // it is there: lined up, and it runs
    const id = jobIdFor(asked.destination.platform, asked.dedupeKey);
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId)).toEqual([id]);
    expect(await held()).toBe(1);
    expect(lines.at(-1)).toMatchObject({ jobId: id, msg: expect.stringMatching(/could not be confirmed was queued after all/) });
    // The add never reached Redis: once Redis answers, its admission is given back.
    c.queue.add = (async () => {
      silent = true;
      throw closed();
    }) as typeof c.queue.add;
    const hare = inv(imagine('a hare'));
    expect(await c.handle(hare)).toMatchObject({ text: ANSWER_UNKNOWN_TEXT });
    expect(await held()).toBe(2);
    await answer();
    expect(await held()).toBe(1);
    expect(lines.at(-1)).toMatchObject({ jobId: jobIdFor(hare.destination.platform, hare.dedupeKey), msg: expect.stringMatching(/could not be confirmed was not queued/) });
    expect((await c.gate.scheduler.waitingJobs()).map((j) => j.jobId)).toEqual([id]);
  });

  it('asks BullMQ for the place when the scheduler has none (a worker took the job already), and says "Started." at 0', async () => {
    const c = core();
    await c.handle(inv(imagine('first'))); // the channel is busy: the next job is added parked, then enqueued
    c.gate.enqueued = async () => ({ state: 'none' }); // the scheduler does not line it up; BullMQ keeps it parked
    const reply = await c.handle(inv(imagine()));
    expect(reply).toEqual({ kind: 'queued', jobId: queuedId(reply), position: 0, text: 'Started.' });
  });

  it('treats a cache entry of the other kind as a miss, and gives a cached variation without prompt its own alt text', async () => {
    const c = core({}, { cache: { singleFlight: false } });
    await c.cache.publishModel('model-b', 'worker-1');
    const first = await data(c, queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a moth', seed: 3 }))));
    await c.cache.put('model-b', (await cacheAddress(c, first!))!, { kind: 'answer', text: 'not an image', tokenCount: 1 });
    expect(await c.handle(inv({ command: 'imagine', prompt: 'a moth', seed: 3 }))).toMatchObject({ kind: 'queued', position: 2 });

    const vary = await data(c, queuedId(await c.handle(inv({ command: 'vary', image: { bytes: h.png }, seed: 4 }))));
    await c.cache.put('model-b', (await cacheAddress(c, vary!))!, { kind: 'image', width: 32, height: 32 }, h.png);
    const again = inv({ command: 'vary', image: { bytes: h.png }, seed: 4 });
    expect(await c.handle(again)).toMatchObject({ text: CACHED_TEXT });
    const q = createDeliveryQueue(c.config, h.redis, QueueNames.delivery('discord'));
    const served = (await q.getJob(jobIdFor('discord', again.dedupeKey)))?.data;
    await q.close();
    expect(served?.image).toMatchObject({ altText: 'A variation of your image', prompt: '' });
  });
});

describe('core.handle: cancel', () => {
  const waitFor = async (what: () => boolean) => {
    for (let i = 0; i < 300 && !what(); i++) await new Promise((r) => setTimeout(r, 20));
  };

  it('removes a job held in a paused channel, and one waiting without a priority', async () => {
    const port = recordingPort();
    const c = core({ ports: [port] });
    await c.start();
    await c.gate.scheduler.pause('discord:g:c1');
    const held = queuedId(await c.handle(inv(imagine('held'))));
    expect(await c.queue.getJobState(held)).toBe('delayed');
    await c.handle(inv({ command: 'cancel', jobId: held }));
    expect(await c.queue.getJob(held)).toBeUndefined();
    // A job added without the scheduler's parking (as an older bot would): BullMQ's plain wait list.
    const template = (await data(c, queuedId(await c.handle(inv(imagine('template'), { destination: dest('u1', 'c9') })))))!;
    const plain = await c.queue.add('imagine', { ...template, id: 'jplain1', destination: dest() }, { jobId: 'jplain1' });
    expect(await plain.getState()).toBe('waiting');
    await c.handle(inv({ command: 'cancel', jobId: 'jplain1' }));
    expect(await c.queue.getJob('jplain1')).toBeUndefined();
    await waitFor(() => port.delivered.length >= 2);
    expect(port.delivered.map((r) => [r.jobId, r.status]).sort()).toEqual([[held, 'cancelled'], ['jplain1', 'cancelled']].sort());
  });
});

describe('core.handle: errors and routing', () => {
  it('answers a lost Redis connection with a retry hint, a UserError without control characters, anything else with a logged ref', async () => {
    const { log, lines } = capturedLog('warn');
    let fault: Error = new Error('x');
    const c = core({ admit: async () => Promise.reject(fault), log });
    fault = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    const refused = inv(imagine());
    expect(await c.handle(refused)).toEqual({
      kind: 'error', private: true,
      text: 'I lost my connection to the job queue for a moment (it may be failing over). Nothing was queued; please try again in a few seconds.',
    });
    // which job was refused: the id the platform's retry of the same interaction would get
    expect(lines.at(-1)).toEqual(expect.objectContaining({ level: 40, msg: 'command refused: Redis connection lost', err: 'connect ECONNREFUSED 127.0.0.1:6379', command: 'imagine', jobId: jobIdFor(refused.destination.platform, refused.dedupeKey) }));
    const admin = core({ commands: { queue: async () => Promise.reject(fault) }, log });
    await admin.handle(inv({ command: 'queue', action: 'status' }, { isAdmin: true }));
    expect(lines.at(-1)).toMatchObject({ msg: 'command refused: Redis connection lost', command: 'queue' });
    expect(lines.at(-1)).not.toHaveProperty('jobId'); // it queues none
    fault = new UserError('forbidden', 'No\u0007 bells\u001b[31m here.');
    expect(await c.handle(inv(imagine()))).toEqual({ kind: 'error', text: 'No bells[31m here.', private: true });
    fault = new Error('boom');
    const reply = (await c.handle(inv(imagine()))) as { text: string };
    const ref = /^Something went wrong \(ref ([0-9a-f]{8})\)\.$/.exec(reply.text)?.[1];
    expect(ref).toBeDefined();
    expect(lines.at(-1)).toMatchObject({ level: 50, msg: 'command failed', ref, err: 'boom' });
  });

  it('logs each queued job and each request served without a job', async () => {
    const { log, lines } = capturedLog();
    const c = core({ log });
    const a = queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a newt', seed: 9 })));
    expect(lines.find((l) => l.msg === 'queued')).toMatchObject({ jobId: a, kind: 'imagine', channel: 'c1', position: 1 });
    const b = queuedId(await c.handle(inv({ command: 'imagine', prompt: 'a newt', seed: 9 })));
    expect(lines.find((l) => l.msg === 'served without a job')).toMatchObject({ jobId: b, kind: 'imagine', channel: 'c1', served: 'joined' });
  });

  it('routes /checks to the built-in command', async () => {
    const c = core();
    expect(await c.handle(inv({ command: 'checks', action: 'show' }, { isAdmin: true }))).toMatchObject({ kind: 'text', text: expect.stringMatching(/^Image checks in /) });
  });

  it('routes /settings, /budget and /usage to the built-in commands', async () => {
    const c = core();
    expect(await c.handle(inv({ command: 'settings', scope: 'user', action: 'show' }))).toMatchObject({ kind: 'text' });
    expect(await c.handle(inv({ command: 'budget', action: 'show' } as Invocation['input'], { isAdmin: true }))).toMatchObject({ kind: 'text', text: expect.stringMatching(/budget/i) });
    const usage = await c.handle(inv({ command: 'usage' } as Invocation['input'], { isAdmin: true }));
    expect(usage.kind).not.toBe('error');
  });
});

describe('core.displayNames (the usage report\'s names)', () => {
  const ids = { channels: ['c1'], users: ['u1'] };
  const named = { channels: new Map([['c1', 'general']]), users: new Map([['u1', 'Alice']]) };

  it("asks the destination platform's port, and the usage command shows what it named", async () => {
    const asked: unknown[] = [];
    const slack = { ...recordingPort('slack'), displayNames: async (d: Destination, q: typeof ids) => (asked.push(['slack', d.channelId, q]), named) };
    const discord = { ...recordingPort('discord'), displayNames: async (d: Destination, q: typeof ids) => (asked.push(['discord', d.channelId, q]), named) };
    const c = core({ ports: [discord, slack] });
    expect(await c.displayNames({ platform: 'slack', teamId: 'T', channelId: 'here', userId: 'u1' }, ids)).toBe(named);
    expect(asked).toEqual([['slack', 'here', ids]]);
    const report = await c.handle(inv({ command: 'budget', action: 'set', scope: 'channel', seconds: 0 }, { isAdmin: true })); // the command path reaches Redis
    expect(report).toMatchObject({ kind: 'text' });
    expect(await c.handle(inv({ command: 'usage', days: 1 }, { isAdmin: true }))).toMatchObject({ kind: 'text', private: true });
    expect(asked).toEqual([['slack', 'here', ids], ['discord', 'c1', { channels: [], users: [] }]]); // nothing used yet: nothing to name
  });

  it('a port without names, one that fails, and one that takes longer than NAMES_TIMEOUT_MS give none (ids are shown), logged', async () => {
    const { log, lines } = capturedLog('warn');
    expect(await core({ ports: [recordingPort()] }).displayNames(dest('u1', 'x'), ids)).toEqual({ channels: new Map(), users: new Map() });
    expect(await core({ ports: [recordingPort('slack')] }).displayNames(dest('u1', 'x'), ids)).toEqual({ channels: new Map(), users: new Map() }); // no port for Discord here
    const failing = { ...recordingPort(), displayNames: async () => Promise.reject(new Error('rate limited')) };
    expect(await core({ ports: [failing], log }).displayNames(dest('u1', 'x'), ids)).toEqual({ channels: new Map(), users: new Map() });
    expect(lines).toContainEqual(expect.objectContaining({ platform: 'discord', err: 'rate limited', msg: "naming the usage report's channels and users failed: showing ids" }));
    const hanging = { ...recordingPort(), displayNames: () => new Promise<never>(() => undefined) };
    const started = Date.now();
    expect(await core({ ports: [hanging], log }).displayNames(dest('u1', 'x'), ids)).toEqual({ channels: new Map(), users: new Map() });
    const waited = Date.now() - started;
    expect(waited).toBeGreaterThanOrEqual(NAMES_TIMEOUT_MS - 50);
    expect(waited).toBeLessThan(NAMES_TIMEOUT_MS + 2_000);
    expect(lines).toContainEqual(expect.objectContaining({ platform: 'discord', timeoutMs: NAMES_TIMEOUT_MS, msg: "the platform did not name the usage report's channels and users in time: showing ids" }));
    // a port that answers in time is not cut short, and leaves no timer behind to log later
    const quick = { ...recordingPort(), displayNames: async () => named };
    const before = lines.length;
    expect(await core({ ports: [quick], log }).displayNames(dest('u1', 'x'), ids)).toBe(named);
    await new Promise((r) => setTimeout(r, NAMES_TIMEOUT_MS + 100));
    expect(lines.length).toBe(before);
  }, 15_000);
});

describe('core lifecycle', () => {
  it('a CLI core consumes only its own delivery queue, with the concurrency asked for', async () => {
    const c = core({ ports: [recordingPort('cli')], cliClientId: 'abc', deliveryConcurrency: 2 });
    await c.start();
    expect(c.deliveryWorkers.map((w) => [w.name, w.opts.concurrency])).toEqual([['delivery-cli-abc', 2]]);
    await c.stop();
    const d = core();
    await d.start();
    expect(d.deliveryWorkers.map((w) => [w.name, w.opts.concurrency])).toEqual([['delivery-discord', 4]]);
    const workers = [...d.deliveryWorkers];
    expect(workers.every((w) => w.isRunning())).toBe(true);
    await d.stop();
    expect(workers.some((w) => w.isRunning())).toBe(false); // stopped: no delivery after stop()
  });

  it('closes the Redis connection it opened itself, and leaves a shared one open', async () => {
    const own = createCore({ config: configFor(), secrets: { REDIS_URL }, ports: [recordingPort()], log: SILENT_LOG });
    await own.redis.ping();
    expect(await own.redis.client('GETNAME')).toBe('bots-core'); // named for CLIENT LIST and the admin's Redis tools
    const ended = new Promise<void>((r) => own.redis.once('end', () => r()));
    await own.stop();
    await Promise.race([ended, new Promise((r) => setTimeout(r, 2_000))]); // QUIT answered and the connection closed
    expect(own.redis.status).toBe('end');
    const shared = core();
    await shared.stop();
    expect(await h.redis.ping()).toBe('PONG');
  });
});
