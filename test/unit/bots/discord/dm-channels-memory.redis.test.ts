// What discord.js keeps per DM in the bot's memory over weeks of traffic: every DM channel it is sent (a DM's message
// or interaction: Partials.Channel), each with up to 200 of its messages, stayed for the life of the process, one per
// user who ever used the bot in DMs. The adapter sweeps those idle for DM_IDLE_MS (sweepIdleDirectMessages, run every
// DM_SWEEP_MS); a DM after the sweep makes its channel again, and a reply chain in it is still followed (discord.js's
// fetchReference finds the channel in its cache: the message that just came put it back).
import type { Client } from 'discord.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DM_IDLE_MS } from '../../../../bots/discord/adapter.ts';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';

const USERS = 5;
let h: DiscordHarness;
let png: Uint8Array;

beforeAll(async () => {
  h = await startDiscordHarness({ worker: false });
  png = await samplePng(24);
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

/** The adapter's discord.js client (private: read here only to count what it caches). */
const clientOf = (harness: DiscordHarness): Client => (harness.adapter as unknown as { client: Client }).client;
const dmChannels = () => clientOf(h).channels.cache.filter((c) => c.isDMBased()).size;
const queued = (messageId: string) => until(async () => (await h.core.queue.getJob(jobIdFor('discord', messageId)))?.data as JobRequest | undefined, 10_000, 'the job');
const attachment = () => h.fake.addAttachment({ bytes: png, filename: 'photo.png', contentType: 'image/png' });

it('DM channels idle for DM_IDLE_MS are forgotten, recent ones kept; a DM after the sweep is answered, with its reply chain', async () => {
  const users = Array.from({ length: USERS }, (_, i) => h.fake.user(`dm-user${i}`));
  const firsts = [];
  for (const user of users) {
    const m = h.fake.postUserMessage({ content: 'what animal is this?', author: user, channelId: h.fake.dmChannel(user), guildId: null, attachments: [attachment()] });
    await queued(m.id);
    firsts.push(m);
  }
  expect(dmChannels()).toBe(USERS);
  expect(h.adapter.sweepIdleDirectMessages(Date.now())).toBe(0); // each had a message just now
  expect(dmChannels()).toBe(USERS);
  expect(h.adapter.sweepIdleDirectMessages(Date.now() + DM_IDLE_MS + 1_000)).toBe(USERS);
  expect(dmChannels()).toBe(0);
  expect(clientOf(h).channels.cache.has(h.fake.channelId)).toBe(true); // the server's channels stay

  // The first user replies in the DM to the bot's answer: the chain up to the image is followed as before.
  const user = users[0]!;
  const answer = h.fake.postUserMessage({ content: 'A red fox.', author: h.fake.bot, channelId: h.fake.dmChannel(user), guildId: null, replyTo: firsts[0]!.id, silent: true });
  const followUp = h.fake.postUserMessage({ content: 'and its tail?', author: user, channelId: h.fake.dmChannel(user), guildId: null, replyTo: answer.id });
  expect(await queued(followUp.id)).toMatchObject({
    kind: 'ask',
    question: 'and its tail?',
    history: [{ role: 'user', text: 'what animal is this?' }, { role: 'assistant', text: 'A red fox.' }],
  });
  expect(dmChannels()).toBe(1);
});
