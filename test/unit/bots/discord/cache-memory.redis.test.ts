// What discord.js keeps per user in the bot's memory over weeks of traffic. With the Guilds and GuildMessages intents
// Discord sends every message posted where the bot can read (a mention or not), and each one, like each interaction,
// carries its author and their server membership: discord.js's default caches kept every user and member so seen,
// for the life of the process (nothing evicts them: without the GuildMembers intent no "member left" comes either).
// The adapter reads neither cache: each event carries the user and member it needs. Only the bot's own is kept
// (`guild.members.me`: bots/discord/conversation.ts).
import type { Client } from 'discord.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';

const USERS = 100;
let h: DiscordHarness;

beforeAll(async () => {
  h = await startDiscordHarness({ worker: false });
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

/** The adapter's discord.js client (private: read here only to count what it caches). */
const clientOf = (harness: DiscordHarness): Client => (harness.adapter as unknown as { client: Client }).client;

it('users and members seen in messages and interactions are not kept, whatever their number; the bot\'s own member is', async () => {
  for (let i = 0; i < USERS; i++) {
    const author = h.fake.user(`passer${i}`);
    h.fake.postUserMessage({ content: `hello ${i}`, author }); // not for the bot: only seen
    if (i % 10 === 0) h.fake.slashCommand({ name: 'blip3o-settings', user: author }); // an interaction too
  }
  // Handled in order: once this one's job is queued, every dispatch before it was.
  const last = h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'a red fox' }], user: h.fake.user('asker') });
  await until(async () => h.core.requestOf(jobIdFor('discord', last.id)), 10_000, 'the last command handled');
  const client = clientOf(h);
  const guild = client.guilds.cache.get(h.fake.guildId)!;
  expect(guild.members.me?.id).toBe(client.user!.id);
  expect({ users: client.users.cache.size, members: guild.members.cache.size }).toEqual({ users: 1, members: 1 }); // the bot itself
});
