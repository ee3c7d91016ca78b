// Fair scheduling over real Redis and a real BullMQ queue, with the worker played by the test: "take" a job is
// what BullMQ's worker does (the lowest priority of the prioritized set, FIFO among equals) followed by the
// scheduler hook. Deterministic and fast, so states such as "users already have jobs running" and properties
// over any arrival pattern can be checked exactly.
import { randomUUID } from 'node:crypto';
import { DelayedError, Job, Queue } from 'bullmq';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QueueNames, type Destination } from '../../../../src/jobs/contract.ts';
import { createFairScheduler, MAX_PRIORITY, PARK_MS, startOrHold, userKeyOf, type FairScheduler } from '../../../../src/scheduling/fair.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
let redis: Redis;
const cleanup: (() => Promise<unknown>)[] = [];
const dest = (channelId: string, userId = 'u1'): Destination => ({ platform: 'discord', guildId: 'g', channelId, userId, applicationId: 'app' });
const ck = (channelId: string) => `discord:g:${channelId}`;

interface Rig {
  prefix: string;
  queue: Queue;
  scheduler: FairScheduler;
  submit(jobId: string, d: Destination, cost?: number): Promise<void>;
  /** What the bots' submit does: reserve first; an idle channel's job is added released, any other parked + enqueued. */
  submitReserving(jobId: string, d: Destination, cost?: number): Promise<void>;
  /** What one free worker slot does: take BullMQ's next job and run the scheduler hook. */
  take(): Promise<string | undefined>;
}

function rig(options: { maxPriority?: number; adoptAfterMs?: number } = {}): Rig {
  const prefix = `t-fair-${randomUUID().slice(0, 8)}`;
  const conn = new Redis(url, { maxRetriesPerRequest: null });
  const queue = new Queue(QueueNames.jobs, { connection: conn, prefix });
  const scheduler = createFairScheduler(redis, { queue: { prefix } }, queue, options);
  cleanup.push(async () => {
    await queue.close();
    await conn.quit();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  });
  const prioritized = `${prefix}:${QueueNames.jobs}:prioritized`;
  return {
    prefix,
    queue,
    scheduler,
    async submit(jobId, d, cost) {
      await queue.add('imagine', { destination: d }, { jobId, ...scheduler.parkedOptions() });
      await scheduler.enqueue(jobId, d, cost);
    },
    async submitReserving(jobId, d, cost) {
      const reserved = await scheduler.reserve(jobId, d, cost);
      if (reserved) await queue.add('imagine', { destination: d }, { jobId, priority: reserved.priority });
      else await this.submit(jobId, d, cost);
    },
    async take() {
      const [next] = await redis.zrange(prioritized, '0', '0');
      if (next === undefined) return undefined;
      await redis.zrem(prioritized, next);
      await redis.hset(`${prefix}:${QueueNames.jobs}:${next}`, 'processedOn', Date.now());
      await scheduler.started(next);
      return next;
    },
  };
}

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
});
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});
afterAll(async () => {
  await redis.quit();
});

describe('fair scheduler', () => {
  it('parks new jobs: delayed 30 days at the lowest priority, until enqueue releases them', async () => {
    const t = rig();
    expect(t.scheduler.parkedOptions()).toEqual({ priority: MAX_PRIORITY, delay: PARK_MS });
    expect(MAX_PRIORITY).toBe(2 ** 21 - 1);
    expect(PARK_MS).toBe(30 * 24 * 3600 * 1000);
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'p0', ...t.scheduler.parkedOptions() });
    expect(await t.queue.getJobState('p0')).toBe('delayed');
    await t.scheduler.enqueue('p0', dest('A'));
    expect(await t.queue.getJobState('p0')).toBe('prioritized');
    expect((await t.queue.getJob('p0'))!.priority).toBe(1);
  });

  it('a user who joins a channel where another user already has jobs running waits one round, not behind all of them', async () => {
    const t = rig();
    for (let i = 0; i < 5; i++) await t.submit(`x${i}`, dest('A', 'x'));
    expect(await t.take()).toBe('x0');
    expect(await t.take()).toBe('x1'); // x's jobs of rounds 1 and 2 are running
    await t.submit('y0', dest('A', 'y'));
    await t.submit('y1', dest('A', 'y'));
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    // y's first job joins at the channel's current round (3): after x2 (same round, earlier), before x3
    expect(order).toEqual(['x2', 'y0', 'x3', 'y1', 'x4']);
  });

  it('a channel that had jobs running does not jump ahead of one that waited (start-time tags)', async () => {
    const t = rig();
    for (let i = 0; i < 3; i++) await t.submit(`a${i}`, dest('A'));
    expect(await t.take()).toBe('a0');
    expect(await t.take()).toBe('a1');
    for (let i = 0; i < 2; i++) await t.submit(`b${i}`, dest('B'));
    await t.submit('c0', dest('C'));
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    expect(order).toEqual(['a2', 'b0', 'c0', 'b1']);
  });

  it('reports channels, waiting jobs, pauses and positions', async () => {
    const t = rig();
    await t.submit('a0', dest('A', 'x'));
    await t.submit('a1', dest('A', 'y'));
    await t.submit('b0', dest('B', 'x'));
    expect(userKeyOf(dest('A', 'x'))).toBe('discord:x');
    expect((await t.scheduler.waitingJobs()).sort((p, q) => p.jobId.localeCompare(q.jobId))).toEqual([
      { jobId: 'a0', channelKey: ck('A'), userKey: 'discord:x' },
      { jobId: 'a1', channelKey: ck('A'), userKey: 'discord:y' },
      { jobId: 'b0', channelKey: ck('B'), userKey: 'discord:x' },
    ]);
    expect(await t.scheduler.channels()).toEqual([
      { channelKey: ck('A'), queued: 2, paused: false, head: { jobId: 'a0', priority: 1 } },
      { channelKey: ck('B'), queued: 1, paused: false, head: { jobId: 'b0', priority: 1 } },
    ]);
    expect(await t.scheduler.position('a1')).toEqual({ state: 'queued', position: 3 });
    expect(await t.scheduler.position('nope')).toEqual({ state: 'none' });
    // positions() answers each job as position() does, in one call
    expect(await t.scheduler.positions(['a0', 'a1', 'nope', 'b0'])).toEqual(await Promise.all(['a0', 'a1', 'nope', 'b0'].map((j) => t.scheduler.position(j))));
    expect(await t.scheduler.positions([])).toEqual([]);
    expect((await t.scheduler.positions(['a0', 'a1', 'b0'])).map((p) => (p.state === 'queued' ? p.position : 0)).sort()).toEqual([1, 2, 3]);
    expect(await t.scheduler.positions([])).toEqual([]);
    // enqueue answers the new job's place itself, the same as position() right after; a repeat answers it again
    await t.queue.add('imagine', { destination: dest('C') }, { jobId: 'c0', ...t.scheduler.parkedOptions() });
    const placed = await t.scheduler.enqueue('c0', dest('C'));
    expect(placed).toEqual({ state: 'queued', position: 3 });
    expect(await t.scheduler.position('c0')).toEqual(placed);
    expect(await t.scheduler.enqueue('c0', dest('C'))).toEqual(placed);
    await t.queue.remove('c0');
    await t.scheduler.forget('c0');

    await t.scheduler.pause(ck('A'));
    expect(await t.scheduler.isPaused(ck('A'))).toBe(true);
    expect(await t.scheduler.isPaused(ck('B'))).toBe(false);
    expect(await t.scheduler.position('a1')).toEqual({ state: 'held', position: 2 });
    expect(await t.scheduler.position('b0')).toEqual({ state: 'queued', position: 1 }); // paused channels are not counted
    expect(await t.scheduler.positions(['a1', 'b0'])).toEqual([{ state: 'held', position: 2 }, { state: 'queued', position: 1 }]);
    expect(await t.take()).toBe('a0'); // a0 was released before the pause, so BullMQ hands it out; the hook says held
    expect((await t.scheduler.channels()).find((c) => c.channelKey === ck('A'))).toEqual({ channelKey: ck('A'), queued: 2, paused: true });
    await t.scheduler.resume(ck('A'));
    expect(await t.scheduler.isPaused(ck('A'))).toBe(false);
    const heads = await t.scheduler.channels();
    expect(heads.map((c) => c.head?.jobId)).toEqual(['a0', 'b0']);
    expect(heads[0]!.head!.priority).toBeGreaterThanOrEqual(1);

    // a paused channel with nothing queued is still listed
    await t.scheduler.pause(ck('Z'));
    expect((await t.scheduler.channels()).map((c) => [c.channelKey, c.queued, c.paused])).toContainEqual([ck('Z'), 0, true]);
  });

  it('startOrHold lets a job run, or parks it again and throws DelayedError when its channel is paused', async () => {
    const t = rig();
    await t.submit('a0', dest('A'));
    await t.submit('a1', dest('A'));
    const moved: [number, string | undefined][] = [];
    const fake = (id: string) => ({ id, moveToDelayed: async (at: number, token?: string) => void moved.push([at, token]) }) as unknown as Job;
    await startOrHold(t.scheduler, fake('a0'), 'tok');
    expect(moved).toEqual([]);
    expect(await t.queue.getJobState('a1')).toBe('prioritized'); // started released the channel's next job
    await t.scheduler.pause(ck('A'));
    const before = Date.now();
    await expect(startOrHold(t.scheduler, fake('a1'), 'tok')).rejects.toBeInstanceOf(DelayedError);
    expect(moved).toHaveLength(1);
    expect(moved[0]![1]).toBe('tok');
    expect(moved[0]![0]).toBeGreaterThanOrEqual(before + PARK_MS);
    expect(moved[0]![0]).toBeLessThan(Date.now() + PARK_MS + 1000);
  });

  it('hands the turn of a job that vanished before its release to the next job of its channel', async () => {
    const t = rig();
    await t.submit('a0', dest('A'));
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'a1', ...t.scheduler.parkedOptions() });
    await t.scheduler.enqueue('a1', dest('A'));
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'a2', ...t.scheduler.parkedOptions() });
    await t.scheduler.enqueue('a2', dest('A'));
    await (await t.queue.getJob('a1'))!.remove(); // removed without a forget (a bot died mid-cancel)
    expect(await t.take()).toBe('a0'); // releasing a1 finds it gone and releases a2 instead
    expect(await t.queue.getJobState('a2')).toBe('prioritized');
    expect(await t.take()).toBe('a2');
    expect(await t.scheduler.waitingJobs()).toEqual([]);
  });

  it('reserves an idle channel’s job before BullMQ has it: added with that priority it runs, with nothing to release after', async () => {
    const t = rig();
    const reserved = await t.scheduler.reserve('r0', dest('A'));
    expect(reserved).toEqual({ priority: 1, place: { state: 'queued', position: 1 } });
    expect(await t.scheduler.reserve('r0', dest('A'))).toEqual(reserved); // a second call answers the same
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'r0', priority: reserved!.priority });
    expect(await t.queue.getJobState('r0')).toBe('prioritized');
    // A channel with a job released, or paused, is not idle: nothing is lined up, the job goes the parked way.
    expect(await t.scheduler.reserve('a1', dest('A'))).toBeUndefined();
    await t.scheduler.pause(ck('B'));
    expect(await t.scheduler.reserve('b0', dest('B'))).toBeUndefined();
    expect((await t.scheduler.waitingJobs()).map((j) => j.jobId)).toEqual(['r0']);
    await t.submit('a1', dest('A'));
    await t.submitReserving('c0', dest('C'));
    expect(await t.scheduler.position('c0')).toEqual({ state: 'queued', position: 2 }); // behind r0, ahead of a1
    expect([await t.take(), await t.take(), await t.take()]).toEqual(['r0', 'c0', 'a1']);
    expect(await redis.zcard(`${t.prefix}:sched:adding`)).toBe(0);
  });

  it('a reservation that rebases the clock re-prioritises the other released jobs in BullMQ', async () => {
    const t = rig({ maxPriority: 3 });
    await redis.set(`${t.prefix}:sched:vclock`, 1);
    await t.submit('x0', dest('X'));
    expect((await t.queue.getJob('x0'))!.priority).toBe(2);
    await redis.set(`${t.prefix}:sched:vclock`, 2); // as if a job tagged 2 had started: V + 1 reaches maxPriority
    expect((await t.scheduler.reserve('z0', dest('Z')))!.priority).toBe(2);
    expect((await t.queue.getJob('x0'))!.priority).toBe(1); // every head shifted down by one, the order kept
  });

  it('a reservation whose add is on its way survives repair and a failed release; older than adoptAfterMs, repair ends it', async () => {
    const t = rig({ maxPriority: 3, adoptAfterMs: 60_000 });
    for (const id of ['x0', 'x1', 'x2']) await t.submit(id, dest('X'));
    expect((await t.scheduler.reserve('r1', dest('Y')))!.priority).toBe(1); // its add has not landed yet
    await t.scheduler.repair();
    expect(await t.take()).toBe('x0');
    expect(await t.take()).toBe('x1'); // the clock reaches maxPriority: a rebase re-releases every head, r1 too, and fails on it
    expect((await t.scheduler.waitingJobs()).map((j) => j.jobId).sort()).toEqual(['r1', 'x2']);
    await t.queue.add('imagine', { destination: dest('Y') }, { jobId: 'r1', priority: 1 });
    expect(await t.take()).toBe('r1');

    const old = rig({ adoptAfterMs: 1 });
    await old.scheduler.reserve('r2', dest('A')); // its bot died before the add
    await new Promise((r) => setTimeout(r, 5));
    await old.scheduler.repair();
    expect(await old.scheduler.waitingJobs()).toEqual([]);
    expect(await old.scheduler.reserve('r3', dest('A'))).toMatchObject({ priority: 1 }); // the channel is idle again
  });

  it('repair adopts a parked job nobody lined up only once it is old enough, and only if it is still parked', async () => {
    const young = rig({ adoptAfterMs: 60_000 });
    await young.queue.add('imagine', { destination: dest('A') }, { jobId: 'o1', ...young.scheduler.parkedOptions() });
    await young.scheduler.repair();
    expect(await young.scheduler.position('o1')).toEqual({ state: 'none' });

    const t = rig({ adoptAfterMs: 0 });
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'o2', ...t.scheduler.parkedOptions() });
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'plain', delay: PARK_MS, priority: 7 }); // not parked by us
    await t.queue.add('imagine', { note: 'no destination' }, { jobId: 'odd', ...t.scheduler.parkedOptions() });
    await t.scheduler.repair();
    expect(await t.scheduler.position('o2')).toEqual({ state: 'queued', position: 1 });
    expect(await t.scheduler.position('plain')).toEqual({ state: 'none' });
    expect(await t.scheduler.position('odd')).toEqual({ state: 'none' });
  });

  it('keeps every priority below BullMQ’s largest, whatever maxPriority a caller asks for', async () => {
    const t = rig({ maxPriority: 10 * MAX_PRIORITY });
    await t.submit('a0', dest('A'));
    expect((await t.queue.getJob('a0'))!.priority).toBe(1);
    const small = rig({ maxPriority: 3 });
    for (let i = 0; i < 4; i++) await small.submit(`a${i}`, dest('A'));
    await small.submit('b0', dest('B'));
    const order: string[] = [];
    for (let id = await small.take(); id; id = await small.take()) {
      order.push(id);
      const next = await redis.zrange(`${small.prefix}:${QueueNames.jobs}:prioritized`, '0', '-1');
      for (const j of next) expect((await small.queue.getJob(j))!.priority).toBeLessThan(3);
    }
    expect(order).toEqual(['a0', 'b0', 'a1', 'a2', 'a3']);
  });

  // Whatever the arrival pattern, while a channel has jobs waiting, every other channel starts at most two jobs
  // between two of its starts (one released job per channel, tagged in start order: one in the current turn and one
  // of the next that was tagged first), and inside a channel every other user likewise at most two (one in the
  // user's round, one of the next round that arrived earlier).
  it('never starves a channel or a user, under any interleaving of arrivals and starts (property)', async () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('submit' as const), channel: fc.constantFrom('A', 'B', 'C'), user: fc.constantFrom('x', 'y'), reserving: fc.boolean() }),
      fc.record({ kind: fc.constant('take' as const) }),
    );
    const t = rig(); // one queue for all runs: every run drains it, which restarts the scheduler's clocks
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (steps) => {
        try {
          let n = 0;
          const waiting = new Map<string, { channel: string; user: string }>();
          // For each channel (and each channel+user) with jobs waiting: starts of every other channel (other user of
          // the same channel) since it last started a job or began to wait.
          const sinceChannel = new Map<string, Map<string, number>>();
          const sinceUser = new Map<string, Map<string, number>>();
          let worst = 0;
          const bump = (m: Map<string, Map<string, number>>, waiter: string, starter: string) => {
            const counts = m.get(waiter) ?? new Map<string, number>();
            counts.set(starter, (counts.get(starter) ?? 0) + 1);
            worst = Math.max(worst, counts.get(starter)!);
            m.set(waiter, counts);
          };
          const onStart = (id: string) => {
            const me = waiting.get(id)!;
            waiting.delete(id);
            sinceChannel.delete(me.channel);
            sinceUser.delete(`${me.channel}/${me.user}`);
            const waiters = new Set([...waiting.values()].map((w) => JSON.stringify(w)));
            const channels = new Set([...waiting.values()].map((w) => w.channel));
            for (const c of channels) if (c !== me.channel) bump(sinceChannel, c, me.channel);
            for (const w of waiters) {
              const { channel, user } = JSON.parse(w) as { channel: string; user: string };
              if (channel === me.channel && user !== me.user) bump(sinceUser, `${channel}/${user}`, me.user);
            }
          };
          for (const s of [...steps, ...Array.from({ length: 14 }, () => ({ kind: 'take' as const }))]) {
            if (s.kind === 'submit') {
              const id = `j${runs}-${n++}`;
              await (s.reserving ? t.submitReserving(id, dest(s.channel, s.user)) : t.submit(id, dest(s.channel, s.user)));
              waiting.set(id, { channel: s.channel, user: s.user });
            } else {
              const id = await t.take();
              if (id) onStart(id);
            }
          }
          expect(waiting.size).toBe(0); // everything ran
          expect(worst).toBeLessThanOrEqual(2);
          expect(await t.scheduler.waitingJobs()).toEqual([]);
          expect(await redis.zcard(`${t.prefix}:sched:adding`)).toBe(0); // every reservation ended when its job started
        } finally {
          runs++;
        }
      }),
      { numRuns: process.env.MUTATION_RUN ? 5 : 15 },
    );
  });

  it('weighs channels by cost: a channel whose jobs cost 2.6 units (rounded to 3) starts one job per three of a channel at cost 1', async () => {
    const t = rig();
    const add = async (jobId: string, d: Destination, cost?: number) => {
      await t.queue.add('imagine', { destination: d }, { jobId, ...t.scheduler.parkedOptions() });
      await t.scheduler.enqueue(jobId, d, cost);
    };
    for (let i = 0; i < 3; i++) await add(`a${i}`, dest('A'), 2.6);
    for (let i = 0; i < 6; i++) await add(`b${i}`, dest('B'), i % 2 ? 0.2 : undefined); // below one unit counts as one
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    expect(order).toEqual(['a0', 'b0', 'b1', 'b2', 'a1', 'b3', 'b4', 'b5', 'a2']);
  });

  it('a cost given when the job starts replaces the one from enqueue', async () => {
    const t = rig();
    for (let i = 0; i < 3; i++) await t.submit(`a${i}`, dest('A'));
    for (let i = 0; i < 6; i++) await t.submit(`b${i}`, dest('B'));
    const prioritized = `${t.prefix}:${QueueNames.jobs}:prioritized`;
    const order: string[] = [];
    for (let [next] = await redis.zrange(prioritized, '0', '0'); next; [next] = await redis.zrange(prioritized, '0', '0')) {
      await redis.zrem(prioritized, next);
      await redis.hset(`${t.prefix}:${QueueNames.jobs}:${next}`, 'processedOn', Date.now());
      await t.scheduler.started(next, next.startsWith('a') ? 2.6 : 0.2);
      order.push(next);
    }
    expect(order).toEqual(['a0', 'b0', 'b1', 'b2', 'a1', 'b3', 'b4', 'b5', 'a2']);
  });

  it('a channel that sends one job at a time still waits its cost: its next job starts at the last one’s finish tag', async () => {
    const t = rig();
    for (let i = 0; i < 9; i++) await t.submit(`b${i}`, dest('B')); // a backlog at cost 1
    await t.submitReserving('a0', dest('A'), 3);
    const order: string[] = [];
    for (let n = 0, a = 1; n < 12; n++) {
      const id = (await t.take())!;
      order.push(id);
      // A's line is empty whenever its job starts; its user asks again at once, by reserve (idle channel) or enqueue
      if (!id.startsWith('a')) continue;
      const next = `a${a}`;
      await (a++ % 2 ? t.submitReserving(next, dest('A'), 3) : t.submit(next, dest('A'), 3));
    }
    expect(order).toEqual(['b0', 'a0', 'b1', 'b2', 'a1', 'b3', 'b4', 'b5', 'a2', 'b6', 'b7', 'b8']); // as with a backlog
  });

  it('keeps an idle channel’s finish tag only until V + 1 reaches it; its next job then gets V + 1', async () => {
    const t = rig();
    const fin = () => redis.zrange(`${t.prefix}:sched:fin`, '0', '-1', 'WITHSCORES');
    for (let i = 0; i < 4; i++) await t.submit(`b${i}`, dest('B'));
    await t.submitReserving('a0', dest('A'), 3);
    expect([await t.take(), await t.take()]).toEqual(['b0', 'a0']); // V = 1: A's next job starts at 1 + 3 at the earliest
    expect(await fin()).toEqual([ck('A'), '4']);
    expect(await t.take()).toBe('b1'); // V = 2
    expect(await fin()).toEqual([ck('A'), '4']);
    expect(await t.take()).toBe('b2'); // V = 3: V + 1 reached it
    expect(await fin()).toEqual([]);
    await t.submitReserving('a1', dest('A'), 3);
    expect((await t.queue.getJob('a1'))!.priority).toBe(4);
    expect([await t.take(), await t.take()]).toEqual(['b3', 'a1']);
  });

  it('a released job of an expensive channel that is cancelled keeps its turn for the channel’s next job', async () => {
    const t = rig();
    for (let i = 0; i < 6; i++) await t.submit(`b${i}`, dest('B'));
    await t.submit('a0', dest('A'), 3);
    await t.submit('a1', dest('A'), 3);
    expect([await t.take(), await t.take()]).toEqual(['b0', 'a0']); // a1 released at 1 + 3
    await (await t.queue.getJob('a1'))!.remove();
    await t.scheduler.forget('a1'); // A's line is empty now
    await t.submitReserving('a2', dest('A'), 3);
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    expect(order).toEqual(['b1', 'b2', 'a2', 'b3', 'b4', 'b5']);
  });

  it('a rebase moves the saved finish tags with the clock', async () => {
    const t = rig({ maxPriority: 6 });
    for (let i = 0; i < 12; i++) await t.submit(`b${i}`, dest('B'));
    await t.submitReserving('a0', dest('A'), 3);
    const order: string[] = [];
    const prioritized = `${t.prefix}:${QueueNames.jobs}:prioritized`;
    for (let n = 0, a = 1; n < 16; n++) {
      const id = (await t.take())!;
      order.push(id);
      if (id.startsWith('a')) await t.submitReserving(`a${a++}`, dest('A'), 3);
      for (const j of await redis.zrange(prioritized, '0', '-1')) expect((await t.queue.getJob(j))!.priority).toBeLessThan(6);
    }
    expect(order.join(' ')).toBe('b0 a0 b1 b2 a1 b3 b4 b5 a2 b6 b7 b8 a3 b9 b10 b11');
  });

  it('a user whose waiting jobs are all cancelled joins the channel’s current round again, not behind rounds never used', async () => {
    const t = rig();
    for (let i = 0; i < 6; i++) await t.submit(`y${i}`, dest('A', 'y'));
    for (let i = 0; i < 3; i++) await t.submit(`x${i}`, dest('A', 'x')); // rounds 1, 2, 3
    for (const id of ['x0', 'x1', 'x2']) {
      await (await t.queue.getJob(id))!.remove();
      await t.scheduler.forget(id);
    }
    await t.submit('x3', dest('A', 'x'));
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    expect(order).toEqual(['y0', 'x3', 'y1', 'y2', 'y3', 'y4', 'y5']);
  });

  it('a user who cancels their later jobs keeps the rounds still waiting, in whichever order they cancel', async () => {
    for (const cancelled of [['x2', 'x1'], ['x1', 'x2']]) {
      const t = rig();
      for (let i = 0; i < 5; i++) await t.submit(`y${i}`, dest('A', 'y'));
      for (let i = 0; i < 3; i++) await t.submit(`x${i}`, dest('A', 'x'));
      for (const id of cancelled) {
        await (await t.queue.getJob(id))!.remove();
        await t.scheduler.forget(id);
      }
      await t.submit('x3', dest('A', 'x')); // after x0's round 1: round 2
      const order: string[] = [];
      for (let id = await t.take(); id; id = await t.take()) order.push(id);
      expect(order).toEqual(['y0', 'x0', 'y1', 'x3', 'y2', 'y3', 'y4']);
    }
  });

  it('a user who cancels a job between two others keeps the round of their last one', async () => {
    const t = rig();
    for (let i = 0; i < 5; i++) await t.submit(`y${i}`, dest('A', 'y'));
    for (let i = 0; i < 3; i++) await t.submit(`x${i}`, dest('A', 'x')); // rounds 1, 2, 3
    await (await t.queue.getJob('x1'))!.remove();
    await t.scheduler.forget('x1');
    await t.submit('x3', dest('A', 'x')); // after x2's round 3: round 4, not x1's 2
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    expect(order).toEqual(['y0', 'x0', 'y1', 'y2', 'x2', 'y3', 'x3', 'y4']);
  });

  it('once nothing waits the clocks start again, and a kept finish tag goes with them', async () => {
    const t = rig();
    await t.submitReserving('a0', dest('A'), 3);
    expect(await t.take()).toBe('a0'); // its finish tag 1 + 3 is kept, then dropped: nothing else waits
    expect(await redis.zrange(`${t.prefix}:sched:fin`, '0', '-1')).toEqual([]);
    await t.submitReserving('a1', dest('A'), 3);
    expect((await t.queue.getJob('a1'))!.priority).toBe(1);
  });

  it('a channel paused with a kept finish tag releases its next job at that tag when resumed', async () => {
    const t = rig();
    for (let i = 0; i < 6; i++) await t.submit(`b${i}`, dest('B'));
    await t.submitReserving('a0', dest('A'), 3);
    expect([await t.take(), await t.take()]).toEqual(['b0', 'a0']); // V = 1: A's next job at 1 + 3
    await t.scheduler.pause(ck('A'));
    await t.submit('a1', dest('A'), 3);
    await t.scheduler.resume(ck('A'));
    expect((await t.queue.getJob('a1'))!.priority).toBe(4);
    const order: string[] = [];
    for (let id = await t.take(); id; id = await t.take()) order.push(id);
    expect(order).toEqual(['b1', 'b2', 'a1', 'b3', 'b4', 'b5']);
  });

  it('rebases before BullMQ’s largest priority even when a caller asks for a larger one and jobs cost the most units', async () => {
    const t = rig({ maxPriority: 10 * MAX_PRIORITY });
    for (let i = 0; i < 24; i++) {
      await t.queue.add('imagine', { destination: dest('A') }, { jobId: `a${i}`, ...t.scheduler.parkedOptions() });
      await t.scheduler.enqueue(`a${i}`, dest('A'), 100_000); // tags grow by 100 000 per start: past 2^21 after 21
    }
    const order: string[] = [];
    const prioritized = `${t.prefix}:${QueueNames.jobs}:prioritized`;
    for (let id = await t.take(); id; id = await t.take()) {
      order.push(id);
      for (const j of await redis.zrange(prioritized, '0', '-1')) expect((await t.queue.getJob(j))!.priority).toBeLessThan(MAX_PRIORITY);
    }
    expect(order).toEqual(Array.from({ length: 24 }, (_, i) => `a${i}`));
  });

  it('lists channels in key order whatever order they arrived in; repair with nothing parked does nothing', async () => {
    const t = rig();
    await expect(t.scheduler.repair()).resolves.toBeUndefined();
    await t.submit('c0', dest('C'));
    await t.submit('b0', dest('B'));
    await t.scheduler.pause(ck('A'));
    expect((await t.scheduler.channels()).map((c) => c.channelKey)).toEqual([ck('A'), ck('B'), ck('C')]);
  });

  it('releases a job step by step when changePriority fails once (a race) or promote loses the connection', async () => {
    const t = rig();
    type Backend = { changePriority(id: string, priority: number): Promise<unknown>; promote(id: string): Promise<unknown> };
    const backend = t.queue.backend as unknown as Backend;
    const { changePriority, promote } = { changePriority: backend.changePriority.bind(backend), promote: backend.promote.bind(backend) };
    const failOnce = new Set(['a0', 'b0']);
    backend.changePriority = async (id, priority) => {
      if (id === 'a0' && failOnce.delete(id)) throw new Error('Missing key for job a0. changePriority');
      return changePriority(id, priority);
    };
    backend.promote = async (id) => {
      if (id === 'b0' && failOnce.delete(id)) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
      return promote(id);
    };
    await t.submit('a0', dest('A')); // promoted at priority MAX; the step-by-step release sets its tag
    expect(await t.queue.getJobState('a0')).toBe('prioritized');
    expect((await t.queue.getJob('a0'))!.priority).toBe(1);
    await t.submit('b0', dest('B')); // tagged but still parked; the step-by-step release promotes it
    expect(await t.queue.getJobState('b0')).toBe('prioritized');
    expect((await t.queue.getJob('b0'))!.priority).toBe(1);
    expect(failOnce.size).toBe(0);
    expect(await t.take()).toBe('a0');
    expect(await t.take()).toBe('b0');
  });

  it('repair leaves a parked job nobody lined up for a minute by default', async () => {
    const t = rig();
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'o1', ...t.scheduler.parkedOptions(), timestamp: Date.now() - 50_000 });
    await t.scheduler.repair();
    expect(await t.scheduler.position('o1')).toEqual({ state: 'none' });
    await t.queue.add('imagine', { destination: dest('A') }, { jobId: 'o2', ...t.scheduler.parkedOptions(), timestamp: Date.now() - 70_000 });
    await t.scheduler.repair();
    expect(await t.scheduler.position('o2')).toEqual({ state: 'queued', position: 1 });
  });
});
