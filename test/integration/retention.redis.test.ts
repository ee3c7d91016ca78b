// Issue 20: a channel's retention TTL (/settings, admins). Real @slack/bolt ↔ fake Slack, the real core on real Redis,
// a real worker process. A job runs in a channel with a 4 s TTL; once it has passed, every key under the test's
// prefix is read back (all types) and nothing may name the job id, carry the prompt, the answer or a PNG; what is
// left must be exactly the list of keys that hold no job data. Before the TTL the same scan finds the job (so the
// assertion can fail), and a channel without a TTL keeps its job.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from '../../src/redis.ts';
import sharp from 'sharp';
import { closeRedis, createRedis } from '../../src/redis.ts';
import type { SlackDestination } from '../../src/jobs/contract.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { eventCallback, slashCommand } from '../fakes/slack/payloads.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';
import { dumpPrefix, traces as tracesOf, tracesAfter, type Dumped } from '../doubles/redis-dump.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CHANNEL = 'C0SECRET';
const OPEN = 'C0OPEN';
const USER = 'U0ALICE';
const TTL_S = 4;
let h: SlackHarness;
let redis: Redis;

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'socket', pipelineExtra: { stepDelayMs: 5, maxSteps: 2 }, config: { queue: { retentionSweepMs: 250 } } });
  h.fake.addUser(USER);
  redis = createRedis(REDIS_URL, 'test-retention');
  const channel = (channelId: string): SlackDestination => ({ platform: 'slack', teamId: h.fake.teamId, channelId, userId: USER });
  await h.core.settings.set('channel', channel(CHANNEL), { retentionSeconds: TTL_S });
}, 60_000);
afterAll(async () => {
  await h?.stop();
  if (redis) await closeRedis(redis);
}, 30_000);

const dump = () => dumpPrefix(redis, h.prefix);

/** Keys that name or hold anything of the job: its id, its texts, or one of its images byte for byte. */
const traces = (keys: Dumped[], jobId: string, texts: string[], images: Uint8Array[]) => tracesOf(keys, [jobId, ...texts], images);

/**
 * What may stay once the job is purged, none of it about the job: queue-wide BullMQ bookkeeping (id counter, meta,
 * event streams without this job's entries, the stalled-check timer), the rate-limit buckets (counts), the day's
 * GPU-second totals and per-kind estimates (numbers per channel/user), the model identity, the channel's settings, and
 * the bot instances' alive times (instance → time: bots/core/progress.ts).
 */
const MAY_REMAIN = [
  /:(jobs|delivery-slack):(id|meta|events|stalled-check)$/,
  /:limits:rate:(channel:slack:T0FAKE:C0SECRET|user:slack:U0ALICE|workspace:slack:T0FAKE)$/,
  /:\{usage\}:(d:\d+|est)$/,
  /:\{cache\}:models$/,
  /:settings:channel:slack:T0FAKE:C0SECRET$/,
  /:progress-alive$/,
];

const statusIn = (channel: string) => h.fake.botMessages(channel).filter((m) => m.metadata?.event_type === 'blip3o_status');

async function imagine(channel: string, text: string): Promise<{ jobId: string; result: FakeMessage }> {
  const before = statusIn(channel).length;
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text, channel, user: USER })));
  const status = await h.fake.waitFor(() => statusIn(channel)[before], 10_000, 'the status message');
  const jobId = String(status.metadata!.event_payload.job_id);
  const result = await h.fake.waitFor(() => h.fake.store.thread(channel, status.ts).find((m) => (m.files?.length ?? 0) > 0), 45_000, 'the image');
  return { jobId, result };
}

describe('retention TTL per channel', () => {
  it('after the TTL nothing of an /imagine job (id, prompt, negative, PNG) is left in Redis; only keys without job data remain', async () => {
    const secret = `okapi${Date.now().toString(36)}`;
    const prompt = `a ${secret} wearing a hat --no ${secret}-negative --seed 5`;
    const { jobId, result } = await imagine(CHANNEL, prompt);
    const png = result.files![0]!.bytes;
    const texts = [secret];
    const job = await h.core.queue.getJob(jobId);
    expect(job?.data.destination).toMatchObject({ retentionSeconds: TTL_S }); // the TTL travels with the job
    // Before the TTL: the job is there to find (the check below can fail).
    expect(traces(await dump(), jobId, texts, [png]).length).toBeGreaterThan(0);

    const left = await tracesAfter(async () => traces(await dump(), jobId, texts, [png]), 40_000);
    expect(left).toEqual([]);
    const remaining = (await dump()).map((d) => d.key);
    const unexpected = remaining.filter((k) => !MAY_REMAIN.some((re) => re.test(k)));
    expect(unexpected).toEqual([]);
  }, 120_000);

  it('an /ask answer (question, answer text, uploaded image) is purged the same way', async () => {
    const secret = `quokka${Date.now().toString(36)}`;
    const input = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#3a7' } }).png().toBuffer());
    const file = h.fake.seedFile(input, 'green.png', 'image/png');
    const message = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> is this a ${secret}?`, files: [file] });
    const before = h.fake.botMessages(CHANNEL).length;
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, { type: 'app_mention', user: USER, text: message.text, ts: message.ts, channel: CHANNEL, files: message.files })));
    const answer = await h.fake.waitFor(() => h.fake.botMessages(CHANNEL).slice(before).find((m) => m.metadata?.event_type === 'blip3o_answer'), 45_000, 'the answer');
    const jobId = String(answer.metadata!.event_payload.job_id);
    const answerText = answer.text.slice(0, 30);
    expect(traces(await dump(), jobId, [secret], [input]).length).toBeGreaterThan(0);
    const left = await tracesAfter(async () => traces(await dump(), jobId, [secret, answerText], [input]), 40_000);
    expect(left).toEqual([]);
  }, 120_000);

  it('a channel without a TTL keeps its job past the other channel\'s TTL', async () => {
    const { jobId } = await imagine(OPEN, `an open channel's lighthouse --seed 9`);
    await new Promise((r) => setTimeout(r, (TTL_S + 2) * 1000));
    expect(await h.core.queue.getJob(jobId)).toBeDefined();
  }, 120_000);
});
