// bots/discord/asked-copies.ts on its own, against real Redis: the links from an Ask form's target to the messages
// with its copy, as the adapter and the delivery write and read them (asked-image-follow.redis.test.ts drives them
// through real discord.js). Here: what a read takes, what it leaves, and what it does with what it cannot read.
import { randomUUID } from 'node:crypto';
import { afterAll, expect, it, vi } from 'vitest';
import { AskedCopies, LINK_SECONDS } from '../../../../bots/discord/asked-copies.ts';
import { closeRedis, createRedis, deleteKeys } from '../../../../src/redis.ts';

const prefix = `t-asked-copies-${randomUUID().slice(0, 8)}`;
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-asked-copies');
const copies = new AskedCopies(redis, prefix);
const keys = () => redis.keys(`${prefix}:*`);
const id = () => randomUUID().slice(0, 8);
afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

it('a target with two jobs, one with its answer posted anew: every message with a copy, once; the links gone after', async () => {
  const [target, one, two] = [id(), id(), id()];
  await copies.link(target, one, { channelId: 'C1', messageId: 'M1' });
  await copies.link(target, two, { channelId: 'C1', messageId: 'M2' });
  await copies.alsoAt(two, { channelId: 'C2', messageId: 'M3' });
  for (const key of await keys()) expect(await redis.ttl(key)).toBeGreaterThan(LINK_SECONDS - 60);
  const taken = await copies.take([target]);
  expect(taken.sort((a, b) => a.messageId.localeCompare(b.messageId))).toEqual([
    { channelId: 'C1', messageId: 'M1' },
    { channelId: 'C1', messageId: 'M2' },
    { channelId: 'C2', messageId: 'M3' },
  ]);
  expect(await keys()).toEqual([]);
  expect(await copies.take([target])).toEqual([]); // taken once: a second delete event finds nothing
});

it('an answer posted anew for a job that follows no target (an /ask upload) is not linked: nothing is stored', async () => {
  await copies.alsoAt(id(), { channelId: 'C1', messageId: 'M1' });
  expect(await keys()).toEqual([]);
});

it('messages that were no target (most deletes the bot hears): nothing to take, in one round trip', async () => {
  const [target, job] = [id(), id()];
  await copies.link(target, job, { channelId: 'C1', messageId: 'M1' });
  const multi = vi.spyOn(redis, 'multi');
  try {
    expect(await copies.take([id(), id()])).toEqual([]);
    expect(multi).toHaveBeenCalledTimes(1);
  } finally {
    multi.mockRestore();
  }
  expect((await copies.take([target])).map((at) => at.messageId)).toEqual(['M1']);
});

it('a member that names no channel and message (not written by this version) is left out, not edited', async () => {
  const [target, job] = [id(), id()];
  await copies.link(target, job, { channelId: 'C1', messageId: 'M1' });
  await redis.sadd(`${prefix}:discord-asked-copy:job:${job}`, 'M2', '/M3', 'C4/');
  expect(await copies.take([target])).toEqual([{ channelId: 'C1', messageId: 'M1' }]);
});

it('a key Redis cannot read as a set fails the read (the adapter logs it) rather than passing as no copies', async () => {
  const target = id();
  await redis.set(`${prefix}:discord-asked-copy:target:${target}`, 'not a set');
  await expect(copies.take([target])).rejects.toThrow(/WRONGTYPE/);
});
