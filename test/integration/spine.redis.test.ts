// The spine end to end over real Redis: in-process cores (CLI-style destinations) → a real worker process
// (node --import tsx worker/main.ts, test double pipeline in its model threads) → delivery queues → ports.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import { CONTRACT_VERSION, QueueNames, type CliDestination } from '../../src/jobs/contract.ts';
import { createJobsQueue, type JobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, runs, spawnTs, startWorker, until, type Proc } from '../doubles/spine-harness.ts';

const h = makeHarness({
  queue: { attempts: 3, backoffMs: 100, jobTimeoutMs: 2_000, lockDurationMs: 5_000, stalledIntervalMs: 5_000 },
  worker: { concurrency: 4, abortGraceMs: 500, pipelineExtra: { stepDelayMs: 5, slowStepMs: 400, failures: { '[user]': 'user', '[once]': 'transient-once', '[always]': 'transient', '[slow]': 'slow', '[stuck]': 'ignore-abort', '[crash]': 'crash' } } },
});
const secrets = loadSecrets({ REDIS_URL });

interface Client {
  clientId: string;
  port: RecordingPort;
  core: Core;
}

let redis: Redis;
let worker: Proc;
let queue: JobsQueue;
const clients: Client[] = [];

async function client(): Promise<Client> {
  const clientId = randomUUID();
  const port = new RecordingPort('cli');
  const core = createCore({ config: h.config, secrets, ports: [port], cliClientId: clientId });
  await core.start();
  const c = { clientId, port, core };
  clients.push(c);
  return c;
}

const dest = (c: Client): CliDestination => ({ platform: 'cli', clientId: c.clientId, channelId: 'local', userId: 'tester' });
const imagine = (c: Client, prompt: string, dedupeKey = randomUUID()): Invocation => ({
  input: { command: 'imagine', prompt, seed: 7, ditSteps: 4, decoderSteps: 4 }, destination: dest(c), dedupeKey, isAdmin: false,
});

beforeAll(async () => {
  redis = createRedis(REDIS_URL);
  queue = createJobsQueue(h.config, redis);
  worker = await startWorker(h);
});

afterAll(async () => {
  await worker?.kill('SIGTERM');
  for (const c of clients) await c.core.stop();
  await queue?.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('spine', () => {
  it('completes 20 concurrent CLI-style submissions and delivers each exactly once, to the client that asked', async () => {
    const cs = await Promise.all([client(), client(), client(), client()]);
    const submissions = Array.from({ length: 20 }, (_, i) => ({ c: cs[i % 4]!, prompt: `a red fox ${i}` }));
    const replies = await Promise.all(submissions.map((s) => s.c.core.handle(imagine(s.c, s.prompt))));
    expect(replies.filter((r) => r.kind !== 'queued')).toEqual([]);
    const ids = replies.map((r) => (r as { jobId: string }).jobId);
    expect(new Set(ids).size).toBe(20);
    await Promise.all(ids.map((id, i) => submissions[i]!.c.port.waitFor(id)));
    await new Promise((r) => setTimeout(r, 500)); // let any duplicate arrive
    for (const [i, id] of ids.entries()) {
      const { c } = submissions[i]!;
      expect(c.port.count(id)).toBe(1);
      for (const other of cs) if (other !== c) expect(other.port.count(id)).toBe(0);
      const d = c.port.deliveries.find((x) => x.result.jobId === id)!;
      expect(d.result.status).toBe('succeeded');
      const meta = await sharp(d.image!).metadata(); // a real PNG came back through the blob store
      expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
      // …and leaves Redis soon after it was posted, not a day later (blobs.ttlSeconds)
      const ttl = await redis.ttl(d.result.image!.blobKey);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(h.config.blobs.keepDeliveredSeconds);
    }
    // Different prompts give different pixels; progress went through the relay.
    const first = cs[0]!.port.deliveries.map((d) => Buffer.from(d.image!).toString('base64'));
    expect(new Set(first).size).toBe(first.length);
    expect(cs.some((c) => c.port.progress.some((p) => ['conditioning', 'features', 'decoding'].includes(p.stage)))).toBe(true);
    expect(runs(h).filter((r) => r.prompt?.startsWith('a red fox ')).length).toBe(20);
  });

  it('runs the CLI: npm run imagine writes the PNG, npm run ask prints the answer, through the same queues', async () => {
    const out = join(h.dir, 'fox.png');
    const imagineCli = spawnTs('bots/cli/main.ts', h, ['imagine', 'a red fox in snow', '--seed', '7', '--out', out]);
    await imagineCli.waitFor(`wrote ${out} (64×64, seed 7)`, 90_000);
    expect(await new Promise((r) => imagineCli.child.once('exit', r))).toBe(0);
    expect((await sharp(out).metadata()).format).toBe('png');
    const askCli = spawnTs('bots/cli/main.ts', h, ['ask', out, 'what is this?']);
    await askCli.waitFor('I see a 64×64 png image. You asked: what is this?', 90_000);
    expect(await new Promise((r) => askCli.child.once('exit', r))).toBe(0);
  });

  it('makes one job from duplicate submissions of the same interaction', async () => {
    const c = await client();
    const key = randomUUID();
    const replies = await Promise.all([1, 2, 3].map(() => c.core.handle(imagine(c, 'duplicate fox', key))));
    const ids = new Set(replies.map((r) => (r as { jobId: string }).jobId));
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    await c.port.waitFor(id!);
    await new Promise((r) => setTimeout(r, 500));
    expect(c.port.count(id!)).toBe(1);
    expect(runs(h).filter((r) => r.prompt === 'duplicate fox').length).toBe(1);
  });

  it('answers a question about an image', async () => {
    const c = await client();
    const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#884422' } }).png().toBuffer();
    const reply = await c.core.handle({ input: { command: 'ask', question: 'what colour is it?', image: { bytes: png } }, destination: dest(c), dedupeKey: randomUUID(), isAdmin: false });
    const result = await c.port.waitFor((reply as { jobId: string }).jobId);
    expect(result.answer?.text).toBe('I see a 40×30 png image. You asked: what colour is it?');
  });

  it('refuses bad input at submit with a message the user understands, and enqueues nothing', async () => {
    const c = await client();
    const before = await queue.getJobCounts();
    const long = await c.core.handle(imagine(c, 'x'.repeat(h.config.generation.maxPromptChars + 1)));
    expect(long).toEqual({ kind: 'error', private: true, text: `Your prompt is ${h.config.generation.maxPromptChars + 1} characters; the limit is ${h.config.generation.maxPromptChars}.` });
    const aspect = await c.core.handle({ ...imagine(c, 'fox'), input: { command: 'imagine', prompt: 'fox', aspect: '5:1' } });
    expect(aspect.kind === 'error' && aspect.text).toMatch(/^aspect must be one of 1:1, /);
    const notImage = await c.core.handle({ input: { command: 'ask', question: 'what?', image: { bytes: new TextEncoder().encode('hello') } }, destination: dest(c), dedupeKey: randomUUID(), isAdmin: false });
    expect(notImage).toMatchObject({ kind: 'error', text: 'That file is not an image I can read (PNG, JPEG, WebP or GIF).' });
    expect(await queue.getJobCounts()).toEqual(before);
  });

  it('rejects malformed job data in the queue with a clear error and leaves nothing stuck', async () => {
    const c = await client();
    const good = { v: CONTRACT_VERSION, id: 'jmalformed1', destination: dest(c), submittedAt: Date.now(), kind: 'imagine', prompt: 'fox', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } };
    const bad: [string, Record<string, unknown>, RegExp][] = [
      ['jmalformed1', { ...good, v: 99 }, /v: Invalid input: expected 1/],
      ['jmalformed2', { ...good, id: 'jmalformed2', prompt: undefined }, /prompt: /],
      ['jmalformed3', { ...good, id: 'jmalformed3', prompt: 'y'.repeat(5000) }, /prompt: Too big/],
      ['jmalformed4', { nonsense: true }, /does not match contract v1/],
    ];
    for (const [id, data] of bad) await queue.add('imagine', data as never, { jobId: id });
    for (const [id, , reason] of bad) {
      const state = await until(async () => { const s = await queue.getJobState(id); return s === 'failed' && s; }, 20_000, `${id} failed`);
      expect(state).toBe('failed');
      const job = await queue.getJob(id);
      expect(job!.failedReason).toMatch(reason);
      expect(job!.attemptsMade).toBe(1); // not retried
    }
    // The three with a parseable destination told the user; the fourth had nowhere to go.
    await until(() => c.port.deliveries.length >= 3 && true, 10_000, 'failure deliveries');
    expect(c.port.deliveries.map((d) => d.result.status)).toEqual(['failed', 'failed', 'failed']);
    const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(0);
    expect(runs(h).some((r) => r.prompt === 'fox')).toBe(false);
  });

  it('fails bad input found by the model at once with its message, and retries transient faults', async () => {
    const c = await client();
    const user = await c.core.handle(imagine(c, 'a [user] fox'));
    const once = await c.core.handle(imagine(c, 'a [once] fox'));
    const always = await c.core.handle(imagine(c, 'an [always] fox'));
    const id = (r: unknown) => (r as { jobId: string }).jobId;
    const [u, o, a] = await Promise.all([c.port.waitFor(id(user)), c.port.waitFor(id(once)), c.port.waitFor(id(always))]);
    expect(u.status).toBe('failed');
    expect(u.error).toMatchObject({ userFacing: true, message: 'the test pipeline refuses this input: a [user] fox' });
    expect((await queue.getJob(id(user)))!.attemptsMade).toBe(1);
    expect(o.status).toBe('succeeded');
    expect(a).toMatchObject({ status: 'failed', error: { userFacing: false, message: `Generation failed (ref ${id(always)}).` } });
    expect(runs(h).filter((r) => r.prompt === 'an [always] fox').length).toBe(3); // queue.attempts
  });

  it('retries a job whose model thread dies, replacing the thread each time, then reports the failure', async () => {
    const c = await client();
    const reply = await c.core.handle(imagine(c, 'a [crash] fox'));
    const id = (reply as { jobId: string }).jobId;
    const result = await c.port.waitFor(id, 60_000);
    expect(result).toMatchObject({ status: 'failed', error: { userFacing: false, message: `Generation failed (ref ${id}).` } });
    expect(runs(h).filter((r) => r.prompt === 'a [crash] fox').length).toBe(h.config.queue.attempts);
    const after = await c.core.handle(imagine(c, 'after the crashes'));
    expect((await c.port.waitFor((after as { jobId: string }).jobId, 30_000)).status).toBe('succeeded');
  });

  it('cancels a running job, and stops one that runs past jobTimeoutMs, even if the model ignores the abort', async () => {
    const c = await client();
    const slow = await c.core.handle(imagine(c, 'a [slow] fox'));
    const slowId = (slow as { jobId: string }).jobId;
    await until(() => c.port.progress.some((p) => p.jobId === slowId && p.stage !== 'queued'), 20_000, 'slow job started');
    const cancel = await c.core.handle({ input: { command: 'cancel', jobId: slowId }, destination: dest(c), dedupeKey: randomUUID(), isAdmin: false });
    expect(cancel.kind).toBe('text');
    expect((await c.port.waitFor(slowId)).status).toBe('cancelled');

    const stuck = await c.core.handle(imagine(c, 'a [stuck] fox'));
    const stuckId = (stuck as { jobId: string }).jobId;
    const result = await c.port.waitFor(stuckId, 20_000);
    expect(result).toMatchObject({ status: 'failed', error: { code: 'timeout', userFacing: true, message: 'This took longer than 2 seconds and was stopped.' } });
    // logged before the failure is handed over, but the worker's stdout may reach this process after the delivery
    await until(() => worker.output().includes('model thread ignored abort; terminating it'), 5_000, 'the log line');
    // The slot's thread was replaced: the worker still serves jobs.
    const after = await c.core.handle(imagine(c, 'after the stuck one'));
    expect((await c.port.waitFor((after as { jobId: string }).jobId, 20_000)).status).toBe('succeeded');
    // the result is handed to delivery just before BullMQ records the job completed: wait for that, then nothing is left
    await until(async () => (await queue.getJobCounts('active')).active === 0, 10_000, 'the last job to complete');
    expect(await queue.getJobCounts('active', 'wait')).toEqual({ active: 0, wait: 0 });
  });
});

// Queue names used here must match the shared contract.
expect(QueueNames.jobs).toBe('jobs');
