// The core's result cache and single flight over real Redis (docs/cost.md): an identical request joins the one
// queued before it, or is served from the cache, without a job or a slot of its own; a flight claimed between the
// lookup and the claim is joined too; a leader that fails to enqueue, or is cancelled, tells its followers. Also the
// acceptReplicas WAIT after enqueueing, the progress routing per platform, which images a refusal deletes, and that an
// /ask served from the cache releases its upload.
import { describe, expect, it, vi } from 'vitest';
import type { Invocation, PlatformPort } from '../../../../bots/core/port.ts';
import { CACHED_TEXT, createCore, JOINED_TEXT, portForDestination, type Core } from '../../../../bots/core/submit.ts';
import { progressIntervalMs } from '../../../../src/jobs/progress.ts';
import { DeliveryQueues, JOINED_CANCELLED } from '../../../../src/cache/fanout.ts';
import { cacheAddress } from '../../../doubles/cache-address.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination, DiscordDestination, JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import type { Logger } from '../../../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';
import { dieAt } from '../../../doubles/crash-point.ts';
import { capturedLog, coreDest as dest, coreHarness, invocation as inv, OPEN_LIMIT, REDIS_URL, SILENT_LOG } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-flight');
const { core, handedOver } = h;
const imagine = (prompt = 'a fox', seed = 7): Invocation['input'] => ({ command: 'imagine', prompt, seed });

const jobCount = async (c: Core) => Object.values(await c.queue.getJobCounts()).reduce((a, b) => a + b, 0);
const blobKeys = (c: Core) => h.redis.keys(`${c.config.queue.prefix}:blob:input:*`);

describe('single flight', () => {
  it('an identical request joins the queued one: no job, no slot; a repeat of it and a re-roll of it still work', async () => {
    const c = core({}, { limits: { user: { ...OPEN_LIMIT, maxConcurrent: 1 } } });
    await c.cache.publishModel('a-model', 'a-worker'); // a worker is running
    const first = await c.handle(inv(imagine()));
    expect(first).toMatchObject({ kind: 'queued', position: 1 });
    const second = inv(imagine(' a  fox ')); // the same request once normalised
    const joined = await c.handle(second);
    const id = jobIdFor('discord', second.dedupeKey);
    expect(joined).toEqual({ kind: 'queued', jobId: id, position: 0, text: JOINED_TEXT }); // not refused by the cap of 1
    expect(await jobCount(c)).toBe(1);
    expect(await c.handle({ ...second })).toEqual(joined); // the same interaction again: the same answer, still one job
    expect(await jobCount(c)).toBe(1);
    // A re-roll of the joined request reads it from what was served (it has no job); u1's one slot is taken, so
    // u2 asks for it.
    const reroll = (await c.handle(inv({ command: 'reroll', jobId: id }, { destination: dest('u2') }))) as { jobId: string; text: string };
    expect(reroll.text).toBe('Queued: 2nd in line.');
    expect((await c.queue.getJob(reroll.jobId))?.data).toMatchObject({ kind: 'imagine', prompt: 'a  fox' }); // its own words
  });

  it('a vary that joins an identical one keeps its upload only while it can be re-rolled, and its Re-roll works', async () => {
    const c = core();
    const vary = () => inv({ command: 'vary', image: { bytes: h.png }, prompt: 'in the rain', seed: 3 });
    expect(await c.handle(vary())).toMatchObject({ kind: 'queued', position: 1 });
    const second = vary();
    expect(await c.handle(second)).toMatchObject({ kind: 'queued', text: JOINED_TEXT });
    const id = jobIdFor('discord', second.dedupeKey);
    const served = JSON.parse((await h.redis.get(`${c.config.queue.prefix}:served:${id}`))!) as { request: Extract<JobRequest, { kind: 'vary' }> };
    await vi.waitFor(async () => expect(await h.redis.ttl(served.request.imageKey)).toBeLessThanOrEqual(c.config.queue.keepCompletedSeconds));
    expect(await h.redis.ttl(served.request.imageKey)).toBeGreaterThan(c.config.blobs.keepDeliveredSeconds); // not an ask's 2 min
    const reroll = (await c.handle(inv({ command: 'reroll', jobId: id }))) as { jobId: string };
    expect((await c.queue.getJob(reroll.jobId))?.data).toMatchObject({ kind: 'vary', imageKey: `${served.request.imageKey}:${reroll.jobId}` });
  });

  it('a queued leader\'s flight lives as long as its job can, not just the admission grace', async () => {
    const c = core();
    const first = (await c.handle(inv(imagine('a confirmed fox')))) as { jobId: string };
    const digest = await cacheAddress(c, (await c.queue.getJob(first.jobId))!.data);
    const ttl = await h.redis.pttl(`${c.config.queue.prefix}:{cache}:f:${digest}`);
    expect(ttl).toBeGreaterThan(c.config.limits.admitGraceMs); // confirmed: claim() set only the grace
  });

  it('counts a joined request as a cache hit in the usage report', async () => {
    const c = core();
    await c.handle(inv(imagine('an owl')));
    await c.handle(inv(imagine('an owl')));
    const { channels } = await c.gate.usage.report(1, 'discord:g:');
    expect(channels.map((r) => [r.id, r.hits])).toEqual([['discord:g:c1', 1]]);
  });

  it('joins a flight claimed between its lookup and its claim, giving its slot back', async () => {
    let race: (() => Promise<void>) | undefined;
    const c = core({ admit: async () => race?.() }, { limits: { user: { ...OPEN_LIMIT, maxConcurrent: 1 } } });
    const mine = inv(imagine('a heron'));
    race = async () => {
      race = undefined;
      // Another bot instance claims the same digest now, after this request's lookup missed.
      const twin = await c.handle(inv(imagine('a heron'), { destination: dest('u2') }));
      expect(twin).toMatchObject({ kind: 'queued', position: 1 });
    };
    expect(await c.handle(mine)).toEqual({ kind: 'queued', jobId: jobIdFor('discord', mine.dedupeKey), position: 0, text: JOINED_TEXT });
    expect(await jobCount(c)).toBe(1);
    expect(await c.handle(inv(imagine('another')))).toMatchObject({ kind: 'queued' }); // u1's one slot was given back
  });

  it('joins a flight claimed between its lookup and its claim without spending a rate token, as a join at the lookup spends none', async () => {
    let race: (() => Promise<void>) | undefined;
    const c = core({ admit: async () => race?.() }, { limits: { user: { requestsPerWindow: 1, windowSeconds: 3_600, burst: 1, maxConcurrent: 0 } } });
    race = async () => {
      race = undefined;
      expect(await c.handle(inv(imagine('a grebe'), { destination: dest('u2') }))).toMatchObject({ kind: 'queued', position: 1 });
    };
    expect(await c.handle(inv(imagine('a grebe')))).toMatchObject({ kind: 'queued', text: JOINED_TEXT });
    // u1's one request an hour is still there (before: refused, "try again in 60 min", for a request that ran nothing)
    expect(await c.handle(inv(imagine('a loon')))).toMatchObject({ kind: 'queued', position: 2 });
  });

  it('tells the followers when their leader fails to enqueue', async () => {
    let follower: Invocation | undefined;
    const c = core({
      jobOptions: async () => {
        if (follower) return {};
        follower = inv(imagine('a crane'), { destination: dest('u2') });
        expect(await c.handle(follower)).toMatchObject({ text: JOINED_TEXT }); // joins while the leader is enqueueing
        throw new Error('redis blip');
      },
    });
    expect(await c.handle(inv(imagine('a crane')))).toMatchObject({ kind: 'error', text: expect.stringMatching(/^Something went wrong/) });
    const told = await handedOver(c, jobIdFor('discord', follower!.dedupeKey));
    expect(told).toMatchObject({
      status: 'failed', destination: dest('u2'),
      error: { code: 'internal', message: 'Something went wrong with the identical request yours joined; please send yours again.', userFacing: true },
    });
    expect(await c.handle(inv(imagine('a crane')))).toMatchObject({ kind: 'queued', position: 1 }); // the flight is free again
  });

  it('tells the followers when their leader is cancelled before it runs', async () => {
    const c = core();
    const leader = (await c.handle(inv(imagine('a stork')))) as { jobId: string };
    const f = inv(imagine('a stork'), { destination: dest('u2') });
    await c.handle(f);
    await c.handle(inv({ command: 'cancel', jobId: leader.jobId }));
    expect(await handedOver(c, leader.jobId)).toMatchObject({ status: 'cancelled' });
    expect(await handedOver(c, jobIdFor('discord', f.dedupeKey))).toMatchObject({
      status: 'failed', destination: dest('u2'), error: { code: 'cancelled', message: JOINED_CANCELLED },
    });
  });

  it('a channel with a retention TTL neither joins nor is joined', async () => {
    const c = core();
    await c.settings.set('channel', dest(), { retentionSeconds: 3600 });
    const a = await c.handle(inv(imagine('a wren')));
    const b = await c.handle(inv(imagine('a wren')));
    expect([a, b]).toMatchObject([{ position: 1 }, { position: 2 }]);
  });
});

describe('result cache', () => {
  it('serves an identical image from the cache: its own delivery with a new blob, no job', async () => {
    const c = core();
    await c.cache.publishModel('model-a', 'worker-1'); // the workers' model, read once and kept for manifestRefreshMs
    const first = (await c.handle(inv(imagine('a lynx')))) as { jobId: string };
    const request = (await c.queue.getJob(first.jobId))!.data as JobRequest;
    const digest = (await cacheAddress(c, request))!;
    await c.cache.put('model-a', digest, { kind: 'image', width: 32, height: 32 }, h.png);
    const again = inv(imagine('a lynx'), { destination: dest('u3') });
    const id = jobIdFor('discord', again.dedupeKey);
    expect(await c.handle(again)).toEqual({ kind: 'queued', jobId: id, position: 0, text: CACHED_TEXT });
    expect(await jobCount(c)).toBe(1);
    const result = await handedOver(c, id);
    expect(result).toMatchObject({
      jobId: id, status: 'succeeded', servedFrom: 'cache', destination: dest('u3'),
      image: { mime: 'image/png', width: 32, height: 32, altText: 'a lynx', prompt: 'a lynx', options: request.options },
    });
    expect(await c.blobs.get(result!.image!.blobKey)).toEqual(h.png);
    expect(await c.handle({ ...again })).toMatchObject({ text: CACHED_TEXT }); // a repeat of the interaction
    const reroll = await c.handle(inv({ command: 'reroll', jobId: id })); // re-rolled from what was served
    expect(reroll).toMatchObject({ kind: 'queued', position: 2 });
  });

  it('a bot that dies between handing a cached result over and recording it served: the platform\'s retry gets it delivered', async () => {
    const c = core();
    await c.cache.publishModel('model-a', 'worker-1');
    const first = (await c.handle(inv(imagine('a lynx')))) as { jobId: string };
    const request = (await c.queue.getJob(first.jobId))!.data as JobRequest;
    await c.cache.put('model-a', (await cacheAddress(c, request))!, { kind: 'image', width: 32, height: 32 }, h.png);
    // the first bot dies in its hand-over of the cached result
    const handOver = dieAt(DeliveryQueues.prototype, 'handOver');
    const again = inv(imagine('a lynx'), { destination: dest('u-retry') });
    const id = jobIdFor('discord', again.dedupeKey);
    try {
      void c.handle(again);
      await handOver.reached;
    } finally {
      handOver.restore();
    }
    const restarted = createCore({ config: c.config, secrets: { REDIS_URL }, ports: [], redis: h.redis, log: SILENT_LOG });
    expect(await restarted.handle({ ...again })).toMatchObject({ jobId: id, text: CACHED_TEXT });
    // before: the retry read the served record (written first), promised a delivery, and none was handed over
    expect(await handedOver(restarted, id)).toMatchObject({ jobId: id, status: 'succeeded', servedFrom: 'cache' });
    await restarted.stop();
  });

  it('serves an identical greedy question from the cache as an answer', async () => {
    const c = core();
    const ask = () => inv({ command: 'ask', question: 'what colour?', image: { bytes: h.png } }); // greedy by default: cacheable
    await c.cache.publishModel('model-a', 'worker-1'); // the workers' model, read once and kept for manifestRefreshMs
    const first = (await c.handle(ask())) as { jobId: string };
    const request = (await c.queue.getJob(first.jobId))!.data as JobRequest;
    const digest = await cacheAddress(c, request);
    expect(digest).toBeDefined();
    await c.cache.put('model-a', digest!, { kind: 'answer', text: 'teal', tokenCount: 2 });
    const again = ask();
    const id = jobIdFor('discord', again.dedupeKey);
    expect(await c.handle(again)).toMatchObject({ jobId: id, position: 0, text: CACHED_TEXT });
    expect(await handedOver(c, id)).toMatchObject({ status: 'succeeded', servedFrom: 'cache', answer: { text: 'teal', tokenCount: 2 } });
    // its upload is released (nothing reads it: the answer was cached), the queued one's is kept for its job
    const served = JSON.parse((await h.redis.get(`${c.config.queue.prefix}:served:${id}`))!) as { request: Extract<JobRequest, { kind: 'ask' }> };
    await vi.waitFor(async () => expect(await h.redis.ttl(served.request.imageKey)).toBeLessThanOrEqual(c.config.blobs.keepDeliveredSeconds));
    expect(await h.redis.ttl((request as Extract<JobRequest, { kind: 'ask' }>).imageKey)).toBeGreaterThan(c.config.blobs.keepDeliveredSeconds);
  });
  it('looks the cache up in the admission script when no admit hook sits in between; a hook keeps its own lookup first', async () => {
    const c = core({}, { limits: { user: { ...OPEN_LIMIT, maxConcurrent: 1 } } });
    const seen: string[] = [];
    c.cache.observer = (o) => seen.push(o);
    const own = vi.spyOn(c.cache, 'lookup');
    await c.cache.publishModel('model-a', 'worker-1');
    const first = (await c.handle(inv(imagine('a vole')))) as { jobId: string };
    expect(await c.handle(inv(imagine('a vole'), { destination: dest('u2') }))).toMatchObject({ text: JOINED_TEXT });
    const refused = await c.handle(inv(imagine('a mole'))); // u1's one slot is the vole's
    expect(refused).toMatchObject({ kind: 'error' });
    const digest = (await cacheAddress(c, (await c.queue.getJob(first.jobId))!.data))!;
    await c.cache.put('model-a', digest, { kind: 'image', width: 32, height: 32 }, h.png);
    expect(await c.handle(inv(imagine('a vole'), { destination: dest('u3') }))).toMatchObject({ text: CACHED_TEXT });
    expect(seen).toEqual(['miss', 'joined', 'miss', 'hit']); // each lookup counted once, the refused one too
    expect(own).not.toHaveBeenCalled(); // no lookup round trip of its own

    const hooked = core({ admit: async () => undefined });
    const hookedOwn = vi.spyOn(hooked.cache, 'lookup');
    await hooked.handle(inv(imagine('a shrew')));
    expect(hookedOwn).toHaveBeenCalledTimes(1);
  });
});

// Found by an audit (2026-12-08): entries and flights were shared by the whole deployment, so "Found in the cache", "joined"
// and the instant delivery told one server what someone in another had asked (a typed seed makes a prompt guessable).
describe('tenants: results are shared within one server, workspace or user\'s DMs (cache.shareAcrossWorkspaces)', () => {
  const inGuild = (guildId: string | null, userId = 'u1'): Destination => ({ ...(dest(userId) as DiscordDestination), guildId });
  async function leadAndCache(c: Core, prompt: string, where: Destination): Promise<void> {
    const first = (await c.handle(inv(imagine(prompt), { destination: where }))) as { jobId: string };
    expect(first).toMatchObject({ kind: 'queued', position: expect.any(Number) });
    const digest = (await cacheAddress(c, (await c.queue.getJob(first.jobId))!.data))!;
    await c.cache.put('model-a', digest, { kind: 'image', width: 32, height: 32 }, h.png);
  }

  it('a request in guild g2 neither joins the flight of, nor is served the cached result of, an identical one in g1', async () => {
    const c = core();
    await c.cache.publishModel('model-a', 'worker-1');
    expect(await c.handle(inv(imagine('a badger'), { destination: inGuild('g1') }))).toMatchObject({ kind: 'queued', position: 1 });
    expect(await c.handle(inv(imagine('a badger'), { destination: inGuild('g1', 'u2') }))).toMatchObject({ text: JOINED_TEXT }); // same guild: joins
    expect(await c.handle(inv(imagine('a badger'), { destination: inGuild('g2', 'u3') }))).toMatchObject({ kind: 'queued', position: 2 }); // a job of its own

    await leadAndCache(c, 'a marmot', inGuild('g1'));
    expect(await c.handle(inv(imagine('a marmot'), { destination: inGuild('g1', 'u2') }))).toMatchObject({ text: CACHED_TEXT });
    const elsewhere = await c.handle(inv(imagine('a marmot'), { destination: inGuild('g2', 'u3') }));
    expect(elsewhere).toMatchObject({ kind: 'queued', position: expect.any(Number) });
    expect(elsewhere).not.toMatchObject({ text: CACHED_TEXT });
    expect(await jobCount(c)).toBe(4); // badger g1, badger g2, marmot g1, marmot g2
  });

  it('one user\'s DMs with the bot share nothing with another user\'s, nor with a guild', async () => {
    const c = core();
    await c.cache.publishModel('model-a', 'worker-1');
    await leadAndCache(c, 'a hedgehog', inGuild(null, 'u1'));
    expect(await c.handle(inv(imagine('a hedgehog'), { destination: { ...inGuild(null, 'u1'), channelId: 'dm-other' } }))).toMatchObject({ text: CACHED_TEXT });
    expect(await c.handle(inv(imagine('a hedgehog'), { destination: inGuild(null, 'u2') }))).not.toMatchObject({ text: CACHED_TEXT });
    expect(await c.handle(inv(imagine('a hedgehog'), { destination: inGuild('g1', 'u1') }))).not.toMatchObject({ text: CACHED_TEXT });
  });

  it('with cache.shareAcrossWorkspaces on, g2 joins g1\'s flight and is served g1\'s cached result', async () => {
    const c = core({}, { cache: { shareAcrossWorkspaces: true } });
    await c.cache.publishModel('model-a', 'worker-1');
    expect(await c.handle(inv(imagine('a badger'), { destination: inGuild('g1') }))).toMatchObject({ kind: 'queued', position: 1 });
    expect(await c.handle(inv(imagine('a badger'), { destination: inGuild('g2', 'u3') }))).toMatchObject({ text: JOINED_TEXT });
    await leadAndCache(c, 'a marmot', inGuild('g1'));
    expect(await c.handle(inv(imagine('a marmot'), { destination: inGuild('g2', 'u3') }))).toMatchObject({ text: CACHED_TEXT });
    expect(await c.handle(inv(imagine('a marmot'), { destination: inGuild(null, 'u4') }))).toMatchObject({ text: CACHED_TEXT });
  });
});

describe('input images', () => {
  it('deletes a stored image when the request is refused, and keeps it once enqueueing began', async () => {
    const refused = core({ admit: async () => Promise.reject(new Error('no')) });
    expect(await refused.handle(inv({ command: 'vary', image: { bytes: h.png } }))).toMatchObject({ kind: 'error' });
    expect(await blobKeys(refused)).toEqual([]);
    const failing = core({ jobOptions: async () => Promise.reject(new Error('redis blip')) });
    expect(await failing.handle(inv({ command: 'vary', image: { bytes: h.png } }))).toMatchObject({ kind: 'error' });
    expect(await blobKeys(failing)).toHaveLength(1); // a job may exist and read it; its TTL cleans it up
  });

  it('deletes the copy a refused Re-roll of a vary made, and keeps the original', async () => {
    let refuse = false;
    const c = core({ admit: async () => (refuse ? Promise.reject(new Error('no')) : undefined) });
    const v = (await c.handle(inv({ command: 'vary', image: { bytes: h.png } }))) as { jobId: string };
    refuse = true;
    expect(await c.handle(inv({ command: 'reroll', jobId: v.jobId }))).toMatchObject({ kind: 'error' });
    expect(await blobKeys(c)).toEqual([(await h.data(c, v.jobId) as Extract<JobRequest, { kind: 'vary' }>).imageKey]);
  });
});

describe('acceptReplicas', () => {
  function logged(): { log: Logger; warnings: () => string[] } {
    const { log, lines } = capturedLog('warn');
    return { log, warnings: () => lines.filter((l) => l.level === 40).map((l) => l.msg) };
  }
  const replicaWarning = 'accepted before enough replicas held the job: a failover now could lose it';

  it('waits for the replicas after enqueueing, on a connection of its own, and warns when fewer than acceptReplicas acknowledged', async () => {
    const waits: [number, number][] = [];
    let acknowledged = 0;
    const r = createRedis(REDIS_URL);
    // WAIT blocks the connection it is sent on: the bot's own must never see one (src/redis.ts ReplicaFence)
    r.wait = (async () => expect.fail('WAIT sent on the shared connection')) as typeof r.wait;
    const duplicate = r.duplicate.bind(r) as () => Redis;
    r.duplicate = (() => {
      const own = duplicate();
      own.wait = (async (n: number, ms: number) => (waits.push([n, ms]), acknowledged)) as typeof own.wait;
      return own;
    }) as typeof r.duplicate;
    try {
      const w = logged();
      const c = core({ redis: r, log: w.log }, { redis: { acceptReplicas: 2, acceptReplicaWaitMs: 50 } });
      expect(await c.handle(inv(imagine('one')))).toMatchObject({ kind: 'queued', position: 1 });
      expect(waits).toEqual([[2, 50]]);
      expect(w.warnings()).toEqual([replicaWarning]);
      acknowledged = 2; // exactly enough
      await c.handle(inv(imagine('two')));
      acknowledged = 3;
      await c.handle(inv(imagine('three')));
      expect(w.warnings()).toEqual([replicaWarning]);
      await c.stop();
      const none = logged();
      const off = core({ redis: r, log: none.log }); // acceptReplicas 0: no WAIT, no warning
      waits.length = 0;
      acknowledged = 0;
      await off.handle(inv(imagine('four')));
      expect(waits).toEqual([]);
      expect(none.warnings()).toEqual([]);
      await off.stop();
    } finally {
      await closeRedis(r);
    }
  });
});

describe('progress routing', () => {
  const config = loadConfig({ env: {}, overrides: { discord: { progressEditIntervalMs: 1111 }, slack: { progressUpdateIntervalMs: 2222 } } });
  const cli = (clientId: string): Destination => ({ platform: 'cli', clientId, channelId: 'local', userId: 'u' });
  const slack: Destination = { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' };

  it('throttles progress edits at each platform\'s own interval', () => {
    expect(progressIntervalMs(config, dest())).toBe(1111);
    expect(progressIntervalMs(config, slack)).toBe(2222);
    expect(progressIntervalMs(config, cli('a'))).toBe(100);
  });

  it('shows a CLI job\'s progress only in the CLI process that submitted it', () => {
    const port = (platform: PlatformPort['platform']): PlatformPort => ({ platform, showProgress: async () => undefined, deliver: async () => undefined });
    const ports = new Map([['cli', port('cli')], ['discord', port('discord')]]);
    expect(portForDestination(ports, 'a', cli('a'))).toBe(ports.get('cli'));
    expect(portForDestination(ports, 'a', cli('b'))).toBeUndefined();
    expect(portForDestination(ports, undefined, cli('b'))).toBeUndefined();
    expect(portForDestination(ports, 'a', dest())).toBe(ports.get('discord'));
    expect(portForDestination(ports, 'a', slack)).toBeUndefined(); // not served here
  });
});
