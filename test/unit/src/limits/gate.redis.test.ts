// The gate the core calls around a submission, over real Redis and BullMQ: admission, parked job options, and the
// slot releases it wires to queue events (a removed job frees its slots and its turn; a finished one its slots),
// until stop().
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import type { LimitSpec } from '../../../../src/config/schema.ts';
import { isUserError } from '../../../../src/errors.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest } from '../../../../src/jobs/contract.ts';
import { createJobsQueue } from '../../../../src/jobs/queue.ts';
import { ADMITTED_MEMORY_MS, createGate } from '../../../../src/limits/gate.ts';
import { ResultCache } from '../../../../src/cache/results.ts';
import { MAX_PRIORITY, PARK_MS } from '../../../../src/scheduling/fair.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `t-gate-${randomUUID().slice(0, 8)}`;
const open: LimitSpec = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
const d: Destination = { platform: 'discord', guildId: 'g', channelId: 'c', userId: 'u', applicationId: 'app' };
const configWith = (limits: Record<string, unknown>) =>
  loadConfig({ env: {}, overrides: { queue: { prefix }, limits: { channel: open, workspace: open, user: { ...open, maxConcurrent: 1 }, ...limits } } });
const config = configWith({ repairIntervalMs: 60_000 });
let redis: Redis;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const held = async (gate: ReturnType<typeof createGate>) => (await gate.limiter.usage('user', 'discord:u', { ...open, maxConcurrent: 1 })).held;
async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await check()); i++) await sleep(10);
}

/** A gate with a 100 GPU-second user budget, `user` limits and the result cache, on `queuePrefix`. */
function budgetedGate(user: LimitSpec, queuePrefix = prefix) {
  const config = loadConfig({ env: {}, overrides: { queue: { prefix: queuePrefix }, usage: { budgets: { channel: 0, user: 100, workspace: 0 } }, limits: { channel: open, workspace: open, user, repairIntervalMs: 60_000 } } });
  const queue = createJobsQueue(config, redis);
  const gate = createGate(redis, config, queue);
  const close = async () => {
    gate.stop();
    await queue.close();
  };
  return { gate, cache: new ResultCache(redis, config), close };
}

beforeAll(() => {
  redis = new Redis(url, { maxRetriesPerRequest: null });
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe('gate', () => {
  it('admits within the limits, parks the job, lines it up, and frees slots on abandon, removal and events', async () => {
    const queue = createJobsQueue(config, redis);
    const gate = createGate(redis, config, queue);
    const events = new EventEmitter() as unknown as QueueEvents;
    try {
      expect(gate.jobOptions()).toEqual({ priority: MAX_PRIORITY, delay: PARK_MS });
      await gate.admit('a1', d);
      const denied = await gate.admit('a2', d).catch((e: unknown) => e);
      expect(isUserError(denied) && (denied as Error).message).toMatch(/You already have 1 job queued or running/);
      await gate.abandon('a1');
      expect(await held(gate)).toBe(0);

      await gate.admit('b1', d);
      await queue.add('imagine', { destination: d } as never, { jobId: 'b1', ...gate.jobOptions() });
      await gate.enqueued('b1', d);
      expect(await queue.getJobState('b1')).toBe('prioritized');
      expect(await gate.scheduler.position('b1')).toEqual({ state: 'queued', position: 1 });
      await gate.removed('b1');
      expect(await held(gate)).toBe(0);
      expect(await gate.scheduler.position('b1')).toEqual({ state: 'none' });

      gate.start(events);
      const emitter = events as unknown as EventEmitter;
      await gate.admit('c1', d);
      await queue.add('imagine', { destination: d } as never, { jobId: 'c1', ...gate.jobOptions() });
      await gate.enqueued('c1', d);
      emitter.emit('removed', { jobId: 'c1' });
      await until(async () => (await held(gate)) === 0);
      expect(await held(gate)).toBe(0);
      expect(await gate.scheduler.position('c1')).toEqual({ state: 'none' });

      // repairIntervalMs is a minute here: only the events can free these slots
      for (const event of ['completed', 'failed']) {
        const id = `e-${event}`;
        await gate.admit(id, d);
        await redis.hset(`${prefix}:jobs:${id}`, 'timestamp', Date.now(), 'finishedOn', Date.now());
        emitter.emit(event, { jobId: id });
        await until(async () => (await held(gate)) === 0);
        expect(await held(gate)).toBe(0);
      }
      gate.stop();
      expect(emitter.listenerCount('completed') + emitter.listenerCount('failed') + emitter.listenerCount('removed')).toBe(0);
    } finally {
      gate.stop();
      await queue.close();
    }
  });

  it('of two instances reading the same events, only the one that admitted a job settles it; one forgets a job admitted over ADMITTED_MEMORY_MS ago at its repair', async () => {
    const queue = createJobsQueue(config, redis);
    const a = createGate(redis, config, queue);
    const b = createGate(redis, config, queue);
    const events = new EventEmitter();
    const settled: string[] = [];
    for (const [name, gate] of [['a', a], ['b', b]] as const) {
      const settle = gate.limiter.settle.bind(gate.limiter);
      gate.limiter.settle = async (jobId) => (settled.push(`${name}:${jobId}`), settle(jobId));
    }
    try {
      a.start(events as unknown as QueueEvents);
      b.start(events as unknown as QueueEvents);
      await a.admit('m1', d);
      await redis.hset(`${prefix}:jobs:m1`, 'timestamp', Date.now(), 'finishedOn', Date.now());
      events.emit('completed', { jobId: 'm1' });
      await until(async () => (await held(a)) === 0);
      expect(await held(a)).toBe(0);
      events.emit('failed', { jobId: 'm1' }); // a second event for it: settled already, nothing more
      expect(settled).toEqual(['a:m1']);

      // Remembered an hour: a job admitted longer ago is forgotten at the next repair (the sweep frees its slots).
      a.stop();
      const t0 = Date.now();
      vi.useFakeTimers({ toFake: ['Date'], now: t0 });
      try {
        await a.admit('m2', d);
        vi.setSystemTime(t0 + 1);
        await a.admit('m3', { ...d, userId: 'u3' }); // another user: d's user may hold one slot
        vi.setSystemTime(t0 + 1 + ADMITTED_MEMORY_MS); // m2 is over an hour old, m3 exactly an hour
        a.start(events as unknown as QueueEvents); // repairs at start
      } finally {
        vi.useRealTimers();
      }
      for (const id of ['m2', 'm3']) {
        await redis.hset(`${prefix}:jobs:${id}`, 'timestamp', Date.now(), 'finishedOn', Date.now());
        events.emit('completed', { jobId: id });
      }
      expect(settled).toEqual(['a:m1', 'a:m3']); // the listener calls settle at once
      expect(await held(a)).toBe(1); // m2's slot is left to the sweep
      await a.abandon('m2');
    } finally {
      a.stop();
      b.stop();
      await queue.close();
    }
  });

  it('repairs at start and every repairIntervalMs until stop(): lost slot releases, and parked jobs older than admitGraceMs', async () => {
    const queue = createJobsQueue(config, redis);
    const fast = createGate(redis, configWith({ repairIntervalMs: 50, admitGraceMs: 200 }), queue);
    const events = new EventEmitter() as unknown as QueueEvents;
    try {
      // a bot died between queue.add and enqueue: the job is parked, and nobody lined it up
      await queue.add('imagine', { destination: d } as never, { jobId: 'orphan', ...fast.jobOptions() });
      fast.start(events);
      await until(async () => (await fast.scheduler.position('orphan')).state === 'queued');
      expect(await fast.scheduler.position('orphan')).toEqual({ state: 'queued', position: 1 }); // adopted after 200 ms, not 60 s

      // the periodic repair sweeps a slot whose job finished without any event
      await fast.admit('s1', d);
      await redis.hset(`${prefix}:jobs:s1`, 'timestamp', Date.now(), 'finishedOn', Date.now());
      await until(async () => (await held(fast)) === 0);
      expect(await held(fast)).toBe(0);

      fast.stop();
      await fast.admit('t1', d);
      await redis.hset(`${prefix}:jobs:t1`, 'timestamp', Date.now(), 'finishedOn', Date.now());
      await sleep(300);
      expect(await held(fast)).toBe(1); // stopped: no more sweeping
      await fast.abandon('t1');
    } finally {
      fast.stop();
      await queue.close();
    }
  });

  it('repairs once right at start()', async () => {
    const queue = createJobsQueue(config, redis);
    const gate = createGate(redis, config, queue);
    try {
      await gate.admit('r1', d);
      await redis.hset(`${prefix}:jobs:r1`, 'timestamp', Date.now(), 'finishedOn', Date.now());
      gate.start(new EventEmitter() as unknown as QueueEvents);
      await until(async () => (await held(gate)) === 0);
      expect(await held(gate)).toBe(0);
    } finally {
      gate.stop();
      await queue.close();
    }
  });

  it('with a request: budgets first (a refusal takes no token), then the limits with N images counted as N; the estimate weighs the job', async () => {
    const budgeted = loadConfig({
      env: {},
      overrides: { queue: { prefix }, usage: { budgets: { channel: 0, user: 10, workspace: 0 } }, limits: { channel: open, workspace: open, user: { ...open, requestsPerWindow: 3, burst: 3 }, repairIntervalMs: 60_000 } },
    });
    const queue = createJobsQueue(budgeted, redis);
    const gate = createGate(redis, budgeted, queue);
    const bu: Destination = { ...d, userId: 'bu' };
    const bv: Destination = { ...d, userId: 'bv' };
    const options = { seed: 1, ditSteps: 2, decoderSteps: 3, guidance: 4, aspect: '1:1' as const };
    const imagine = (id: string, dest: Destination, count?: number): JobRequest =>
      ({ v: CONTRACT_VERSION, id, destination: dest, submittedAt: 1, kind: 'imagine', prompt: 'a fox', options: { ...options, ...(count ? { count } : {}) } }) as JobRequest;
    const ask: JobRequest = {
      v: CONTRACT_VERSION, id: 'g2', destination: bu, submittedAt: 1, kind: 'ask', imageKey: `${prefix}:blob:x`, question: 'q', history: [],
      options: { maxNewTokens: 8, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 },
    };
    const rate = { ...open, requestsPerWindow: 3, burst: 3 };
    try {
      expect(await gate.admit('g1', bu, imagine('g1', bu, 2))).toEqual({ estimate: 0 }); // nothing measured yet
      expect((await gate.limiter.usage('user', 'discord:bu', rate)).tokens).toBe(1); // two images, two tokens
      await gate.admit('g2', bu, ask); // an ask counts one
      expect((await gate.limiter.usage('user', 'discord:bu', rate)).tokens).toBe(0);
      await gate.usage.release('g1'); // g1 ended unmeasured: g3 is not held back as a second unmeasured /imagine
      const limited = await gate.admit('g3', bu, imagine('g3', bu)).catch((e: unknown) => e);
      expect(isUserError(limited) && limited.code).toBe('rate_limited');
      expect(isUserError(limited) && limited.context).toMatchObject({ scope: 'user', kind: 'rate' }); // the limit's refusal, not a budget's
      expect(await gate.usage.release('g3')).toBe(false); // its budget reservation was given back already
      const day = Math.floor(Date.now() / 86_400_000);
      expect(await redis.hget(gate.usage.dayKey(day), 'ref|user|discord:bu')).toBe('1'); // counted as refused

      await gate.usage.settle(imagine('done', bu), { status: 'succeeded', timingsMs: { features: 8_000 } }, 8_000); // 8 of bu's 10 GPU-seconds
      const held = (await gate.limiter.usage('user', 'discord:bu', rate)).held;
      const over = await gate.admit('g4', bu, imagine('g4', bu)).catch((e: unknown) => e);
      expect(isUserError(over) && over.code).toBe('rate_limited');
      expect((over as Error).message).toMatch(/^You have used 8 of your 10 GPU-seconds today; it resets at 00:00 UTC, in \d+ (s|min|h \d+ min)\. This request needs about 8\.$/); // 8 more would pass 10
      expect(isUserError(over) && over.context).toEqual({ scope: 'user', budget: 10, used: 8, inflight: 0 });
      expect((await gate.limiter.usage('user', 'discord:bu', rate)).held).toBe(held); // the limiter was not asked

      expect(await gate.admit('g5', bv, imagine('g5', bv))).toEqual({ estimate: 8 }); // the same kind and options: 8 s
      await queue.add('imagine', { destination: bv } as never, { jobId: 'g5', ...gate.jobOptions() });
      await gate.enqueued('g5', bv, 0.26); // 260 ms in units of usage.fairCostUnitMs (100 ms): 3
      expect(await redis.hget(`${prefix}:sched:jobs`, 'g5')).toMatch(/\n3$/);
      await queue.add('imagine', { destination: bv } as never, { jobId: 'g6', ...gate.jobOptions() });
      await gate.enqueued('g6', bv);
      expect(await redis.hget(`${prefix}:sched:jobs`, 'g6')).toMatch(/\n1$/);
    } finally {
      gate.stop();
      await queue.close();
    }
  });

  it('with a 100 s budget and nothing measured, N requests at once: one is admitted (cost 1 unit, as its estimate 0), the others told to wait and take no token', async () => {
    const own = `${prefix}:u`; // its own estimates: no kind measured
    const rate: LimitSpec = { ...open, requestsPerWindow: 100, burst: 100 };
    const { gate, close } = budgetedGate(rate, own);
    const at = (channelId: string): Destination => ({ ...d, channelId, userId: 'wu' });
    const request = (id: string, dest: Destination): JobRequest => ({ v: CONTRACT_VERSION, id, destination: dest, submittedAt: 1, kind: 'imagine', prompt: 'a wren', options: { seed: 1, ditSteps: 4, decoderSteps: 4, guidance: 4, aspect: '1:1' } });
    try {
      const ids = Array.from({ length: 6 }, (_, i) => `w${i}`);
      const outcomes = await Promise.all(ids.map((id) => gate.admit(id, at(`idle-${id}`), request(id, at(`idle-${id}`))).catch((e: unknown) => e)));
      const admitted = outcomes.filter((o) => !isUserError(o));
      expect(admitted).toEqual([{ estimate: 0, reserved: { priority: 1, place: { state: 'queued', position: 1 } } }]);
      const first = ids[outcomes.findIndex((o) => !isUserError(o))]!;
      expect(await redis.hget(`${own}:sched:jobs`, first)).toMatch(/\n1$/); // weighed by its estimate 0: the least, 1 unit
      const waiting = outcomes.filter(isUserError);
      expect(waiting).toHaveLength(5);
      for (const e of waiting) {
        expect(e.code).toBe('rate_limited');
        expect(e.message).toBe(
          'You have a budget of 100 GPU-seconds a day, and what a request of this kind costs is known only once one has run: the first is queued or running now. Please send yours again when it has finished.',
        );
        expect(e.context).toEqual({ scope: 'user', budget: 100, used: 0, inflight: 0, awaitingMeasurement: true });
      }
      expect((await gate.limiter.usage('user', 'discord:wu', rate)).tokens).toBe(99); // only the admitted one took a token
      // Measured at 20 s: the next ones reserve 20 s each, so 100 s admits five in flight, not one more.
      await gate.usage.settle(request(first, at(`idle-${first}`)), { status: 'succeeded', timingsMs: { features: 20_000 } }, 20_000);
      for (const id of ['x1', 'x2', 'x3', 'x4']) expect((await gate.admit(id, at('busy'), request(id, at('busy')))).estimate).toBe(20);
      const over = await gate.admit('x5', at('busy'), request('x5', at('busy'))).catch((e: unknown) => e);
      expect((over as Error).message).toMatch(/^You have used 20 of your 100 GPU-seconds today, and jobs queued or running need about 80 more; .* This request needs about 20\.$/);
    } finally {
      await close();
    }
  });

  it('with a claim: admitted and leading the flight, or joining a flight another leads with everything given back', async () => {
    const { gate, cache, close } = budgetedGate({ ...open, maxConcurrent: 2 });
    const cu: Destination = { ...d, userId: 'cu' };
    const request = (id: string): JobRequest => ({ v: CONTRACT_VERSION, id, destination: cu, submittedAt: 1, kind: 'imagine', prompt: 'a lynx', options: { seed: 1, ditSteps: 7, decoderSteps: 9, guidance: 4, aspect: '1:1' } });
    const slots = async () => (await gate.limiter.usage('user', 'discord:cu', { ...open, maxConcurrent: 2 })).held;
    try {
      await gate.usage.settle(request('measured'), { status: 'succeeded', timingsMs: { features: 1_000 } }, 1_000); // jobs like these: 1 s
      expect(await gate.admit('k1', cu, request('k1'), cache.claimCall('digest-k', 'k1', '{}'))).toEqual({ estimate: 1 });
      expect(await cache.claim('digest-k', 'k0', '{}')).toEqual({ leads: false, leaderJobId: 'k1' }); // k1 leads it
      expect(await slots()).toBe(1);

      expect(await gate.admit('k2', cu, request('k2'), cache.claimCall('digest-k', 'k2', '{"id":"k2"}'))).toEqual({ estimate: 0, joined: 'k1' });
      expect(await slots()).toBe(1); // k2's slot given back
      expect(await gate.usage.release('k2')).toBe(false); // and its budget reservation
      expect(await gate.usage.release('k1')).toBe(true); // k1 keeps its own
      expect(await cache.close('digest-k', 'k1')).toEqual(['{}', '{"id":"k2"}']); // k2 follows k1

      // Given the checks' scope, the leader's claim records where its flight lives (submit then writes no record itself);
      // a request that joins records nothing
      expect(await gate.admit('k3', cu, request('k3'), cache.claimCall('digest-r', 'k3', '{}', 'scope-a'))).toEqual({ estimate: 1 });
      expect(await cache.flightOf('k3')).toEqual({ digest: 'digest-r', scope: 'scope-a' });
      expect(await gate.admit('k4', cu, request('k4'), cache.claimCall('digest-r', 'k4', '{}', 'scope-a'))).toEqual({ estimate: 0, joined: 'k3' });
      expect(await cache.flightOf('k4')).toBeUndefined();
    } finally {
      await close();
    }
  });

  it('joining a flight at the claim takes no rate token either, as joining at the lookup does: only GPU work is rate limited', async () => {
    const hourly: LimitSpec = { requestsPerWindow: 1, windowSeconds: 3_600, burst: 1, maxConcurrent: 0 };
    const { gate, cache, close } = budgetedGate(hourly, `${prefix}:t`);
    const at = (userId: string): Destination => ({ ...d, userId });
    const request = (id: string, dest: Destination, prompt = 'a tern'): JobRequest => ({ v: CONTRACT_VERSION, id, destination: dest, submittedAt: 1, kind: 'imagine', prompt, options: { seed: 1, ditSteps: 7, decoderSteps: 9, guidance: 4, aspect: '1:1' } });
    const tokens = async (userId: string) => (await gate.limiter.usage('user', `discord:${userId}`, hourly)).tokens;
    try {
      expect(await gate.admit('t1', at('ta'), request('t1', at('ta')), cache.claimCall('digest-t', 't1', '{}'))).toMatchObject({ estimate: expect.any(Number) }); // ta leads
      const full = await tokens('tb');
      expect(await gate.admit('t2', at('tb'), request('t2', at('tb')), cache.claimCall('digest-t', 't2', '{}'))).toEqual({ estimate: 0, joined: 't1' });
      expect(await tokens('tb')).toBe(full); // before: 0, the token of a request that runs nothing
      // tb's one request an hour is still there for work of its own
      expect(await gate.admit('t3', at('tb'), request('t3', at('tb'), 'a puffin'), cache.claimCall('digest-u', 't3', '{}'))).toMatchObject({ estimate: expect.any(Number) });
    } finally {
      await close();
    }
  });

  it('with a request in an idle channel: the job is reserved in the same script, weighed in units of its estimate; a joined flight reserves nothing', async () => {
    const own = `${prefix}:r`; // its own scheduler and estimates: no channel busy, no kind measured by the tests above
    const { gate, cache, close } = budgetedGate(open, own);
    const at = (channelId: string): Destination => ({ ...d, channelId, userId: 'ru' });
    const request = (id: string, dest: Destination): JobRequest => ({ v: CONTRACT_VERSION, id, destination: dest, submittedAt: 1, kind: 'imagine', prompt: 'a vole', options: { seed: 1, ditSteps: 4, decoderSteps: 4, guidance: 4, aspect: '1:1' } });
    const entry = (jobId: string) => redis.hget(`${own}:sched:jobs`, jobId);
    try {
      await gate.usage.settle(request('measured', at('m')), { status: 'succeeded', timingsMs: { features: 260 } }, 260); // jobs like these: 0.26 s
      const first = await gate.admit('v1', at('idle-1'), request('v1', at('idle-1')), cache.claimCall('digest-v', 'v1', '{}'));
      expect(first).toEqual({ estimate: 0.26, reserved: { priority: 1, place: { state: 'queued', position: 1 } } });
      expect(await entry('v1')).toBe('discord:g:idle-1\ndiscord:ru\n3'); // 260 ms in units of usage.fairCostUnitMs (100 ms)
      expect(await gate.admit('v2', at('idle-1'), request('v2', at('idle-1')))).toEqual({ estimate: 0.26 }); // the channel is busy now
      expect(await entry('v2')).toBeNull(); // it goes the parked way: enqueued after its add
      const joined = await gate.admit('v3', at('idle-2'), request('v3', at('idle-2')), cache.claimCall('digest-v', 'v3', '{}'));
      expect(joined).toEqual({ estimate: 0, joined: 'v1' });
      expect(await entry('v3')).toBeNull();
      expect(await gate.scheduler.reserve('v4', at('idle-2'))).toMatchObject({ priority: 1 }); // idle-2 is still idle
    } finally {
      await close();
    }
  });

  it('with a several-image request: its estimate, its budget reservation and its fair-scheduling cost are its images times one image', async () => {
    const own = `${prefix}:n`; // its own scheduler and estimates, as above
    const { gate, close } = budgetedGate(open, own);
    const at = (channelId: string): Destination => ({ ...d, channelId, userId: 'nu' });
    const request = (id: string, dest: Destination, count?: number): JobRequest =>
      ({ v: CONTRACT_VERSION, id, destination: dest, submittedAt: 1, kind: 'imagine', prompt: 'a newt', options: { seed: 1, ditSteps: 4, decoderSteps: 4, guidance: 4, aspect: '1:1', ...(count ? { count } : {}) } });
    try {
      await gate.usage.settle(request('measured', at('m')), { status: 'succeeded', timingsMs: { features: 260 } }, 260); // one image: 0.26 s
      // Four images in an idle channel: about 1.04 s, reserved in the budgets and weighed as 10 units of 100 ms.
      expect(await gate.admit('n1', at('idle-n'), request('n1', at('idle-n'), 4))).toEqual({ estimate: 1.04, reserved: { priority: 1, place: { state: 'queued', position: 1 } } });
      expect(await redis.hget(`${own}:sched:jobs`, 'n1')).toBe('discord:g:idle-n\ndiscord:nu\n10');
      expect(Number(await redis.hget(`${own}:{usage}:inflight`, 'user|discord:nu'))).toBeCloseTo(1.04, 9);
      // The worker weighs a job by Usage.estimate when it starts: the same, four images.
      expect(gate.usage.costUnits(await gate.usage.estimate(request('n2', at('idle-n'), 4)))).toBe(10);
    } finally {
      await close();
    }
  });

  it('with a lookup: a cached result or a flight to join is answered first and takes nothing; a miss is admitted', async () => {
    const { gate, cache, close } = budgetedGate({ ...open, maxConcurrent: 1 });
    const lu: Destination = { ...d, userId: 'lu' };
    const request = (id: string): JobRequest => ({ v: CONTRACT_VERSION, id, destination: lu, submittedAt: 1, kind: 'imagine', prompt: 'an ibis', options: { seed: 1, ditSteps: 5, decoderSteps: 6, guidance: 4, aspect: '1:1' } });
    const slots = async () => (await gate.limiter.usage('user', 'discord:lu', { ...open, maxConcurrent: 1 })).held;
    const admit = async (id: string, digest: string) => {
      const lookup = await cache.lookupCall(digest, id, `{"id":"${id}"}`);
      const admitted = await gate.admit(id, lu, request(id), cache.claimCall(digest, id, `{"id":"${id}"}`), lookup);
      return { ...admitted, found: admitted.found && cache.lookupResult(lookup, admitted.found) };
    };
    try {
      await cache.publishModel('model-l', 'worker-l');
      await gate.usage.settle(request('measured-l'), { status: 'succeeded', timingsMs: { features: 2_000 } }, 2_000); // jobs like these: 2 s
      const png = new Uint8Array([137, 80, 78, 71, 0, 255, 10, 13]); // bytes, not text: they come back as they went in
      await cache.put('model-l', 'digest-hit', { kind: 'image', width: 8, height: 8 }, png);
      expect(await admit('l1', 'digest-hit')).toEqual({ estimate: 0, found: { kind: 'hit', meta: { kind: 'image', width: 8, height: 8 }, png } });
      expect(await slots()).toBe(0); // a hit takes no slot
      expect(await gate.usage.release('l1')).toBe(false); // and reserves no budget

      expect(await admit('l2', 'digest-l')).toEqual({ estimate: 2, found: { kind: 'miss' } }); // a miss: admitted, leads the flight
      expect(await slots()).toBe(1);
      expect(await admit('l3', 'digest-l')).toEqual({ estimate: 0, found: { kind: 'joined', leaderJobId: 'l2' } }); // not refused by the cap of 1
      expect(await slots()).toBe(1);
      expect(await gate.usage.release('l3')).toBe(false);
      expect(await cache.close('digest-l', 'l2')).toEqual(['{"id":"l3"}']); // l3 follows l2
      const refused = await admit('l4', 'digest-m').catch((e: unknown) => e); // a miss over the cap: refused as before
      expect(isUserError(refused) && refused.code).toBe('rate_limited');
      expect(await cache.claim('digest-m', 'l5', '{}')).toEqual({ leads: true }); // the refused request claimed nothing
    } finally {
      await close();
    }
  });
});
