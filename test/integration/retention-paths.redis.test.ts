// A channel's retention TTL and no-log mode on the paths besides a plain success (test/integration/retention.redis.test.ts
// has those): a failure whose user-facing text quotes the prompt, a retry after a transient fault, a cancel while
// queued and while running, a worker killed mid-job whose job runs again, an identical request to a job of a channel
// without a TTL (single flight), and a request refused by the rate limits. Real @slack/bolt ↔ fake Slack, the real
// core on real Redis, a real worker process. After the TTL every key of the prefix is read back: none may name the job,
// hold its prompt or its PNG, nor name its user outside the aggregates (rate buckets, per-day usage); and no log line
// of the bot or the worker holds a prompt.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Invocation } from '../../bots/core/port.ts';
import type { SlackDestination } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, type DeliveryQueue } from '../../src/jobs/queue.ts';
import { HAND_OVER_WAIT_MS } from '../../src/jobs/retention.ts';
import { logOptions } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { slashCommand } from '../fakes/slack/payloads.ts';
import { until } from '../doubles/spine-harness.ts';
import { dumpPrefix, traces, tracesAfter, type Dumped } from '../doubles/redis-dump.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SECRET_CHANNEL = 'C0SECRET';
const LIMITED_CHANNEL = 'C0LIMITED';
const OPEN_CHANNEL = 'C0OPEN';
const TTL_S = 3;
let h: SlackHarness;
let redis: Redis;
let deliveries: DeliveryQueue;
let botLog = '';

beforeAll(async () => {
  const sink = new Writable({ write: (chunk, _enc, done) => void ((botLog += String(chunk)), done()) });
  h = await startSlackHarness({
    mode: 'socket',
    log: pino(logOptions('test-bot', 'debug'), sink),
    pipelineExtra: { stepDelayMs: 5, maxSteps: 2, slowStepMs: 300, failures: { REFUSE: 'user', FLAKY: 'transient-once', SLOW: 'slow' } },
    config: {
      queue: { retentionSweepMs: 250, lockDurationMs: 2000, stalledIntervalMs: 1000 },
      limits: { channelOverrides: { [`slack:T0FAKE:${LIMITED_CHANNEL}`]: { requestsPerWindow: 1, windowSeconds: 600, burst: 1, maxConcurrent: 0 } } },
    },
  });
  redis = createRedis(REDIS_URL, 'test-retention-paths');
  deliveries = createDeliveryQueue(h.config, redis, 'delivery-slack');
  for (const channelId of [SECRET_CHANNEL, LIMITED_CHANNEL])
    await h.core.settings.set('channel', destination(channelId, 'U0ADMIN'), { retentionSeconds: TTL_S, noLog: true });
}, 180_000);
afterAll(async () => {
  await deliveries?.close();
  await h?.stop();
  if (redis) await closeRedis(redis);
}, 30_000);

const destination = (channelId: string, userId: string): SlackDestination => ({ platform: 'slack', teamId: h.fake.teamId, channelId, userId });
const secretOf = (what: string) => `${what}${randomUUID().slice(0, 8)}`;
const statusIn = (channel: string) => h.fake.botMessages(channel).filter((m) => m.metadata?.event_type === 'blip3o_status');

/** /imagine in `channel` as `user`; resolves to the job id from the status message. */
async function imagine(channel: string, user: string, text: string): Promise<string> {
  h.fake.addUser(user);
  const before = statusIn(channel).length;
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text, channel, user })));
  const status = await h.fake.waitFor(() => statusIn(channel)[before], 15_000, 'the status message');
  const jobId = String(status.metadata!.event_payload.job_id);
  // Seen in Redis before its TTL (so nothingLeft can fail): looked for now, since later it may be purged before the
  // test looks (the status message is posted as the job is being queued, so it may take a moment)
  await until(async () => leftAbout(await dumpPrefix(redis, h.prefix), [jobId], [], user).length > 0, 2_000, `job ${jobId} in Redis`);
  return jobId;
}

/**
 * Until the job and its delivery have both finished, or both are gone after either was seen (a retention job that
 * finished while the test waited for another can be purged between two looks): what the TTL's purge waits for.
 */
async function settled(jobId: string, timeoutMs = 60_000): Promise<void> {
  const over = async (state: Promise<string> | undefined) => !state || ['completed', 'failed'].includes(await state);
  const end = Date.now() + timeoutMs;
  for (let seen = false; ; ) {
    const [job, delivery] = await Promise.all([h.core.queue.getJob(jobId), deliveries.getJob(jobId)]);
    if (delivery && (await over(job?.getState())) && (await over(delivery.getState()))) return;
    if (seen && !job && !delivery) return;
    seen ||= job !== undefined || delivery !== undefined;
    if (Date.now() > end) throw new Error(`job ${jobId} did not settle: job ${await job?.getState()}, delivery ${await delivery?.getState()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Aggregates that may name a user: rate-limit buckets and per-day usage (README "Your data"). */
const AGGREGATE = [/:limits:rate:(channel|user|workspace):slack:/, /:\{usage\}:(d:\d+|est)$/];

/** What still names a job or holds its texts or images, and what names its user outside the aggregates. */
function leftAbout(keys: readonly Dumped[], jobIds: readonly string[], texts: readonly string[], user: string, images: readonly Uint8Array[] = []): string[] {
  const beyondAggregates = keys.filter((d) => !AGGREGATE.some((re) => re.test(d.key)));
  return [...new Set([...traces(keys, [...jobIds, ...texts], images), ...traces(beyondAggregates, [user])])];
}

/**
 * Nothing of the jobs left after the TTL (imagine() saw each of them in Redis first, so this can fail). A failed job
 * (a failure, a cancel) is purged once its worker's 'failed' listener has marked it, HAND_OVER_WAIT_MS after a sweep
 * found it failed at the latest (before 2026-12-08 always the latter: this file took 142 s).
 */
async function nothingLeft(jobIds: readonly string[], texts: readonly string[], user: string, images: readonly Uint8Array[] = []): Promise<void> {
  const left = await tracesAfter(async () => leftAbout(await dumpPrefix(redis, h.prefix), jobIds, texts, user, images), HAND_OVER_WAIT_MS + 30_000);
  expect(left).toEqual([]);
}

const cancel = (jobId: string, channelId: string, userId: string): Promise<unknown> => {
  const inv: Invocation = { input: { command: 'cancel', jobId }, destination: destination(channelId, userId), dedupeKey: randomUUID(), isAdmin: false };
  return h.core.handle(inv);
};

const secrets: string[] = [];

describe('retention TTL and no-log mode, beyond a plain success', () => {
  it('a failure whose user-facing text quotes the prompt: purged, and the text never logged', async () => {
    const secret = secretOf('narwhal');
    secrets.push(secret);
    const jobId = await imagine(SECRET_CHANNEL, 'U0FAIL', `REFUSE a ${secret} --seed 3`);
    await settled(jobId);
    expect((await deliveries.getJob(jobId))?.data.error?.message).toContain(secret); // the user is told, quoting it
    await nothingLeft([jobId], [secret], 'U0FAIL');
  }, 180_000);

  it('a job retried after a transient fault: its failed try is purged with it', async () => {
    const secret = secretOf('ibex');
    secrets.push(secret);
    const jobId = await imagine(SECRET_CHANNEL, 'U0RETRY', `FLAKY a ${secret} --seed 4`);
    await settled(jobId);
    expect((await h.core.queue.getJob(jobId))?.attemptsMade).toBeGreaterThan(1);
    await nothingLeft([jobId], [secret], 'U0RETRY');
  }, 120_000);

  it('a job cancelled while running, and one cancelled while queued behind it', async () => {
    const running = secretOf('tapir');
    const queued = secretOf('dugong');
    secrets.push(running, queued);
    const first = await imagine(SECRET_CHANNEL, 'U0CANCEL', `SLOW a ${running} --seed 5`);
    await until(async () => (await (await h.core.queue.getJob(first))?.getState()) === 'active', 15_000, 'the job to start');
    const second = await imagine(SECRET_CHANNEL, 'U0CANCEL', `a ${queued} --seed 6`);
    await cancel(second, SECRET_CHANNEL, 'U0CANCEL');
    await cancel(first, SECRET_CHANNEL, 'U0CANCEL');
    await settled(first);
    await settled(second);
    expect((await deliveries.getJob(first))?.data.status).toBe('cancelled');
    expect((await deliveries.getJob(second))?.data.status).toBe('cancelled');
    await nothingLeft([first, second], [running, queued], 'U0CANCEL');
  }, 180_000);

  it('a job whose worker was killed mid-run runs again on the next worker, and is purged after', async () => {
    const secret = secretOf('okapi');
    secrets.push(secret);
    const jobId = await imagine(SECRET_CHANNEL, 'U0CRASH', `SLOW a ${secret} --seed 7`);
    await until(async () => (await (await h.core.queue.getJob(jobId))?.getState()) === 'active', 15_000, 'the job to start');
    await h.killWorker();
    await h.startWorker();
    await settled(jobId, 90_000);
    expect((await deliveries.getJob(jobId))?.data.status).toBe('succeeded');
    expect(h.workerOutput()).toContain('job stalled (its worker died); requeued'); // it ran again
    await nothingLeft([jobId], [secret], 'U0CRASH');
  }, 240_000);

  it('a request identical to a queued job of a channel without a TTL runs on its own, and nothing of it stays', async () => {
    const prompt = `SLOW a shared ${secretOf('lighthouse')} --seed 8`;
    const open = await imagine(OPEN_CHANNEL, 'U0OPEN', prompt);
    const own = await imagine(SECRET_CHANNEL, 'U0FOLLOW', prompt);
    expect(own).not.toBe(open);
    await Promise.all([settled(open), settled(own)]); // watched from the start: `own` may be purged before `open` ends
    // The open channel's job stays (and its prompt, and the cache its PNG): only the retention job's id and user count
    await nothingLeft([own], [], 'U0FOLLOW');
  }, 120_000);

  it('a request refused by the rate limits leaves nothing but the limit buckets', async () => {
    const admitted = secretOf('quagga');
    const refused = secretOf('saola');
    secrets.push(admitted, refused);
    const first = await imagine(LIMITED_CHANNEL, 'U0LIMIT', `a ${admitted} --seed 9`);
    h.fake.addUser('U0LIMIT');
    const responses = () => h.fake.calls.filter((c) => c.kind === 'response_url');
    const before = responses().length;
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text: `a ${refused} --seed 10`, channel: LIMITED_CHANNEL, user: 'U0LIMIT' })));
    const refusal = await h.fake.waitFor(() => responses().slice(before).find((c) => /allows \d+ request/.test(JSON.stringify(c.args))), 15_000, 'the refusal');
    expect(JSON.stringify(refusal.args)).not.toContain(refused);
    await settled(first);
    await nothingLeft([first], [admitted, refused], 'U0LIMIT');
  }, 120_000);

  it('no log line of the bot or the worker holds a prompt of a no-log channel', () => {
    expect(secrets.length).toBeGreaterThan(0);
    const worker = h.workerOutput();
    expect(worker).toContain('job done'); // the worker's lines were captured
    expect(botLog).toContain('queued');
    for (const s of secrets) {
      expect(worker).not.toContain(s);
      expect(botLog).not.toContain(s);
    }
  });
});
