// The load the failover tests put on a deployment (redis-sentinel, redis-cluster-failover): in-process CLI cores
// submitting /imagine requests while a Redis process is killed, then the checks every such test makes: refusals are
// the plain retry message, every accepted job is delivered exactly once to the client that asked, and each one that
// never arrived is printed with what Redis and the worker know of it (jobState).
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation, Reply } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import type { CliDestination } from '../../src/jobs/contract.ts';
import { jobIdFor } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, scanKeys, type Redis } from '../../src/redis.ts';
import { RecordingPort, runs, stopProcess, type Harness, type Proc } from './spine-harness.ts';

export interface LoadClient {
  clientId: string;
  port: RecordingPort;
  core: Core;
}

export type Submitted = { i: number; reply: Reply };

/** The cores, then the worker, then the Redis processes: what a failover test started. */
export async function stopAll(clients: readonly LoadClient[], worker: Proc | undefined, redis: { stop(): Promise<void> } | undefined): Promise<void> {
  for (const c of clients) await c.core.stop().catch(() => undefined);
  await stopProcess(worker);
  await redis?.stop();
}

/** `n` CLI cores on `url`, started. */
export async function startClients(h: Harness, url: string, n: number): Promise<LoadClient[]> {
  const secrets = loadSecrets({ REDIS_URL: url });
  const clients: LoadClient[] = [];
  for (let i = 0; i < n; i++) {
    const clientId = randomUUID();
    const port = new RecordingPort('cli');
    const core = createCore({ config: h.config, secrets, ports: [port], cliClientId: clientId });
    await core.start();
    clients.push({ clientId, port, core });
  }
  return clients;
}

/** Request `i` ("fox <i>", seed i), from client i mod n, in a channel of its own client with a few users. */
export function submit(clients: readonly LoadClient[], i: number): Promise<Submitted> {
  const c = clients[i % clients.length]!;
  const destination: CliDestination = { platform: 'cli', clientId: c.clientId, channelId: 'local', userId: `u${i % 7}` };
  const inv: Invocation = { input: { command: 'imagine', prompt: `fox ${i}`, seed: i, ditSteps: 4, decoderSteps: 4 }, destination, dedupeKey: `k${i}`, isAdmin: false };
  return c.core.handle(inv).then((reply) => ({ i, reply }));
}

/**
 * Requests `from`…`from + count - 1`, one every 20 ms; once the first `killAfter` are answered, `kill()`. Resolves with
 * every reply, when the kill happened, and how long after it the last reply came.
 */
export async function loadAcrossKill(clients: readonly LoadClient[], from: number, count: number, killAfter: number, kill: () => Promise<void>): Promise<{ replies: Submitted[]; killedAt: number; answeredMs: number }> {
  const pending: Promise<Submitted>[] = [];
  let killedAt = 0;
  for (let i = from; i < from + count; i++) {
    pending.push(submit(clients, i));
    if (i === from + killAfter) {
      await Promise.all(pending.slice(0, killAfter)); // the first ones answered (accepted, as the caller checks)
      await kill();
      killedAt = Date.now();
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const replies = await Promise.all(pending);
  return { replies, killedAt, answeredMs: Date.now() - killedAt };
}

/**
 * What every failover test requires of `replies`: each is "queued" or the plain retry message (never half-accepted,
 * never "Something went wrong"), and every accepted job is delivered once, to the client that asked, and was run.
 * Prints `label`'s counts and the time from `killedAt` to the last delivery. Returns the accepted ones.
 */
export async function expectDeliveredOnce(ctx: { label: string; h: Harness; url: string; clients: readonly LoadClient[]; worker?: Proc }, replies: readonly Submitted[], killedAt: number): Promise<{ i: number; jobId: string }[]> {
  const { label, h, url, clients, worker } = ctx;
  const accepted = replies.filter((r) => r.reply.kind === 'queued').map((r) => ({ i: r.i, jobId: (r.reply as { jobId: string }).jobId }));
  const refused = replies.filter((r) => r.reply.kind !== 'queued');
  // A request that meets the failover head-on may be refused, plainly; it is never half-accepted.
  for (const text of new Set(refused.map((r) => (r.reply as { text: string }).text))) expect(text).toMatch(/^I lost my connection to the job queue for a moment/);
  console.log(`${label}: ${accepted.length} accepted, ${refused.length} refused with the retry message`);
  const missing: typeof accepted = [];
  await Promise.all(accepted.map((a) => clients[a.i % clients.length]!.port.waitFor(a.jobId, 120_000).catch(() => missing.push(a))));
  console.log(`${label}: every accepted job delivered by ${Date.now() - killedAt} ms after the kill`);
  if (missing.length > 0) {
    // What Redis and the worker know of each job never delivered: which step of its way it stopped at.
    const r: Redis = createRedis(url, 'failover-dump');
    for (const { i, jobId } of missing) console.log(await jobState(r, h.config.queue.prefix, jobId, clients[i % clients.length]!.clientId, worker?.output() ?? ''));
    await closeRedis(r);
  }
  expect(missing.map((a) => a.i), 'accepted jobs never delivered').toEqual([]);
  await new Promise((r) => setTimeout(r, 1_500)); // let a duplicate arrive, if one were coming
  for (const { i, jobId } of accepted) {
    const owner = clients[i % clients.length]!;
    expect(owner.port.count(jobId), `job ${i}`).toBe(1);
    for (const other of clients) if (other !== owner) expect(other.port.count(jobId)).toBe(0);
    expect(owner.port.deliveries.find((d) => d.result.jobId === jobId)!.result.status).toBe('succeeded');
  }
  // Runs may repeat (a job whose completion was not replicated runs again); deliveries never do.
  const ran = runs(h).filter((r) => r.kind === 'generate').map((r) => r.prompt);
  for (const { i } of accepted) expect(ran).toContain(`fox ${i}`);
  // A refusal says "Nothing was queued": then no job exists, none ran, none was delivered. (Before the tenth pass a
  // request whose add reached Redis just before the connection failed was refused, and its job ran anyway.)
  const probe: Redis = createRedis(url, 'failover-refused');
  for (const { i } of refused) {
    const jobId = jobIdFor('cli', `k${i}`);
    const exists = await probe.exists(`${h.config.queue.prefix}:jobs:${jobId}`);
    // Which step of its way a refused request's job got to, and what the core logged of it, before the failure.
    if (exists !== 0) console.log(`refused request ${i} (${refusedText(replies, i)}):\n${await jobState(probe, h.config.queue.prefix, jobId, clients[i % clients.length]!.clientId, worker?.output() ?? '')}`);
    expect(exists, `refused request ${i}: its job exists`).toBe(0);
    expect(ran, `refused request ${i} ran`).not.toContain(`fox ${i}`);
    for (const c of clients) expect(c.port.count(jobId), `refused request ${i} delivered`).toBe(0);
  }
  await closeRedis(probe);
  console.log(`${label}: ${ran.length} runs so far (a job whose completion the replica had not yet got runs again)`);
  return accepted;
}

const refusedText = (replies: readonly Submitted[], i: number): string => (replies.find((r) => r.i === i)!.reply as { text: string }).text;

/** One more request after the failover: accepted and delivered once (the deployment recovered by itself). */
export async function expectServedAfter(clients: readonly LoadClient[], i: number): Promise<void> {
  const late = await submit(clients, i);
  expect(late.reply.kind).toBe('queued');
  const jobId = (late.reply as { jobId: string }).jobId;
  await clients[i % clients.length]!.port.waitFor(jobId, 120_000);
  expect(clients[i % clients.length]!.port.count(jobId)).toBe(1);
}

/** Everything Redis and the worker know of a job: its keys under the prefix, where BullMQ and the scheduler have it. */
async function jobState(r: Redis, P: string, jobId: string, clientId: string, workerOutput: string): Promise<string> {
  const lines: string[] = [];
  const show = async (key: string): Promise<string> => {
    const type = await r.type(key);
    const ttl = await r.pttl(key);
    const value =
      type === 'hash' ? JSON.stringify(Object.fromEntries(Object.entries(await r.hgetall(key)).map(([f, v]) => [f, v.slice(0, 120)]))) // job hashes: every field, cut
      : type === 'string' ? String(await r.get(key))
      : type === 'list' ? JSON.stringify(await r.lrange(key, 0, -1))
      : type === 'zset' ? JSON.stringify(await r.zrange(key, '0', '-1', 'WITHSCORES'))
      : type === 'set' ? JSON.stringify(await r.smembers(key))
      : `(${type})`;
    return `${type} pttl=${ttl} ${value.slice(0, 1500)}`;
  };
  for await (const keys of scanKeys(r, `${P}:*${jobId}*`)) for (const key of keys.sort()) lines.push(`  ${key}: ${await show(key)}`);
  for (const q of [`${P}:jobs`, `${P}:delivery-cli-${clientId}`]) {
    const where: string[] = [];
    for (const list of ['wait', 'active', 'paused']) if ((await r.lpos(`${q}:${list}`, jobId)) !== null) where.push(list);
    for (const zset of ['prioritized', 'delayed', 'completed', 'failed']) if ((await r.zscore(`${q}:${zset}`, jobId)) !== null) where.push(zset);
    if (await r.sismember(`${q}:stalled`, jobId)) where.push('stalled');
    lines.push(`  ${q}: in [${where.join(', ')}]; stalled-check pttl=${await r.pttl(`${q}:stalled-check`)}`);
  }
  const entry = await r.hget(`${P}:sched:jobs`, jobId);
  const ck = entry?.split('\n')[0];
  if (ck) lines.push(`  sched q:${ck} = ${JSON.stringify(await r.zrange(`${P}:sched:q:${ck}`, '0', '-1', 'WITHSCORES'))}`);
  lines.push(`  sched: jobs=${JSON.stringify(entry)} heads=${JSON.stringify(await r.hgetall(`${P}:sched:heads`))} tags=${JSON.stringify(await r.zrange(`${P}:sched:tags`, '0', '-1', 'WITHSCORES'))} vclock=${await r.get(`${P}:sched:vclock`)}`);
  const log = workerOutput.split('\n').filter((l) => l.includes(jobId));
  lines.push(`  worker log:\n    ${log.join('\n    ')}`);
  return `job ${jobId}:\n${lines.join('\n')}`;
}
