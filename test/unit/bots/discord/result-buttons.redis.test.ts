// Buttons pressed on the bot's messages after the fact (bots/discord/adapter.ts onButton), real discord.js against the
// fake Discord, the real core on Redis, no worker: where a press in a DM belongs, and what the presser is told.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buttonId, parseButtonId } from '../../../../bots/discord/custom-ids.ts';
import type { DiscordDestination, JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';
import type { FakeInteraction, FakeMessage, FakeUser } from '../../../fakes/discord/server.ts';

const EPHEMERAL = 64;
let h: DiscordHarness;
let png: Uint8Array;
const { starting, check } = startGuard();
beforeEach(check);

// A server whose channels the bot serves, but not direct messages (discord.allowDirectMessages: false): a private
// channel's answers still go to the asker's DM, with their buttons.
beforeAll(() => starting(async () => {
  h = await startDiscordHarness({ worker: false, config: { discord: { allowDirectMessages: false } } });
  png = await samplePng(24);
}), 60_000);
afterAll(async () => h?.stop(), 30_000);

const newUser = (): FakeUser => h.fake.user(`user${Math.random().toString(36).slice(2, 8)}`);
const request = async (jobId: string) => (await h.core.queue.getJob(jobId))?.data as JobRequest | undefined;
const here = (user: FakeUser): DiscordDestination => ({ platform: 'discord', guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId });

/** The private answer an interaction got: its ephemeral reply, follow-up or original. */
function privateText(i: FakeInteraction): string | undefined {
  const first = i.callbacks[0];
  if (first?.type === 4 && Number(first.data?.flags ?? 0) & EPHEMERAL) return String(first.data?.content ?? '');
  const followUp = i.followupIds.map((id) => h.fake.messages.get(id)).find((m) => m && m.flags & EPHEMERAL);
  if (followUp) return followUp.content;
  const original = h.fake.original(i);
  return original && original.flags & EPHEMERAL && original.content ? original.content : undefined;
}
const toldPrivately = (i: FakeInteraction) => h.fake.waitFor(() => privateText(i), 10_000, 'the private answer');

/** The Cancel button's custom_id on a message, if it has one. */
const cancelIdOn = (m: FakeMessage): string | undefined =>
  JSON.stringify(m.components ?? []).match(/"custom_id":"(b3:cancel:[^"]+)"/)?.[1];

describe('a private channel\'s job, its progress in the asker\'s DM, in a bot not enabled in DMs', () => {
  it('its Cancel button in the DM cancels it (the job is the channel\'s), not "not enabled in direct messages"', async () => {
    const user = newUser();
    await h.core.settings.set('channel', here(user), { private: true });
    try {
      const asked = h.fake.postUserMessage({
        content: 'what is this?', author: user, mentionBot: true,
        attachments: [h.fake.addAttachment({ bytes: png, filename: 'photo.png', contentType: 'image/png' })],
      });
      const jobId = jobIdFor('discord', asked.id);
      expect((await until(() => request(jobId), 10_000, 'the job'))?.destination).toMatchObject({ channelId: h.fake.channelId, private: true });
      const dm = h.fake.dmChannel(user);
      const status = await h.fake.waitFor(() => h.fake.channelMessages(dm).find((m) => m.author.id === h.fake.appId && cancelIdOn(m)), 10_000, 'the DM status with Cancel');
      const cancelId = cancelIdOn(status)!;
      expect(parseButtonId(cancelId)).toEqual({ action: 'cancel', jobId });
      const press = h.fake.pressButton(status, cancelId, user);
      expect(await toldPrivately(press)).toBe('Cancelling…');
      await until(async () => ((await request(jobId)) === undefined ? true : undefined), 10_000, 'the job removed');
      // Someone else's job from a DM is still not theirs to cancel, and a DM of one's own is still refused
      const stranger = newUser();
      const theirs = h.fake.postUserMessage({ content: 'x', author: h.fake.bot, channelId: h.fake.dmChannel(stranger), guildId: null, silent: true });
      expect(await toldPrivately(h.fake.pressButton(theirs, cancelId, stranger))).toBe("This bot isn't enabled in direct messages.");
    } finally {
      await h.core.settings.set('channel', here(user), { private: false });
    }
  }, 30_000);
});

describe('a server job whose result went to the asker\'s DM because the channel refused it (delivery.ts postToRequester)', () => {
  it('a Re-roll pressed on it there is that channel\'s job, kept in the DM, not refused as a DM job', async () => {
    const user = newUser();
    const asked = h.fake.slashCommand({ name: 'imagine', user, options: [{ name: 'prompt', type: 3, value: 'a lighthouse at dusk' }] });
    const jobId = jobIdFor('discord', asked.id);
    expect((await until(() => request(jobId), 10_000, 'the job'))?.destination).not.toHaveProperty('private');
    // The result as postToRequester sends it: in the DM, with the channel named and the job's buttons
    const inDm = h.fake.postUserMessage({
      content: `I couldn't post this in <#${h.fake.channelId}>: I am missing a permission there.\n**a lighthouse at dusk**`, author: h.fake.bot,
      channelId: h.fake.dmChannel(user), guildId: null, silent: true,
      attachments: [h.fake.addAttachment({ bytes: png, filename: 'blip3o-1.png', contentType: 'image/png' })],
    });
    const reroll = h.fake.pressButton(inDm, buttonId('reroll', jobId), user);
    const rerolled = await until(async () => (await request(jobIdFor('discord', reroll.id))) ?? (privateText(reroll) ? { refused: privateText(reroll) } : undefined), 10_000, 'the re-roll');
    expect(rerolled).toMatchObject({ kind: 'imagine', prompt: 'a lighthouse at dusk', destination: { guildId: h.fake.guildId, channelId: h.fake.channelId, private: true } });
    expect(reroll.callbacks[0]).toEqual({ type: 5, data: { flags: EPHEMERAL } }); // answered in the DM, privately
  }, 30_000);
});

describe('buttons on a private (ephemeral) result in a channel', () => {
  it('Re-roll, Vary and "Imagine this" stay private after the channel was made public since (as a private DM result\'s do)', async () => {
    const user = newUser();
    await h.core.settings.set('channel', here(user), { private: true });
    const asked = h.fake.slashCommand({ name: 'imagine', user, options: [{ name: 'prompt', type: 3, value: 'my secret garden' }] });
    const jobId = jobIdFor('discord', asked.id);
    expect((await until(() => request(jobId), 10_000, 'the job'))?.destination).toMatchObject({ private: true });
    expect(asked.callbacks[0]).toEqual({ type: 5, data: { flags: EPHEMERAL } });
    await h.core.settings.set('channel', here(user), { private: false }); // an admin makes the channel public again
    // The result only its asker saw: an ephemeral message in the channel, with its buttons
    const result = { ...h.fake.postUserMessage({ content: '**my secret garden**', author: h.fake.bot, silent: true, attachments: [h.fake.addAttachment({ bytes: png, filename: 'blip3o-1.png', contentType: 'image/png' })] }), flags: EPHEMERAL };
    const described = { ...h.fake.postUserMessage({ content: '1. a secret garden at night', author: h.fake.bot, silent: true }), flags: EPHEMERAL };
    for (const press of [
      h.fake.pressButton(result, buttonId('reroll', jobId), user),
      h.fake.pressButton(result, buttonId('vary', jobId), user),
      h.fake.pressButton(described, buttonId('imagine', jobId, 0), user),
    ]) {
      const job = await until(() => request(jobIdFor('discord', press.id)), 10_000, 'the job of the press');
      expect(job?.destination).toMatchObject({ channelId: h.fake.channelId, private: true });
      expect(press.callbacks[0]).toEqual({ type: 5, data: { flags: EPHEMERAL } }); // not posted for the channel to see
    }
    // A public result's buttons in the now public channel: public
    const open = h.fake.pressButton(h.fake.postUserMessage({ content: '**a lighthouse**', author: h.fake.bot, silent: true }), buttonId('reroll', jobId), user);
    expect((await until(() => request(jobIdFor('discord', open.id)), 10_000, 'the public re-roll'))?.destination).not.toHaveProperty('private');
    expect(open.callbacks[0]).toEqual({ type: 5, data: { flags: 0 } });
  }, 30_000);
});

describe('a button of ours this version cannot read', () => {
  it('(an action a newer instance added, during a rolling upgrade; a malformed index) is answered privately, not left to "This interaction failed"', async () => {
    const user = newUser();
    const message = h.fake.postUserMessage({ content: '**a fox**', author: h.fake.bot, silent: true });
    for (const id of ['b3:upscale:jabc', 'b3:vary:jabc:x', 'b3:reroll:']) {
      expect(await toldPrivately(h.fake.pressButton(message, id, user))).toBe('This button no longer works here. Please run the command again.');
    }
    const stray = h.fake.pressButton(message, 'another:format', user);
    await new Promise((r) => setTimeout(r, 300));
    expect(stray.callbacks).toHaveLength(0); // nothing we ever wrote: left alone
  });
});
