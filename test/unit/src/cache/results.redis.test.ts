// ResultCache over real Redis: LRU eviction by bytes, TTL, the model view (several workers disagreeing → bypass),
// and the single-flight claim/join/close cycle.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ResultCache, type LookupOutcome } from '../../../../src/cache/results.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';
import { cleanup, REDIS_URL } from '../../../doubles/spine-harness.ts';

let redis: Redis;
const prefixes: string[] = [];
function cacheWith(cache: Record<string, unknown>) {
  const prefix = `t-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  const config = loadConfig({ env: {}, overrides: { queue: { prefix }, cache: { enabled: true, singleFlight: true, manifestRefreshMs: 300, ...cache } } });
  return new ResultCache(redis, config);
}
const meta = { kind: 'image' as const, width: 1, height: 1 };
const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);

beforeAll(() => {
  redis = createRedis(REDIS_URL);
});
afterAll(async () => {
  for (const p of prefixes) await cleanup(redis, p);
  await closeRedis(redis);
});

describe('ResultCache', () => {
  it('evicts the least recently used entries once the bytes exceed maxBytes', async () => {
    const c = cacheWith({ maxBytes: 1000 });
    await c.publishModel('m', 'w1');
    const size = 300 - JSON.stringify(meta).length; // each entry: 300 bytes with its meta
    for (const d of ['a', 'b', 'c']) expect(await c.put('m', d, meta, bytes(size, d.charCodeAt(0)))).toBe(0);
    expect(await c.stats()).toEqual({ bytes: 900, entries: 3 });
    expect((await c.lookup('a', 'j', '{}')).kind).toBe('hit'); // 'a' is now the most recently used
    expect(await c.put('m', 'd', meta, bytes(size, 100))).toBe(1); // 1200 > 1000: one evicted, the LRU one: 'b'
    expect((await c.lookup('b', 'j', '{}')).kind).toBe('miss');
    for (const d of ['a', 'c', 'd']) expect((await c.lookup(d, 'j', '{}')).kind, d).toBe('hit');
    expect(await c.stats()).toEqual({ bytes: 900, entries: 3 });
    const hit = await c.lookup('d', 'j', '{}');
    expect(hit.kind === 'hit' && hit.png?.every((v) => v === 100)).toBe(true);
    expect(await c.put('m', 'huge', meta, bytes(2000, 1))).toBe(-1); // larger than the whole cache: not stored
  });

  it('entries expire after ttlSeconds and their bytes are forgotten', async () => {
    const c = cacheWith({ ttlSeconds: 1 });
    await c.publishModel('m', 'w1');
    await c.put('m', 'x', meta, bytes(100, 1));
    expect((await c.lookup('x', 'j', '{}')).kind).toBe('hit');
    await new Promise((r) => setTimeout(r, 1100));
    await c.publishModel('m', 'w1');
    await new Promise((r) => setTimeout(r, 310)); // the bot's view of the models is re-read
    expect(await c.models()).toEqual({ state: 'one', manifestHash: 'm' });
    expect((await c.lookup('x', 'j', '{}')).kind).toBe('miss');
    await c.put('m', 'y', meta, bytes(10, 1));
    expect((await c.stats()).entries).toBe(1);
  });

  it('serves only results of the model the workers run; bypasses the cache while workers disagree', async () => {
    const c = cacheWith({});
    const seen: LookupOutcome[] = [];
    c.observer = (o) => seen.push(o);
    await c.put('old-model', 'x', meta, bytes(10, 1));
    await c.publishModel('new-model', 'w1');
    expect((await c.lookup('x', 'j', '{}')).kind).toBe('miss');
    await c.put('new-model', 'x', meta, bytes(10, 2));
    expect((await c.lookup('x', 'j', '{}')).kind).toBe('hit');
    await c.publishModel('old-model', 'w2'); // a second worker on another conversion: which one runs the job is unknown
    await new Promise((r) => setTimeout(r, 310));
    expect(await c.models()).toEqual({ state: 'differ', manifestHashes: ['new-model', 'old-model'] });
    expect((await c.lookup('x', 'j', '{}')).kind).toBe('miss');
    expect(seen).toEqual(['miss', 'hit', 'bypass']);
  });

  it('single flight: the first claim leads, later lookups join, close hands over each follower once (and again on a re-run)', async () => {
    const c = cacheWith({});
    expect(await c.claim('d', 'lead', '{"n":0}')).toEqual({ leads: true });
    expect(await c.lookup('d', 'f1', '{"n":1}')).toEqual({ kind: 'joined', leaderJobId: 'lead' });
    expect(await c.claim('d', 'f2', '{"n":2}')).toEqual({ leads: false, leaderJobId: 'lead' });
    expect(await c.lookup('d', 'f1', '{"n":1}')).toEqual({ kind: 'joined', leaderJobId: 'lead' }); // the same follower twice: once
    expect(await c.claim('d', 'lead', '{"n":0}')).toEqual({ leads: true }); // the leader's duplicate submission
    await c.confirm('d', 'lead');
    expect((await c.close('d', 'other')).length).toBe(0); // only the leader ends its flight
    const followers = (await c.close('d', 'lead')).sort();
    expect(followers).toEqual(['{"n":1}', '{"n":2}']);
    expect((await c.close('d', 'lead')).sort()).toEqual(followers); // a re-run after a crash: the same ones
    expect(await c.claim('d', 'next', '{}')).toEqual({ leads: true }); // the flight is over
  });

  it("a claimed flight lives admitGraceMs until its leader's job is queued, then as long as a job is kept; only its leader confirms it", async () => {
    const c = cacheWith({});
    const prefix = prefixes.at(-1)!;
    const [f, w] = [`${prefix}:{cache}:f:d`, `${prefix}:{cache}:w:d`];
    expect(await c.claim('d', 'lead', '{}')).toEqual({ leads: true });
    await c.lookup('d', 'f1', '{"n":1}');
    const grace = 60_000; // limits.admitGraceMs (config/default.yaml)
    for (const key of [f, w]) expect(await redis.pttl(key)).toBeGreaterThan(grace - 5_000);
    for (const key of [f, w]) expect(await redis.pttl(key)).toBeLessThanOrEqual(grace);
    await c.confirm('d', 'someone-else');
    expect(await redis.pttl(f)).toBeLessThanOrEqual(grace);
    await c.confirm('d', 'lead');
    const keepMs = 86_400_000; // the longer of queue.keepFailedSeconds and keepCompletedSeconds
    for (const key of [f, w]) expect(await redis.pttl(key)).toBeGreaterThan(keepMs - 5_000);
    // Without followers there is no followers' hash to keep.
    expect(await c.claim('e', 'lead2', '{}')).toEqual({ leads: true });
    await c.confirm('e', 'lead2');
    expect(await redis.exists(`${prefix}:{cache}:w:e`)).toBe(0);
  });

  it('without single flight a request always leads, and nothing of a flight is written', async () => {
    const c = cacheWith({ singleFlight: false });
    const prefix = prefixes.at(-1)!;
    expect(await c.claim('d', 'a', '{}')).toEqual({ leads: true });
    expect(await c.claim('d', 'b', '{}')).toEqual({ leads: true });
    await c.confirm('d', 'a');
    expect(await c.lookup('d', 'c', '{}')).toEqual({ kind: 'miss' });
    expect(await redis.keys(`${prefix}:*`)).toEqual([]);
  });
});
