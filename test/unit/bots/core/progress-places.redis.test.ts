// What a waiting job's status message says while its place changes in ways no start shows: its channel paused by an
// admin (it said "Queued: 3rd in line." for as long as the pause lasted, while other channels' jobs went ahead), its
// worker lost (it said the last step it reached while it waited again), another channel's job joining the line ahead
// of it (its place was one too good until the next start). Real Redis, BullMQ and the fair scheduler; the relay's real
// queue-position pass; workers and BullMQ's events played by the test.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ProgressRelay } from '../../../../bots/core/progress.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { progressText as discordLine } from '../../../../bots/discord/render.ts';
import { progressText as slackLine } from '../../../../bots/slack/blocks.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination, JobProgress } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../../../src/jobs/ledger.ts';
import { createJobsQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { createLogger } from '../../../../src/log.ts';
import { createFairScheduler } from '../../../../src/scheduling/fair.ts';
import { until } from '../../../doubles/spine-harness.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-paused-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const dest = (channelId: string): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId: 'u1', applicationId: 'app' });
let redis: Redis;
let queue: JobsQueue;

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
  queue = createJobsQueue(config, redis);
});
afterAll(async () => {
  await queue.close();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

/** A started relay (instance A) whose port records what it shows, and the emitter that plays BullMQ's events. */
function startRelay(): { events: EventEmitter; shown: JobProgress[]; relay: ProgressRelay } {
  const events = new EventEmitter();
  const shown: JobProgress[] = [];
  const port = { platform: 'discord', showProgress: async (_d: Destination, p: JobProgress) => void shown.push(p), deliver: async () => undefined } as unknown as PlatformPort;
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 20, ledger: new DeliveryLedger(redis, config),
    instanceId: 'A', prefix, log: createLogger('test', 'silent'),
  });
  relay.start();
  return { events, shown, relay };
}

it('a job waiting in a channel an admin paused says so (not its old place), and gets its place back on resume', async () => {
  const scheduler = createFairScheduler(redis, config, queue);
  const { events, shown, relay } = startRelay();
  try {
    // Channel A: a1, a2, a3; channel B: b1, b2. The scheduler alternates channels: a1, b1, a2, b2, a3.
    for (const [id, channel] of [['a1', 'A'], ['a2', 'A'], ['a3', 'A'], ['b1', 'B'], ['b2', 'B']] as const) {
      await queue.add('imagine', { destination: dest(channel) } as never, { jobId: id, ...scheduler.parkedOptions() });
      await scheduler.enqueue(id, dest(channel));
    }
    relay.track('b2', dest('B'), 4); // what the submitter told its user: "Queued: 4th in line."
    await scheduler.pause('discord:g:B');
    // a worker takes a1: every waiting job's place is read again
    await scheduler.started('a1');
    events.emit('active', { jobId: 'a1' });
    await until(() => shown.some((p) => p.jobId === 'b2'), 3_000).catch(() => undefined);
    const b2 = () => shown.filter((p) => p.jobId === 'b2');
    expect(b2().map(discordLine)).toEqual(['⏳ Queued. An admin paused this channel; your request waits until they resume it.']);
    expect(slackLine(b2()[0]!)).toBe('Queued. An admin paused this channel; your request waits until they resume it.');

    await scheduler.resume('discord:g:B');
    await scheduler.started('a2');
    events.emit('active', { jobId: 'a2' });
    await until(() => b2().length === 2, 3_000).catch(() => undefined);
    expect(b2().slice(1).map(discordLine)).toEqual([expect.stringMatching(/^⏳ Queued: \d+(st|nd|rd|th) in line\.$/)]);
  } finally {
    await relay.stop();
  }
});

it('a running job whose worker was lost goes back in line: its status says its place again, not the last step for good', async () => {
  const { events, shown, relay } = startRelay();
  try {
    const ahead = `ahead-${randomUUID().slice(0, 8)}`;
    const lost = `lost-${randomUUID().slice(0, 8)}`;
    await queue.add('imagine', { destination: dest('C') } as never, { jobId: lost });
    relay.track(lost, dest('C'), 1);
    events.emit('active', { jobId: lost });
    events.emit('progress', { jobId: lost, data: { v: 1, jobId: lost, stage: 'features', step: 12, total: 30 } });
    await until(() => shown.some((p) => p.jobId === lost && p.step === 12), 3_000);
    // The worker died: BullMQ's stall check put the job back in the wait list (here it never left it), where it is
    // taken next, before one added meanwhile.
    await queue.add('imagine', { destination: dest('C') } as never, { jobId: ahead });
    events.emit('stalled', { jobId: lost });
    await until(() => shown.filter((p) => p.jobId === lost).at(-1)?.stage === 'queued', 3_000).catch(() => undefined);
    expect(discordLine(shown.filter((p) => p.jobId === lost).at(-1)!)).toBe('⏳ Queued: 1st in line.');
  } finally {
    await relay.stop();
  }
});

it('the first in line of a channel paused just before a worker took it (parked again) says the channel is paused', async () => {
  const scheduler = createFairScheduler(redis, config, queue);
  const { events, shown, relay } = startRelay();
  try {
    const head = `head-${randomUUID().slice(0, 8)}`;
    const channel = `P-${randomUUID().slice(0, 8)}`;
    const d = dest(channel);
    await queue.add('imagine', { destination: d } as never, { jobId: head, ...scheduler.parkedOptions() });
    await scheduler.enqueue(head, d);
    relay.track(head, d, 1);
    await scheduler.pause(`discord:g:${channel}`);
    // A worker takes it (BullMQ: active), the scheduler says its channel is paused, and the worker parks it again (delayed).
    events.emit('active', { jobId: head });
    expect(await scheduler.started(head)).toEqual({ held: true });
    events.emit('delayed', { jobId: head, delay: Date.now() + 1_000_000 });
    await until(() => shown.some((p) => p.jobId === head), 3_000).catch(() => undefined);
    expect(shown.filter((p) => p.jobId === head).map(discordLine)).toEqual(['⏳ Queued. An admin paused this channel; your request waits until they resume it.']);
  } finally {
    await relay.stop();
  }
});

it("a job of another channel that joins the line ahead (fair scheduling takes channels in turn) moves the place shown back at once", async () => {
  const scheduler = createFairScheduler(redis, config, queue);
  const { events, shown, relay } = startRelay();
  try {
    const tag = randomUUID().slice(0, 8);
    const [busy, idle] = [`busy-${tag}`, `idle-${tag}`];
    const ids = [1, 2, 3].map((i) => `${busy}-${i}`);
    for (const id of ids) {
      await queue.add('imagine', { destination: dest(busy) } as never, { jobId: id, ...scheduler.parkedOptions() });
      await scheduler.enqueue(id, dest(busy));
    }
    const mine = ids[2]!;
    const before = (await scheduler.position(mine)) as { position: number };
    relay.track(mine, dest(busy), before.position);
    // Another channel's first job: released at once, and it goes ahead of this channel's later jobs.
    const theirs = `${idle}-1`;
    await queue.add('imagine', { destination: dest(idle) } as never, { jobId: theirs, ...scheduler.parkedOptions() });
    await scheduler.enqueue(theirs, dest(idle));
    const after = (await scheduler.position(mine)) as { position: number };
    expect(after.position).toBe(before.position + 1);
    events.emit('waiting', { jobId: theirs }); // BullMQ: the release moved it to the lists a worker takes from
    await until(() => shown.some((p) => p.jobId === mine), 3_000).catch(() => undefined);
    expect(shown.filter((p) => p.jobId === mine).map((p) => p.queuePosition)).toEqual([after.position]);
  } finally {
    await relay.stop();
  }
});
