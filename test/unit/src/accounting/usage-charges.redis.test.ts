// What a user is charged and told about GPU-second budgets (src/accounting/usage.ts) over real Redis, without a worker:
// a failed or cancelled run is charged its run time but is no measurement of what such a request costs; a refusal
// says what was measured apart from what is queued or running (as `budget show` does), when the budget resets in the
// user's terms, and says so when waiting cannot help because the request alone needs more than the budget.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { budgetMessage, DAY_MS, Usage } from '../../../../src/accounting/usage.ts';
import { IN_DM, IN_SERVER, IN_SLACK } from '../../../doubles/refusal-places.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
let redis: Redis;
const prefixes: string[] = [];

function usageWith(budgets: Partial<Record<'channel' | 'user' | 'workspace', number>> = {}) {
  const prefix = `t-usage-charges-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  const config = loadConfig({
    env: {},
    overrides: {
      queue: { prefix },
      usage: { budgets: { channel: 0, user: 0, workspace: 0, ...budgets }, estimateSmoothing: 0.5, fairCostUnitMs: 100, retainDays: 3 },
    },
  });
  return new Usage(redis, config);
}

const dest = (channelId = 'c1', userId = 'u1'): Destination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const ask = (id: string, maxNewTokens: number, mode?: 'describe'): JobRequest => ({
  v: CONTRACT_VERSION, id, destination: dest(), submittedAt: 1, kind: 'ask', imageKey: 'k', question: 'what?', history: [],
  options: { maxNewTokens, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, seed: 1 }, ...(mode ? { mode } : {}),
});
const imagine = (id: string, d = dest()): JobRequest => ({
  v: CONTRACT_VERSION, id, destination: d, submittedAt: 1, kind: 'imagine', prompt: 'a fox',
  options: { seed: 1, ditSteps: 10, decoderSteps: 20, guidance: 3, aspect: '1:1' },
});
/** A run whose compute stages took `seconds`, ending as `status`. */
const ended = (seconds: number, status: JobResult['status'] = 'succeeded') => ({ status, timingsMs: { conditioning: seconds * 250, decoding: seconds * 750 } });
/** A failure's result as the worker hands it over: no stage timings (its whole run is charged). */
const failed = (status: 'failed' | 'cancelled') => ({ status, timingsMs: {} });
const channelUsed = async (usage: Usage) => (await usage.today(dest())).channel.used;

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

describe('what a failed or cancelled run is charged and teaches', () => {
  it('charges its run time to the user, but leaves the estimate of such requests to the runs that finished', async () => {
    const usage = usageWith();
    await usage.settle(imagine('ok'), ended(12), 1);
    expect(await usage.estimate(imagine('x'))).toBe(12);
    // Cancelled by its owner 0.2 s in, and a bad image found at once: charged what they ran...
    expect(await usage.settle(imagine('cancelled'), failed('cancelled'), 200)).toBe(true);
    expect(await usage.settle(imagine('bad-image'), failed('failed'), 50)).toBe(true);
    // ...and a run the model stopped at the job timeout, 600 s in.
    expect(await usage.settle(imagine('timeout'), failed('failed'), 600_000)).toBe(true);
    expect(await channelUsed(usage)).toBeCloseTo(12 + 0.2 + 0.05 + 600, 9);
    // None of them says what a finished run of these options costs: the next request is still estimated at 12 s (before:
    // 0.2 s pulled it to 6.1, then the timeout pushed it to 303, refusing requests that fit the budget).
    expect(await usage.estimate(imagine('x'))).toBe(12);
    expect(await usage.estimate(imagine('x', dest('c2')))).toBe(12);
    // The next run that finishes is learned as before: 0.5 × 20 + 0.5 × 12.
    await usage.settle(imagine('ok2'), ended(20), 1);
    expect(await usage.estimate(imagine('x'))).toBe(16);
  });
});

describe('what a /describe is estimated at', () => {
  it('as its DESCRIBE_PROMPTS answers: it neither passes for one /ask nor teaches an /ask its four answers', async () => {
    const usage = usageWith();
    // A deployment whose answers are at most 64 tokens: /describe asks for min(64, describeMaxNewTokens) = 64 too.
    await usage.settle(ask('d1', 64, 'describe'), ended(8), 1); // four answers, 2 s each
    expect(await usage.estimate(ask('x', 64))).toBe(2); // before: 8, an /ask estimated as four
    expect(await usage.estimate(ask('x', 512))).toBe(2); // by the per-answer fallback too
    expect(await usage.estimate(ask('x', 64, 'describe'))).toBe(8);
    await usage.settle(ask('a1', 64), ended(4), 1); // an /ask of 4 s: 0.5 × 4 + 0.5 × 2 per answer
    expect(await usage.estimate(ask('x', 64))).toBe(3);
    expect(await usage.estimate(ask('x', 64, 'describe'))).toBe(12);
    expect((await usage.admit('d2', dest(), ask('d2', 64, 'describe'))).estimate).toBe(12);
  });
});

describe('what a refused user reads', () => {
  it("keeps the measured use apart from what is queued or running, as `budget show` does, and says when the day ends by Redis's clock", async () => {
    const usage = usageWith({ channel: 600 });
    await usage.settle(imagine('seed'), ended(300), 1); // 300 measured today; such a request needs about 300
    expect((await usage.admit('queued', dest(), imagine('queued'))).admitted).toBe(true); // 300 + 300 ≤ 600
    const [seconds, micros] = await redis.time();
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const refused = await usage.admit('next', dest(), imagine('next'));
    if (refused.admitted) throw new Error('admitted past the budget');
    expect(refused).toMatchObject({ scope: 'channel', used: 300, inflight: 300, budget: 600, estimate: 300 });
    expect(await usage.today(dest())).toMatchObject({ channel: { used: 300, inflight: 300 } });
    const resetsInMs = DAY_MS - (nowMs % DAY_MS);
    expect(refused.resetsInMs).toBeLessThanOrEqual(resetsInMs);
    expect(refused.resetsInMs).toBeGreaterThan(resetsInMs - 5_000);
  });

  it('says what was used, what is queued or running, when the budget resets in hours and minutes, and what this request needs', () => {
    const refused = { admitted: false as const, scope: 'channel' as const, used: 300, inflight: 280.4, budget: 600, estimate: 45.26, resetsInMs: 3 * 3_600_000 + 11 * 60_000 + 5_000 };
    expect(budgetMessage(refused, IN_SERVER)).toBe(
      'This channel has used 300 of its 600 GPU-seconds today, and jobs queued or running need about 280 more; it resets at 00:00 UTC, in 3 h 12 min. This request needs about 45.',
    );
    expect(budgetMessage({ ...refused, scope: 'user', used: 580.4, inflight: 0, resetsInMs: 41_000 }, IN_SLACK)).toBe(
      'You have used 580 of your 600 GPU-seconds today; it resets at 00:00 UTC, in 41 s. This request needs about 45.',
    );
    expect(budgetMessage({ ...refused, scope: 'workspace', used: 600, inflight: 0, estimate: 0, resetsInMs: 30 * 60_000 }, IN_SERVER)).toBe(
      'This server has used 600 of its 600 GPU-seconds today; it resets at 00:00 UTC, in 30 min.',
    );
    expect(budgetMessage({ ...refused, scope: 'workspace', used: 600, inflight: 0, estimate: 0, resetsInMs: 30 * 60_000 }, IN_DM)).toBe(
      'Direct messages with this bot have used 600 of their 600 GPU-seconds today; it resets at 00:00 UTC, in 30 min.',
    );
    expect(budgetMessage({ ...refused, scope: 'workspace', budget: 30 }, IN_DM)).toBe(
      "This request needs about 45 GPU-seconds, more than direct messages' whole budget of 30 a day; ask for fewer images or steps, or ask an admin for a larger budget.",
    );
  });

  it('never says a request "needs about 0": an unknown cost is not mentioned, a tiny one is "less than 0.1"', () => {
    const refused = { admitted: false as const, scope: 'channel' as const, used: 600, inflight: 0, budget: 600, estimate: 0.04, resetsInMs: 30 * 60_000 };
    expect(budgetMessage(refused, IN_SERVER)).toBe('This channel has used 600 of its 600 GPU-seconds today; it resets at 00:00 UTC, in 30 min. This request needs less than 0.1.');
    expect(budgetMessage({ ...refused, estimate: 0 }, IN_SERVER)).toBe('This channel has used 600 of its 600 GPU-seconds today; it resets at 00:00 UTC, in 30 min.');
  });

  it('tells a request that waits for the first of its kind to be measured to send it again once that has finished', async () => {
    const usage = usageWith({ workspace: 600 });
    expect((await usage.admit('first', dest(), imagine('first'))).admitted).toBe(true); // nothing measured yet: it reserves 0
    const refused = await usage.admit('next', dest('c2', 'u2'), imagine('next', dest('c2', 'u2')));
    if (refused.admitted) throw new Error('a second unmeasured request admitted');
    expect(refused).toMatchObject({ scope: 'workspace', used: 0, inflight: 0, budget: 600, estimate: 0, awaitingMeasurement: true });
    const waitText = (has: string) =>
      `${has} a budget of 600 GPU-seconds a day, and what a request of this kind costs is known only once one has run: the first is queued or running now. Please send yours again when it has finished.`;
    expect(budgetMessage(refused, IN_SERVER)).toBe(waitText('This server has'));
    expect(budgetMessage(refused, IN_SLACK)).toBe(waitText('This workspace has'));
    expect(budgetMessage(refused, IN_DM)).toBe(waitText('Direct messages with this bot have'));
    expect(budgetMessage({ ...refused, scope: 'channel' }, IN_SERVER)).toBe(waitText('This channel has'));
    expect(budgetMessage({ ...refused, scope: 'user' }, IN_SLACK)).toBe(waitText('You have'));
    expect(budgetMessage(refused, IN_SERVER)).not.toMatch(/needs about 0/);
  });

  it('says when the request alone needs more than the whole budget, rather than to come back after the reset', async () => {
    const usage = usageWith({ user: 30 });
    await usage.settle(imagine('seed'), ended(45), 1); // such a request needs about 45; the budget is 30 a day
    const refused = await usage.admit('big', dest('c1', 'u2'), imagine('big', dest('c1', 'u2')));
    if (refused.admitted) throw new Error('admitted past the budget');
    expect(refused).toMatchObject({ scope: 'user', used: 0, inflight: 0, budget: 30, estimate: 45 });
    expect(budgetMessage(refused, IN_SERVER)).toBe(
      'This request needs about 45 GPU-seconds, more than your whole budget of 30 a day; ask for fewer images or steps, or ask an admin for a larger budget.',
    );
    expect(budgetMessage({ ...refused, scope: 'channel' }, IN_SLACK)).toBe(
      "This request needs about 45 GPU-seconds, more than this channel's whole budget of 30 a day; ask for fewer images or steps, or ask an admin for a larger budget.",
    );
  });
});
