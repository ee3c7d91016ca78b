// bots/discord/asked-copies.ts on its own, against real Redis: the links from an Ask form's target to the messages
// with its copy, as the adapter and the delivery write and read them (asked-image-follow.redis.test.ts drives them
// through real discord.js). Here: what a read takes, what it leaves, and what it does with what it cannot read.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { AskedCopies, LINK_SECONDS, attachmentsLeft } from '../../../../bots/discord/asked-copies.ts';
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
  await copies.link({ messageId: target }, one, { channelId: 'C1', messageId: 'M1' });
  await copies.link({ messageId: target }, two, { channelId: 'C1', messageId: 'M2' });
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
  await copies.link({ messageId: target }, job, { channelId: 'C1', messageId: 'M1' });
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
  await copies.link({ messageId: target }, job, { channelId: 'C1', messageId: 'M1' });
  await redis.sadd(`${prefix}:discord-asked-copy:job:${job}`, 'M2', '/M3', 'C4/');
  expect(await copies.take([target])).toEqual([{ channelId: 'C1', messageId: 'M1' }]);
});

it('a key Redis cannot read as a set fails the read (the adapter logs it) rather than passing as no copies', async () => {
  const target = id();
  await redis.set(`${prefix}:discord-asked-copy:target:${target}`, 'not a set');
  await expect(copies.take([target])).rejects.toThrow(/WRONGTYPE/);
});

it('an edit that removed the asked image takes that job\'s links and leaves the others\'; an entry without an attachment (the previous version\'s) goes once no image is left', async () => {
  const [target, aboutA, aboutB, old] = [id(), id(), id(), id()];
  await copies.link({ messageId: target, attachmentId: 'A' }, aboutA, { channelId: 'C1', messageId: 'M1' });
  await copies.alsoAt(aboutA, { channelId: 'C2', messageId: 'M2' });
  await copies.link({ messageId: target, attachmentId: 'B' }, aboutB, { channelId: 'C1', messageId: 'M3' });
  await copies.link({ messageId: target }, old, { channelId: 'C1', messageId: 'M4' }); // as the previous version wrote it
  expect(await copies.takeRemoved(target, { attachmentIds: ['A', 'B', 'X'], anyImage: true })).toEqual([]);
  const taken = await copies.takeRemoved(target, { attachmentIds: ['B', 'X'], anyImage: true });
  expect(taken.sort((a, b) => a.messageId.localeCompare(b.messageId))).toEqual([{ channelId: 'C1', messageId: 'M1' }, { channelId: 'C2', messageId: 'M2' }]);
  expect(await redis.smembers(`${prefix}:discord-asked-copy:target:${target}`)).toEqual(expect.arrayContaining([aboutB, old]));
  expect(await redis.exists(`${prefix}:discord-asked-copy:job:${aboutA}`)).toBe(0);
  expect((await copies.takeRemoved(target, { attachmentIds: ['X'], anyImage: false })).map((at) => at.messageId).sort()).toEqual(['M3', 'M4']);
  expect(await keys()).toEqual([]);
});

it('an edit whose job keys Redis cannot read as sets fails (the adapter logs it) rather than passing as no copies', async () => {
  const [target, job] = [id(), id()];
  await copies.link({ messageId: target, attachmentId: 'A' }, job, { channelId: 'C1', messageId: 'M1' });
  const jobKey = `${prefix}:discord-asked-copy:job:${job}`;
  await redis.del(jobKey);
  await redis.set(jobKey, 'not a set');
  await expect(copies.takeRemoved(target, { attachmentIds: [], anyImage: false })).rejects.toThrow(/WRONGTYPE/);
  // the same between the read and the take (a key rewritten meanwhile): the take's error, not an empty list
  await redis.del(jobKey);
  await copies.link({ messageId: target, attachmentId: 'A' }, job, { channelId: 'C1', messageId: 'M1' });
  const multi = redis.multi.bind(redis);
  let calls = 0;
  const spy = vi.spyOn(redis, 'multi').mockImplementation(((...args: Parameters<typeof redis.multi>) => {
    const tx = multi(...args);
    if (++calls === 1) {
      const exec = tx.exec.bind(tx);
      tx.exec = (async () => {
        const replies = await exec();
        await redis.del(jobKey);
        await redis.set(jobKey, 'not a set');
        return replies;
      }) as typeof tx.exec;
    }
    return tx;
  }) as typeof redis.multi);
  try {
    await expect(copies.takeRemoved(target, { attachmentIds: [], anyImage: false })).rejects.toThrow(/WRONGTYPE/);
  } finally {
    spy.mockRestore();
    await redis.del(jobKey, `${prefix}:discord-asked-copy:target:${target}`);
  }
});

it('a message that is no target: one round trip, nothing taken', async () => {
  const multi = vi.spyOn(redis, 'multi');
  try {
    expect(await copies.takeRemoved(id(), { attachmentIds: [], anyImage: false })).toEqual([]);
    expect(multi).not.toHaveBeenCalled();
  } finally {
    multi.mockRestore();
  }
});

it('the asked attachment is no copy: the deletion path reads only the messages', async () => {
  const [target, job] = [id(), id()];
  await copies.link({ messageId: target, attachmentId: '123' }, job, { channelId: 'C1', messageId: 'M1' });
  expect(await copies.take([target])).toEqual([{ channelId: 'C1', messageId: 'M1' }]);
});

describe('attachmentsLeft: what a MESSAGE_UPDATE says of its message\'s attachments', () => {
  const png = { id: 'A', filename: 'cat.png', content_type: 'image/png' };
  const pdf = { id: 'P', filename: 'doc.pdf', content_type: 'application/pdf' };
  const edit = (more: Record<string, unknown>) => ({ id: 'M', channel_id: 'C', guild_id: 'G', author: { id: 'U' }, mentions: [], content: 'x', ...more });

  it('with the Message Content intent: the ids left, and whether one is an image (by type, else by name)', () => {
    expect(attachmentsLeft(edit({ attachments: [png, pdf] }), 'BOT', true)).toEqual({ messageId: 'M', left: { attachmentIds: ['A', 'P'], anyImage: true } });
    expect(attachmentsLeft(edit({ attachments: [pdf, { id: 'W', filename: 'x.webp' }] }), 'BOT', true)?.left.anyImage).toBe(true);
    expect(attachmentsLeft(edit({ attachments: [pdf] }), 'BOT', true)?.left).toEqual({ attachmentIds: ['P'], anyImage: false });
  });

  it('nothing to go by: a payload without attachments, or one that may be blanked (no intent, in a server, not the bot\'s, no mention of it)', () => {
    expect(attachmentsLeft(edit({}), 'BOT', true)).toBeUndefined();
    expect(attachmentsLeft({ id: 'M', attachments: 'none' }, 'BOT', true)).toBeUndefined();
    expect(attachmentsLeft(edit({ attachments: [] }), 'BOT', false)).toBeUndefined();
    expect(attachmentsLeft(edit({ attachments: [], mentions: [{ id: 'U2' }] }), 'BOT', false)).toBeUndefined(); // someone else mentioned
  });

  it('without the intent, what Discord never blanks: a DM, the bot\'s own message, a message that mentions the bot', () => {
    const dm = { ...edit({ attachments: [] }), guild_id: undefined };
    for (const payload of [dm, edit({ attachments: [], author: { id: 'BOT' } }), edit({ attachments: [], mentions: [{ id: 'BOT' }] })]) {
      expect(attachmentsLeft(payload, 'BOT', false)).toEqual({ messageId: 'M', left: { attachmentIds: [], anyImage: false } });
    }
  });
});
