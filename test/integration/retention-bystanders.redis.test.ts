// A channel's retention TTL deletes that channel's jobs, and must leave every other channel's alone. Until an audit
// (2026-12-07) a TTL channel's jobs and results were added with `removeOn*: { age: TTL }`, and BullMQ trims the whole
// finished set by the keep options of the job that finishes: every finished job older than the TTL, of any channel,
// went when a TTL channel's job finished. What an open channel's users then met, here with real @slack/bolt ↔ fake
// Slack, the real core and a real worker process: Re-roll on a result of a minute ago answered "That image is too old
// to re-roll" (it reads the job's request), and Slack's retry of a command the bot had answered posted a second status
// message and ran the job again (the duplicate check finds the job by its id; the delivery ledger alone kept the image
// from being posted twice).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SlackDestination } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, jobIdFor, type DeliveryQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { blockAction, slashCommand } from '../fakes/slack/payloads.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';
import { sleep, until } from '../doubles/spine-harness.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const OPEN = 'C0OPEN';
const SECRET = 'C0SECRET';
const USER = 'U0DANA';
const TTL_S = 1;
let h: SlackHarness;
let redis: Redis;
let deliveries: DeliveryQueue;

beforeAll(async () => {
  // No sweep during the test (the bot's and the worker's): what deletes the TTL channel's jobs on time is not at issue
  // here, and a purge of its job could come before the test saw it complete.
  h = await startSlackHarness({ mode: 'socket', ackWindowMs: 10_000, pipelineExtra: { stepDelayMs: 5, maxSteps: 2 }, config: { queue: { retentionSweepMs: 600_000 } } });
  h.fake.addUser(USER);
  redis = createRedis(REDIS_URL, 'test-retention-bystanders');
  deliveries = createDeliveryQueue(h.config, redis, 'delivery-slack');
  const secret: SlackDestination = { platform: 'slack', teamId: h.fake.teamId, channelId: SECRET, userId: USER };
  await h.core.settings.set('channel', secret, { retentionSeconds: TTL_S });
}, 60_000);
afterAll(async () => {
  await deliveries?.close();
  await h?.stop();
  if (redis) await closeRedis(redis);
}, 30_000);

const imagesOf = (jobId: string): FakeMessage[] => h.fake.store.allMessages().filter((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`));
const statusesOf = (jobId: string): FakeMessage[] => h.fake.store.allMessages().filter((m) => m.metadata?.event_type === 'blip3o_status' && m.metadata.event_payload.job_id === jobId);
/** What the bot told anyone privately (ephemeral posts and response_url answers). */
const told = (): string[] => [
  ...h.fake.apiCalls('chat.postEphemeral').map((c) => String(c.args.text)),
  ...h.fake.calls.filter((c) => c.kind === 'response_url').map((c) => JSON.stringify(c.args)),
];

/** Until the job and its delivery have both completed (the delivery completes once the result is posted). */
const completed = (jobId: string) =>
  until(async () => (await (await h.core.queue.getJob(jobId))?.getState()) === 'completed' && (await (await deliveries.getJob(jobId))?.getState()) === 'completed', 30_000, `job ${jobId} and its delivery to complete`);

describe("a retention channel's jobs and another channel's", () => {
  it("after a TTL channel's job finished, an open channel's retried command makes no second job, and its result can be re-rolled", async () => {
    const command = slashCommand(h.fake, { text: 'a quiet harbour --seed 7', channel: OPEN, user: USER });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', command));
    const jobId = jobIdFor('slack', `cmd:${command.trigger_id}`);
    const result = await h.fake.waitFor(() => imagesOf(jobId)[0], 30_000, 'the open channel’s image');
    await completed(jobId);
    const queuedAt = (await h.core.queue.getJob(jobId))!.timestamp;
    await sleep(TTL_S * 1000 + 500); // the open channel's job finished longer ago than the other channel's TTL

    const other = slashCommand(h.fake, { text: 'a secret harbour --seed 8', channel: SECRET, user: USER });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', other));
    const otherId = jobIdFor('slack', `cmd:${other.trigger_id}`);
    await h.fake.waitFor(() => imagesOf(otherId)[0], 30_000, 'the TTL channel’s image');
    await completed(otherId);

    // Re-roll on the open channel's result
    const press = blockAction(h.fake, { user: USER, message: result, actionId: 'blip3o_reroll', value: jobId });
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', press));
    const rerollId = jobIdFor('slack', `btn:${USER}:${(press.actions as { action_ts: string }[])[0]!.action_ts}`);
    // before: "That image is too old to re-roll; please run /imagine again." (the job's request was gone)
    const rerolled = await h.fake.waitFor(() => imagesOf(rerollId)[0] ?? told().find((t) => t.includes('too old')), 30_000, 'the re-rolled image');
    expect.soft(typeof rerolled === 'string' ? rerolled : 'the re-rolled image').toBe('the re-rolled image');

    // Slack's retry of the open channel's command (its ack was lost), then a new command, handled after it
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', command));
    const next = slashCommand(h.fake, { text: 'a busy harbour --seed 9', channel: OPEN, user: USER });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', next));
    await h.fake.waitFor(() => imagesOf(jobIdFor('slack', `cmd:${next.trigger_id}`))[0], 30_000, 'the next image');
    // before: a second status message and the job queued and run again (the duplicate check finds the job by its id;
    // only the delivery ledger kept the image from being posted twice)
    expect({ statuses: statusesOf(jobId).length, queuedAt: (await h.core.queue.getJob(jobId))?.timestamp }).toEqual({ statuses: 1, queuedAt });
  }, 120_000);
});
