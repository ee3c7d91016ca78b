// What the Slack adapter keeps per job in memory over weeks of traffic: a job's title (its prompt or question, the
// headline of its status message) is held while the bot may still edit that message, and forgotten once this process
// has delivered the result, or once no job came of the request (refused, or its status message could not be posted). Until 2026-12-08 every title
// stayed for the life of the bot: one entry per request, a prompt kept in memory past a retention channel's deadline
// too, and each Re-roll or Vary of an older job added that job's title as well. With several bot instances on one Redis
// (any of them takes a delivery) the title of a job another instance delivered stayed for good until 2026-12-08: the
// adapter's sweep (sweepTitles, every minute) forgets it, and that of a job gone from Redis.
import { Queue, Worker } from 'bullmq';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ACTION } from '../../../../bots/slack/blocks.ts';
import { QueueNames } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { duplicateRedis } from '../../../../src/redis.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { blockAction, slashCommand } from '../../../fakes/slack/payloads.ts';
import type { FakeMessage } from '../../../fakes/slack/store.ts';

const CHANNEL = 'C0TITLES';
const JOBS = 4;
let h: SlackHarness;

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'socket', pipelineExtra: { stepDelayMs: 5, maxSteps: 2 } });
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const statusOf = (jobId: string) => h.fake.botMessages(CHANNEL).find((m) => m.metadata?.event_type === 'blip3o_status' && m.metadata.event_payload.job_id === jobId);
const done = (status: FakeMessage) => h.fake.waitFor(() => (h.fake.store.find(CHANNEL, status.ts)?.text === 'Done: the image is in the thread' ? true : undefined), 30_000, 'the final status');

async function imagine(user: string, text: string): Promise<{ jobId: string; responseUrl: string }> {
  const payload = slashCommand(h.fake, { text, channel: CHANNEL, user });
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
  return { jobId: jobIdFor('slack', `cmd:${payload.trigger_id}`), responseUrl: String(payload.response_url) };
}

it('titles are forgotten once a result is delivered here, or the request refused; a Re-roll keeps no title of the job it re-rolls', async () => {
  const user = 'U0TITLES';
  h.fake.addUser(user);
  for (let i = 0; i < JOBS; i++) {
    const { jobId } = await imagine(user, `a lake number ${i} --seed ${i}`);
    await done(await h.fake.waitFor(() => statusOf(jobId), 10_000, 'the status message'));
  }
  // Not queued: the bot is not in the channel (its status message refused), told privately.
  for (let i = 0; i < JOBS; i++) {
    h.fake.inject({ method: 'chat.postMessage', error: 'not_in_channel' });
    const { responseUrl } = await imagine(user, `a lake nobody sees ${i}`);
    await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)), 10_000, 'the refusal');
  }
  // A Re-roll of the first job, pressed on its status message: its own title, and the source's read for it.
  const first = await imagine(user, 'a pond --seed 9');
  const status = await h.fake.waitFor(() => statusOf(first.jobId), 10_000, 'the status message');
  await done(status);
  const payload = blockAction(h.fake, { user, message: status, actionId: ACTION.reroll, value: first.jobId });
  await h.fake.link.ack(h.fake.sendEnvelope('interactive', payload));
  const again = jobIdFor('slack', `btn:${user}:${(payload.actions as { action_ts: string }[])[0]!.action_ts}`);
  await done(await h.fake.waitFor(() => statusOf(again), 10_000, 'the re-roll\'s status message'));
  await new Promise((r) => setTimeout(r, 300)); // the last delivery's own end (the final status is its last call)
  expect(h.adapter.titlesKept).toBe(0);
}, 120_000);

it('a sweep keeps the titles of a job still queued and of a request that joined it; each is forgotten at the second look that finds it gone', async () => {
  const [user, other] = ['U0TITLES2', 'U0TITLES4'];
  h.fake.addUser(user);
  h.fake.addUser(other);
  await h.stopWorker(); // nothing runs: the job waits
  const { jobId } = await imagine(user, 'a lake that waits --seed 7');
  await h.fake.waitFor(() => statusOf(jobId), 10_000, 'the status message');
  await until(async () => (await h.core.queue.getJob(jobId)) !== undefined, 10_000, 'the job queued');
  // The same request from someone else joins the job: served without a job of its own, its result comes with the job's
  const joined = await imagine(other, 'a lake that waits --seed 7');
  await h.fake.waitFor(() => statusOf(joined.jobId), 10_000, 'the second status message');
  await until(async () => (await h.core.requestOf(joined.jobId)) !== undefined, 10_000, 'the request served');
  expect(await h.core.queue.getJob(joined.jobId)).toBeUndefined();
  expect(h.adapter.titlesKept).toBe(2);
  expect(await h.adapter.sweepTitles()).toBe(0);
  expect(await h.adapter.sweepTitles()).toBe(0);
  expect(h.adapter.titlesKept).toBe(2);
  await h.core.queue.remove(jobId); // as a purge or the keep time's end does: no result will come
  // The first look that finds it gone keeps it: that may fall between a title's set and its job's add
  expect(await h.adapter.sweepTitles()).toBe(0);
  expect(await h.adapter.sweepTitles()).toBe(1);
  expect(h.adapter.titlesKept).toBe(1); // the joined request's (its served record is kept as long as a job)
  await h.core.redis.del(`${h.prefix}:served:${joined.jobId}`); // as its keep time's end does
  expect(await h.adapter.sweepTitles()).toBe(0);
  expect(await h.adapter.sweepTitles()).toBe(1);
  expect(h.adapter.titlesKept).toBe(0);
}, 60_000);

it('a sweep keeps the title of a job whose result waits, and forgets it once another bot instance delivered it', async () => {
  const user = 'U0TITLES3';
  h.fake.addUser(user);
  // This instance takes no delivery from now on: another one, below, takes it from the shared delivery queue
  await Promise.all(h.core.deliveryWorkers.map((w) => w.close()));
  await h.startWorker();
  const connection = duplicateRedis(h.core.redis);
  const otherConnection = duplicateRedis(h.core.redis);
  const deliveries = new Queue(QueueNames.delivery('slack'), { connection, prefix: h.prefix });
  let elsewhere: Worker | undefined;
  try {
    const { jobId } = await imagine(user, 'a lake seen elsewhere');
    await until(async () => (await deliveries.getJob(jobId)) !== undefined, 30_000, 'the result handed over');
    expect(h.adapter.titlesKept).toBe(1);
    expect(await h.adapter.sweepTitles()).toBe(0); // its result waits: a delivery here would show its headline
    // Still so once the job itself is gone (a cancelled job's result is handed over, then the job removed)
    await h.core.queue.remove(jobId);
    expect(await h.adapter.sweepTitles()).toBe(0);
    expect(await h.adapter.sweepTitles()).toBe(0);
    expect(h.adapter.titlesKept).toBe(1);
    const ledger = new DeliveryLedger(h.core.redis, h.config);
    elsewhere = new Worker(deliveries.name, async (job) => void (await ledger.markDelivered(job.id!)), { connection: otherConnection, prefix: h.prefix });
    await until(() => ledger.isDelivered(jobId), 10_000, 'the other instance\'s delivery');
    // before: 0, and the title stayed for the life of the process
    expect(await h.adapter.sweepTitles()).toBe(1);
    expect(h.adapter.titlesKept).toBe(0);
  } finally {
    await elsewhere?.close();
    await deliveries.close();
    await Promise.all([connection.quit(), otherConnection.quit()]);
  }
}, 60_000);
