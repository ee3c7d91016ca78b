// DiscordDelivery (the PlatformPort) against the fake Discord with discord.js's real REST client: progress (throttled
// by the core, not here), idempotent delivery on every path (token, status message, expired token → channel message, also
// across a restart that loses in-memory state), and errors that must reach the core's retry.
import { REST } from 'discord.js';
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buttonId } from '../../../../bots/discord/custom-ids.ts';
import { DiscordDelivery, nonceFor } from '../../../../bots/discord/delivery.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Config } from '../../../../src/config/schema.ts';
import type { DiscordDestination, JobResult } from '../../../../src/jobs/contract.ts';
import { createLogger } from '../../../../src/log.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { UPLOAD_LIMIT_BYTES } from '../../../fakes/discord/rest.ts';
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
/** A port whose log lines are kept: [level, fields, message]. */
function recordingPort() {
  const lines: [string, Record<string, unknown>, string][] = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => void lines.push([level, fields, msg]);
  const recording = { ...log, info: at('info'), warn: at('warn') } as unknown as typeof log;
  return { port: new DiscordDelivery(new REST({ api: fake.apiBase, retries: 1 }).setToken(fake.token), config, recording), lines };
}

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
  it('makes every progress edit the core hands over (the core throttles them) and drops progress after delivery', async () => {
    const { interaction, destination } = await deferred();
    const p = port();
    for (let step = 1; step <= 5; step++) await p.showProgress(destination, progress('j-throttle', step));
    expect(patches(interaction)).toHaveLength(5); // it dropped all but the first: see 'no second throttle' below
    expect(fake.original(interaction)!.content).toBe('⏳ Drawing: step 5/10');
    await p.deliver(result('j-throttle', destination), png);
    await p.showProgress(destination, { ...progress('j-throttle', 9), stage: 'queued' });
    expect(patches(interaction)).toHaveLength(6);
    expect(fake.original(interaction)!.attachments).toHaveLength(1);
  });

  it('a gallery heavier than Discord\'s upload limit goes as JPEGs that fit (it was refused whole, 413/40005, on every retry); one that fits stays PNG', async () => {
    // noise compresses as badly as a photograph's detail: ≈ 3 MB a PNG
    const noisy = async () => new Uint8Array(await sharp(randomBytes(1024 * 1024 * 3), { raw: { width: 1024, height: 1024, channels: 3 } }).png().toBuffer());
    const pngs = await Promise.all([1, 2, 3, 4].map(noisy));
    expect(pngs.reduce((n, p) => n + p.byteLength, 0)).toBeGreaterThan(UPLOAD_LIMIT_BYTES); // ≈ 3 MB each
    const { interaction, destination } = await deferred();
    const base = result('j-heavy', destination);
    const images = [1, 2, 3, 4].map((seed) => ({ ...base.image!, options: { ...base.image!.options, seed } }));
    await port().deliver({ ...base, images }, pngs[0], pngs);
    const sent = fake.original(interaction)!;
    expect(sent.attachments.map((a) => a.filename)).toEqual(['blip3o-1.jpg', 'blip3o-2.jpg', 'blip3o-3.jpg', 'blip3o-4.jpg']);
    expect(sent.attachments.reduce((n, a) => n + a.size, 0)).toBeLessThanOrEqual(UPLOAD_LIMIT_BYTES);
    expect(sent.components.length).toBeGreaterThan(0); // the result, with its buttons: not "⏳ Drawing"
    const light = await deferred();
    await port().deliver(result('j-light', light.destination), png);
    expect(fake.original(light.interaction)!.attachments.map((a) => a.filename)).toEqual(['blip3o-1.png']);
  }, 60_000);

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
    // Not a reply: no message reference at all.
    const post = fake.requestsTo('POST', new RegExp(`/channels/${fake.channelId}/messages$`)).find((r) => JSON.stringify(r.body).includes('an expired fox'))!;
    expect(post.body).not.toHaveProperty('message_reference');

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
    const { port: p, lines } = recordingPort();
    await p.deliver(result('j-no-history', destination, 'a private fox'), png);
    expect(lines).toContainEqual(['info', { jobId: 'j-no-history', code: 50027 }, 'interaction token gone; posting to the channel']);
    expect(lines).toContainEqual(['warn', { jobId: 'j-no-history', err: 'Missing Access' }, 'could not read recent messages before posting']);
    expect(fake.channelMessages().filter((m) => m.content.includes('a private fox'))).toHaveLength(1);
  });

  it('a job asked in a thread: an expired token posts into the thread (a repeat finds it there), a mention\'s status message is edited there, a DM refusal is told there', async () => {
    const thread = fake.addThread(fake.channelId, 'ideas');
    const inThread = (m: { channelId: string }) => m.channelId === thread;
    const { interaction, destination } = await deferred();
    fake.expireToken(interaction.token);
    const d: DiscordDestination = { ...destination, threadId: thread };
    await port().deliver(result('j-thread', d, 'a fox in a thread'), png);
    await port().deliver(result('j-thread', d, 'a fox in a thread'), png); // another process, after the nonce window: found by its buttons
    expect([...fake.messages.values()].filter((m) => m.content.includes('a fox in a thread')).map(inThread)).toEqual([true]);
    expect(fake.requestsTo('GET', new RegExp(`/channels/${thread}/messages$`)).length).toBeGreaterThanOrEqual(2);

    const question = fake.postUserMessage({ content: 'q', mentionBot: true, channelId: thread });
    const status = (await client.rest.post(`/channels/${thread}/messages`, { body: { content: '⏳', message_reference: { message_id: question.id } } })) as { id: string };
    const mention: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, threadId: thread, userId: fake.alice.id, applicationId: fake.appId, replyToMessageId: question.id, statusMessageId: status.id };
    await port().deliver({ ...result('j-thread-ask', mention), kind: 'ask', image: undefined, answer: { text: 'A threaded fox.', tokenCount: 3 } }, undefined);
    expect(fake.messages.get(status.id)!.content).toBe('A threaded fox.');

    const dave = fake.user('dave');
    fake.closeDirectMessages(dave);
    await port().deliver(result('j-thread-private', { ...mention, userId: dave.id, replyToMessageId: undefined, statusMessageId: undefined, private: true }), png);
    expect([...fake.messages.values()].filter((m) => m.content.startsWith(`<@${dave.id}> I couldn't send you`)).map(inThread)).toEqual([true]);
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

  it('a private channel\'s mention-question: its status message in the asker\'s DM gets the progress and the answer; the channel nothing', async () => {
    const dm = fake.dmChannel(fake.alice);
    const status = (await client.rest.post(`/channels/${dm}/messages`, { body: { content: '⏳ Looking at the image…' } })) as { id: string };
    const destination: DiscordDestination = {
      platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId,
      dmChannelId: dm, statusMessageId: status.id, private: true,
    };
    const before = fake.channelMessages().length;
    await port().showProgress(destination, { ...progress('j-dm-ask', 3), stage: 'answering' });
    expect(fake.messages.get(status.id)!.content).not.toBe('⏳ Looking at the image…');
    await port().deliver({ ...result('j-dm-ask', destination), kind: 'ask', image: undefined, answer: { text: 'A private fox.', tokenCount: 3 } }, undefined);
    expect(fake.messages.get(status.id)!.content).toBe('A private fox.');
    expect(fake.channelMessages().length).toBe(before);
    // withheld (a private error): the DM's status message goes and the note is posted in the DM
    const second = (await client.rest.post(`/channels/${dm}/messages`, { body: { content: '⏳' } })) as { id: string };
    await port().deliver({ ...result('j-dm-withheld', { ...destination, statusMessageId: second.id }), status: 'failed', image: undefined, error: { code: 'withheld', message: 'Not posted: flagged.', userFacing: true, private: true } }, undefined);
    expect(fake.messages.has(second.id)).toBe(false);
    expect(fake.channelMessages().length).toBe(before);
  });

  it('a 5xx is retried by the REST client; a persistent one reaches the core (which retries the delivery)', async () => {
    const { interaction, destination } = await deferred();
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 502 });
    await port().deliver(result('j-5xx', destination), png);
    expect(patches(interaction).map((r) => r.status)).toEqual([502, 200]);

    const second = await deferred();
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 500, times: 2 }); // both tries (restRetries 1): none left for the next test
    await expect(port().deliver(result('j-5xx-2', second.destination), png)).rejects.toThrow();
  });

  it("a private result or a withheld image for a user who refuses DMs: one notice in the channel naming them, nothing of the request; from a DM, only logged", async () => {
    const carol = fake.user('carol');
    fake.closeDirectMessages(carol);
    const base = { platform: 'discord' as const, guildId: fake.guildId, channelId: fake.channelId, userId: carol.id, applicationId: fake.appId };
    const notices = () => fake.channelMessages().filter((m) => m.content.startsWith(`<@${carol.id}> I couldn't send you your private result`));
    const { port: told, lines: toldLines } = recordingPort();
    expect(await told.deliver(result('j-closed', { ...base, private: true }, 'a fox for carol'), png)).toBe('nowhere');
    expect(toldLines).toContainEqual(['warn', { jobId: 'j-closed', toldInChannel: true }, 'the requester does not accept direct messages: the private result was not posted']);
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

  it("a channel that takes none of the bot's posts any more (Send Messages denied, where slash commands still work; access removed; deleted): the result goes to the requester's DM, saying why, once", async () => {
    const closed = fake.addChannel('no-bot-posts', { botCannot: ['send'] });
    const base = { platform: 'discord' as const, guildId: fake.guildId, channelId: closed, userId: fake.alice.id, applicationId: fake.appId };
    const inDm = (text: string) => fake.channelMessages(fake.dmChannel(fake.alice)).filter((m) => m.content.includes(text));
    // A job whose interaction token expired in the queue: its channel post is refused (403 50013).
    const { port: watched, lines } = recordingPort();
    await watched.deliver(result('j-nosend', base, 'a fox nobody may post'), png);
    await port().deliver(result('j-nosend', base, 'a fox nobody may post'), png); // a repeated delivery (another process)
    const sent = inDm('a fox nobody may post');
    expect(sent).toHaveLength(1); // before: refused, retried by the core until dropped
    expect(sent[0]!.content).toMatch(new RegExp(`^I couldn't post this in <#${closed}>: I don't have the Send Messages permission there\\.\\n\\*\\*a fox nobody may post\\*\\*`));
    expect(sent[0]!.attachments).toHaveLength(1);
    expect(fake.channelMessages(closed)).toEqual([]);
    expect(lines).toContainEqual(['warn', expect.objectContaining({ jobId: 'j-nosend', code: 50013 }), 'the result cannot be posted in its channel: sending it to the requester directly']);
    // The bot's access to the channel taken away (50001); the channel deleted (10003): the same, saying which
    for (const [status, code, message, why] of [[403, 50001, 'Missing Access', 'I no longer have access to it'], [404, 10003, 'Unknown Channel', 'it no longer exists']] as const) {
      fake.injectFault({ method: 'POST', path: new RegExp(`/channels/${fake.channelId}/messages$`), status, code, message });
      await port().deliver(result(`j-lost-${code}`, { ...base, channelId: fake.channelId }, `a fox lost ${code}`), png);
      expect(inDm(`a fox lost ${code}`).map((m) => m.content.split('\n')[0])).toEqual([`I couldn't post this in <#${fake.channelId}>: ${why}.`]);
    }
    // A mention's status message in a channel that took the bot's access away: the same
    fake.injectFault({ method: 'PATCH', path: /\/channels\/\d+\/messages\/status-gone$/, status: 403, code: 50001, message: 'Missing Access' });
    await port().deliver(result('j-status-lost', { ...base, channelId: fake.channelId, statusMessageId: 'status-gone' }, 'a fox whose status is out of reach'), png);
    expect(inDm('a fox whose status is out of reach')).toHaveLength(1);
    // Their DMs closed too: nothing can be done, so nothing is retried, and the channel gets no notice either.
    const dave = fake.user('dave');
    fake.closeDirectMessages(dave);
    const { port: nowhere, lines: nowhereLines } = recordingPort();
    await nowhere.deliver(result('j-nowhere', { ...base, userId: dave.id }, 'a fox for nobody'), png);
    expect(nowhereLines).toContainEqual(['warn', { jobId: 'j-nowhere' }, 'the requester does not accept direct messages, and the channel refuses the bot: the result was not posted']);
    expect(fake.channelMessages(closed)).toEqual([]);
  });

  it("a thread archived while its job ran is posted in anew (Discord unarchives it; the edit was 50083, retried until dropped); a locked one sends the result to the requester's DM, once", async () => {
    const inThread = async (thread: string) => {
      const interaction = fake.slashCommand({ name: 'imagine', channelId: thread });
      await client.rest.post(`/interactions/${interaction.id}/${interaction.token}/callback`, { body: { type: 5 }, auth: false });
      const destination: DiscordDestination = {
        platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, threadId: thread, userId: fake.alice.id, applicationId: fake.appId,
        interactionToken: interaction.token, interactionAt: Date.now(),
      };
      return { interaction, destination };
    };
    const inDm = (text: string) => fake.channelMessages(fake.dmChannel(fake.alice)).filter((m) => m.content.includes(text));
    // Archived by inactivity (a 1-hour thread, a long queue): its status message can no longer be edited.
    const quiet = fake.addThread(fake.channelId, 'quiet thread');
    const a = await inThread(quiet);
    const { port: p, lines: archivedLines } = recordingPort();
    await p.showProgress(a.destination, progress('j-archived', 3)); // "⏳ Drawing: step 3/10" with Cancel
    fake.archiveThread(quiet);
    expect(await p.deliver(result('j-archived', a.destination, 'a fox in a quiet thread'), png)).toBeUndefined(); // posted where asked
    const there = fake.channelMessages(quiet).filter((m) => m.content.includes('a fox in a quiet thread') && m.attachments.length === 1);
    expect(there).toHaveLength(1);
    expect(fake.original(a.interaction)!.content).toBe('Done: the result is in the message below.'); // no "⏳ Drawing" with Cancel left behind
    expect(inDm('a fox in a quiet thread')).toEqual([]);
    expect(archivedLines).toContainEqual(['info', { jobId: 'j-archived' }, 'the thread was archived: posting the result in it anew']);
    // The same through a status message (a mention, or a token gone): its edit is 50083 too, and the result is posted anew.
    const quietMention = fake.addThread(fake.channelId, 'quiet thread 3');
    const question = fake.postUserMessage({ content: 'q', mentionBot: true, channelId: quietMention });
    const status = (await client.rest.post(`/channels/${quietMention}/messages`, { body: { content: '⏳', message_reference: { message_id: question.id } } })) as { id: string };
    fake.archiveThread(quietMention);
    const mention: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, threadId: quietMention, userId: fake.alice.id, applicationId: fake.appId, replyToMessageId: question.id, statusMessageId: status.id };
    const { port: viaStatus, lines: statusLines } = recordingPort();
    expect(await viaStatus.deliver(result('j-archived-status', mention, 'a fox in a quiet mention'), png)).toBeUndefined();
    expect(fake.channelMessages(quietMention).filter((m) => m.content.includes('a fox in a quiet mention') && m.attachments.length === 1)).toHaveLength(1);
    expect(inDm('a fox in a quiet mention')).toEqual([]);
    expect(statusLines).toContainEqual(['info', { jobId: 'j-archived-status' }, 'the thread was archived: posting the result in it anew']);
    // A withheld image there: the note reaches the requester; the status message, which cannot be deleted, stays archived.
    const withheldIn = fake.addThread(fake.channelId, 'quiet thread 2');
    const w = await inThread(withheldIn);
    fake.archiveThread(withheldIn);
    const withheld: JobResult = { ...result('j-archived-withheld', w.destination), status: 'failed', image: undefined, error: { code: 'moderation', message: 'Withheld in a quiet thread.', userFacing: true, private: true } };
    await port().deliver(withheld, undefined); // before: 50083 thrown, retried until dropped
    expect(fake.channelMessages(withheldIn).filter((m) => m.content.includes('Withheld in a quiet thread.'))).toHaveLength(1); // ephemeral, to the requester
    // Locked (and archived) by a moderator: the bot may not post there at all.
    const locked = fake.addThread(fake.channelId, 'locked thread');
    const b = await inThread(locked);
    fake.archiveThread(locked, { locked: true });
    const { port: watched, lines } = recordingPort();
    expect(await watched.deliver(result('j-locked', b.destination, 'a fox in a locked thread'), png)).toBe('elsewhere'); // for the metrics
    await port().deliver(result('j-locked', b.destination, 'a fox in a locked thread'), png); // a repeated delivery
    expect(inDm('a fox in a locked thread').map((m) => m.content.split('\n')[0])).toEqual([`I couldn't post this in <#${locked}>: the thread is locked.`]);
    expect(lines).toContainEqual(['warn', expect.objectContaining({ jobId: 'j-locked', code: 50083 }), 'the result cannot be posted in its channel: sending it to the requester directly']);
    // Locked but not archived (160005), its token expired in the queue: the same.
    const closedThread = fake.addThread(fake.channelId, 'closed thread');
    const c = await inThread(closedThread);
    fake.channels.get(closedThread)!.locked = true;
    fake.expireToken(c.interaction.token);
    await port().deliver(result('j-locked-open', c.destination, 'a fox in a closed thread'), png);
    expect(inDm('a fox in a closed thread').map((m) => m.content.split('\n')[0])).toEqual([`I couldn't post this in <#${closedThread}>: the thread is locked.`]);
  });

  it("a private result for a user who refuses DMs, whose channel takes no posts either: only logged, not thrown (retried until dropped before)", async () => {
    const erin = fake.user('erin');
    fake.closeDirectMessages(erin);
    const gone = fake.addChannel('gone-too', { botCannot: ['send'] });
    const { port: watched, lines } = recordingPort();
    const d: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: gone, userId: erin.id, applicationId: fake.appId, private: true };
    expect(await watched.deliver(result('j-nowhere-private', d, 'a private fox for nobody'), png)).toBe('nowhere'); // for the metrics
    expect(fake.channelMessages(gone)).toEqual([]);
    expect(lines).toContainEqual(['warn', expect.objectContaining({ jobId: 'j-nowhere-private', code: 50013 }), 'the requester does not accept direct messages, and the channel refuses the bot: the result was not posted']);
  });

  it("after Discord's nonce window, an earlier post is found by its Re-roll/Vary buttons: not by another job's, another author's, or a Cancel button", async () => {
    const { interaction, destination } = await deferred();
    fake.expireToken(interaction.token);
    const mine = (m: { content: string }) => m.content.includes('a late fox');
    await port().deliver(result('j-late', destination, 'a late fox'), png);
    for (const m of fake.channelMessages().filter(mine)) m.createdAt -= 10 * 60_000; // enforce_nonce no longer returns it
    await port().deliver(result('j-late', destination, 'a late fox'), png);
    expect(fake.channelMessages().filter(mine)).toHaveLength(1);

    // Buttons that are not this job's result buttons do not count as its post.
    const decoys = [
      { author: fake.alice, customId: buttonId('reroll', 'j-decoy') }, // someone else's message with our buttons
      { author: fake.bot, customId: buttonId('reroll', 'j-other') }, // ours, another job
      { author: fake.bot, customId: buttonId('cancel', 'j-decoy') }, // ours, this job, but the Cancel of its progress
    ];
    for (const { author, customId } of decoys) {
      const m = fake.postUserMessage({ content: 'decoy', author, silent: true, mentionBot: true }); // mentioning the bot: visible without Message Content
      m.components = [{ type: 1, components: [{ type: 2, style: 1, label: 'x', custom_id: customId }] }];
    }
    const second = await deferred();
    fake.expireToken(second.interaction.token);
    await port().deliver(result('j-decoy', second.destination, 'a decoy fox'), png);
    expect(fake.channelMessages().filter((m) => m.content.includes('a decoy fox'))).toHaveLength(1);
  });

  it('a mention-reply whose status message and question are both gone still posts, without the reply reference failing', async () => {
    const question = fake.postUserMessage({ content: 'q', mentionBot: true });
    const status = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body: { content: '⏳' } })) as { id: string };
    fake.messages.delete(status.id);
    fake.messages.delete(question.id);
    const destination: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId, replyToMessageId: question.id, statusMessageId: status.id };
    await port().deliver({ ...result('j-orphan', destination), kind: 'ask', image: undefined, answer: { text: 'An orphaned answer.', tokenCount: 3 } }, undefined);
    expect(fake.channelMessages().filter((m) => m.content === 'An orphaned answer.')).toHaveLength(1);
    // A status message that fails for another reason is an error the core retries (one out of the bot's reach, Missing
    // Access, goes to the requester's DM: the test of channels that take none of the bot's posts).
    const other = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body: { content: '⏳' } })) as { id: string };
    fake.injectFault({ method: 'PATCH', path: new RegExp(`/messages/${other.id}$`), status: 403, code: 50035, message: 'Invalid Form Body' });
    await expect(port().deliver({ ...result('j-orphan-2', { ...destination, statusMessageId: other.id }), kind: 'ask', image: undefined, answer: { text: 'x', tokenCount: 1 } }, undefined)).rejects.toThrow('Invalid Form Body');
  });

  it('a refusal of the token other than "gone" reaches the core; a 401 is "gone", and a gone token is not tried again', async () => {
    const a = await deferred();
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 403, code: 50001, message: 'Missing Access' });
    await expect(port().deliver(result('j-403', a.destination), png)).rejects.toThrow('Missing Access');

    const b = await deferred();
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 401, code: 0, message: '401: Unauthorized' });
    const p = port();
    await p.showProgress(b.destination, progress('j-401', 1)); // refused: the token is forgotten
    await p.deliver(result('j-401', b.destination, 'a fox after a 401'), png);
    expect(patches(b.interaction).map((r) => r.status)).toEqual([401]); // the result did not try the token again
    expect(fake.channelMessages().filter((m) => m.content.includes('a fox after a 401'))).toHaveLength(1);
  });

  it("no second throttle: an edit less than the interval after the last is shown, 'queued' too; queued after the result never", async () => {
    const { interaction, destination } = await deferred();
    let now = 1_000_000;
    const p = new DiscordDelivery(new REST({ api: fake.apiBase, retries: 1 }).setToken(fake.token), config, log, () => now);
    await p.showProgress(destination, progress('j-clock', 1));
    now += 999;
    // 999 ms after the last (the interval is 1,000): shown. It was dropped, and never sent later: a throttle of the port's
    // own, measured from when the previous edit reached it, while the core's relay (bots/core/progress.ts) spaces the
    // edits it hands over by the interval and holds the newest back meanwhile. A Redis round trip 40 ms slower before
    // one edit than before the next got the newer dropped, and the message showed a stale step through the silent VAE
    // decode until the result (found by an audit; test/unit/bots/core/progress-last-edit.redis.test.ts).
    await p.showProgress(destination, progress('j-clock', 2));
    await p.showProgress(destination, { ...progress('j-clock', 2), stage: 'queued' });
    now += 1_000;
    await p.showProgress(destination, progress('j-clock', 3));
    expect(patches(interaction)).toHaveLength(4);
    await p.deliver(result('j-clock', { ...destination, interactionAt: now }), png);
    await p.showQueued(destination, 'j-clock', 'Queued: 1st');
    expect(patches(interaction)).toHaveLength(5);
    expect(fake.original(interaction)!.attachments).toHaveLength(1);
  });

  it('a withheld image with a usable token: the public message deleted, the user told in an ephemeral follow-up; a DM is posted once', async () => {
    const { interaction, destination } = await deferred();
    const withheld: JobResult = { ...result('j-withheld', destination, 'a withheld fox'), status: 'failed', image: undefined, error: { code: 'moderation', message: 'Withheld by the checks.', userFacing: true, private: true } };
    await port().deliver(withheld, undefined);
    const deleted = fake.requestsTo('DELETE', new RegExp(`/${interaction.token}/messages/@original$`));
    expect(deleted.map((r) => r.status)).toEqual([204]);
    const followUp = fake.requestsTo('POST', new RegExp(`/webhooks/\\d+/${interaction.token}$`));
    expect(followUp).toHaveLength(1);
    expect((followUp[0]!.body as { flags: number }).flags & 64).toBe(64);
    // Interaction webhooks are answered without the bot's token.
    expect([...deleted, ...followUp].map((r) => r.authorization)).toEqual([undefined, undefined]);
    // Delivered again (the public message already gone): the follow-up is posted again, nothing fails.
    await port().deliver(withheld, undefined);
    expect(fake.requestsTo('POST', new RegExp(`/webhooks/\\d+/${interaction.token}$`))).toHaveLength(2);
    // The token dies between the delete and the follow-up: the user is told by DM instead.
    const late = await deferred();
    fake.injectFault({ method: 'POST', path: new RegExp(`/webhooks/\\d+/${late.interaction.token}$`), status: 404, code: 10015, message: 'Unknown Webhook' });
    await port().deliver({ ...withheld, jobId: 'j-withheld-late', destination: late.destination }, undefined);
    expect(fake.channelMessages(fake.dmChannel(fake.alice)).filter((m) => m.content.includes('Withheld by the checks.'))).toHaveLength(1);
    // Any other refusal of the delete or of the follow-up reaches the core, which retries.
    for (const [method, path] of [['DELETE', '/messages/@original$'], ['POST', '$']] as const) {
      const t = await deferred();
      fake.injectFault({ method, path: new RegExp(`/webhooks/\\d+/${t.interaction.token}${path}`), status: 403, code: 50001, message: 'Missing Access' });
      await expect(port().deliver({ ...withheld, jobId: `j-withheld-${method}`, destination: t.destination }, undefined)).rejects.toThrow('Missing Access');
    }
    // Without a usable token (and with a status message to remove): the DM, once however often it is delivered.
    const status = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body: { content: '⏳' } })) as { id: string };
    const noToken = { ...destination, interactionToken: undefined, statusMessageId: status.id };
    await port().deliver({ ...withheld, jobId: 'j-withheld-dm', destination: noToken }, undefined);
    await port().deliver({ ...withheld, jobId: 'j-withheld-dm', destination: noToken }, undefined);
    expect(fake.messages.has(status.id)).toBe(false);
    expect(fake.channelMessages(fake.dmChannel(fake.alice)).filter((m) => m.content.includes('Withheld by the checks.'))).toHaveLength(2);
  });

  it("an ephemeral follow-up whose reply was lost after Discord posted it is not posted again: not by discord.js (a reset connection), not by the core's repeated delivery (a closed one), nor after a 500; a 502 is", async () => {
    const { port: p, lines } = recordingPort();
    const followUps = (token: string) => fake.requestsTo('POST', new RegExp(`/webhooks/\\d+/${token}$`));
    const withheld = (jobId: string, destination: DiscordDestination): JobResult => ({ ...result(jobId, destination), status: 'failed', image: undefined, error: { code: 'moderation', message: `Withheld (${jobId}).`, userFacing: true, private: true } });
    for (const lostReply of ['reset', 'closed'] as const) {
      const { interaction, destination } = await deferred();
      fake.injectFault({ method: 'POST', path: new RegExp(`/webhooks/\\d+/${interaction.token}$`), lostReply });
      const r = withheld(`j-lost-${lostReply}`, destination);
      await p.deliver(r, undefined).catch(() => p.deliver(r, undefined)); // a failed delivery is retried by the core
      // Before: two notes ('reset': discord.js sent it again; 'closed': the delivery failed and the core's retry posted it again)
      expect(interaction.followupIds.map((id) => fake.messages.get(id)!.content)).toEqual([`Withheld (j-lost-${lostReply}).`]);
      expect(followUps(interaction.token).map((x) => x.lost)).toEqual([true]);
    }
    // A 500: Discord may have posted it as well (here it did not: the note is lost rather than perhaps doubled)
    const { interaction, destination } = await deferred();
    fake.injectFault({ method: 'POST', path: new RegExp(`/webhooks/\\d+/${interaction.token}$`), status: 500 });
    await p.deliver(withheld('j-lost-500', destination), undefined);
    expect(followUps(interaction.token).map((x) => x.status)).toEqual([500]);
    expect(lines.filter(([, , msg]) => msg === 'the private note may have been posted: not sent again').map(([level, { jobId }]) => [level, jobId]))
      .toEqual([['warn', 'j-lost-reset'], ['warn', 'j-lost-closed'], ['warn', 'j-lost-500']]);
    // A 502 is Discord's edge finding no server for it ("wait a bit and retry"): nothing was posted, so it is sent again
    const unposted = await deferred();
    fake.injectFault({ method: 'POST', path: new RegExp(`/webhooks/\\d+/${unposted.interaction.token}$`), status: 502 });
    await p.deliver(withheld('j-502', unposted.destination), undefined);
    expect(followUps(unposted.interaction.token).map((x) => x.status)).toEqual([502, 200]);
    expect(unposted.interaction.followupIds.map((id) => fake.messages.get(id)!.content)).toEqual(['Withheld (j-502).']);
  });

  it("a channel message, a DM or a notice whose reply was lost is posted once: sent again (by discord.js, or the core's repeated delivery) with the same nonce, Discord returns the earlier message", async () => {
    const deliverAsTheCore = async (r: JobResult, image?: Uint8Array, gallery?: Uint8Array[]) => {
      const p = port();
      await p.deliver(r, image, gallery).catch(() => p.deliver(r, image, gallery));
    };
    const inChannel = new RegExp(`/channels/${fake.channelId}/messages$`);
    for (const lostReply of ['reset', 'closed'] as const) {
      // the result of an expired token, several images in one message
      const { interaction, destination } = await deferred();
      fake.expireToken(interaction.token);
      const base = result(`j-lost-gallery-${lostReply}`, destination, `a lost gallery ${lostReply}`);
      const images = [1, 2].map((seed) => ({ ...base.image!, options: { ...base.image!.options, seed } }));
      fake.injectFault({ method: 'POST', path: inChannel, lostReply });
      await deliverAsTheCore({ ...base, images }, png, [png, png]);
      expect(fake.channelMessages().filter((m) => m.content.includes(`a lost gallery ${lostReply}`)).map((m) => m.attachments.length)).toEqual([2]);
      // a private result in the requester's DM
      const toAlice = { platform: 'discord' as const, guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId, private: true };
      fake.injectFault({ method: 'POST', path: new RegExp(`/channels/${fake.dmChannel(fake.alice)}/messages$`), lostReply });
      await deliverAsTheCore(result(`j-lost-dm-${lostReply}`, toAlice, `a lost private fox ${lostReply}`), png);
      expect(fake.channelMessages(fake.dmChannel(fake.alice)).filter((m) => m.content.includes(`a lost private fox ${lostReply}`))).toHaveLength(1);
      // the notice for a requester who refuses DMs
      const dave = fake.user(`dave-${lostReply}`);
      fake.closeDirectMessages(dave);
      fake.injectFault({ method: 'POST', path: inChannel, lostReply });
      await deliverAsTheCore(result(`j-lost-notice-${lostReply}`, { ...toAlice, userId: dave.id }), png);
      expect(fake.channelMessages().filter((m) => m.content.startsWith(`<@${dave.id}> I couldn't send you your private result`))).toHaveLength(1);
      // a mention's answer replying to the question, its status message gone
      const question = fake.postUserMessage({ content: `lost ${lostReply}?`, silent: true });
      const mention: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId, replyToMessageId: question.id, statusMessageId: '1' };
      fake.injectFault({ method: 'POST', path: inChannel, lostReply });
      await deliverAsTheCore({ ...result(`j-lost-reply-${lostReply}`, mention), kind: 'ask', image: undefined, answer: { text: `A lost answer (${lostReply}).`, tokenCount: 3 } });
      expect(fake.channelMessages().filter((m) => m.referenceId === question.id).map((m) => m.content)).toEqual([`A lost answer (${lostReply}).`]);
    }
    // each lost post was sent again, and answered with the message it had made
    expect(fake.requestsTo('POST', /\/channels\/\d+\/messages$/).filter((r) => r.lost)).toHaveLength(8);
  });

  it('a private answer to a mention in a private channel, when DMs were closed since: only logged (its channel is the DM itself)', async () => {
    const dave = fake.user('dave');
    const dm = fake.dmChannel(dave);
    fake.closeDirectMessages(dave);
    const before = fake.messages.size;
    const d: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: dm, userId: dave.id, applicationId: fake.appId, private: true };
    const warnings: [Record<string, unknown>, string][] = [];
    const recording = { ...log, warn: (fields: Record<string, unknown>, msg: string) => void warnings.push([fields, msg]) } as unknown as typeof log;
    await new DiscordDelivery(new REST({ api: fake.apiBase, retries: 1 }).setToken(fake.token), config, recording).deliver({ ...result('j-dave', d), kind: 'ask', image: undefined, answer: { text: 'for dave', tokenCount: 2 } }, undefined);
    expect(fake.messages.size).toBe(before);
    // The operator reads why a result was not posted.
    expect(warnings).toEqual([[{ jobId: 'j-dave', toldInChannel: false }, 'the requester does not accept direct messages: the private result was not posted']]);
  });

  it("the first 'Queued' edit before the result, a mention's status message edited with progress, a failed edit only logged", async () => {
    const { interaction, destination } = await deferred();
    const { port: p, lines } = recordingPort();
    await p.showQueued(destination, 'j-queued', 'Queued: 2nd in line.');
    expect(fake.original(interaction)!.content).toBe('⏳ Queued: 2nd in line.');
    const status = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body: { content: '⏳' } })) as { id: string };
    const mention: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId, statusMessageId: status.id };
    await p.showProgress(mention, progress('j-status', 4));
    expect(fake.messages.get(status.id)!.content).toBe('⏳ Drawing: step 4/10');
    fake.expireToken(interaction.token);
    // this port read the original's id from its edit: it edits it through the channel now (stale-status.test.ts)
    await p.showProgress(destination, { ...progress('j-queued', 1), stage: 'queued', queuePosition: 1 });
    expect(fake.original(interaction)!.content).toBe('⏳ Queued: 1st in line.');
    const { port: fresh, lines: freshLines } = recordingPort(); // one that never edited it has nowhere to go: only logged
    await fresh.showProgress(destination, { ...progress('j-queued', 1), stage: 'queued', queuePosition: 1 });
    expect(freshLines).toContainEqual(['warn', { err: 'Invalid Webhook Token', channel: fake.channelId }, 'progress edit failed']);
    expect(lines).toEqual([]);
    p.close();
    expect(() => p.showProgress({ platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' }, progress('j-slack', 1))).toThrow('the Discord port got a slack destination');
  });

  it("names channels and users for the usage report: the server nickname, else the display name, else the username; a user who left by their account; nothing for what Discord does not name", async () => {
    const nicked = fake.user({ username: 'bob', globalName: 'Bob B.', nick: 'Bobby (mod)' });
    const displayed = fake.user({ username: 'carol', globalName: 'Carol C.' });
    const plain = fake.user({ username: 'dave', globalName: null });
    const departed = fake.user({ username: 'erin', globalName: 'Erin E.', nick: 'not any more' });
    fake.leave(departed);
    const random = fake.addChannel('random');
    const d: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId };
    const before = fake.requests.length;
    const names = await port().displayNames(d, {
      channels: [fake.channelId, random, fake.dmChannel(), '123456789012345678'],
      users: [nicked.id, displayed.id, plain.id, departed.id, '223456789012345678'],
    });
    expect(names.channels).toEqual(new Map([[fake.channelId, 'general'], [random, 'random']]));
    expect(names.users).toEqual(new Map([[nicked.id, 'Bobby (mod)'], [displayed.id, 'Carol C.'], [plain.id, 'dave'], [departed.id, 'Erin E.']]));
    // one call per channel, a member call per user, and the account only for those who are no member
    const asked = fake.requests.slice(before).filter((r) => r.method === 'GET').map((r) => r.path.replace(/^\/api\/v10/, ''));
    expect(asked.filter((p) => p.startsWith('/channels/'))).toHaveLength(4);
    expect(asked.filter((p) => p.startsWith(`/guilds/${fake.guildId}/members/`))).toHaveLength(5);
    expect(asked.filter((p) => p.startsWith('/users/')).sort()).toEqual([`/users/${departed.id}`, '/users/223456789012345678'].sort());
    // in a DM there is no server to be a member of: the account names the user
    const inDm = await port().displayNames({ ...d, guildId: null, channelId: fake.dmChannel() }, { channels: [], users: [nicked.id] });
    expect(inDm.users).toEqual(new Map([[nicked.id, 'Bob B.']]));
    await expect(port().displayNames({ platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' }, { channels: [], users: [] })).rejects.toThrow('the Discord port got a slack destination');
  });

  it("leaves a private channel unnamed: the admin asking may not see it (before: its name, from the bot's own access)", async () => {
    const hidden = fake.addChannel('layoffs-planning', { private: true });
    const d: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId };
    const names = await port().displayNames(d, { channels: [fake.channelId, hidden], users: [] });
    expect(names.channels).toEqual(new Map([[fake.channelId, 'general']]));
  });

  it('a rate limit discord.js waits out is logged for the operator', async () => {
    const { port: p, lines } = recordingPort();
    const [a, b] = [fake.user('rl-a'), fake.user('rl-b')];
    fake.injectFault({ method: 'GET', path: /\/guilds\/\d+\/members\/\d+$/, status: 429, retryAfterS: 0.2 });
    const d: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: a.id, applicationId: fake.appId };
    const names = await p.displayNames(d, { channels: [], users: [a.id, b.id] }); // two look-ups at once: the second waits
    expect(names.users.size).toBe(2);
    expect(lines).toContainEqual(['info', { route: '/guilds/:id/members/:id', retryAfterMs: expect.any(Number) }, 'rate limited by Discord; waiting']);
  });

  it('several processes: a progress edit refused with a 429 is dropped, not waited out and sent on top of the result another process delivered meanwhile', async () => {
    // Retry-After 11 s outlasts the delivery ledger's 10 s edit slot (src/jobs/ledger.ts): A posts the result while B's edit waits.
    const { interaction, destination } = await deferred();
    const question = fake.postUserMessage({ content: 'q', mentionBot: true });
    const status = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body: { content: '⏳', message_reference: { message_id: question.id } } })) as { id: string };
    const mention: DiscordDestination = { platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId, replyToMessageId: question.id, statusMessageId: status.id };
    fake.injectFault({ method: 'PATCH', path: /./, status: 429, retryAfterS: 11, times: 2, when: (r) => JSON.stringify(r.body ?? {}).includes('step 9/10') });
    const { port: b, lines } = recordingPort();
    const [a, started] = [port(), Date.now()];
    const edits = Promise.all([b.showProgress(destination, progress('j-late', 9)), b.showProgress(mention, progress('j-late-mention', 9))]);
    await new Promise((r) => setTimeout(r, 300));
    await a.deliver(result('j-late', destination, 'a finished fox'), png);
    await a.deliver({ ...result('j-late-mention', mention), kind: 'ask', image: undefined, answer: { text: 'A finished answer.', tokenCount: 3 } }, undefined);
    await edits;
    const final = fake.original(interaction)!;
    expect({ content: final.content, buttons: JSON.stringify(final.components).match(/"label":"[^"]+"/g) }).toEqual({
      content: expect.stringContaining('a finished fox'),
      buttons: ['"label":"Re-roll"', '"label":"Vary"'],
    });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(lines.map(([level, { route }, msg]) => [level, route, msg])).toEqual([
      ['info', '/webhooks/:id/:token/messages/%40original', 'progress edit rate limited; dropped'],
      ['info', '/channels/:id/messages/:id', 'progress edit rate limited; dropped'],
    ]);
    expect(fake.messages.get(status.id)!.content).toBe('A finished answer.');
    b.close();
  }, 30_000);

  it('nonces are 25 characters, one per job', () => {
    expect(nonceFor('j1')).toHaveLength(25);
    expect(nonceFor('j1')).toBe(nonceFor('j1'));
    expect(nonceFor('j2')).not.toBe(nonceFor('j1'));
  });
});

