// The copy of the asked-about image on an /ask or Ask form answer (bots/discord/asked-image.ts, asked-copies.ts), past
// the answer itself: the copy of an Ask form's target follows the target's deletion, and an edit that removes its image
// (its link in Redis, read by whichever bot process hears the gateway event), an answer posted as a new message after its token expired carries the copy too,
// and the copy reads no settings of its own. Real discord.js against the fake Discord, real Redis, no worker: results are
// delivered by the port, as the delivery consumer does.
import sharp from 'sharp';
import type { Client } from 'discord.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { DiscordAdapter } from '../../../../bots/discord/adapter.ts';
import { AskedCopies } from '../../../../bots/discord/asked-copies.ts';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { createLogger } from '../../../../src/log.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';
import type { FakeInteraction, FakeMessage, FakeUser } from '../../../fakes/discord/server.ts';

let h: DiscordHarness;
let png: Uint8Array;
/** The bot's log lines (warn and up), parsed. */
let logged: LogLine[];
const { starting, check } = startGuard();
beforeEach(check);
beforeAll(() => starting(async () => {
  const captured = capturedLog('warn');
  logged = captured.lines;
  h = await startDiscordHarness({ worker: false, log: captured.log });
  png = await samplePng(24);
}), 60_000);
afterAll(async () => h?.stop(), 30_000);

const COPY = 'asked-about.jpg';
const newUser = (): FakeUser => h.fake.user(`user${Math.random().toString(36).slice(2, 8)}`);
const attachment = () => h.fake.addAttachment({ bytes: png, filename: 'photo.png', contentType: 'image/png' });
const queued = (i: FakeInteraction) => until(async () => (await h.core.queue.getJob(jobIdFor('discord', i.id)))?.data as JobRequest | undefined, 10_000, 'the job');
const settle = () => new Promise((r) => setTimeout(r, 300));
const linkKeys = () => h.core.redis.keys(`${h.prefix}:discord-asked-copy:*`);

/** The interaction's original response once it carries the copy of the image (attached after the job is queued). */
const withCopy = (i: FakeInteraction) =>
  h.fake.waitFor(() => (h.fake.original(i)?.attachments.some((a) => a.filename === COPY) ? h.fake.original(i) : undefined), 10_000, 'the copy of the image');
/** …and its place in line (with the Cancel button the delivery finds it by once the token has expired). */
const shownWithCopy = (i: FakeInteraction) =>
  h.fake.waitFor(() => {
    const m = h.fake.original(i);
    return m?.content.startsWith('⏳') && m.attachments.some((a) => a.filename === COPY) ? m : undefined;
  }, 10_000, 'the place in line with the copy of the image');

/** The answer delivered as the delivery consumer does (by the port), with the copy already on the original response. */
async function answer(i: FakeInteraction, text: string, via: DiscordAdapter = h.adapter): Promise<void> {
  const job = await queued(i);
  await withCopy(i);
  await via.port.deliver({ v: 1, jobId: jobIdFor('discord', i.id), kind: 'ask', destination: job.destination, status: 'succeeded', answer: { text, tokenCount: 3 }, timingsMs: {}, finishedAt: Date.now() }, undefined);
}

/** The Ask form (context menu → modal) on `target` with `question`, by `user`. */
async function askForm(target: FakeMessage, question: string, user: FakeUser = newUser()): Promise<FakeInteraction> {
  const menu = h.fake.contextMenu({ name: 'Ask about this image', target, user });
  await h.fake.waitFor(() => menu.callbacks.find((c) => c.type === 9), 10_000, 'the modal');
  return h.fake.submitModal(menu, { question });
}

const askSlash = (question: string, user: FakeUser = newUser()) => {
  const photo = attachment();
  return h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: question }], attachments: [photo] });
};

const copyGone = (m: FakeMessage, what: string) => h.fake.waitFor(() => !m.attachments.some((a) => a.filename === COPY) || undefined, 10_000, what);

describe('the copy of an Ask form target follows the target', () => {
  it('deleted by its author: every answer about it loses the copy (one answer after its token expired), keeping its text; nothing is left in Redis', async () => {
    const target = h.fake.postUserMessage({ content: 'my cat', attachments: [attachment()] }); // in discord.js's cache
    const first = await askForm(target, 'which breed is the cat?');
    await answer(first, 'A tabby.');
    const second = await askForm(target, 'how old is the cat?');
    await answer(second, 'About two.');
    const answers = [h.fake.original(first)!, h.fake.original(second)!];
    // linked for a bounded time: at most 30 days
    const keys = await linkKeys();
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) expect(await h.core.redis.ttl(key)).toBeGreaterThan(29 * 86_400);
    for (const key of keys) expect(await h.core.redis.ttl(key)).toBeLessThanOrEqual(30 * 86_400);

    h.fake.expireToken(first.token); // 15 minutes later: its answer is edited through the channel
    h.fake.deleteMessage(target);
    for (const m of answers) await copyGone(m, 'the copy removed from the answer');
    expect(answers.map((m) => m.content)).toEqual(['A tabby.', 'About two.']);
    expect(await linkKeys()).toEqual([]);
  });

  it('not in the cache (posted while the bot was away), deleted in a purge (MESSAGE_DELETE_BULK): its answer loses the copy; another answer keeps its own', async () => {
    const target = h.fake.postUserMessage({ content: 'old photo', attachments: [attachment()], silent: true });
    const other = h.fake.postUserMessage({ content: 'another photo', attachments: [attachment()], silent: true });
    const asked = await askForm(target, 'what is in the old photo?');
    await answer(asked, 'A garden.');
    const kept = await askForm(other, 'what is in the other photo?');
    await answer(kept, 'A beach.');
    const spam = h.fake.postUserMessage({ content: 'spam', silent: true });

    h.fake.bulkDelete([target, spam]);
    await copyGone(h.fake.original(asked)!, 'the copy removed from the answer');
    await settle();
    expect(h.fake.original(kept)!.attachments.map((a) => a.filename)).toEqual([COPY]);
  });

  it('in a DM with the bot (MESSAGE_DELETE without a server): the answer there loses the copy', async () => {
    const user = newUser();
    const dm = h.fake.dmChannel(user);
    const target = h.fake.postUserMessage({ content: 'my drawing', author: user, channelId: dm, guildId: null, attachments: [attachment()], silent: true });
    const asked = await askForm(target, 'what did I draw?', user);
    await answer(asked, 'A house.');
    h.fake.deleteMessage(target);
    await copyGone(h.fake.original(asked)!, 'the copy removed from the answer in the DM');
    expect(h.fake.original(asked)!.content).toBe('A house.');
  });

  it('a link that cannot be written (Redis failing): the copy is taken off again, for it could not follow its target', async () => {
    const link = vi.spyOn(AskedCopies.prototype, 'link').mockRejectedValueOnce(new Error('Connection is closed.'));
    try {
      const target = h.fake.postUserMessage({ content: 'a horse', attachments: [attachment()] });
      const asked = await askForm(target, 'what colour is the horse?');
      const patches = () => h.fake.requestsTo('PATCH', new RegExp(`/webhooks/${h.fake.appId}/${asked.token}/messages/@original$`)).filter((r) => r.status === 200);
      const attached = await h.fake.waitFor(() => patches().find((r) => r.files.some((f) => f.filename === COPY)), 10_000, 'the copy attached');
      await h.fake.waitFor(() => patches().find((r) => r.at >= attached.at && JSON.stringify((r.body as { attachments?: unknown }).attachments) === '[]'), 10_000, 'the copy taken off again');
      expect(h.fake.original(asked)!.attachments).toEqual([]);
      expect(link).toHaveBeenCalledTimes(1);
      const line = await h.fake.waitFor(() => logged.find((l) => l.msg.startsWith('could not attach the asked-about image')), 10_000, 'the warning');
      expect(line).toMatchObject({ level: 40, interaction: asked.id, err: 'Connection is closed.' });
    } finally {
      link.mockRestore();
    }
  });

  it('an answer that has more than the copy keeps the rest; one without a copy, or deleted since, is left alone', async () => {
    const target = h.fake.postUserMessage({ content: 'a boat', attachments: [attachment()] });
    const [withMore, without, gone] = [await askForm(target, 'what boat?'), await askForm(target, 'how long is the boat?'), await askForm(target, 'whose boat?')];
    for (const [i, text] of [[withMore, 'A ketch.'], [without, 'Ten metres.'], [gone, 'A fisher\'s.']] as const) await answer(i, text);
    const [more, none, deleted] = [h.fake.original(withMore)!, h.fake.original(without)!, h.fake.original(gone)!];
    const copy = more.attachments.find((a) => a.filename === COPY)!;
    more.attachments.unshift({ ...copy, id: `${copy.id}1`, filename: 'chart.png' }); // another file on the answer, before the copy
    none.attachments.splice(0, Infinity, { ...copy, id: `${copy.id}2`, filename: 'chart.png' }); // its copy already taken off: another file
    h.fake.deleteMessage(deleted);
    const edits = (m: FakeMessage) => h.fake.requestsTo('PATCH', new RegExp(`/messages/${m.id}$`));
    h.fake.deleteMessage(target);
    await copyGone(more, 'the copy removed from the answer with another file');
    expect(more.attachments.map((a) => a.filename)).toEqual(['chart.png']);
    await settle();
    expect(edits(none)).toEqual([]);
    expect(logged.filter((l) => l.msg.startsWith('could not remove the copy'))).toEqual([]); // the deleted answer: a 404, nothing to say
  });

  it('an answer Discord will not let the bot edit, or links Redis will not give: logged, the bot goes on', async () => {
    const target = h.fake.postUserMessage({ content: 'a kite', attachments: [attachment()] });
    const asked = await askForm(target, 'what shape is the kite?');
    await answer(asked, 'A diamond.');
    const answerMessage = h.fake.original(asked)!;
    h.fake.injectFault({ method: 'GET', path: new RegExp(`/messages/${answerMessage.id}$`), status: 403, code: 50001, message: 'Missing Access' });
    h.fake.deleteMessage(target);
    const line = await h.fake.waitFor(() => logged.find((l) => l.msg === 'could not remove the copy of a deleted image from its answer'), 10_000, 'the warning');
    expect(line).toMatchObject({ level: 40, channel: answerMessage.channelId, message: answerMessage.id, err: expect.stringContaining('Missing Access') });

    const take = vi.spyOn(AskedCopies.prototype, 'take').mockRejectedValueOnce(new Error('Connection is closed.'));
    try {
      const other = h.fake.postUserMessage({ content: 'a note' });
      h.fake.deleteMessage(other);
      const failed = await h.fake.waitFor(() => logged.find((l) => l.msg.startsWith('could not look up the answers about a deleted message')), 10_000, 'the warning');
      expect(failed).toMatchObject({ level: 40, messages: 1, err: 'Connection is closed.' });
    } finally {
      take.mockRestore();
    }
  });

  it('a deletion from the gateway the bot cannot read (no message id): logged, nothing taken', async () => {
    const take = vi.spyOn(AskedCopies.prototype, 'take');
    try {
      h.fake.dispatch('MESSAGE_DELETE', { channel_id: '1', guild_id: h.fake.guildId }); // a channel discord.js never heard of: only the copies read it
      const line = await h.fake.waitFor(() => logged.find((l) => l.msg === 'a message deletion from the gateway could not be read: copies of its images stay'), 10_000, 'the warning');
      expect(line).toMatchObject({ level: 40, err: expect.stringContaining('id') });
      expect(take).not.toHaveBeenCalled();
    } finally {
      take.mockRestore();
    }
  });

  it('in a thread discord.js holds no channel for, deleted alone or in a purge: the answers there lose the copy (the gateway event\'s ids are enough)', async () => {
    const thread = h.fake.addThread(h.fake.channelId, 'old thread', { unseen: true });
    const alone = h.fake.postUserMessage({ content: 'a lamp', channelId: thread, attachments: [attachment()], silent: true });
    const purged = h.fake.postUserMessage({ content: 'a chair', channelId: thread, attachments: [attachment()], silent: true });
    const [aboutAlone, aboutPurged] = [await askForm(alone, 'what lamp is it?'), await askForm(purged, 'what chair is it?')];
    await answer(aboutAlone, 'A desk lamp.');
    await answer(aboutPurged, 'A stool.');
    expect(h.fake.original(aboutPurged)!.channelId).toBe(thread);
    // The answers' MESSAGE_CREATE (channel_type 11) made discord.js build the thread; out of its cache again, as a
    // channel discord.js never heard of: its actions then drop MESSAGE_DELETE and MESSAGE_DELETE_BULK there.
    const client = (h.adapter as unknown as { client: Client }).client;
    client.channels.cache.delete(thread);
    h.fake.deleteMessage(alone);
    await copyGone(h.fake.original(aboutAlone)!, 'the copy removed after a deletion in the thread');
    h.fake.bulkDelete([purged, h.fake.postUserMessage({ content: 'spam', channelId: thread, silent: true })]);
    await copyGone(h.fake.original(aboutPurged)!, 'the copy removed after a purge in the thread');
    expect([h.fake.original(aboutAlone)!.content, h.fake.original(aboutPurged)!.content]).toEqual(['A desk lamp.', 'A stool.']);
  });

  it('an /ask upload is in no message: nothing to follow, nothing stored', async () => {
    const before = await linkKeys();
    const i = askSlash('what is on the uploaded photo?');
    await answer(i, 'A fox.');
    expect((await linkKeys()).sort()).toEqual(before.sort());
  });
});

describe('the copy follows its target\'s image through an edit (MESSAGE_UPDATE)', () => {
  const targetLinked = (target: FakeMessage) => h.core.redis.exists(`${h.prefix}:discord-asked-copy:target:${target.id}`);

  it('the asked image removed, another kept (the target not in the cache): the answer loses the copy, its text stays; an edit that keeps the asked image leaves it', async () => {
    const removed = h.fake.postUserMessage({ content: 'two cats', attachments: [attachment(), attachment()], silent: true });
    const kept = h.fake.postUserMessage({ content: 'two dogs', attachments: [attachment(), attachment()], silent: true });
    const [aboutRemoved, aboutKept] = [await askForm(removed, 'which cat is older?'), await askForm(kept, 'which dog is older?')];
    await answer(aboutRemoved, 'The grey one.');
    await answer(aboutKept, 'The brown one.');
    const [askedCat] = removed.attachments;
    const [askedDog] = kept.attachments;
    h.fake.editUserMessage(kept, { content: 'one dog', keep: (a) => a.id === askedDog!.id }); // the other image removed
    h.fake.editUserMessage(removed, { content: 'one cat', keep: (a) => a.id !== askedCat!.id }); // the asked one removed
    await copyGone(h.fake.original(aboutRemoved)!, 'the copy removed after the edit');
    expect(h.fake.original(aboutRemoved)!.content).toBe('The grey one.');
    expect(await targetLinked(removed)).toBe(0);
    await settle();
    expect(h.fake.original(aboutKept)!.attachments.map((a) => a.filename)).toEqual([COPY]);
    expect(await targetLinked(kept)).toBe(1);
    h.fake.deleteMessage(kept); // still followed after the edit that kept its image
    await copyGone(h.fake.original(aboutKept)!, 'the copy removed after the deletion');
  });

  it('an answer linked by the previous version (no attachment id stored): an edit leaving an image keeps the copy, one leaving none takes it off', async () => {
    const target = h.fake.postUserMessage({ content: 'two birds', attachments: [attachment(), attachment()], silent: true });
    const asked = await askForm(target, 'which bird sings?');
    await answer(asked, 'The small one.');
    // as the previous version wrote it: the job's set names the messages with its copy, and nothing else
    const jobKey = `${h.prefix}:discord-asked-copy:job:${jobIdFor('discord', asked.id)}`;
    const notMessages = (await h.core.redis.smembers(jobKey)).filter((m) => !/^\d+\/\d+$/.test(m));
    if (notMessages.length > 0) await h.core.redis.srem(jobKey, ...notMessages);
    const [first] = target.attachments;
    h.fake.editUserMessage(target, { keep: (a) => a.id !== first!.id }); // which image it asked about is not known: one is left
    await settle();
    expect(h.fake.original(asked)!.attachments.map((a) => a.filename)).toEqual([COPY]);
    h.fake.editUserMessage(target, { keep: () => false });
    await copyGone(h.fake.original(asked)!, 'the copy removed once no image is left');
    expect(await targetLinked(target)).toBe(0);
  });

  it('an answer asked about in turn (its copy the image): when its own copy goes, the answer about it loses its copy too', async () => {
    const target = h.fake.postUserMessage({ content: 'a moth', attachments: [attachment()], silent: true });
    const first = await askForm(target, 'what moth?');
    await answer(first, 'A luna moth.');
    const second = await askForm(h.fake.original(first)!, 'what colour is it?');
    await answer(second, 'Pale green.');
    h.fake.deleteMessage(target);
    await copyGone(h.fake.original(first)!, 'the copy removed from the first answer');
    await copyGone(h.fake.original(second)!, 'the copy removed from the answer about the first answer'); // its MESSAGE_UPDATE, the bot's own
  });

  it('links Redis will not give on an edit: logged with the message, the link kept, the bot goes on', async () => {
    const target = h.fake.postUserMessage({ content: 'a crab', attachments: [attachment()], silent: true });
    const asked = await askForm(target, 'what crab?');
    await answer(asked, 'A hermit crab.');
    const takeRemoved = vi.spyOn(AskedCopies.prototype, 'takeRemoved').mockRejectedValueOnce(new Error('Connection is closed.'));
    try {
      h.fake.editUserMessage(target, { keep: () => false });
      const failed = await h.fake.waitFor(() => logged.find((l) => l.msg === 'could not look up the answers about an edited message: their copies of its image stay'), 10_000, 'the warning');
      expect(failed).toMatchObject({ level: 40, message: target.id, err: 'Connection is closed.' });
    } finally {
      takeRemoved.mockRestore();
    }
    expect(h.fake.original(asked)!.attachments.map((a) => a.filename)).toEqual([COPY]);
    expect(await targetLinked(target)).toBe(1);
  });

  it('an edit that names no attachments, or of a message that was no target: nothing taken off, the link kept', async () => {
    const target = h.fake.postUserMessage({ content: 'a fish', attachments: [attachment()], silent: true });
    const asked = await askForm(target, 'what fish?');
    await answer(asked, 'A carp.');
    h.fake.dispatch('MESSAGE_UPDATE', { id: target.id, channel_id: target.channelId, guild_id: target.guildId, content: 'a carp' }); // an older partial update
    h.fake.editUserMessage(h.fake.postUserMessage({ content: 'words', attachments: [attachment()] }), { keep: () => false });
    await settle();
    expect(h.fake.original(asked)!.attachments.map((a) => a.filename)).toEqual([COPY]);
    expect(await targetLinked(target)).toBe(1);
  });
});

describe('an answer posted as a new message (its interaction token expired in the queue)', () => {
  const posted = (text: string) =>
    h.fake.waitFor(() => h.fake.channelMessages().find((m) => m.author.id === h.fake.appId && m.interactionId === undefined && m.content.includes(text)), 10_000, 'the answer in the channel');

  it('/ask: carries the copy too (the same image, its question as the alt text), so a reply to the answer finds them', async () => {
    const user = newUser();
    const i = askSlash('what is on the late photo?', user);
    const status = await shownWithCopy(i);
    const photo = h.fake.addAttachment({ bytes: await sharp(png).flop().png().toBuffer(), filename: 'chart.png', contentType: 'image/png' });
    status.attachments.unshift(photo); // another file before the copy
    h.fake.expireToken(i.token);
    await answer(i, 'A late fox.');
    const late = await posted('A late fox.');
    expect(late.attachments).toMatchObject([{ filename: COPY, content_type: 'image/jpeg', description: 'Image asked about: what is on the late photo?' }]);
    const bytes = async (m: FakeMessage) => Buffer.from(await (await fetch(m.attachments.find((a) => a.filename === COPY)!.url)).arrayBuffer());
    expect((await bytes(late)).equals(await bytes(status))).toBe(true);
    expect(await sharp(await bytes(late)).metadata()).toMatchObject({ format: 'jpeg', width: 24, height: 24 });
    const followUp = h.fake.postUserMessage({ content: 'and what colour is it?', author: user, mentionBot: true, replyTo: late.id });
    const job = await until(async () => (await h.core.queue.getJob(jobIdFor('discord', followUp.id)))?.data as JobRequest | undefined, 10_000, 'the follow-up job');
    expect(job).toMatchObject({ kind: 'ask', history: [{ role: 'user', text: 'what is on the late photo?' }, { role: 'assistant', text: 'A late fox.' }] });
  });

  it('the Ask form: carries the copy too, and it follows the target\'s deletion there as on the old status message', async () => {
    const target = h.fake.postUserMessage({ content: 'a late bird', attachments: [attachment()] });
    const i = await askForm(target, 'which bird is it, late?');
    const status = await shownWithCopy(i);
    h.fake.expireToken(i.token);
    await answer(i, 'A late robin.');
    const late = await posted('A late robin.');
    expect(late.attachments.map((a) => a.filename)).toEqual([COPY]);
    h.fake.deleteMessage(target);
    await copyGone(late, 'the copy removed from the posted answer');
    await copyGone(status, 'the copy removed from the old status message');
  });
});

describe('where no copy is made', () => {
  it('a channel that keeps little (no-log, a retention TTL): the answer comes without a copy, and nothing is linked', async () => {
    for (const saved of [{ noLog: true }, { retentionSeconds: 600 }]) {
      const user = newUser();
      const target = h.fake.postUserMessage({ content: 'a secret', attachments: [attachment()] });
      const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
      await h.core.settings.set('channel', here, saved);
      try {
        const i = await askForm(target, 'is it kept?', user);
        await queued(i);
        await h.fake.waitFor(() => h.fake.original(i)?.content.startsWith('⏳') || undefined, 10_000, 'the place in line');
        await settle();
        expect(h.fake.requestsTo('PATCH', new RegExp(`/webhooks/${h.fake.appId}/${i.token}/messages/@original$`)).filter((r) => r.files.length > 0)).toEqual([]);
      } finally {
        await h.core.settings.reset('channel', here);
      }
    }
  });
});

describe('what the copy costs', () => {
  it('no settings read of its own: the adapter\'s read before the defer decides (one read there, one by the core)', async () => {
    const user = newUser();
    const reads = vi.spyOn(h.core.settings, 'layers');
    try {
      const i = askSlash('how many settings reads?', user);
      await queued(i);
      await withCopy(i);
      await settle();
      expect(reads.mock.calls.filter(([d]) => d.userId === user.id)).toHaveLength(2);
    } finally {
      reads.mockRestore();
    }
  });
});

describe('another bot process', () => {
  it('the link is in Redis: a bot process that did not post the answer (here: one started after it) removes the copy', async () => {
    const target = h.fake.postUserMessage({ content: 'a dog', attachments: [attachment()] });
    const asked = await askForm(target, 'which breed is the dog?');
    await answer(asked, 'A collie.');
    await h.adapter.stop();
    const other = new DiscordAdapter({ config: h.config, secrets: { REDIS_URL: 'redis://127.0.0.1:6379', DISCORD_TOKEN: h.fake.token, DISCORD_APPLICATION_ID: h.fake.appId }, log: createLogger('other-process', 'warn') });
    try {
      await other.start(h.core);
      h.fake.deleteMessage(target);
      await copyGone(h.fake.original(asked)!, 'the copy removed by the other process');
      expect(h.fake.original(asked)!.content).toBe('A collie.');
    } finally {
      await other.stop();
    }
  });

  it('a process started since: its gateway listeners follow a purge and an edit (registered at its login, here inside the test)', async () => {
    await h.adapter.stop(); // stopped above already
    const other = new DiscordAdapter({ config: h.config, secrets: { REDIS_URL: 'redis://127.0.0.1:6379', DISCORD_TOKEN: h.fake.token, DISCORD_APPLICATION_ID: h.fake.appId }, log: createLogger('started-since', 'warn') });
    try {
      await other.start(h.core);
      const purged = h.fake.postUserMessage({ content: 'a vase', attachments: [attachment()], silent: true });
      const edited = h.fake.postUserMessage({ content: 'a bowl', attachments: [attachment()], silent: true });
      const [aboutPurged, aboutEdited] = [await askForm(purged, 'what vase?'), await askForm(edited, 'what bowl?')];
      await answer(aboutPurged, 'A Ming vase.', other);
      await answer(aboutEdited, 'A salad bowl.', other);
      h.fake.bulkDelete([purged, h.fake.postUserMessage({ content: 'spam', silent: true })]);
      await copyGone(h.fake.original(aboutPurged)!, 'the copy removed after the purge');
      h.fake.editUserMessage(edited, { keep: () => false });
      await copyGone(h.fake.original(aboutEdited)!, 'the copy removed after the edit');
    } finally {
      await other.stop();
    }
  });

  it('one without the Message Content intent: an edit in a server comes with its attachments blanked, so it is not followed (the deletion still is)', async () => {
    await h.adapter.stop(); // stopped above already; a process that logs in without the intent
    const config = { ...h.config, discord: { ...h.config.discord, messageContentIntent: false } };
    const other = new DiscordAdapter({ config, secrets: { REDIS_URL: 'redis://127.0.0.1:6379', DISCORD_TOKEN: h.fake.token, DISCORD_APPLICATION_ID: h.fake.appId }, log: createLogger('no-content-process', 'warn') });
    try {
      await other.start(h.core);
      expect(other.hasMessageContent).toBe(false);
      const target = h.fake.postUserMessage({ content: 'a tree', attachments: [attachment()], silent: true });
      const asked = await askForm(target, 'which tree?');
      await answer(asked, 'An oak.', other);
      h.fake.editUserMessage(target, { content: 'an old tree' }); // its image kept; MESSAGE_UPDATE says attachments: []
      await settle();
      expect(h.fake.original(asked)!.attachments.map((a) => a.filename)).toEqual([COPY]);
      h.fake.deleteMessage(target);
      await copyGone(h.fake.original(asked)!, 'the copy removed after the deletion');
    } finally {
      await other.stop();
    }
  });
});
