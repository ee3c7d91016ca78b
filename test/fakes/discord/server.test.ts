// The fake Discord itself, driven by the real discord.js client over loopback: if these pass, the adapter's
// end-to-end tests exercise discord.js's real REST/gateway code paths, not a mock of them.
import { AttachmentBuilder, Client, Events, GatewayIntentBits, Partials, type Interaction, type Message } from 'discord.js';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeDiscord, type FakeDiscordOptions } from './server.ts';

const PNG_1x1 = Uint8Array.from(
  Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64'),
);

let fake: FakeDiscord | undefined;
let client: Client | undefined;

afterEach(async () => {
  await client?.destroy();
  await fake?.close();
  client = undefined;
  fake = undefined;
});

async function connect(options: { intents?: number[]; fake?: FakeDiscordOptions } = {}): Promise<{ fake: FakeDiscord; client: Client }> {
  fake = await FakeDiscord.start({ heartbeatIntervalMs: 1_000, ...options.fake });
  client = new Client({
    intents: options.intents ?? [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.MessageContent],
    partials: [Partials.Channel],
    rest: { api: fake.apiBase },
  });
  const ready = new Promise<void>((resolve) => client!.once(Events.ClientReady, () => resolve()));
  await client.login(fake.token);
  await ready;
  return { fake, client };
}

function nextInteraction(c: Client): Promise<Interaction> {
  return new Promise((resolve) => c.once(Events.InteractionCreate, resolve));
}

describe('fake Discord with the real discord.js client', () => {
  it('logs in over REST + gateway and sees the guild channel', async () => {
    const { fake, client } = await connect();
    expect(client.user?.id).toBe(fake.appId);
    expect(client.channels.cache.has(fake.channelId)).toBe(true);
    expect(fake.requestsTo('GET', /\/gateway\/bot$/)).toHaveLength(1);
    const identify = fake.gatewayFrames.find((f) => f.op === 2)?.d as { intents: number };
    expect(identify.intents & (1 << 15)).toBeTruthy();
  });

  it('defer → edit → multipart edit with a PNG, with a 429 on the final edit retried once', async () => {
    const { fake, client } = await connect();
    const got = nextInteraction(client);
    const sent = fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'a cat' }] });
    const interaction = await got;
    if (!interaction.isChatInputCommand()) throw new Error('expected a chat input command');
    expect(interaction.options.getString('prompt')).toBe('a cat');
    await interaction.deferReply();
    await interaction.editReply({ content: 'step 1/3' });
    fake.injectFault({ method: 'PATCH', path: /@original$/, status: 429, retryAfterS: 0.1 });
    await interaction.editReply({ content: 'done', files: [new AttachmentBuilder(Buffer.from(PNG_1x1), { name: 'out.png', description: 'a cat' })] });

    expect(sent.callbacks.map((c) => c.type)).toEqual([5]);
    const patches = fake.requestsTo('PATCH', /@original$/);
    expect(patches.map((p) => p.status)).toEqual([200, 429, 200]);
    expect(patches[2]!.files[0]!.contentType).toBe('image/png');
    const original = fake.original(sent)!;
    expect(original.content).toBe('done');
    expect(original.attachments).toHaveLength(1);
    expect(original.attachments[0]!.description).toBe('a cat');
    const bytes = new Uint8Array(await (await fetch(original.attachments[0]!.url)).arrayBuffer());
    expect(Buffer.from(bytes).equals(Buffer.from(PNG_1x1))).toBe(true);
  });

  it('refuses a message past Discord\'s limits whole, as Discord does (400, 50035): content, embeds, rows, buttons, custom ids', async () => {
    const { fake, client } = await connect();
    const post = (body: Record<string, unknown>) => client.rest.post(`/channels/${fake.channelId}/messages`, { body });
    const refused = { status: 400, code: 50035 };
    await expect(post({ content: 'x'.repeat(2000) })).resolves.toBeDefined();
    await expect(post({ content: 'x'.repeat(2001) })).rejects.toMatchObject(refused);
    await expect(post({ embeds: [{ description: 'x'.repeat(4097) }] })).rejects.toMatchObject(refused);
    await expect(post({ embeds: Array.from({ length: 11 }, () => ({ description: 'x' })) })).rejects.toMatchObject(refused);
    const button = (id: string) => ({ type: 2, style: 1, label: 'b', custom_id: id });
    await expect(post({ content: 'x', components: Array.from({ length: 6 }, () => ({ type: 1, components: [button('a')] })) })).rejects.toMatchObject(refused);
    await expect(post({ content: 'x', components: [{ type: 1, components: Array.from({ length: 6 }, (_, i) => button(`b${i}`)) }] })).rejects.toMatchObject(refused);
    await expect(post({ content: 'x', components: [{ type: 1, components: [button('c'.repeat(101))] }] })).rejects.toMatchObject(refused);
  });

  it('refuses a second callback (40060) and an expired token (50027)', async () => {
    const { fake, client } = await connect();
    const got = nextInteraction(client);
    const sent = fake.slashCommand({ name: 'imagine' });
    const interaction = await got;
    if (!interaction.isChatInputCommand()) throw new Error('expected a chat input command');
    await interaction.deferReply();
    await expect(client.rest.post(`/interactions/${sent.id}/${sent.token}/callback`, { body: { type: 5 }, auth: false })).rejects.toMatchObject({ code: 40060 });
    fake.expireToken(sent.token);
    await expect(interaction.editReply('late')).rejects.toMatchObject({ code: 50027, status: 401 });
  });

  it('replays dispatches missed while the gateway was down, exactly once, after RESUME', async () => {
    const { fake, client } = await connect();
    const seen: string[] = [];
    client.on(Events.InteractionCreate, (i) => seen.push(i.id));
    fake.dropGateway(4000);
    const missed = fake.slashCommand({ name: 'imagine' }); // buffered while the socket is down
    await fake.waitFor(() => seen.includes(missed.id), 15_000, 'the replayed interaction');
    expect(fake.gatewayFrames.filter((f) => f.op === 6)).toHaveLength(1);
    const after = fake.slashCommand({ name: 'imagine' });
    await fake.waitFor(() => seen.includes(after.id), 5_000, 'a live interaction after resume');
    expect(seen.filter((id) => id === missed.id)).toHaveLength(1);
  });

  it('MessageContent: 4014 when the portal disallows it; without it, referenced attachments are blank', async () => {
    fake = await FakeDiscord.start({ messageContentAllowed: false });
    client = new Client({ intents: [GatewayIntentBits.Guilds, GatewayIntentBits.MessageContent], rest: { api: fake.apiBase } });
    await expect(client.login(fake.token)).rejects.toThrow(/disallowed intents/i);
    await client.destroy();
    await fake.close();

    const { fake: f, client: c } = await connect({ intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages] });
    const image = f.postUserMessage({ content: 'look', attachments: [f.addAttachment({ bytes: PNG_1x1, filename: 'a.png', contentType: 'image/png' })] });
    const got = new Promise<Message>((resolve) => c.on(Events.MessageCreate, (m) => m.mentions.has(f.appId) && resolve(m)));
    f.postUserMessage({ content: 'what is this?', mentionBot: true, replyTo: image.id });
    const mention = await got;
    expect(mention.content).toContain('what is this?');
    const parent = await mention.fetchReference();
    expect(parent.attachments.size).toBe(0);
  });

  it('channel posts honour message_reference and enforce_nonce; the reference is fetched when not embedded', async () => {
    const { fake, client } = await connect();
    const image = fake.postUserMessage({
      content: 'look',
      attachments: [fake.addAttachment({ bytes: PNG_1x1, filename: 'a.png', contentType: 'image/png' })],
      silent: true,
    });
    const got = new Promise<Message>((resolve) => client.on(Events.MessageCreate, (m) => m.mentions.has(fake.appId) && resolve(m)));
    fake.postUserMessage({ content: 'q', mentionBot: true, replyTo: image.id, omitReferenced: true });
    const mention = await got;
    const parent = await mention.fetchReference();
    expect(parent.attachments.first()?.contentType).toBe('image/png');
    expect(fake.requestsTo('GET', new RegExp(`/messages/${image.id}$`))).toHaveLength(1);

    const body = { content: 'answer', nonce: 'job-1', enforce_nonce: true, message_reference: { message_id: mention.id } };
    const first = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body })) as { id: string };
    const second = (await client.rest.post(`/channels/${fake.channelId}/messages`, { body })) as { id: string };
    expect(second.id).toBe(first.id);
    expect(fake.channelMessages().filter((m) => m.content === 'answer')).toHaveLength(1);
    expect(fake.messages.get(first.id)?.type).toBe(19);
    expect(fake.cdnAuthLeaks).toEqual([]);
  });
});
