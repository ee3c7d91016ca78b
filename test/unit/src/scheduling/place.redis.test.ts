// The place in line (position, positions, the reserve's and the enqueue's replies) against an oracle: the walk the scripts did before
// they counted heads with ZCOUNT (every released head, with its line's length), re-written here in TypeScript over
// the same keys. Random scheduler states come from real Redis and a real BullMQ queue: submits across channels and
// users with costs, starts, pauses, resumes, cancels, jobs outside the scheduler, and rebases (a small maxPriority).
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueNames, type Destination } from '../../../../src/jobs/contract.ts';
import { createFairScheduler, PARK_MS, type FairScheduler, type QueuePlace } from '../../../../src/scheduling/fair.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const TWO20 = 2 ** 20;
let redis: Redis;
const dest = (channelId: string, userId: string): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId, applicationId: 'app' });
const ck = (channelId: string) => `discord:g:${channelId}`;

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  await redis.quit();
});

/** States the oracle met, so the test can tell that the random runs reach the cases the new counting treats apart. */
const seen = { pausedHeadBelow: 0, shortLine: 0, tie: 0, aheadOfOwnHead: 0, ownHeadBelow: 0, waiting: 0 };

/** The former place(): every released head of another, unpaused channel adds max(0, min(its line's length, before)). */
async function oracle(prefix: string, jobId: string): Promise<QueuePlace> {
  const B = `${prefix}:sched:`;
  const entry = await redis.hget(`${B}jobs`, jobId);
  if (entry === null) return { state: 'none' };
  const channel = entry.split('\n')[0]!;
  const q = `${B}q:${channel}`;
  const rank = (await redis.zrank(q, jobId)) ?? 0;
  if ((await redis.sismember(`${B}paused`, channel)) === 1) return { state: 'held', position: rank + 1 };
  const head = await redis.hget(`${B}heads`, channel);
  let myTag = Number((await redis.get(`${B}vclock`)) ?? 0) + 1;
  let myTie = TWO20;
  if (head !== null) {
    const hs = Number(await redis.zscore(`${B}tags`, channel));
    const hr = (await redis.zrank(q, head)) ?? 0;
    if (rank < hr) seen.aheadOfOwnHead++;
    if (rank > hr) seen.ownHeadBelow++;
    myTag = Math.floor(hs / TWO20) + Math.max(0, rank - hr);
    myTie = hs % TWO20;
  }
  const waiting = await redis.llen(`${prefix}:${QueueNames.jobs}:wait`);
  if (waiting > 0) seen.waiting++;
  let ahead = rank + waiting;
  const paused = new Set(await redis.smembers(`${B}paused`));
  const tags = await redis.zrange(`${B}tags`, '0', '-1', 'WITHSCORES');
  for (let i = 0; i < tags.length; i += 2) {
    const h = tags[i]!;
    const score = Number(tags[i + 1]);
    const before = myTag - Math.floor(score / TWO20) + (score % TWO20 < myTie ? 1 : 0);
    if (h !== channel && paused.has(h) && before > 0) seen.pausedHeadBelow++;
    if (h === channel || paused.has(h)) continue;
    const length = await redis.zcard(`${B}q:${h}`);
    if (Math.floor(score / TWO20) === myTag) seen.tie++;
    if (length < before) seen.shortLine++;
    ahead += Math.max(0, Math.min(length, before));
  }
  return { state: 'queued', position: ahead + 1 };
}

const channels = ['A', 'B', 'C', 'D'];
const step = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('submit' as const), channel: fc.constantFrom(...channels), user: fc.constantFrom('x', 'y'), cost: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('take' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('pause' as const), channel: fc.constantFrom(...channels) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('resume' as const), channel: fc.constantFrom(...channels) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('plain' as const) }) }, // a job BullMQ holds outside the scheduler
);

type Step = typeof step extends fc.Arbitrary<infer T> ? T : never;

/** One run: play the steps, and after each compare every waiting job's place with the oracle's. */
async function play(steps: Step[], maxPriority: number | undefined): Promise<void> {
  const prefix = `t-place-${randomUUID().slice(0, 8)}`;
  const conn = new Redis(url, { maxRetriesPerRequest: null });
  const queue = new Queue(QueueNames.jobs, { connection: conn, prefix });
  const scheduler: FairScheduler = createFairScheduler(redis, { queue: { prefix } }, queue, maxPriority ? { maxPriority } : {});
  const keyOf = (name: string) => `${prefix}:${QueueNames.jobs}:${name}`;
  try {
    let n = 0;
    for (const s of steps) {
      if (s.kind === 'submit') {
        // as the bots submit: an idle channel's job is reserved and added released, any other added parked and enqueued
        const jobId = `j${n++}`;
        const reserved = await scheduler.reserve(jobId, dest(s.channel, s.user), s.cost);
        if (reserved) {
          expect(reserved.place).toEqual(await oracle(prefix, jobId));
          await queue.add('imagine', {}, { jobId, priority: reserved.priority });
        } else {
          await queue.add('imagine', {}, { jobId, ...scheduler.parkedOptions() });
          expect(await scheduler.enqueue(jobId, dest(s.channel, s.user), s.cost)).toEqual(await oracle(prefix, jobId));
        }
      } else if (s.kind === 'take') {
        // a worker: BullMQ's wait list first, then the lowest priority; a paused channel's job goes back to delayed
        if ((await redis.rpop(keyOf('wait'))) === null) {
          const [next] = await redis.zrange(keyOf('prioritized'), '0', '0');
          if (next !== undefined) {
            await redis.zrem(keyOf('prioritized'), next);
            await redis.hset(keyOf(next), 'processedOn', Date.now());
            if ((await scheduler.started(next)).held) await redis.zadd(keyOf('delayed'), (Date.now() + PARK_MS) * 0x1000, next);
          }
        }
      } else if (s.kind === 'pause') await scheduler.pause(ck(s.channel));
      else if (s.kind === 'resume') await scheduler.resume(ck(s.channel));
      else if (s.kind === 'cancel') {
        const waiting = await scheduler.waitingJobs();
        const victim = waiting[s.pick % Math.max(1, waiting.length)];
        if (victim) {
          await queue.remove(victim.jobId);
          await scheduler.forget(victim.jobId);
        }
      } else await queue.add('plain', {}, { jobId: `p${n++}` });

      const ids = [...(await scheduler.waitingJobs()).map((w) => w.jobId), 'nope'];
      const expected = await Promise.all(ids.map((id) => oracle(prefix, id)));
      expect(await scheduler.positions(ids)).toEqual(expected);
      expect(await Promise.all(ids.map((id) => scheduler.position(id)))).toEqual(expected);
    }
  } finally {
    await queue.close();
    await conn.quit();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  }
}

// A job lined up before its channel's head (rare at random): x's round-2 job is cancelled and x's round-1 job starts,
// so the head is x's round-3 job when y's first job joins the channel in round 2.
const submitA = (user: 'x' | 'y'): Step => ({ kind: 'submit', channel: 'A', user, cost: 1 });
const beforeOwnHead: Step[] = [submitA('x'), submitA('x'), submitA('x'), { kind: 'cancel', pick: 1 }, { kind: 'take' }, submitA('y')];

describe('place in line', () => {
  it('answers exactly what the walk over every released head answered, in random scheduler states (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 60, size: 'max' }), fc.constantFrom(undefined, 8), async (steps, maxPriority) => {
        await play(steps, maxPriority);
      }),
      {
        numRuns: process.env.MUTATION_RUN ? 8 : 40,
        examples: [[beforeOwnHead, undefined]],
      },
    );
    // the runs reached the cases counted apart: paused heads still released ahead, lines shorter than their share,
    // equal tags (ties), jobs lined up before or after their own channel's head, and jobs outside the scheduler
    for (const [name, count] of Object.entries(seen)) expect(count, name).toBeGreaterThan(0);
  });
});
