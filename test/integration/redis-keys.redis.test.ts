// What a deployment leaves in Redis over time, as a self-hoster whose Redis runs for months meets it. Real @slack/bolt
// ↔ fake Slack, the real core on real Redis (its own prefix), a real worker process. Jobs of every kind and fate run
// in a channel without a retention TTL and in one with a TTL and no-log mode: /imagine, an /ask and a /describe, a
// failure, a retry, a cancel while queued and while running, an admin's purge of a user's jobs, a cache hit and a
// joined flight; and requests refused by the rate limits and by a budget. Then every key of the prefix is listed with
// its TTL, and each is matched to one pattern of the table below, which says how many of it there can be:
//   deployment  a fixed number per deployment (queues' bookkeeping, indexes whose members leave with their job)
//   scope       one per channel, user or workspace (or per day): must expire, unless an admin or user set it
//   job         one per job or request: must expire
// The test fails on a key no pattern knows, a per-job or per-scope key without a TTL (unless the table says why not),
// and anything naming a job of the retention channel once its TTL has passed.
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Invocation } from '../../bots/core/port.ts';
import { SHORTCUT_DESCRIBE } from '../../bots/slack/blocks.ts';
import { Usage } from '../../src/accounting/usage.ts';
import { channelKey, type SlackDestination } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, jobIdFor, type DeliveryQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { appMention, eventCallback, messageShortcut, slashCommand } from '../fakes/slack/payloads.ts';
import { until } from '../doubles/spine-harness.ts';
import { dumpPrefix, traces, tracesAfter } from '../doubles/redis-dump.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const OPEN = 'C0OPEN';
const SECRET = 'C0SECRET';
const LIMITED = 'C0LIMITED';
const BUDGETED = 'C0BUDGET';
const TTL_S = 3;
let h: SlackHarness;
let redis: Redis;
let deliveries: DeliveryQueue;

beforeAll(async () => {
  h = await startSlackHarness({
    mode: 'socket',
    pipelineExtra: { stepDelayMs: 5, maxSteps: 2, slowStepMs: 400, failures: { REFUSE: 'user', FLAKY: 'transient-once', SLOW: 'slow' } },
    config: {
      queue: { retentionSweepMs: 250 },
      limits: { channelOverrides: { [`slack:T0FAKE:${LIMITED}`]: { requestsPerWindow: 1, windowSeconds: 600, burst: 1, maxConcurrent: 0 } } },
    },
  });
  redis = createRedis(REDIS_URL, 'test-redis-keys');
  deliveries = createDeliveryQueue(h.config, redis, 'delivery-slack');
  await h.core.settings.set('channel', destination(SECRET, 'U0ADMIN'), { retentionSeconds: TTL_S, noLog: true });
  await new Usage(redis, h.config).setBudget('channel', channelKey(destination(BUDGETED, 'U0ADMIN')), 0.1);
}, 180_000);
afterAll(async () => {
  await deliveries?.close();
  await h?.stop();
  if (redis) await closeRedis(redis);
}, 30_000);

const destination = (channelId: string, userId: string): SlackDestination => ({ platform: 'slack', teamId: h.fake.teamId, channelId, userId });
const responses = () => h.fake.calls.filter((c) => c.kind === 'response_url').map((c) => JSON.stringify(c.args));

/** /imagine in `channel` as `user`: the job id it gets (a cache hit and a refusal get one too, though no job runs). */
async function imagine(channel: string, user: string, text: string): Promise<string> {
  h.fake.addUser(user);
  const payload = slashCommand(h.fake, { text, channel, user });
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
  return jobIdFor('slack', `cmd:${payload.trigger_id}`);
}

/** An app_mention question about an image, and "Describe this image" on the same message: their job ids. */
async function askAndDescribe(channel: string, user: string): Promise<[string, string]> {
  h.fake.addUser(user);
  const png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#3a7' } }).png().toBuffer());
  const m = h.fake.postUserMessage({ channel, user, text: `<@${h.fake.botUserId}> what colour is this?`, files: [h.fake.seedFile(png, 'g.png', 'image/png')] });
  await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
  const shortcut = messageShortcut(h.fake, { user, message: m, callbackId: SHORTCUT_DESCRIBE });
  await h.fake.link.ack(h.fake.sendEnvelope('interactive', shortcut));
  return [jobIdFor('slack', `msg:${channel}:${m.ts}`), jobIdFor('slack', `shortcut:${shortcut.trigger_id as string}`)];
}

const stateOf = async (id: string) => (await h.core.queue.getJob(id))?.getState();
const waitActive = (id: string) => until(async () => (await stateOf(id)) === 'active', 20_000, `job ${id} to start`);
const waitQueued = (id: string) => until(async () => ['waiting', 'prioritized', 'delayed'].includes((await stateOf(id)) ?? ''), 20_000, `job ${id} in line`);

/** What each request's delivery said (status, served from the cache or a flight), as finished() saw it. */
const outcomes = new Map<string, string>();

/** Until the job (if it ran) and its delivery have finished, or both are gone once either was seen (purged). */
async function finished(jobId: string, timeoutMs = 60_000): Promise<void> {
  const over = async (state: Promise<string> | undefined) => !state || ['completed', 'failed'].includes(await state);
  const end = Date.now() + timeoutMs;
  for (let seen = false; ; ) {
    const [job, delivery] = await Promise.all([h.core.queue.getJob(jobId), deliveries.getJob(jobId)]);
    if (delivery) outcomes.set(jobId, [delivery.data.status, delivery.data.servedFrom].filter(Boolean).join(' '));
    if (delivery && (await over(job?.getState())) && (await over(delivery.getState()))) return;
    if (seen && !job && !delivery) return;
    seen ||= job !== undefined || delivery !== undefined;
    if (Date.now() > end) throw new Error(`job ${jobId} did not finish: job ${await job?.getState()}, delivery ${await delivery?.getState()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const cancel = (jobId: string, channelId: string, userId: string) =>
  h.core.handle({ input: { command: 'cancel', jobId }, destination: destination(channelId, userId), dedupeKey: randomUUID(), isAdmin: false });
const purgeUser = (channelId: string, targetUserId: string) =>
  h.core.handle({ input: { command: 'queue', action: 'purge-user', targetUserId }, destination: destination(channelId, 'U0ADMIN'), dedupeKey: randomUUID(), isAdmin: true } satisfies Invocation);

/**
 * Every fate of a job in one channel; returns the ids of the requests made, in this order: success, the same again
 * (a cache hit where the channel has no TTL), ask, describe, failure, retry, cancelled running, identical to it
 * (joined where no TTL), cancelled queued, purged running, purged queued.
 */
async function everyFate(channel: string, tag: string, seed: number): Promise<string[]> {
  const ids: string[] = [];
  const ok = await imagine(channel, `U0OK${tag}`, `a lighthouse --seed ${seed}`);
  await finished(ok);
  await until(async () => (await stateOf(ok)) === 'completed' || (await stateOf(ok)) === undefined, 20_000, 'the first job to complete');
  const again = await imagine(channel, `U0AGAIN${tag}`, `a lighthouse --seed ${seed}`); // the cache (open channel only)
  ids.push(ok, again, ...(await askAndDescribe(channel, `U0ASK${tag}`)));
  ids.push(await imagine(channel, `U0FAIL${tag}`, `REFUSE a kite --seed ${seed + 1}`));
  ids.push(await imagine(channel, `U0RETRY${tag}`, `FLAKY a kite --seed ${seed + 2}`));
  for (const id of ids) await finished(id);

  // A slow job, an identical one (joins it in the open channel), one queued behind them: cancelled running and queued
  const slow = await imagine(channel, `U0SLOW${tag}`, `SLOW a heron --seed ${seed + 3}`);
  await waitActive(slow);
  const joined = await imagine(channel, `U0JOIN${tag}`, `SLOW a heron --seed ${seed + 3}`);
  const queued = await imagine(channel, `U0QUEUE${tag}`, `a dune --seed ${seed + 4}`);
  await waitQueued(queued);
  await cancel(queued, channel, `U0QUEUE${tag}`);
  await cancel(slow, channel, `U0SLOW${tag}`);
  ids.push(slow, joined, queued);
  for (const id of [slow, joined, queued]) await finished(id);

  // An admin purges a user's running job and the one queued behind it
  const running = await imagine(channel, `U0PURGED${tag}`, `SLOW a gull --seed ${seed + 5}`);
  await waitActive(running);
  const behind = await imagine(channel, `U0PURGED${tag}`, `a gull --seed ${seed + 6}`);
  await waitQueued(behind);
  await purgeUser(channel, `U0PURGED${tag}`);
  ids.push(running, behind);
  for (const id of [running, behind]) await finished(id);
  return ids;
}

/**
 * Every key the product writes, by how many of it there can be, as a pattern of the key after "<prefix>:".
 * `ttl`: 'required' (must expire), 'none' (may stay: bounded as `why` says), 'idle-gone' (exists only while jobs are
 * queued, running or being delivered: none may be left once all is quiet). `maxSeconds`: the longest TTL it may have.
 */
interface KeyKind {
  re: RegExp;
  count: 'deployment' | 'scope' | 'job';
  ttl: 'required' | 'none' | 'idle-gone';
  why: string;
  maxSeconds?: number;
}
const DAY = 86_400;
const KEY_KINDS: KeyKind[] = [
  // BullMQ's bookkeeping of each queue: counters, state sets and streams (capped), the stall check's timer
  { re: /^(jobs|delivery-slack|delivery-discord):(id|meta|events|stalled-check|completed|failed|wait|active|delayed|prioritized|paused|marker|pc|stalled|limiter)$/, count: 'deployment', ttl: 'none', why: "BullMQ's per-queue keys; finished jobs leave the sets with removeOn* ages, streams are capped" },
  // A BullMQ job (prompt, result): no TTL of its own, removed by the removeOn* age when a later job of its queue finishes
  { re: /^(jobs|delivery-slack|delivery-discord):j[0-9a-f]+$/, count: 'job', ttl: 'none', why: 'BullMQ removes a finished job once it is older than keepCompleted/keepFailedSeconds (checked when a later job finishes); a retention job at its TTL' },
  { re: /^(jobs|delivery-slack|delivery-discord):j[0-9a-f]+:lock$/, count: 'job', ttl: 'required', why: "a running job's lock" },
  { re: /^blob:(input|output):[0-9a-f-]{36}$/, count: 'job', ttl: 'required', why: 'images', maxSeconds: DAY },
  { re: /^(delivered|delivering|showing|delivery-claim|cancelled|slack:finished|\{usage\}:settled|failed-seen|\{cache\}:flight|\{cache\}:done):j[0-9a-f]+$/, count: 'job', ttl: 'required', why: 'per-job markers', maxSeconds: DAY },
  { re: /^(progress-owner|served):j[0-9a-f]+$/, count: 'job', ttl: 'required', why: 'progress takeover lease; a cache hit/joined reply kept for a repeated event', maxSeconds: 3_600 },
  { re: /^\{cache\}:e:[0-9a-f]+$/, count: 'job', ttl: 'required', why: 'cache entries, also evicted by cache.maxBytes', maxSeconds: 7 * DAY },
  { re: /^\{cache\}:(bytes|lru|sizes|exp)$/, count: 'deployment', ttl: 'none', why: "the cache's indexes: one member per entry held" },
  { re: /^\{cache\}:models$/, count: 'deployment', ttl: 'none', why: 'one member per live worker, dropped when it expires' },
  { re: /^\{cache\}:(f|w):[0-9a-f]+$/, count: 'job', ttl: 'idle-gone', why: 'a flight and its followers, closed when the job ends (short TTL until enqueued)' },
  { re: /^\{usage\}:d:\d+$/, count: 'scope', ttl: 'required', why: 'GPU-seconds per day per channel/user/workspace', maxSeconds: 90 * DAY },
  { re: /^\{usage\}:est$/, count: 'deployment', ttl: 'none', why: 'one field per kind and options signature (bounded by the options the config allows)' },
  { re: /^\{usage\}:budgets$/, count: 'scope', ttl: 'none', why: 'budgets an admin set, until reset' },
  { re: /^\{usage\}:(inflight|resv)$/, count: 'deployment', ttl: 'idle-gone', why: 'reservations of jobs admitted and not settled' },
  { re: /^limits:rate:(channel|user|workspace):.+$/, count: 'scope', ttl: 'required', why: 'token buckets: gone once full again', maxSeconds: 30 * DAY },
  { re: /^limits:(conc:(channel|user|workspace):.+|leases|lease-keys)$/, count: 'scope', ttl: 'idle-gone', why: 'slots held by queued or running jobs' },
  { re: /^limits:ovr:.+$/, count: 'scope', ttl: 'none', why: 'a channel limit an admin set, until reset' },
  { re: /^checks:override:.+$/, count: 'scope', ttl: 'none', why: "a channel's check policy an admin set, until reset" },
  { re: /^settings:(user|channel):.+$/, count: 'scope', ttl: 'none', why: 'defaults a user or an admin saved, until reset' },
  { re: /^sched:.+$/, count: 'deployment', ttl: 'idle-gone', why: "fair scheduling's state: emptied with each channel's line" },
  { re: /^retention$/, count: 'deployment', ttl: 'idle-gone', why: 'retention jobs not purged yet' },
  { re: /^progress-alive$/, count: 'deployment', ttl: 'required', why: 'one field per bot instance', maxSeconds: 120 },
  { re: /^replica-fence$/, count: 'deployment', ttl: 'none', why: 'one key' },
  { re: /^slack:told:[0-9a-f]{40}$/, count: 'job', ttl: 'required', why: 'a hint told once per Slack event', maxSeconds: 3_600 },
  { re: /^discord-asked-copy:(target|job):\d+|discord-asked-copy:job:j[0-9a-f]+$/, count: 'job', ttl: 'required', why: "where an Ask form's copies are", maxSeconds: 30 * DAY },
  { re: /^discord-identify:.+$/, count: 'deployment', ttl: 'required', why: 'shard identify buckets' },
];

/** What is wrong with the keys left: unknown ones, ones that must expire and do not, or live longer than they may. */
function problems(keys: readonly { key: string; pttl: number }[], idle: boolean): string[] {
  return keys.flatMap(({ key, pttl }) => {
    const kind = KEY_KINDS.find((k) => k.re.test(key));
    if (!kind) return [`${key}: no pattern knows it`];
    if (kind.ttl === 'required' && pttl < 0) return [`${key}: ${kind.count} key without a TTL (${kind.why})`];
    if (kind.maxSeconds !== undefined && pttl > kind.maxSeconds * 1000) return [`${key}: TTL ${Math.round(pttl / 1000)} s, more than ${kind.maxSeconds} s`];
    if (idle && kind.ttl === 'idle-gone') return [`${key}: left once nothing is queued or running (${kind.why})`];
    return [];
  });
}

const openJobs: string[] = [];
const secretJobs: string[] = [];

describe('what stays in Redis', () => {
  it('every kind and fate of job, with and without a retention TTL, and requests refused: nothing of the TTL channel after it, every other per-job key expires', async () => {
    openJobs.push(...(await everyFate(OPEN, 'O', 100)));
    secretJobs.push(...(await everyFate(SECRET, 'S', 200)));
    // Each fate happened as meant: in the open channel the repeat is a cache hit and the identical request joins the
    // slow job (its follower is told that job was cancelled); the TTL channel's run on their own
    const fates = (ids: string[]) => ids.map((id) => outcomes.get(id));
    const ended = ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'failed', 'succeeded', 'cancelled', 'succeeded', 'cancelled', 'cancelled', 'cancelled'];
    expect(fates(openJobs)).toEqual(ended.map((o, i) => (i === 1 ? 'succeeded cache' : i === 7 ? 'failed shared' : o)));
    expect(fates(secretJobs)).toEqual(ended);
    // Refused by the rate limits (the second) and by a budget (a learned estimate is above the channel's budget)
    const before = responses().length;
    const admitted = await imagine(LIMITED, 'U0LIMIT', 'a crane --seed 301');
    await finished(admitted); // before the next: Slack's two commands could be handled in either order
    openJobs.push(admitted, await imagine(LIMITED, 'U0LIMIT', 'a crane --seed 302'), await imagine(BUDGETED, 'U0BUDGET', 'a crane --seed 303'));
    await until(() => responses().slice(before).some((r) => /allows \d+ request/.test(r)), 15_000, 'the rate refusal');
    await until(() => responses().slice(before).some((r) => /GPU-seconds/.test(r)), 15_000, 'the budget refusal');

    // Once the TTL has passed: nothing names a job of the retention channel (each was seen in Redis: finished() waited on it)
    const left = await tracesAfter(async () => traces(await dumpPrefix(redis, h.prefix), secretJobs), 90_000);
    expect(left).toEqual([]);
    // Quiet now: every key left is known, expires if it must, and nothing of queued or running work remains
    const keys = await Promise.all((await dumpPrefix(redis, h.prefix)).map(async (d) => ({ key: d.key.slice(h.prefix.length + 1), pttl: await redis.pttl(d.key) })));
    expect(keys.filter((k) => openJobs.some((id) => k.key.includes(id))).length).toBeGreaterThan(0); // the open channel's are there to check
    expect(problems(keys, true)).toEqual([]);
  }, 400_000);

  it('the table can fail: an unknown key, a per-job key without a TTL or longer than it may, work left when quiet', () => {
    expect(problems([
      { key: 'cancelled:j0123abcd', pttl: -1 },
      { key: '{usage}:settled:j0123abcd', pttl: 3 * 86_400_000 },
      { key: 'something:new', pttl: 1000 },
      { key: 'sched:jobs', pttl: -1 },
      { key: 'settings:user:slack:T0:U0', pttl: -1 },
    ], true)).toEqual([
      'cancelled:j0123abcd: job key without a TTL (per-job markers)',
      '{usage}:settled:j0123abcd: TTL 259200 s, more than 86400 s',
      'something:new: no pattern knows it',
      "sched:jobs: left once nothing is queued or running (fair scheduling's state: emptied with each channel's line)",
    ]);
  });
});
