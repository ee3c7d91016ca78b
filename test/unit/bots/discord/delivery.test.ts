// DiscordDelivery (the PlatformPort) against the fake Discord with discord.js's real REST client: throttled
// progress, idempotent delivery on every path (token, status message, expired token → channel message, also
// across a restart that loses in-memory state), and errors that must reach the core's retry.
import { REST } from 'discord.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiscordDelivery } from '../../../../bots/discord/delivery.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Config } from '../../../../src/config/schema.ts';
import type { DiscordDestination, JobResult } from '../../../../src/jobs/contract.ts';
import { createLogger } from '../../../../src/log.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { FakeDiscord, type FakeInteraction } from '../../../fakes/discord/server.ts';
import { Client, GatewayIntentBits } from 'discord.js';

let fake: FakeDiscord;
let client: Client;
let config: Readonly<Config>;
let png: Uint8Array;
const log = createLogger('test', 'silent');

beforeAll(async () => {
  fake = await FakeDiscord.start();
  client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiBase } });
  await client.login(fake.token); // a gateway session, so the fake can dispatch interactions
  config = loadConfig({ env: {}, overrides: { discord: { apiBaseUrl: fake.apiBase, progressEditIntervalMs: 1_000, restRetries: 1 } } });
  png = await samplePng(8);
});
afterAll(async () => {
  await client.destroy();
  await fake.close();
});

const port = () => new DiscordDelivery(new REST({ api: fake.apiBase, retries: 1 }).setToken(fake.token), config, log);

async function deferred(): Promise<{ interaction: FakeInteraction; destination: DiscordDestination }> {
  const interaction = fake.slashCommand({ name: 'imagine' });
  await client.rest.post(`/interactions/${interaction.id}/${interaction.token}/callback`, { body: { type: 5 }, auth: false });
  const destination: DiscordDestination = {
    platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId,
    interactionToken: interaction.token, interactionAt: Date.now(),
  };
  return { interaction, destination };
}

const result = (jobId: string, destination: DiscordDestination, prompt = 'a fox'): JobResult => ({
  v: 1, jobId, kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: Date.now(),
  image: { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: prompt, prompt, options: { seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 3, aspect: '1:1' } },
});

const patches = (i: FakeInteraction) => fake.requestsTo('PATCH', new RegExp(`/${i.token}/messages/@original$`));
const progress = (jobId: string, step: number) => ({ v: 1 as const, jobId, stage: 'features' as const, step, total: 10 });

describe('DiscordDelivery', () => {
  it('throttles progress edits per job and drops progress after delivery', async () => {
    const { interaction, destination } = await deferred();
    const p = port();
    for (let step = 1; step <= 5; step++) await p.showProgress(destination, progress('j-throttle', step));
    expect(patches(interaction)).toHaveLength(1);
    await p.deliver(result('j-throttle', destination), png);
    await p.showProgress(destination, { ...progress('j-throttle', 9), stage: 'queued' });
    expect(patches(interaction)).toHaveLength(2);
    expect(fake.original(interaction)!.attachments).toHaveLength(1);
  });

  it('a repeated delivery through the token edits the same message again: one message, one image', async () => {
    const { interaction, destination } = await deferred();
    await port().deliver(result('j-twice', destination), png);
    await port().deliver(result('j-twice', destination), png);
    expect(patches(interaction).map((r) => r.status)).toEqual([200, 200]);
    expect(fake.channelMessages().filter((m) => m.interactionId === interaction.id)).toHaveLength(1);
    expect(fake.original(interaction)!.attachments).toHaveLength(1);
  });

  it('expired token: one channel message, even when two fresh processes deliver it', async () => {
    const { interaction, destination } = await deferred();
    fake.expireToken(interaction.token);
    await port().deliver(result('j-expired', destination, 'an expired fox'), png);
    await port().deliver(result('j-expired', destination, 'an expired fox'), png);
    const posted = fake.channelMessages().filter((m) => m.content.includes('an expired fox'));
    expect(posted).toHaveLength(1);
    expect(posted[0]!.content).toContain(`<@${fake.alice.id}>`);

    // An answer has no buttons to find it by: Discord's enforce_nonce makes the second post return the first.
    const answer: JobResult = { ...result('j-expired-ask', destination), kind: 'ask', image: undefined, answer: { text: 'An expired answer.', tokenCount: 3 } };
    await port().deliver(answer, undefined);
    await port().deliver(answer, undefined);
    expect(fake.channelMessages().filter((m) => m.content.includes('An expired answer.'))).toHaveLength(1);
  });

  it('posts even when the look-up of recent messages is refused (no Read Message History)', async () => {
    const { interaction, destination } = await deferred();
    fake.expireToken(interaction.token);
    fake.injectFault({ method: 'GET', path: /\/channels\/\d+\/messages$/, status: 403, code: 50001, message: 'Missing Access' });
    await port().deliver(result('j-no-history', destination, 'a private fox'), png);
    expect(fake.channelMessages().filter((m) => m.content.includes('a private fox'))).toHaveLength(1);
  });

  it('past interactionTokenTtlMs it posts to the channel without trying the token', async () => {
    const { interaction, destination } = await deferred();
    await port().deliver(result('j-old', { ...destination, interactionAt: Date.now() - 20 * 60_000 }, 'an old fox'), png);
    expect(patches(interaction)).toHaveLength(0);
    expect(fake.channelMessages().filter((m) => m.content.includes('an old fox'))).toHaveLength(1);
  });

  it('mention-replies: edits the status message; if it was deleted, replies to the question instead', async () => {
    const question = fake.postUserMessage({ content: 'q', mentionBot: true });
    const status = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body: { content: '⏳', message_reference: { message_id: question.id } } })) as { id: string };
    const destination: DiscordDestination = {
      platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId,
      replyToMessageId: question.id, statusMessageId: status.id,
    };
    const answer: JobResult = { ...result('j-mention', destination), kind: 'ask', image: undefined, answer: { text: 'A fox.', tokenCount: 2 } };
    await port().deliver(answer, undefined);
    expect(fake.messages.get(status.id)!.content).toBe('A fox.');
    fake.messages.delete(status.id);
    await port().deliver({ ...answer, jobId: 'j-mention-2', answer: { text: 'Still a fox.', tokenCount: 3 } }, undefined);
    const reply = fake.channelMessages().find((m) => m.content === 'Still a fox.');
    expect(reply?.referenceId).toBe(question.id);
  });

  it('a 5xx is retried by the REST client; a persistent one reaches the core (which retries the delivery)', async () => {
    const { interaction, destination } = await deferred();
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 502 });
    await port().deliver(result('j-5xx', destination), png);
    expect(patches(interaction).map((r) => r.status)).toEqual([502, 200]);

    const second = await deferred();
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 500, times: 5 });
    await expect(port().deliver(result('j-5xx-2', second.destination), png)).rejects.toThrow();
  });

  it("a private result or a withheld image for a user who refuses DMs: one notice in the channel naming them, nothing of the request; from a DM, only logged", async () => {
    const carol = fake.user('carol');
    fake.closeDirectMessages(carol);
    const base = { platform: 'discord' as const, guildId: fake.guildId, channelId: fake.channelId, userId: carol.id, applicationId: fake.appId };
    const notices = () => fake.channelMessages().filter((m) => m.content.startsWith(`<@${carol.id}> I couldn't send you your private result`));
    await port().deliver(result('j-closed', { ...base, private: true }, 'a fox for carol'), png);
    await port().deliver(result('j-closed', { ...base, private: true }, 'a fox for carol'), png); // a repeated delivery (another process)
    expect(notices()).toHaveLength(1);
    // It pings carol alone (everyone else's mentions stay off).
    const posted = fake.requestsTo('POST', new RegExp(`/channels/${fake.channelId}/messages$`)).filter((r) => JSON.stringify(r.body).includes(carol.id));
    expect(posted.map((r) => (r.body as { allowed_mentions?: unknown }).allowed_mentions)).toEqual([{ users: [carol.id] }, { users: [carol.id] }]);
    const withheld: JobResult = { ...result('j-closed-2', base, 'a withheld fox for carol'), status: 'failed', image: undefined, error: { code: 'moderation', message: 'Withheld.', userFacing: true, private: true } };
    await port().deliver(withheld, undefined);
    expect(notices()).toHaveLength(2);
    expect(fake.channelMessages().filter((m) => /fox for carol|Withheld/.test(m.content)).map((m) => m.content)).toEqual([]);
    // A request made in the DM itself: nowhere else to say it.
    const before = fake.messages.size;
    await port().deliver(result('j-closed-3', { ...base, guildId: null, channelId: fake.dmChannel(carol), private: true }), png);
    expect(fake.messages.size).toBe(before);
    // Any other refusal still reaches the core, which retries.
    fake.injectFault({ method: 'POST', path: new RegExp(`/channels/${fake.dmChannel(fake.alice)}/messages$`), status: 403, code: 50001, message: 'Missing Access' });
    await expect(port().deliver(result('j-closed-4', { ...base, userId: fake.alice.id, private: true }), png)).rejects.toThrow('Missing Access');
  });
});

