// Puts back what an older version left in Redis (test/fixtures/upgrade/<commit>/redis.json, written by that version's
// own code: the README there says how) under a fresh queue prefix, as if the upgrade happened right after it was
// written: every key keeps its TTL, and every millisecond timestamp (scores, job hashes, JSON in values) moves by the
// time since, so queued jobs, leases, cache expiry and retention deadlines are as fresh as they were then.
import type { Redis } from '../../src/redis.ts';

/** A value as the fixture holds it: UTF-8 text, or bytes that are not (a PNG). */
type Stored = string | { base64: string };

export interface StoredKey {
  key: string;
  type: 'string' | 'hash' | 'list' | 'set' | 'zset' | 'stream';
  /** PTTL when it was written: -1 = no expiry. */
  ttlMs: number;
  /** string: one value; hash: [field, value][]; list, set: values; zset: [member, score][]; stream: [id, fields][]. */
  value: unknown;
}

export interface RedisFixture {
  prefix: string;
  madeAt: string;
  /** Redis TIME (seconds) when the keys were read. */
  redisTime: string;
  keys: StoredKey[];
}

const DAY_MS = 86_400_000;

export async function restoreFixture(redis: Redis, fixture: RedisFixture, prefix: string): Promise<void> {
  const [seconds] = await redis.time();
  const madeMs = Number(fixture.redisTime) * 1000;
  const shift = Number(seconds) * 1000 - madeMs;
  // a timestamp of the fixture's day: from two days before it was written to 60 days after (a deadline, an expiry)
  const isTime = (n: number) => n > madeMs - 2 * DAY_MS && n < madeMs + 60 * DAY_MS;
  const time = (n: number) => (isTime(n) ? n + shift : n);
  const text = (s: string) => s.replaceAll(`${fixture.prefix}:`, `${prefix}:`).replace(/\b\d{13}\b/g, (d) => String(time(Number(d))));
  const bytes = (v: Stored): string | Buffer => (typeof v === 'string' ? text(v) : Buffer.from(v.base64, 'base64'));
  const dayShift = Math.floor((madeMs + shift) / DAY_MS) - Math.floor(madeMs / DAY_MS);

  for (const k of fixture.keys) {
    // usage counters are per UTC day (<prefix>:{usage}:d:<day>): the day they were written becomes today
    const key = text(k.key).replace(/(:\{usage\}:d:)(\d+)$/, (_, head: string, day: string) => `${head}${Number(day) + dayShift}`);
    await redis.del(key);
    if (k.type === 'string') await redis.set(key, bytes(k.value as Stored));
    else if (k.type === 'hash') await redis.hset(key, ...(k.value as [string, Stored][]).flatMap(([f, v]) => [text(f), bytes(v)]));
    else if (k.type === 'list') await redis.rpush(key, ...(k.value as Stored[]).map(bytes));
    else if (k.type === 'set') await redis.sadd(key, ...(k.value as Stored[]).map(bytes));
    else if (k.type === 'zset') await redis.zadd(key, ...(k.value as [Stored, number][]).flatMap(([m, score]) => [time(score), bytes(m)]));
    else for (const [, fields] of k.value as [string, string[]][]) await redis.xadd(key, '*', ...fields.map(text));
    if (k.ttlMs > 0) await redis.pexpire(key, k.ttlMs);
  }
}
