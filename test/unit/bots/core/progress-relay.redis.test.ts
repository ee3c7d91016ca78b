// The progress relay of two bot instances of one platform, over real Redis and BullMQ: the submitting instance shows a
// job's progress; the other tries at most once per LEASE_RETRY_MS (or until the lease would lapse), not once per edit
// interval, and takes the job over when the lease lapses (its holder died) or is handed back (a graceful stop). Then
// the relay's queue-position passes (onActive and pushPositions), with the positions played by the test (the relay's
// queuePositions dependency): which jobs a pass asks about, which edits it makes, and when passes begin (at least
// POSITION_REFRESH_MS, five times the last pass's duration and half the shortest edit interval of the waiting jobs
// apart; a start during a pass or its wait gets one more pass; none after the starts stop).
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { POSITION_REFRESH_MS, ProgressRelay } from '../../../../bots/core/progress.ts';
import type { PlatformPort } from '../../../../bots/core/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobProgress } from '../../../../src/jobs/contract.ts';
import { DeliveryLedger, SHOWING_SLOT_MS } from '../../../../src/jobs/ledger.ts';
import { createJobsQueue, type JobsQueue } from '../../../../src/jobs/queue.ts';
import { createLogger, type Logger } from '../../../../src/log.ts';
import { until } from '../../../doubles/spine-harness.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-relay-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });
const destination: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
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

/** A relay as `instanceId` with its own events, port and ledger; counts its edits and its tries (ledger calls). */
function instance(instanceId: string, leaseRetryMs?: number, ownerAliveMs?: number) {
  const events = new EventEmitter();
  const shown: JobProgress[] = [];
  const port = { platform: 'slack', showProgress: async (_d: Destination, p: JobProgress) => void shown.push(p), deliver: async () => undefined } as unknown as PlatformPort;
  const ledger = new DeliveryLedger(redis, config);
  let tries = 0;
  const leased = ledger.whileLeasedAndNotDelivered.bind(ledger);
  ledger.whileLeasedAndNotDelivered = async (...args) => (tries++, leased(...args));
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 20, ledger, instanceId, prefix, log: createLogger('test', 'silent'),
    ...(leaseRetryMs ? { leaseRetryMs } : {}),
    ...(ownerAliveMs ? { ownerAliveMs } : {}),
  });
  relay.start();
  const progress = (jobId: string, step: number) => events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage: 'features', step, total: 100 } });
  return { relay, instanceId, shown, progress, tries: () => tries };
}

it('the submitter shows progress; another instance tries once per retry, and takes over once the holder stops saying it is alive', async () => {
  const a = instance('A');
  const b = instance('B');
  try {
    const j1 = `j1-${randomUUID().slice(0, 8)}`;
    await queue.add('imagine', { destination } as never, { jobId: j1 });
    a.relay.track(j1, destination, undefined); // takes the lease
    const lease = `${prefix}:progress-owner:${j1}`;
    for (let i = 0; i < 50 && (await redis.get(lease)) !== 'A'; i++) await sleep(10);
    for (let step = 0; step < 12; step++) {
      a.progress(j1, step);
      b.progress(j1, step);
      await sleep(25); // past the 20 ms edit interval each time
    }
    await sleep(50);
    expect(a.shown.length).toBeGreaterThanOrEqual(6);
    expect(b.shown).toEqual([]);
    expect(b.tries()).toBeLessThanOrEqual(2); // one per retry, 5 s (a second may start before the first answers)
    expect(b.tries()).toBeGreaterThanOrEqual(1);

    // Every running instance says it is alive (Redis ms); a graceful stop says it no longer is.
    const alive = `${prefix}:progress-alive`;
    const [redisNow] = (await redis.time()) as [number, number];
    expect(Number(await redis.hget(alive, 'A'))).toBeGreaterThan(redisNow * 1000);
    await a.relay.stop();
    expect(await redis.hexists(alive, 'A')).toBe(0);
    expect(await redis.hexists(alive, 'B')).toBe(1);

    // A dies (SIGKILL: nothing handed back, no more edits) 200 ms before it would next have said it is alive, holding
    // a second job's lease for its full 60 s: B waits those 200 ms, not the 60 s.
    const j2 = `j2-${randomUUID().slice(0, 8)}`;
    await queue.add('imagine', { destination } as never, { jobId: j2 });
    await redis.set(`${prefix}:progress-owner:${j2}`, 'A', 'PX', 60_000);
    const [sec, micro] = (await redis.time()) as [number, number];
    await redis.hset(alive, 'A', sec * 1000 + Math.floor(micro / 1000) + 200);
    const t0 = Date.now();
    for (let step = 0; step < 20; step++) {
      b.progress(j2, step);
      await sleep(25);
    }
    await sleep(50);
    const mine = b.shown.filter((p) => p.jobId === j2);
    expect(mine.length).toBeGreaterThanOrEqual(3); // taken over: edits every interval since
    expect(mine[0]!.step).toBeGreaterThanOrEqual(6); // not before A's alive time ran out (200 ms, a step every 25 ms)
    expect(await redis.get(`${prefix}:progress-owner:${j2}`)).toBe('B');
    expect(Date.now() - t0).toBeLessThan(5_000);
  } finally {
    await a.relay.stop();
    await b.relay.stop();
  }
});

it('a running instance keeps saying it is alive, every third of its alive time', async () => {
  const d = instance(`D-${randomUUID().slice(0, 6)}`, undefined, 300);
  const alive = `${prefix}:progress-alive`;
  // the entry first, then the clock: a beat written between the two would otherwise read as more than 300 ms left
  const aliveLeft = async () => {
    const aliveUntil = Number(await redis.hget(alive, d.instanceId));
    const [sec, micro] = (await redis.time()) as [number, number];
    return aliveUntil - (sec * 1000 + Math.floor(micro / 1000));
  };
  try {
    for (let i = 0; i < 50 && !(await redis.hexists(alive, d.instanceId)); i++) await sleep(10);
    for (let i = 0; i < 4; i++) {
      await sleep(250); // past the first 300 ms: alive only because it said so again
      expect(await aliveLeft()).toBeGreaterThan(0);
      expect(await aliveLeft()).toBeLessThanOrEqual(300);
    }
  } finally {
    await d.relay.stop();
  }
  expect(await redis.hexists(alive, d.instanceId)).toBe(0);
});

it('a heartbeat Redis refuses is a warning; one that cannot reach Redis says nothing (src/redis.ts logs the outage)', async () => {
  const warned = async (connection: Redis, relayPrefix: string) => {
    const warn = vi.fn();
    const relay = new ProgressRelay({
      queue, events: new EventEmitter() as unknown as QueueEvents, redis: connection, portFor: () => undefined, intervalMs: () => 20,
      ledger: new DeliveryLedger(connection, config), instanceId: 'E', prefix: relayPrefix, log: { warn } as unknown as Logger,
    });
    relay.start();
    await sleep(200);
    await relay.stop();
    return warn.mock.calls.map(([fields, msg]) => [(fields as { err?: string }).err, msg]);
  };
  const bad = `${prefix}-wrongtype`;
  await redis.set(`${bad}:progress-alive`, 'not a hash'); // WRONGTYPE for the heartbeat's HGETALL
  try {
    expect(await warned(redis, bad)).toEqual([[expect.stringContaining('WRONGTYPE'), "could not say this bot is alive; other instances may take its jobs' progress over"]]);
  } finally {
    await redis.del(`${bad}:progress-alive`);
  }
  const closed = new Redis(url);
  await closed.quit(); // every command now fails with "Connection is closed."
  expect(await warned(closed, prefix)).toEqual([]);
});

it('a graceful stop hands the leases back: a running instance shows the jobs\' progress within its retry, a new one at once', async () => {
  const a = instance('A');
  const b = instance('B', 300); // asks again at most every 300 ms (LEASE_RETRY_MS, 5 s, in production)
  let c: ReturnType<typeof instance> | undefined;
  try {
    const [j3, j4] = [`j3-${randomUUID().slice(0, 8)}`, `j4-${randomUUID().slice(0, 8)}`];
    for (const id of [j3, j4]) await queue.add('imagine', { destination } as never, { jobId: id });
    a.relay.track(j3, destination, undefined);
    a.progress(j4, 0); // a job A shows without having submitted it (looked up): its lease is A's too
    const lease = (id: string) => `${prefix}:progress-owner:${id}`;
    for (let i = 0; i < 50 && ((await redis.get(lease(j3))) !== 'A' || (await redis.get(lease(j4))) !== 'A'); i++) await sleep(10);
    b.progress(j3, 1);
    await sleep(50);
    expect(b.shown).toEqual([]); // A holds it, for PROGRESS_LEASE_MS (60 s); B asks again in 300 ms
    const other = `j5-${randomUUID().slice(0, 8)}`;
    await redis.set(lease(other), 'B', 'PX', 60_000); // another instance's lease is not A's to hand back
    await a.relay.stop(); // a restart, a deploy
    expect(await redis.exists(lease(j3), lease(j4))).toBe(0);
    expect(await redis.get(lease(other))).toBe('B');
    // a restarted bot (a new instance, nothing remembered): at once
    c = instance('C');
    c.progress(j4, 2);
    for (let i = 0; i < 80 && c.shown.length === 0; i++) await sleep(25); // its one edit's round trips (a loaded CI box)
    expect(c.shown.map((p) => [p.jobId, p.step])).toEqual([[j4, 2]]);
    // The running one: one report, held while B believes the lease A's, shown by its retry (300 ms after its try at
    // step 1), not 60 s later. One report only, so exactly one edit whatever the round trips take.
    const t0 = Date.now();
    b.progress(j3, 2);
    for (let i = 0; i < 80 && b.shown.length === 0; i++) await sleep(25);
    const shownAfter = Date.now() - t0;
    await sleep(100);
    expect(b.shown.filter((p) => p.jobId === j3).map((p) => p.step)).toEqual([2]);
    expect(shownAfter).toBeLessThan(1_000);
    expect(await redis.get(lease(j3))).toBe('B');
  } finally {
    await a.relay.stop();
    await b.relay.stop();
    await c?.relay.stop();
  }
});

// ---- queue-position passes ----

const chat: Destination = destination; // edited every 1,000 ms below
const terminal: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C-terminal', userId: 'U1' }; // every 100 ms

/**
 * A relay whose passes answer `answer(jobIds)` after `passMs`; records each pass (when it began, the jobs asked) and
 * each edit. Edit intervals: `chat` 1,000 ms, `terminal` 100 ms.
 */
function relayWith(answer: (jobIds: readonly string[]) => (number | undefined)[], passMs = 0, readyWorkers?: () => Promise<number>, workerCheckMs?: number) {
  const events = new EventEmitter();
  const edits: JobProgress[] = [];
  const passes: { at: number; jobIds: string[] }[] = [];
  const port = { platform: 'slack', showProgress: async (_d: Destination, p: JobProgress) => void edits.push(p), deliver: async () => undefined } as unknown as PlatformPort;
  const relay = new ProgressRelay({
    queue, events: events as unknown as QueueEvents, redis, portFor: () => port,
    intervalMs: (d) => (d.channelId === terminal.channelId ? 100 : 1_000),
    ledger: new DeliveryLedger(redis, config), instanceId: `i-${randomUUID().slice(0, 6)}`, prefix, log: createLogger('test', 'silent'), readyWorkers, workerCheckMs,
    queuePositions: async (_r, _q, jobIds) => {
      passes.push({ at: Date.now(), jobIds: [...jobIds] });
      await sleep(passMs);
      return answer(jobIds);
    },
  });
  relay.start();
  const start = (jobId = `other-${randomUUID().slice(0, 8)}`) => events.emit('active', { jobId });
  return { relay, edits, passes, start };
}

/**
 * A job in the jobs queue, as every job the relay tracks is (submit adds it first): the ledger refuses an edit of a job
 * whose hash is gone (purged) or finished.
 */
const newJob = async () => {
  const jobId = `j-${randomUUID().slice(0, 8)}`;
  await queue.add('imagine', { destination } as never, { jobId });
  return jobId;
};

/** A start now and one `secondStartAt` ms later, then `quietMs` without: exactly two passes, and the ms between them. */
async function gapOfTwoPasses(r: ReturnType<typeof relayWith>, secondStartAt: number, quietMs: number): Promise<number> {
  r.start();
  await sleep(secondStartAt);
  r.start();
  await sleep(quietMs);
  expect(r.passes).toHaveLength(2);
  return r.passes[1]!.at - r.passes[0]!.at;
}

it('asks about the waiting jobs only, and edits a job when its position changed, with that position', async () => {
  const [moved, same, unknown, started] = await Promise.all([newJob(), newJob(), newJob(), newJob()]);
  const answers: Record<string, number | undefined> = { [moved]: 2, [same]: 4, [unknown]: undefined, [started]: 1 };
  const r = relayWith((ids) => ids.map((id) => answers[id]));
  try {
    r.relay.track(moved, chat, 3);
    r.relay.track(same, chat, 4);
    r.relay.track(unknown, chat, 5);
    r.relay.track(started, chat, 6);
    r.start(started); // it starts: no longer waiting, and this start is a pass
    await sleep(100);
    expect(r.passes.map((p) => p.jobIds)).toEqual([[moved, same, unknown]]);
    expect(r.edits.map((e) => [e.jobId, e.stage, e.queuePosition])).toEqual([[moved, 'queued', 2]]);

    answers[moved] = 1;
    r.start(); // ≈ 100 ms after the first pass: the next begins ≈ 500 ms after it (half the chat's 1,000 ms)
    await sleep(500);
    expect(r.passes).toHaveLength(2);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition])).toEqual([[moved, 2]]); // 1 waits for the 1,000 ms edit interval
    await sleep(600);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition])).toEqual([[moved, 2], [moved, 1]]);
  } finally {
    r.relay.stop();
  }
});

it('a place pushed while no GPU worker is ready says so, as the first reply did; one that cannot be asked about counts as there', async () => {
  let workers: () => Promise<number> = async () => 0;
  const [first, second] = await Promise.all([newJob(), newJob()]);
  const answers: Record<string, number> = { [first]: 1, [second]: 2 };
  const r = relayWith((ids) => ids.map((id) => answers[id]!), 0, () => workers());
  try {
    r.relay.track(first, terminal, 2);
    r.relay.track(second, terminal, 3);
    r.start(); // a job ahead was cancelled (a removal passes the same way)
    await sleep(50);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition, e.noWorker])).toEqual([[first, 1, true], [second, 2, true]]);
    workers = async () => Promise.reject(new Error('connection lost'));
    answers[second] = 1;
    r.start();
    await sleep(400);
    expect(r.edits.slice(2).map((e) => [e.jobId, e.queuePosition, e.noWorker])).toEqual([[second, 1, undefined]]);
  } finally {
    r.relay.stop();
  }
});

it('while jobs wait, workers that go or come push every place again, the note with it; no change, no edit', async () => {
  let workers = 1;
  const [first, second] = await Promise.all([newJob(), newJob()]);
  const r = relayWith((ids) => ids.map((id) => (id === first ? 1 : 2)), 0, async () => workers, 100);
  try {
    r.relay.track(first, terminal, 1);
    r.relay.track(second, terminal, 2);
    await sleep(350); // checks that find workers as they were: nothing to push
    expect(r.edits).toEqual([]);
    workers = 0; // the only worker died: places unchanged, the note appears
    await until(async () => (r.edits.length === 2 ? true : undefined), 5_000, 'the places pushed again');
    expect(r.edits.map((e) => [e.jobId, e.queuePosition, e.noWorker])).toEqual([[first, 1, true], [second, 2, true]]);
    await sleep(350);
    expect(r.edits).toHaveLength(2); // still none: nothing more to say
    workers = 1; // back (before it takes a job)
    await until(async () => (r.edits.length === 4 ? true : undefined), 5_000, 'the note gone');
    expect(r.edits.slice(2).map((e) => [e.jobId, e.queuePosition, e.noWorker])).toEqual([[first, 1, undefined], [second, 2, undefined]]);
    expect(r.passes.length).toBe(2); // one pass per change, none for the checks that found none
  } finally {
    r.relay.stop();
  }
});

it('makes no pass while nothing waits, and passes again once a job waits', async () => {
  const r = relayWith((ids) => ids.map(() => 7));
  try {
    r.start();
    await sleep(50);
    expect(r.passes).toEqual([]);
    const waiting = await newJob();
    r.relay.track(waiting, terminal, undefined);
    r.start();
    await sleep(POSITION_REFRESH_MS + 50); // the pass is not held back by the one that never ran
    expect(r.passes.map((p) => p.jobIds)).toEqual([[waiting]]);
    expect(r.edits.map((e) => [e.jobId, e.queuePosition])).toEqual([[waiting, 7]]);
  } finally {
    r.relay.stop();
  }
});

it.each([
  // a start during the first pass (30 ms) gets one more, POSITION_REFRESH_MS after the first began
  { passMs: 30, secondStartAt: 10, least: POSITION_REFRESH_MS, most: POSITION_REFRESH_MS + 150 },
  // a pass that took 120 ms: the next begins five times that after it, later than the 250 ms floor
  { passMs: 120, secondStartAt: 200, least: 5 * 120, most: 5 * 120 + 150 },
])('spaces a second pass (first pass $passMs ms, second start at $secondStartAt ms) $least ms or more, and makes no third', async ({ passMs, secondStartAt, least, most }) => {
  const r = relayWith((ids) => ids.map(() => 3), passMs);
  try {
    r.relay.track(await newJob(), terminal, 3);
    const gap = await gapOfTwoPasses(r, secondStartAt, 900); // then the starts stop: no third pass
    expect(gap).toBeGreaterThanOrEqual(least - 5);
    expect(gap).toBeLessThan(most);
  } finally {
    r.relay.stop();
  }
});

it('spaces passes by half the shortest edit interval among the waiting jobs', async () => {
  for (const [destinations, least, most] of [
    [[chat], 500, 700], // 1,000 ms: 500 apart
    [[chat, terminal], POSITION_REFRESH_MS, 450], // the terminal's 100 ms: the floor
  ] as const) {
    const r = relayWith((ids) => ids.map(() => 3));
    try {
      for (const d of destinations) r.relay.track(await newJob(), d, 3);
      const gap = await gapOfTwoPasses(r, 20, most + 200);
      expect(gap).toBeGreaterThanOrEqual(least - 5);
      expect(gap).toBeLessThan(most);
    } finally {
      r.relay.stop();
    }
  }
});

// ---- each job's edits: throttled, ended by the job's end, and failures logged ----

/** A relay with its own events, a 200 ms edit interval, a port that records (or throws) and a logger that records warnings. */
function editsRelay(opts: { failEdits?: boolean; queue?: JobsQueue; withPositions?: boolean } = {}) {
  const events = new EventEmitter();
  const shown: JobProgress[] = [];
  const passes: string[][] = [];
  const warnings: [Record<string, unknown>, string][] = [];
  const port = {
    platform: 'slack',
    showProgress: async (_d: Destination, p: JobProgress) => {
      if (opts.failEdits) throw new Error('the platform refused the edit');
      shown.push(p);
    },
    deliver: async () => undefined,
  } as unknown as PlatformPort;
  const relay = new ProgressRelay({
    queue: opts.queue ?? queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 200,
    ledger: new DeliveryLedger(redis, config), instanceId: `r-${randomUUID().slice(0, 6)}`, prefix,
    log: { warn: (fields: Record<string, unknown>, msg: string) => void warnings.push([fields, msg]) } as unknown as Logger,
    ...(opts.withPositions ? { queuePositions: async (_r: unknown, _q: unknown, jobIds: readonly string[]) => (passes.push([...jobIds]), jobIds.map(() => 5)) } : {}),
  });
  relay.start();
  const progress = (jobId: string, step: number) => events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage: 'features', step, total: 100 } });
  return { relay, events, shown, passes, warnings, progress };
}

it('shows the first report at once and the newest when the interval is over; the reports between are dropped', async () => {
  const r = editsRelay();
  try {
    const j = await newJob();
    r.relay.track(j, destination, undefined);
    r.progress(j, 1);
    r.progress(j, 2);
    r.progress(j, 3);
    for (let i = 0; i < 40 && r.shown.length === 0; i++) await sleep(5);
    expect(r.shown.map((p) => p.step)).toEqual([1]); // the leading edge, before the interval is over
    await sleep(400);
    expect(r.shown.map((p) => p.step)).toEqual([1, 3]);
  } finally {
    await r.relay.stop();
  }
});

it.each(['completed', 'failed'])('a job %s drops the edit it still held back, and reports read in the same batch as its end', async (end) => {
  const r = editsRelay();
  try {
    const j = await newJob();
    r.relay.track(j, destination, undefined);
    r.progress(j, 1);
    for (let i = 0; i < 40 && r.shown.length === 0; i++) await sleep(5);
    r.progress(j, 2); // held for the rest of the 200 ms interval
    await sleep(10);
    r.events.emit(end, { jobId: j });
    await sleep(400);
    expect(r.shown.map((p) => p.step)).toEqual([1]);
    // QueueEvents emits one XREAD's events in a row: a report and the job's end together (its listener is async)
    const k = await newJob();
    r.relay.track(k, destination, undefined);
    r.progress(k, 1);
    r.events.emit(end, { jobId: k });
    await sleep(400);
    expect(r.shown.filter((p) => p.jobId === k)).toEqual([]);
  } finally {
    await r.relay.stop();
  }
});

it('an edit the platform never answers holds the next ones the ledger\'s showingSlotMs (SHOWING_SLOT_MS) at most: later steps are shown again', async () => {
  const events = new EventEmitter();
  const shown: number[] = [];
  const port = {
    platform: 'slack',
    // step 1's edit never ends (a platform that took the request and never answered)
    showProgress: (_d: Destination, p: JobProgress) => (p.step === 1 ? new Promise<void>(() => undefined) : void shown.push(p.step)),
    deliver: async () => undefined,
  } as unknown as PlatformPort;
  const slotMs = 1_500; // SHOWING_SLOT_MS (10 s) unless set
  expect(new DeliveryLedger(redis, config).showingSlotMs).toBe(SHOWING_SLOT_MS);
  const ledger = new DeliveryLedger(redis, config, slotMs);
  const tries: unknown[] = []; // what each edit's ledger round trip answered, for the message of a failure
  const leased = ledger.whileLeasedAndNotDelivered.bind(ledger);
  ledger.whileLeasedAndNotDelivered = async (...args) => {
    const at = Date.now();
    const answer = await leased(...args);
    tries.push({ atMs: at - started, ...answer });
    return answer;
  };
  const relay = new ProgressRelay({ queue, events: events as unknown as QueueEvents, redis, portFor: () => port, intervalMs: () => 20, ledger, instanceId: `r-${randomUUID().slice(0, 6)}`, prefix, log: createLogger('test', 'silent') });
  relay.start();
  const progress = (jobId: string, step: number) => events.emit('progress', { jobId, data: { v: CONTRACT_VERSION, jobId, stage: 'features', step, total: 100 } });
  const started = Date.now();
  try {
    const j = await newJob();
    relay.track(j, destination, undefined);
    progress(j, 1);
    await sleep(100);
    progress(j, 2); // held behind the edit that never ends
    progress(j, 3);
    await sleep(slotMs - 500);
    expect(shown).toEqual([]);
    await sleep(1_000); // past the cap and the ledger's slot
    progress(j, 4);
    // Not asserted: step 3 itself. The cap and the slot's PX are the same showingSlotMs, and the held edit tried as
    // the cap fires can find the slot not yet lapsed (`shown: false`, dropped; seen under load, 2026-12-07).
    await until(async () => shown.includes(4) || undefined, 3_000, 'a step after the edit in flight was given up on').catch((e: Error) => {
      throw new Error(`${e.message}; the ledger answered ${JSON.stringify(tries)}`);
    });
    expect(shown.at(-1)).toBe(4);
  } finally {
    await relay.stop();
  }
}, 30_000);

it('a removed job is forgotten and moves the waiting jobs up: a pass at once, without it', async () => {
  const r = editsRelay({ withPositions: true });
  try {
    const [waiting, removed] = await Promise.all([newJob(), newJob()]);
    r.relay.track(waiting, destination, 9);
    r.relay.track(removed, destination, 8);
    r.events.emit('removed', { jobId: removed });
    await sleep(100);
    expect(r.passes).toEqual([[waiting]]);
  } finally {
    await r.relay.stop();
  }
});

it('a job that reports progress has started: passes no longer ask about it, nor about jobs only looked up', async () => {
  const r = editsRelay({ withPositions: true });
  try {
    const [reporting, waiting, lookedUp] = await Promise.all([newJob(), newJob(), newJob()]);
    r.relay.track(reporting, destination, 3);
    r.relay.track(waiting, destination, 4);
    r.progress(reporting, 1);
    r.progress(lookedUp, 1); // another bot's job, shown here: looked up, and running
    for (let i = 0; i < 40 && r.shown.length < 2; i++) await sleep(10);
    r.events.emit('active', { jobId: await newJob() });
    await sleep(100);
    expect(r.passes).toEqual([[waiting]]);
  } finally {
    await r.relay.stop();
  }
});

it('an edit the platform refuses, and a job that cannot be looked up, are warnings naming the job', async () => {
  const failing = editsRelay({ failEdits: true });
  const j = await newJob();
  try {
    failing.relay.track(j, destination, undefined);
    failing.progress(j, 1);
    for (let i = 0; i < 40 && failing.warnings.length === 0; i++) await sleep(10);
    expect(failing.warnings).toEqual([[{ jobId: j, err: 'the platform refused the edit' }, 'showProgress failed']]);
  } finally {
    await failing.relay.stop();
  }
  const broken = { getJob: async () => { throw new Error('no queue today'); } } as unknown as JobsQueue;
  const lost = editsRelay({ queue: broken });
  try {
    lost.progress(j, 1);
    for (let i = 0; i < 40 && lost.warnings.length === 0; i++) await sleep(10);
    expect(lost.warnings).toEqual([[{ jobId: j, err: 'no queue today' }, 'progress relay lookup failed']]);
  } finally {
    await lost.relay.stop();
  }
});
