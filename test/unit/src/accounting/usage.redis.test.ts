// GPU-second accounting and daily budgets (src/accounting/usage.ts) over real Redis, without a worker: what admit
// reserves and refuses, what settle counts once, release and sweep, the estimates, the per-day report and the texts
// a refused user reads. test/integration/budgets.redis.test.ts drives the same through a real worker process.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest } from '../../../../src/jobs/contract.ts';
import { budgetAdmission, budgetMessage, costSignature, DAY_MS, MAX_COST_UNITS, measuredSeconds, memberId, Usage } from '../../../../src/accounting/usage.ts';
import { IN_SERVER, IN_SLACK } from '../../../doubles/refusal-places.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
let redis: Redis;
const prefixes: string[] = [];

/** A Usage on its own prefix; budgets c/u/w default to none. */
function usageWith(over: { budgets?: Partial<Record<'channel' | 'user' | 'workspace', number>>; estimateSmoothing?: number; admitGraceMs?: number; retainDays?: number; connection?: Redis } = {}) {
  const prefix = `t-usage-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  const config = loadConfig({
    env: {},
    overrides: {
      queue: { prefix, keepCompletedSeconds: 600, keepFailedSeconds: 900 },
      usage: { budgets: { channel: 0, user: 0, workspace: 0, ...over.budgets }, estimateSmoothing: over.estimateSmoothing ?? 0.5, fairCostUnitMs: 100, retainDays: over.retainDays ?? 3 },
      limits: { admitGraceMs: over.admitGraceMs ?? 60_000 },
    },
  });
  return { usage: new Usage(over.connection ?? redis, config), prefix };
}

const dest = (channelId = 'c1', userId = 'u1', guildId = 'g1'): Destination => ({ platform: 'discord', guildId, channelId, userId, applicationId: 'app' });
const imagine = (id: string, d = dest(), steps: [number, number] = [10, 20], guidance = 3, count?: number): JobRequest => ({
  v: CONTRACT_VERSION, id, destination: d, submittedAt: 1, kind: 'imagine', prompt: 'a fox',
  options: { seed: 1, ditSteps: steps[0], decoderSteps: steps[1], guidance, aspect: '1:1', ...(count ? { count } : {}) },
});
/** The same /imagine making `count` images. */
const images = (id: string, count: number, d = dest()) => imagine(id, d, [10, 20], 3, count);
const ask = (id: string, d = dest(), maxNewTokens = 64): JobRequest => ({
  v: CONTRACT_VERSION, id, destination: d, submittedAt: 1, kind: 'ask', imageKey: 'k', question: 'what?', history: [],
  options: { maxNewTokens, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 },
});
/** A result whose compute stages took `seconds` in total (split over two stages), plus time spent waiting. */
const took = (seconds: number) => ({ status: 'succeeded' as const, timingsMs: { waiting: 99_000, conditioning: seconds * 250, decoding: seconds * 750 } });
/** Today's UTC day number by Redis's clock (what the scripts use). */
const redisDay = async () => Math.floor(Number((await redis.time())[0]) / 86_400);
/** Redis's clock in ms. */
const redisNowMs = async () => Number((await redis.time())[0]) * 1000;
/** Runs `f` on a host whose clock is `offsetMs` off Redis's. */
async function withClockOff<T>(offsetMs: number, f: () => Promise<T>): Promise<T> {
  const real = Date.now;
  const spy = vi.spyOn(Date, 'now').mockImplementation(() => real() + offsetMs);
  try {
    return await f();
  } finally {
    spy.mockRestore();
  }
}

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  for (const p of prefixes) {
    const keys = await redis.keys(`${p}:*`);
    if (keys.length) await redis.del(...keys);
  }
  await redis.quit();
});

describe('measuredSeconds and costSignature', () => {
  it('counts the compute stages only, else the whole run; never below zero', () => {
    expect(measuredSeconds({ timingsMs: { waiting: 5000, loading: 100, conditioning: 200, features: 300, decoding: 400, encoding: 500, answering: 600 } }, 9999)).toBeCloseTo(2.1, 9);
    expect(measuredSeconds({ timingsMs: { waiting: 5000 } }, 1500)).toBe(1.5);
    expect(measuredSeconds({ timingsMs: {} }, -20)).toBe(0);
  });

  it('keys an estimate by kind and the options that change the work of one image; units are its steps, images its count', () => {
    expect(costSignature(imagine('a', dest(), [10, 20], 3))).toEqual({ sig: 'imagine|10x20|1:1|cfg', units: 30, images: 1 });
    expect(costSignature(imagine('a', dest(), [10, 20], 0))).toEqual({ sig: 'imagine|10x20|1:1|nocfg', units: 30, images: 1 });
    // Four images of the same options: the same signature (estimates are per image), four times the work.
    expect(costSignature(images('a', 4))).toEqual({ sig: 'imagine|10x20|1:1|cfg', units: 30, images: 4 });
    expect(costSignature(ask('a', dest(), 77))).toEqual({ sig: 'ask|77', units: 1, images: 1 });
    expect(memberId(dest('c', 'u9', 'g7'))).toBe('discord:g7:u9');
  });
});

describe('admit, settle, release', () => {
  it('reserves nothing it cannot estimate, then learns the estimate per options and per step from what settle measured', async () => {
    const { usage, prefix } = usageWith();
    const first = imagine('j1');
    expect(await usage.admit('j1', first.destination, first)).toEqual({ admitted: true, estimate: 0 });
    expect(await usage.estimate(first)).toBe(0);
    expect(await usage.settle(first, took(12), 50_000)).toBe(true);
    // The first measurement is the estimate itself: 12 s for these options, 12 / 30 steps per step.
    expect(await usage.estimate(first)).toBe(12);
    expect(await usage.estimate(imagine('x', dest(), [20, 40]))).toBeCloseTo(24, 9); // unknown options: per step × 60 steps
    expect(await usage.estimate(ask('x'))).toBe(0); // another kind learns nothing from it
    // The next measurement is weighed by estimateSmoothing (0.5): 0.5 × 20 + 0.5 × 12.
    const second = imagine('j2');
    expect(await usage.settle(second, took(20), 1)).toBe(true);
    expect(await usage.estimate(first)).toBe(16);
    expect(Number(await redis.hget(`${prefix}:{usage}:est`, 'imagine|unit'))).toBeCloseTo(0.5 * (20 / 30) + 0.5 * (12 / 30), 9);
    // A job that measured nothing (0 s) leaves the estimates alone.
    expect(await usage.settle(imagine('j3'), { status: 'succeeded', timingsMs: { waiting: 5 } }, 0)).toBe(true);
    expect(await usage.estimate(first)).toBe(16);
    // The admission script answers the same estimate, exact first, per step otherwise.
    expect(await usage.admit('j4', first.destination, first)).toEqual({ admitted: true, estimate: 16 });
    const other = imagine('j5', dest(), [5, 5]);
    expect((await usage.admit('j5', other.destination, other)).estimate).toBeCloseTo(10 * (0.5 * (20 / 30) + 0.5 * (12 / 30)), 9);
  });

  it('estimates and learns per image: a several-image job is reserved, refused and weighed as its images, and learned ÷ its images', async () => {
    const { usage, prefix } = usageWith({ budgets: { channel: 30 } });
    const U = `${prefix}:{usage}`;
    await usage.settle(imagine('one'), took(10), 1); // one image of these options: 10 s
    // Four of them need about 40 s: with the 10 s used today, over the channel's 30.
    expect(await usage.estimate(images('x', 4))).toBe(40);
    expect(await usage.admit('four', dest(), images('four', 4))).toMatchObject({ admitted: false, scope: 'channel', used: 10, inflight: 0, budget: 30, estimate: 40 });
    // Two fit (10 + 20 ≤ 30), and reserve 20 in every scope.
    expect(await usage.admit('two', dest(), images('two', 2))).toEqual({ admitted: true, estimate: 20 });
    expect(await redis.hget(`${U}:inflight`, 'channel|discord:g1:c1')).toBe('20');
    expect(await usage.admit('two', dest(), images('two', 2))).toEqual({ admitted: true, estimate: 20 }); // a duplicate answers the same
    // Unknown options: per step of one image (10 / 30) × 10 steps × 3 images, in the script and in estimate().
    expect((await usage.admit('p3', dest('c2'), imagine('p3', dest('c2'), [5, 5], 3, 3))).estimate).toBeCloseTo(10, 9);
    expect(await usage.estimate(imagine('p3', dest('c2'), [5, 5], 3, 3))).toBeCloseTo(10, 9);

    // The two images took 24 s: the counters get 24 s, the estimates learn 12 s per image (0.5 × 12 + 0.5 × 10).
    expect(await usage.settle(images('two', 2), took(24), 1)).toBe(true);
    expect(await usage.estimate(imagine('next'))).toBe(11);
    expect(await usage.estimate(images('next', 4))).toBe(44);
    expect(Number(await redis.hget(`${U}:est`, 'imagine|unit'))).toBeCloseTo(0.5 * (12 / 30) + 0.5 * (10 / 30), 9);
    const counters = await redis.hgetall(usage.dayKey(await redisDay()));
    expect(counters).toMatchObject({ 'gs|channel|discord:g1:c1': '34', 'gs|member|discord:g1:u1': '34', 'jobs|channel|discord:g1:c1': '2' });
    expect(Number(counters['stage|imagine|decoding'])).toBeCloseTo(0.75 * 34, 9);
    expect(await redis.hget(`${U}:inflight`, 'channel|discord:g1:c1')).toBeNull(); // its 20 s reservation released
  });

  it('holds an admitted estimate in flight per scope until settle or release, exactly once, and counts a job once', async () => {
    const { usage, prefix } = usageWith();
    const U = `${prefix}:{usage}`;
    await usage.settle(imagine('seed'), took(8), 1); // the estimate: 8 s
    const r = imagine('j1');
    expect(await usage.admit('j1', r.destination, r)).toEqual({ admitted: true, estimate: 8 });
    expect(await usage.admit('j1', r.destination, r)).toEqual({ admitted: true, estimate: 8 }); // a duplicate reserves nothing more
    expect(await redis.hgetall(`${U}:inflight`)).toEqual({ 'channel|discord:g1:c1': '8', 'user|discord:u1': '8', 'workspace|discord:g1': '8' });
    expect((await redis.hget(`${U}:resv`, 'j1'))?.split('\n').slice(0, 4)).toEqual(['8', 'discord:g1:c1', 'discord:u1', 'discord:g1']);
    expect(await usage.today(r.destination)).toEqual({ channel: { used: 8, inflight: 8 }, user: { used: 8, inflight: 8 }, workspace: { used: 8, inflight: 8 } });

    expect(await usage.settle(r, took(6), 1)).toBe(true);
    expect(await redis.hgetall(`${U}:inflight`)).toEqual({}); // released, and the emptied fields removed
    expect(await redis.hexists(`${U}:resv`, 'j1')).toBe(0);
    expect(await usage.settle(r, took(6), 1)).toBe(false); // a re-run after a crash counts nothing twice
    expect(await usage.release('j1')).toBe(false);
    const day = await redisDay();
    const counters = await redis.hgetall(usage.dayKey(day));
    expect(counters).toMatchObject({
      'gs|channel|discord:g1:c1': '14', 'gs|user|discord:u1': '14', 'gs|workspace|discord:g1': '14', 'gs|member|discord:g1:u1': '14',
      'jobs|channel|discord:g1:c1': '2', 'jobs|user|discord:u1': '2', 'jobs|workspace|discord:g1': '2', 'jobs|member|discord:g1:u1': '2',
    });
    expect(Number(counters['stage|imagine|conditioning'])).toBeCloseTo(0.25 * 14, 9);
    expect(Number(counters['stage|imagine|decoding'])).toBeCloseTo(0.75 * 14, 9);
    expect(counters['stage|imagine|waiting']).toBeUndefined();
    // Kept retainDays (3), and the settled marker as long as a finished job is kept (the longer of the two).
    expect(await redis.ttl(usage.dayKey(day))).toBeGreaterThan(3 * 86_400 - 5);
    expect(await redis.ttl(usage.dayKey(day))).toBeLessThanOrEqual(3 * 86_400);
    const settledTtl = await redis.ttl(`${U}:settled:j1`);
    expect(settledTtl).toBeGreaterThan(895);
    expect(settledTtl).toBeLessThanOrEqual(900);

    // release: a job removed before it ran gives its estimate back, once; other jobs' reservations stay.
    const [a, b] = [imagine('a'), imagine('b', dest('c2'))];
    await usage.admit('a', a.destination, a);
    await usage.admit('b', b.destination, b);
    expect(await usage.release('a')).toBe(true);
    expect(await usage.release('a')).toBe(false);
    expect(await redis.hgetall(`${U}:inflight`)).toEqual({ 'channel|discord:g1:c2': String(await usage.estimate(b)), 'user|discord:u1': String(await usage.estimate(b)), 'workspace|discord:g1': String(await usage.estimate(b)) });
    expect(await redis.hkeys(`${U}:resv`)).toEqual(['b']);
  });

  it('refuses a request that would pass a budget, names the scope, counts the refusal in every scope, and reserves nothing', async () => {
    for (const [scope, index] of [['channel', 1], ['user', 2], ['workspace', 3]] as const) {
      const { usage } = usageWith({ budgets: { [scope]: 20 } });
      await usage.settle(imagine('seed'), took(8), 1); // used 8 today in every scope; the estimate is 8
      const r1 = imagine('r1');
      expect(await usage.admit('r1', r1.destination, r1)).toEqual({ admitted: true, estimate: 8 }); // 8 + 8 ≤ 20
      const r2 = imagine('r2');
      // 8 used + 8 in flight + 8 > 20
      expect(await usage.admit('r2', r2.destination, r2)).toMatchObject({ admitted: false, scope, used: 8, inflight: 8, budget: 20, estimate: 8 });
      // The script's reply names the scope by its index, as budgetAdmission reads it.
      expect(budgetAdmission([0, index, '8', '20', '8', '8', 3_600_000])).toEqual({ admitted: false, scope, used: 8, budget: 20, estimate: 8, inflight: 8, resetsInMs: 3_600_000 });
      const day = await redisDay();
      const counters = await redis.hgetall(usage.dayKey(day));
      // Counted for the channel, the user, the workspace and the member, whichever scope refused (as a rate limit's
      // refusal is): the report's rows show every refusal that happened in them.
      expect(counters).toMatchObject({ 'ref|channel|discord:g1:c1': '1', 'ref|user|discord:u1': '1', 'ref|workspace|discord:g1': '1', 'ref|member|discord:g1:u1': '1' });
      expect((await usage.report(1, 'discord:g1:')).channels).toEqual([{ id: 'discord:g1:c1', gpuSeconds: 8, jobs: 1, hits: 0, refusals: 1 }]);
      expect(await usage.today(r1.destination)).toMatchObject({ [scope]: { used: 8, inflight: 8 } });
      expect(await redis.ttl(usage.dayKey(day))).toBeGreaterThan(3 * 86_400 - 5);
    }
  });

  it('admits up to exactly the budget, refuses once it is used up even with no estimate, and a budget set in Redis wins', async () => {
    const { usage } = usageWith({ budgets: { user: 16 } });
    await usage.settle(imagine('seed'), took(8), 1);
    const r = imagine('r1');
    expect(await usage.admit('r1', r.destination, r)).toEqual({ admitted: true, estimate: 8 }); // 8 + 8 = 16: at the budget
    expect((await usage.admit('r2', r.destination, imagine('r2'))).admitted).toBe(false);
    // Another kind with nothing to estimate (0 s) is still refused: the budget is used up.
    expect(await usage.admit('q1', r.destination, ask('q1'))).toMatchObject({ admitted: false, scope: 'user', used: 8, inflight: 8, budget: 16, estimate: 0 });

    expect(await usage.budgets(r.destination)).toEqual({ channel: { seconds: 0, source: 'default' }, user: { seconds: 16, source: 'default' }, workspace: { seconds: 0, source: 'default' } });
    await usage.setBudget('user', 'discord:u1', 100);
    expect((await usage.budgets(r.destination)).user).toEqual({ seconds: 100, source: 'redis' });
    expect((await usage.admit('r2', r.destination, imagine('r2'))).admitted).toBe(true);
    await usage.setBudget('user', 'discord:u1', 0); // 0 set by an admin: no budget at all, over the default 16
    expect((await usage.admit('r3', r.destination, imagine('r3'))).admitted).toBe(true);
    await usage.resetBudget('user', 'discord:u1');
    expect((await usage.budgets(r.destination)).user).toEqual({ seconds: 16, source: 'default' });
    expect((await usage.admit('r4', r.destination, imagine('r4'))).admitted).toBe(false);
    // Another user on the same channel has their own budget.
    const other = imagine('o1', dest('c1', 'u2'));
    expect((await usage.admit('o1', other.destination, other)).admitted).toBe(true);
  });

  it('counts hits and refusals per scope and member for the report, for retainDays', async () => {
    const { usage } = usageWith();
    await usage.count('hits', dest());
    await usage.count('hits', dest());
    await usage.count('ref', dest('c2', 'u2'));
    const day = await redisDay();
    expect(await redis.hgetall(usage.dayKey(day))).toEqual({
      'hits|channel|discord:g1:c1': '2', 'hits|user|discord:u1': '2', 'hits|workspace|discord:g1': '2', 'hits|member|discord:g1:u1': '2',
      'ref|channel|discord:g1:c2': '1', 'ref|user|discord:u2': '1', 'ref|workspace|discord:g1': '1', 'ref|member|discord:g1:u2': '1',
    });
    expect(await redis.ttl(usage.dayKey(day))).toBeGreaterThan(3 * 86_400 - 5);
  });
});

describe('a kind with no measurement yet, under a budget', () => {
  it('with a budget of 100 s and nothing measured, eight requests at once: one runs to be measured, the others are told to wait (before: all eight, each reserving 0)', async () => {
    const { usage, prefix } = usageWith({ budgets: { user: 100 } });
    const sent = Array.from({ length: 8 }, (_, i) => imagine(`m${i}`, dest(`c${i}`)));
    const answers = await Promise.all(sent.map((r) => usage.admit(r.id, r.destination, r)));
    expect(answers.filter((a) => a.admitted)).toEqual([{ admitted: true, estimate: 0 }]);
    const waiting = answers.filter((a) => !a.admitted);
    expect(waiting).toHaveLength(7);
    for (const a of waiting) expect(a).toEqual({ admitted: false, scope: 'user', used: 0, inflight: 0, budget: 100, estimate: 0, resetsInMs: expect.any(Number), awaitingMeasurement: true });
    // Counted as refusals, as a budget's are.
    expect(await redis.hget(usage.dayKey(await redisDay()), 'ref|user|discord:u1')).toBe('7');
    const first = sent[answers.findIndex((a) => a.admitted)]!;

    // Another kind has a first of its own; another user has their own budget.
    expect(await usage.admit('q1', dest(), ask('q1'))).toEqual({ admitted: true, estimate: 0 });
    expect(await usage.admit('o1', dest('c1', 'u2'), imagine('o1', dest('c1', 'u2')))).toEqual({ admitted: true, estimate: 0 });

    // The first is measured (30 s): the next ones reserve 30 s each, and the budget holds as for any known kind.
    expect(await usage.settle(first, took(30), 1)).toBe(true);
    expect(await usage.admit('m8', dest(), imagine('m8'))).toEqual({ admitted: true, estimate: 30 });
    // Measured, its reservation names no kind: it holds no turn (only a job admitted unmeasured does).
    expect((await redis.hget(`${prefix}:{usage}:resv`, 'm8'))!.split('\n')).toHaveLength(5);
    expect(await usage.admit('m9', dest(), imagine('m9'))).toEqual({ admitted: true, estimate: 30 });
    expect(await usage.admit('m10', dest(), imagine('m10'))).toMatchObject({ admitted: false, scope: 'user', used: 30, inflight: 60, estimate: 30 });
  });

  it('lets the next one in when the first ends without a measurement (failed, removed) or its job vanished (the sweep)', async () => {
    const { usage, prefix } = usageWith({ budgets: { channel: 100 }, admitGraceMs: 5_000 });
    const U = `${prefix}:{usage}`;
    expect((await usage.admit('f1', dest(), imagine('f1'))).admitted).toBe(true);
    // The reservation names the kind it is measuring (records without one, an older bot's, are not counted).
    expect((await redis.hget(`${U}:resv`, 'f1'))!.split('\n')).toEqual(['0', 'discord:g1:c1', 'discord:u1', 'discord:g1', expect.any(String), 'imagine']);
    expect(await usage.admit('f2', dest(), imagine('f2'))).toMatchObject({ admitted: false, scope: 'channel', awaitingMeasurement: true });
    // Failed: charged, but no measurement of such a request; the next is admitted, still unmeasured.
    await usage.settle(imagine('f1'), { status: 'failed', timingsMs: {} }, 2_000);
    expect(await usage.admit('f2', dest(), imagine('f2'))).toEqual({ admitted: true, estimate: 0 });
    expect(await usage.release('f2')).toBe(true); // removed before it ran
    expect(await usage.admit('f3', dest(), imagine('f3'))).toEqual({ admitted: true, estimate: 0 });
    // f3's job never arrived and the grace has passed: the sweep frees its turn too.
    const fields = (await redis.hget(`${U}:resv`, 'f3'))!.split('\n');
    fields[4] = String((await redisNowMs()) - 6_000);
    await redis.hset(`${U}:resv`, 'f3', fields.join('\n'));
    expect(await usage.sweep()).toBe(1);
    expect(await usage.admit('f4', dest(), imagine('f4'))).toEqual({ admitted: true, estimate: 0 });
    // A request already admitted is admitted again (a duplicate), not refused by its own turn.
    expect(await usage.admit('f4', dest(), imagine('f4'))).toEqual({ admitted: true, estimate: 0 });
  });

  it('holds only in scopes with a budget, and a spent budget is named before the wait', async () => {
    // No budget anywhere: as before, every unmeasured request is admitted.
    const { usage: open } = usageWith();
    for (const id of ['a1', 'a2', 'a3']) expect(await open.admit(id, dest(), imagine(id))).toEqual({ admitted: true, estimate: 0 });
    // A channel budget holds that channel only; a workspace budget holds all its channels.
    const { usage: perChannel } = usageWith({ budgets: { channel: 100 } });
    expect((await perChannel.admit('b1', dest('c1'), imagine('b1', dest('c1')))).admitted).toBe(true);
    expect((await perChannel.admit('b2', dest('c2'), imagine('b2', dest('c2')))).admitted).toBe(true);
    const { usage: perWorkspace } = usageWith({ budgets: { workspace: 100 } });
    expect((await perWorkspace.admit('w1', dest('c1'), imagine('w1', dest('c1')))).admitted).toBe(true);
    expect(await perWorkspace.admit('w2', dest('c2', 'u2'), imagine('w2', dest('c2', 'u2')))).toMatchObject({ admitted: false, scope: 'workspace', awaitingMeasurement: true });
    // Spent: the refusal says so (with when it resets), not to wait for a measurement.
    const { usage: spent } = usageWith({ budgets: { channel: 10 } });
    await spent.settle(ask('seed'), took(10), 1); // 10 s used today; /imagine still unmeasured
    const refused = await spent.admit('s1', dest(), imagine('s1'));
    expect(refused).toMatchObject({ admitted: false, scope: 'channel', used: 10, estimate: 0 });
    expect(refused).not.toHaveProperty('awaitingMeasurement');
  });
});

describe('Usage on a connection of its own', () => {
  // The commands are defined by the first Usage of each connection, so this test (not an earlier one) is where a
  // misnamed command shows: Stryker's per-test coverage credits the definitions to that Usage's test only.
  it('defines every command it calls on a fresh connection', async () => {
    const fresh = new Redis(url);
    try {
      const { usage } = usageWith({ connection: fresh });
      expect(await usage.admit('n1', dest(), imagine('n1'))).toEqual({ admitted: true, estimate: 0 });
      expect(await usage.release('n1')).toBe(true);
      await usage.count('hits', dest());
      expect(await usage.settle(imagine('n2'), took(4), 1)).toBe(true);
      expect(await usage.sweep()).toBe(0);
    } finally {
      await fresh.quit();
    }
  });
});

describe('sweep', () => {
  it('releases the reservations of finished jobs and of jobs gone past the grace; keeps running and fresh ones', async () => {
    const { usage, prefix } = usageWith({ admitGraceMs: 5_000 });
    const U = `${prefix}:{usage}`;
    const job = (id: string) => `${prefix}:jobs:${id}`;
    await usage.settle(imagine('seed'), took(4), 1);
    for (const id of ['finished', 'running', 'running-old', 'gone-old', 'gone-fresh']) await usage.admit(id, dest(), imagine(id));
    await redis.hset(job('finished'), 'timestamp', '1', 'finishedOn', '2');
    await redis.hset(job('running'), 'timestamp', '1');
    await redis.hset(job('running-old'), 'timestamp', '1');
    // gone-old and running-old were admitted 6 s ago (past the 5 s grace); gone-fresh just now (its add may still be
    // on its way). A job that still exists keeps its reservation however old.
    for (const id of ['gone-old', 'running-old']) {
      const fields = (await redis.hget(`${U}:resv`, id))!.split('\n');
      fields[4] = String(Date.now() - 6_000);
      await redis.hset(`${U}:resv`, id, fields.join('\n'));
    }
    expect(await usage.sweep()).toBe(2);
    expect((await redis.hkeys(`${U}:resv`)).sort()).toEqual(['gone-fresh', 'running', 'running-old']);
    expect(Number(await redis.hget(`${U}:inflight`, 'user|discord:u1'))).toBe(12);
    expect(await usage.sweep()).toBe(0);
  });

  it("reads the grace on Redis's clock, as admit wrote the admission time: a host clock off by minutes changes nothing", async () => {
    const { usage, prefix } = usageWith({ admitGraceMs: 60_000 });
    const U = `${prefix}:{usage}`;
    await usage.settle(imagine('seed'), took(4), 1);
    for (const id of ['fresh', 'old']) await usage.admit(id, dest(), imagine(id));
    // 'old' was admitted 2 min ago by Redis's clock and its job never arrived; 'fresh' just now (its add is on its way).
    const fields = (await redis.hget(`${U}:resv`, 'old'))!.split('\n');
    fields[4] = String((await redisNowMs()) - 120_000);
    await redis.hset(`${U}:resv`, 'old', fields.join('\n'));
    // A host 2 min behind still frees 'old'; one 2 min ahead does not free 'fresh'.
    expect(await withClockOff(-120_000, () => usage.sweep())).toBe(1);
    expect(await withClockOff(120_000, () => usage.sweep())).toBe(0);
    expect(await redis.hkeys(`${U}:resv`)).toEqual(['fresh']);
    expect(Number(await redis.hget(`${U}:inflight`, 'user|discord:u1'))).toBe(4);
  });
});

describe('report', () => {
  it("sums a workspace's channels and members over the days asked for, most GPU-seconds first, and its total per day", async () => {
    const { usage } = usageWith();
    const today = await redisDay();
    await usage.settle(imagine('a', dest('c1', 'u1')), took(4), 1);
    await usage.settle(imagine('b', dest('c1', 'u2')), took(10), 1);
    await usage.settle(imagine('c', dest('c2', 'u2')), took(3), 1);
    await usage.count('hits', dest('c3', 'u3'));
    await usage.count('ref', dest('c2', 'u1'));
    await usage.settle(imagine('z', dest('cz', 'u1', 'g2')), took(50), 1); // another server: not in g1's report
    // Yesterday and three days ago, written as settle writes them.
    await redis.hset(usage.dayKey(today - 1), 'gs|channel|discord:g1:c2', '30', 'jobs|channel|discord:g1:c2', '2', 'gs|member|discord:g1:u3', '30', 'gs|workspace|discord:g1', '30');
    await redis.hset(usage.dayKey(today - 3), 'gs|channel|discord:g1:c1', '500', 'gs|workspace|discord:g1', '500');

    const twoDays = await usage.report(2, 'discord:g1:');
    expect(twoDays.channels).toEqual([
      { id: 'discord:g1:c2', gpuSeconds: 33, jobs: 3, hits: 0, refusals: 1 },
      { id: 'discord:g1:c1', gpuSeconds: 14, jobs: 2, hits: 0, refusals: 0 },
      { id: 'discord:g1:c3', gpuSeconds: 0, jobs: 0, hits: 1, refusals: 0 },
    ]);
    expect(twoDays.users).toEqual([
      { id: 'u3', gpuSeconds: 30, jobs: 0, hits: 1, refusals: 0 },
      { id: 'u2', gpuSeconds: 13, jobs: 2, hits: 0, refusals: 0 },
      { id: 'u1', gpuSeconds: 4, jobs: 1, hits: 0, refusals: 1 },
    ]);
    expect(twoDays.perDay).toEqual([{ day: today - 1, gpuSeconds: 30 }, { day: today, gpuSeconds: 17 }]);
    expect((await usage.report(1, 'discord:g1:')).channels.map((r) => r.id)).toEqual(['discord:g1:c1', 'discord:g1:c2', 'discord:g1:c3']);
    expect((await usage.report(4, 'discord:g1:')).channels[0]).toEqual({ id: 'discord:g1:c1', gpuSeconds: 514, jobs: 2, hits: 0, refusals: 0 });
    expect((await usage.report(1, 'discord:g2:')).users).toEqual([{ id: 'u1', gpuSeconds: 50, jobs: 1, hits: 0, refusals: 0 }]);
  });

  it("picks today by Redis's clock, the one settle files the counters under, not the host's", async () => {
    const { usage } = usageWith();
    const r = imagine('a');
    await usage.settle(r, took(4), 1);
    // A host whose clock is a day ahead (or behind) still reads the day the counters went to.
    for (const offsetMs of [DAY_MS, -DAY_MS]) {
      expect(await withClockOff(offsetMs, () => usage.today(r.destination))).toMatchObject({ channel: { used: 4 } });
      const report = await withClockOff(offsetMs, () => usage.report(1, 'discord:g1:'));
      expect(report.channels).toEqual([{ id: 'discord:g1:c1', gpuSeconds: 4, jobs: 1, hits: 0, refusals: 0 }]);
      expect(report.perDay).toEqual([{ day: await redisDay(), gpuSeconds: 4 }]);
    }
  });

  it('orders equal GPU-seconds by jobs, then by id', async () => {
    const { usage } = usageWith();
    const today = await redisDay();
    await redis.hset(usage.dayKey(today), 'gs|channel|discord:g1:b', '5', 'gs|channel|discord:g1:a', '5', 'gs|channel|discord:g1:c', '5', 'jobs|channel|discord:g1:c', '1');
    expect((await usage.report(1, 'discord:g1:')).channels.map((r) => r.id)).toEqual(['discord:g1:c', 'discord:g1:a', 'discord:g1:b']);
    // A counter this version does not know (a newer version's) is left out of the rows, not added to one.
    await redis.hset(usage.dayKey(today), 'later|channel|discord:g1:a', '9', 'later|member|discord:g1:u1', '9');
    expect((await usage.report(1, 'discord:g1:')).channels.find((r) => r.id === 'discord:g1:a')).toEqual({ id: 'discord:g1:a', gpuSeconds: 5, jobs: 0, hits: 0, refusals: 0 });
    expect((await usage.report(1, 'discord:g1:')).users).toEqual([]);
  });
});

describe('what fair scheduling and the user read', () => {
  it('turns an estimate into whole cost units, at least 1 and at most MAX_COST_UNITS', () => {
    const { usage } = usageWith();
    expect(usage.costUnits(0)).toBe(1);
    expect(usage.costUnits(0.26)).toBe(3); // 260 ms / 100 ms, rounded
    expect(usage.costUnits(0.24)).toBe(2);
    expect(usage.costUnits(1e9)).toBe(MAX_COST_UNITS);
    expect(DAY_MS).toBe(86_400_000);
  });

  it('says whose budget is used up, how much, when it resets, and what this request needs', () => {
    const refused = { admitted: false as const, used: 580.4, inflight: 0, budget: 600, estimate: 45.26, resetsInMs: 5 * 3_600_000 };
    expect(budgetMessage({ ...refused, scope: 'channel' }, IN_SERVER)).toBe('This channel has used 580 of its 600 GPU-seconds today; it resets at 00:00 UTC, in 5 h 0 min. This request needs about 45.');
    expect(budgetMessage({ ...refused, scope: 'user', used: 9.96, budget: 9.5, estimate: 1.23 }, IN_SLACK)).toBe('You have used 10 of your 9.5 GPU-seconds today; it resets at 00:00 UTC, in 5 h 0 min. This request needs about 1.2.');
    expect(budgetMessage({ ...refused, scope: 'workspace', estimate: 0 }, IN_SERVER)).toBe('This server has used 580 of its 600 GPU-seconds today; it resets at 00:00 UTC, in 5 h 0 min.');
    expect(budgetMessage({ ...refused, scope: 'workspace' }, IN_SLACK)).toMatch(/^This workspace has used 580 of its 600 /);
  });
});
