// Reading back everything Redis holds under a queue prefix, whatever the key's type, and finding what still names or
// holds a job: the retention tests (test/integration/retention*.redis.test.ts) check that nothing is left after a TTL.
import { createHash } from 'node:crypto';
import type { Redis } from '../../src/redis.ts';

export interface Dumped {
  key: string;
  type: string;
  /** The values (and hash fields, stream ids) as latin1 text, one per line. */
  text: string;
  buffers: Buffer[];
}

/** Every key under `prefix` with its whole content. */
export async function dumpPrefix(redis: Redis, prefix: string): Promise<Dumped[]> {
  const out: Dumped[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const type = await redis.type(key);
      let buffers: Buffer[] = [];
      if (type === 'string') buffers = [(await redis.getBuffer(key)) ?? Buffer.alloc(0)];
      else if (type === 'hash') buffers = await redis.hgetallBuffer(key).then((o) => Object.entries(o).flatMap(([k, v]) => [Buffer.from(k), v]));
      else if (type === 'list') buffers = await redis.lrangeBuffer(key, 0, -1);
      else if (type === 'set') buffers = await redis.smembersBuffer(key);
      else if (type === 'zset') buffers = await redis.zrangeBuffer(key, '0', '-1');
      else if (type === 'stream') buffers = ((await redis.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][]).flatMap(([id, f]) => [id, ...f]);
      out.push({ key, type, buffers, text: buffers.map((b) => b.toString('latin1')).join('\n') });
    }
  } while (cursor !== '0');
  return out;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Keys that name or hold any of `needles` (job ids, texts) in their name or content, or one of `images` byte for byte. */
export function traces(keys: readonly Dumped[], needles: readonly string[], images: readonly Uint8Array[] = []): string[] {
  const imageHashes = new Set(images.map(sha));
  return keys
    .filter((d) => needles.some((t) => d.key.includes(t) || d.text.includes(t)) || d.buffers.some((b) => imageHashes.has(sha(b))))
    .map((d) => `${d.type} ${d.key}`);
}

/** Poll `find` until it finds nothing or the time is up; returns the last findings. */
export async function tracesAfter(find: () => Promise<string[]>, timeoutMs: number): Promise<string[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const t = await find();
    if (t.length === 0 || Date.now() > end) return t;
    await new Promise((r) => setTimeout(r, 200));
  }
}
