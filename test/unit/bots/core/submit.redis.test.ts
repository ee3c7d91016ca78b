// The core's handle() over real Redis and BullMQ, with a recording port: what each command replies, what it
// enqueues, what it refuses (and that a refusal or a failure half-way leaves no slot or job behind), and the
// cancel path (flag, removal, the "cancelled" result reaching the destination).
import { describe, expect, it } from 'vitest';
import type { Invocation } from '../../../../bots/core/port.ts';
import { UserError } from '../../../../src/errors.ts';
import { isCancelRequested } from '../../../../src/jobs/cancel.ts';
import type { Destination, JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { coreDest as dest, coreHarness, invocation as inv, OPEN_LIMIT, recordingPort } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-core');
const { core, data } = h;
const imagine = (prompt = 'a fox'): Invocation['input'] => ({ command: 'imagine', prompt });

describe('core.handle: submissions', () => {
  it('queues an imagine under the id derived from the interaction, and says its place in line', async () => {
    const c = core();
    await c.cache.publishModel('a-model', 'a-worker'); // a worker is running
    const first = inv(imagine('a red fox'));
    const reply = await c.handle(first);
    const id = jobIdFor('discord', first.dedupeKey);
    expect(reply).toEqual({ kind: 'queued', jobId: id, position: 1, text: 'Queued: 1st in line.' });
    expect(await data(c, id)).toMatchObject({ kind: 'imagine', prompt: 'a red fox', id, destination: first.destination });
    expect((await data(c, id))!.submittedAt).toBeGreaterThan(Date.now() - 60_000);
    expect(await c.position(id)).toBe(1);
    const texts: string[] = [];
    for (let i = 2; i <= 22; i++) texts.push(((await c.handle(inv(imagine(`p${i}`)))) as { text: string }).text);
    expect(texts.filter((_, i) => [0, 1, 2, 8, 9, 10, 11, 19, 20].includes(i))).toEqual([
      'Queued: 2nd in line.', 'Queued: 3rd in line.', 'Queued: 4th in line.', 'Queued: 10th in line.', 'Queued: 11th in line.', 'Queued: 12th in line.', 'Queued: 13th in line.',
      'Queued: 21st in line.', 'Queued: 22nd in line.', // only 11-13 are "th" whatever their last digit
    ]);
  });

  it('says so when no worker is running (none has published its model lately), on a duplicate too', async () => {
    const c = core(); // a prefix of its own: no worker has published there
    const first = inv(imagine('a lonely fox'));
    const reply = await c.handle(first);
    const note = 'No GPU worker is running right now; your request starts as soon as one is.';
    expect(reply).toEqual({ kind: 'queued', jobId: jobIdFor('discord', first.dedupeKey), position: 1, text: `Queued: 1st in line. ${note}`, noWorker: true });
    expect(await c.handle({ ...first })).toEqual(reply);
  });

  it('makes one job of a duplicate interaction, admitted once', async () => {
    const c = core({}, { limits: { user: { ...OPEN_LIMIT, maxConcurrent: 1 } } });
    const first = inv(imagine());
    const a = await c.handle(first);
    const b = await c.handle({ ...first });
    expect(b).toEqual(a); // not refused by the cap of 1: the duplicate takes no second slot
    expect(await c.queue.getJobCounts('prioritized', 'delayed', 'wait')).toMatchObject({ prioritized: 1, delayed: 0 });
    const third = await c.handle(inv(imagine('another')));
    expect(third).toMatchObject({ kind: 'error', private: true });
    expect((third as { text: string }).text).toMatch(/You already have 1 job queued or running/);
  });

  it('answers bad input, refusals and unexpected failures privately, and enqueues nothing', async () => {
    const c = core();
    expect(await c.handle(inv({ command: 'imagine', prompt: 'x', ditSteps: 0 }))).toMatchObject({ kind: 'error', private: true });
    expect(await c.handle(inv({ command: 'ask', question: 'what?', image: {} }))).toEqual({ kind: 'error', text: 'Please attach an image.', private: true });
    const tooBig = await c.handle(inv({ command: 'ask', question: 'what?', image: { url: 'https://x/y.png', sizeBytes: 10 ** 12 } }));
    expect((tooBig as { text: string }).text).toMatch(/^That image is too large; the limit is /);
    const refused = core({ admit: async () => Promise.reject(new UserError('forbidden', 'Not in this channel.')) });
    expect(await refused.handle(inv(imagine()))).toEqual({ kind: 'error', text: 'Not in this channel.', private: true });
    const broken = core({ admit: async () => Promise.reject(new Error('boom')) });
    const r = await broken.handle(inv(imagine()));
    expect(r).toMatchObject({ kind: 'error', private: true });
    expect((r as { text: string }).text).toMatch(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/);
    expect(await c.queue.count()).toBe(0);
    expect(await refused.queue.count()).toBe(0);
  });

  it('gives the slots back when a step after admission fails', async () => {
    let fail = true;
    const c = core(
      { jobOptions: async () => (fail ? Promise.reject(new Error('redis blip')) : { lifo: false }) },
      { limits: { user: { ...OPEN_LIMIT, maxConcurrent: 1 } } },
    );
    expect(await c.handle(inv(imagine()))).toMatchObject({ kind: 'error' });
    fail = false;
    expect(await c.handle(inv(imagine()))).toMatchObject({ kind: 'queued', position: 1 }); // the cap of 1 is free again
  });

  it('stores an attached image in the blob store and passes the key, or downloads it first', async () => {
    const fetched: string[] = [];
    const c = core({ fetchImage: async (ref) => (fetched.push(ref.url!), h.png) });
    const a = (await c.handle(inv({ command: 'ask', question: 'what colour?', image: { bytes: h.png } }))) as { jobId: string };
    const ask = (await data(c, a.jobId)) as Extract<JobRequest, { kind: 'ask' }>;
    expect(ask).toMatchObject({ kind: 'ask', question: 'what colour?' });
    expect(await c.blobs.get(ask.imageKey)).toEqual(h.png);
    const v = (await c.handle(inv({ command: 'vary', image: { url: 'https://files/x.png' } }))) as { jobId: string };
    const vary = (await data(c, v.jobId)) as Extract<JobRequest, { kind: 'vary' }>;
    expect(fetched).toEqual(['https://files/x.png']);
    expect(await c.blobs.get(vary.imageKey)).toEqual(h.png);
    const noFetch = core();
    expect(await noFetch.handle(inv({ command: 'vary', image: { url: 'https://files/x.png' } }))).toEqual({ kind: 'error', text: 'Please attach an image.', private: true });
    expect(await noFetch.handle(inv({ command: 'vary', image: { bytes: new Uint8Array([1, 2, 3]) } }))).toMatchObject({ kind: 'error' }); // not an image
  });

  it('re-rolls an image with the same prompt and options and a new seed; refuses answers and unknown jobs', async () => {
    const c = core();
    const first = (await c.handle(inv({ command: 'imagine', prompt: 'a fox', seed: 5, guidance: 7 }))) as { jobId: string };
    const again = (await c.handle(inv({ command: 'reroll', jobId: first.jobId }))) as { jobId: string };
    const before = (await data(c, first.jobId)) as Extract<JobRequest, { kind: 'imagine' }>;
    const after = (await data(c, again.jobId)) as Extract<JobRequest, { kind: 'imagine' }>;
    expect(after).toMatchObject({ kind: 'imagine', prompt: 'a fox', options: { ...before.options, seed: expect.any(Number) } });
    expect(after.id).not.toBe(before.id);
    const v = (await c.handle(inv({ command: 'vary', image: { bytes: h.png }, prompt: 'blue' }))) as { jobId: string };
    const rv = (await c.handle(inv({ command: 'reroll', jobId: v.jobId }))) as { jobId: string };
    const vary = (await data(c, v.jobId)) as Extract<JobRequest, { kind: 'vary' }>;
    // a vary's Re-roll takes its own copy of the upload, with the full TTL: the first's is released when its job ends
    const copy = `${vary.imageKey}:${rv.jobId}`;
    expect(await data(c, rv.jobId)).toMatchObject({ kind: 'vary', imageKey: copy, prompt: 'blue' });
    expect(await c.blobs.get(copy)).toEqual(await c.blobs.get(vary.imageKey));
    await c.blobs.release(vary.imageKey, 1);
    expect(await h.redis.ttl(copy)).toBeGreaterThan(c.config.queue.keepCompletedSeconds);
    await c.blobs.delete(vary.imageKey); // gone (its Re-roll window closed): a Re-roll says so, and queues nothing
    expect(await c.handle(inv({ command: 'reroll', jobId: v.jobId }))).toEqual({ kind: 'error', text: 'That image is too old to re-roll; please press Vary on the original again.', private: true });
    const a = (await c.handle(inv({ command: 'ask', question: 'q', image: { bytes: h.png } }))) as { jobId: string };
    const tooOld = { kind: 'error', text: 'That image is too old to re-roll; please run /imagine again.', private: true };
    expect(await c.handle(inv({ command: 'reroll', jobId: a.jobId }))).toEqual(tooOld);
    expect(await c.handle(inv({ command: 'reroll', jobId: 'jnope' }))).toEqual(tooOld);
  });

  it('says when the channel is paused', async () => {
    const c = core();
    await c.gate.scheduler.pause('discord:g:c1');
    expect(await c.handle(inv(imagine()))).toMatchObject({
      kind: 'queued', position: 0, text: 'Queued. An admin paused this channel; your request waits until they resume it.',
    });
  });

  it('routes admin commands to the handlers given, and to the built-in ones otherwise', async () => {
    const c = core({ commands: { queue: async () => ({ kind: 'text', text: 'custom queue', private: true }) } });
    expect(await c.handle(inv({ command: 'queue', action: 'status' }))).toEqual({ kind: 'text', text: 'custom queue', private: true });
    expect(await c.handle(inv({ command: 'limits', action: 'show' }, { isAdmin: true }))).toMatchObject({ kind: 'text' });
  });
});

describe('core.handle: cancel', () => {
  it('lets only the submitter or an admin cancel; removes a waiting job and tells its destination', async () => {
    const port = recordingPort();
    const c = core({ ports: [port] });
    await c.start();
    expect(c.deliveryWorkers).toHaveLength(1);
    const q = (await c.handle(inv(imagine()))) as { jobId: string };
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }, { destination: dest('someone-else') }))).toEqual({
      kind: 'error', text: 'Only the person who started a job (or an admin) can cancel it.', private: true,
    });
    expect(await isCancelRequested(h.redis, c.config, q.jobId)).toBe(false);
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }))).toEqual({ kind: 'text', text: 'Cancelling…', private: true });
    expect(await isCancelRequested(h.redis, c.config, q.jobId)).toBe(true);
    expect(await c.queue.getJob(q.jobId)).toBeUndefined();
    expect(await c.position(q.jobId)).toBeUndefined();
    for (let i = 0; i < 300 && port.delivered.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(port.delivered).toEqual([
      expect.objectContaining({ jobId: q.jobId, status: 'cancelled', kind: 'imagine', error: { code: 'cancelled', message: 'Cancelled.', userFacing: true } }),
    ]);
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }))).toEqual({
      kind: 'error', text: 'That job has already finished or does not exist.', private: true,
    });
    const other = (await c.handle(inv(imagine('b')))) as { jobId: string };
    expect(await c.handle(inv({ command: 'cancel', jobId: other.jobId }, { destination: dest('admin'), isAdmin: true }))).toMatchObject({ kind: 'text' });
    expect(await c.queue.getJob(other.jobId)).toBeUndefined();
    // a vary removed before it ran: its upload is released (nothing reads it, and a job that is gone cannot be re-rolled)
    const v = (await c.handle(inv({ command: 'vary', image: { bytes: h.png } }))) as { jobId: string };
    const upload = ((await data(c, v.jobId)) as Extract<JobRequest, { kind: 'vary' }>).imageKey;
    expect(await h.redis.ttl(upload)).toBeGreaterThan(c.config.blobs.keepDeliveredSeconds);
    await c.handle(inv({ command: 'cancel', jobId: v.jobId }));
    expect(await h.redis.ttl(upload)).toBeLessThanOrEqual(c.config.blobs.keepDeliveredSeconds);
    await c.stop();
    expect(c.deliveryWorkers).toHaveLength(0);
  });

  it("an admin cancels jobs of their own server or workspace only; a same-named user of another platform is not the owner", async () => {
    const c = core();
    const q = (await c.handle(inv(imagine('a guarded fox')))) as { jobId: string }; // in server 'g'
    const refused = { kind: 'error', text: 'Only the person who started a job (or an admin) can cancel it.', private: true };
    const elsewhere = (guildId: string | null): Destination => ({ platform: 'discord', guildId, channelId: 'c1', userId: 'their-admin', applicationId: 'app' });
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }, { destination: elsewhere('another-g'), isAdmin: true }))).toEqual(refused);
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }, { destination: elsewhere(null), isAdmin: true }))).toEqual(refused); // a DM
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }, { destination: { platform: 'slack', teamId: 'g', channelId: 'c1', userId: 'u1' }, isAdmin: true }))).toEqual(refused);
    expect(await isCancelRequested(h.redis, c.config, q.jobId)).toBe(false);
    expect(await c.queue.getJob(q.jobId)).toBeDefined();
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }, { destination: dest('admin', 'another-channel'), isAdmin: true }))).toMatchObject({ kind: 'text', text: 'Cancelling…' });
  });

  it('a running job is not removed: the worker sees the flag', async () => {
    const c = core();
    const q = (await c.handle(inv(imagine()))) as { jobId: string };
    await h.redis.hset(`${c.config.queue.prefix}:jobs:${q.jobId}`, 'processedOn', Date.now());
    // a worker took it: BullMQ reports it active
    await h.redis.zrem(`${c.config.queue.prefix}:jobs:prioritized`, q.jobId);
    await h.redis.lpush(`${c.config.queue.prefix}:jobs:active`, q.jobId);
    expect(await c.handle(inv({ command: 'cancel', jobId: q.jobId }))).toMatchObject({ kind: 'text' });
    expect(await isCancelRequested(h.redis, c.config, q.jobId)).toBe(true);
    expect(await c.queue.getJob(q.jobId)).toBeDefined();
  });

  it('refuses to start a CLI port without a client id', async () => {
    const c = core({ ports: [{ ...recordingPort(), platform: 'cli' }] });
    await expect(c.start()).rejects.toThrow('a CLI port needs cliClientId');
  });

  it('runs a status edit only before the result is delivered', async () => {
    const c = core();
    let ran = 0;
    expect(await c.showBeforeResult('jx', async () => void ran++)).toBe(true);
    await h.redis.set(`${c.config.queue.prefix}:delivered:jx`, '1');
    expect(await c.showBeforeResult('jx', async () => void ran++)).toBe(false);
    expect(ran).toBe(1);
  });
});
