// Discord without the Message Content intent (the portal refuses it: the bot falls back), allow-lists, DMs,
// Cancel while running, and the Manage-Server-gated admin command. Real discord.js ↔ fake Discord, real Redis,
// real worker process with a slowed-down test double pipeline.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MESSAGE_CONTENT_HELP } from '../../bots/discord/adapter.ts';
import { samplePng } from '../conformance/platform-adapter.case.ts';
import { startDiscordHarness, type DiscordHarness } from '../fakes/discord/bot-harness.ts';
import { snowflake } from '../fakes/discord/snowflake.ts';
import type { FakeInteraction, FakeMessage } from '../fakes/discord/server.ts';

let h: DiscordHarness;
let png: Uint8Array;

beforeAll(async () => {
  h = await startDiscordHarness({
    fake: { messageContentAllowed: false },
    pipelineExtra: { stepDelayMs: 150, maxSteps: 4 },
    config: (fake) => ({
      discord: { allowedChannelIds: [fake.channelId], allowDirectMessages: true },
      limits: { user: { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 1 } },
    }),
  });
  png = await samplePng(32);
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const buttons = (m: FakeMessage | undefined) =>
  (m?.components ?? []).flatMap((r) => ((r as { components?: { label: string; custom_id: string }[] }).components ?? []));
const replyTo = (id: string) => h.fake.channelMessages().find((m) => m.referenceId === id && m.author.id === h.fake.appId);
/** What the user alone was told: an ephemeral reply, or the edit of an ephemeral defer. */
const privateText = (i: FakeInteraction): string | undefined => {
  const c = i.callbacks[0];
  if (!(Number(c?.data?.flags) & 64)) return undefined;
  return c?.type === 4 ? String(c.data?.content) : h.fake.original(i)?.content || undefined;
};

describe('Discord without Message Content, allow-lists, DMs, Cancel, admin', () => {
  it('falls back to no Message Content when the portal refuses it (4014), and says how to fix or use /ask', async () => {
    expect(h.adapter.hasMessageContent).toBe(false);
    const closes = h.fake.gatewayFrames.filter((f) => f.op === 2).map((f) => Number((f.d as { intents: number }).intents) & (1 << 15));
    expect(closes).toEqual([1 << 15, 0]); // first IDENTIFY asked for it, the second did not

    const image = h.fake.postUserMessage({ content: 'look', attachments: [h.fake.addAttachment({ bytes: png, filename: 'p.png', contentType: 'image/png' })] });
    const question = h.fake.postUserMessage({ content: 'what is this?', mentionBot: true, replyTo: image.id });
    const help = await h.fake.waitFor(() => replyTo(question.id), 10_000, 'the help reply');
    expect(help.content).toBe(MESSAGE_CONTENT_HELP);
    expect(help.content).toMatch(/\/ask/);

    // An image in the mentioning message itself is visible without the intent.
    const own = h.fake.postUserMessage({ content: 'what is this?', mentionBot: true, attachments: [h.fake.addAttachment({ bytes: png, filename: 'q.png', contentType: 'image/png' })] });
    const answer = await h.fake.waitFor(() => {
      const m = replyTo(own.id);
      return m && !m.content.startsWith('⏳') ? m : undefined;
    }, 30_000, 'the answer');
    expect(answer.content.length).toBeGreaterThan(0);
  }, 60_000);

  it('refuses channels outside the allow-list privately, ignores mentions there, and enqueues nothing', async () => {
    const before = await h.jobCount();
    const other = snowflake();
    const i = h.fake.slashCommand({ name: 'imagine', channelId: other, options: [{ name: 'prompt', type: 3, value: 'a fox' }] });
    await h.fake.waitFor(() => i.callbacks.length > 0, 10_000, 'the refusal');
    expect(privateText(i)).toBe("This bot isn't enabled in this server or channel.");
    const mention = h.fake.postUserMessage({ content: 'hello', mentionBot: true, channelId: other, attachments: [h.fake.addAttachment({ bytes: png, filename: 'x.png', contentType: 'image/png' })] });
    await new Promise((r) => setTimeout(r, 500));
    expect(h.fake.messages.size).toBeGreaterThan(0);
    expect([...h.fake.messages.values()].some((m) => m.referenceId === mention.id)).toBe(false);
    expect(await h.jobCount()).toBe(before);
  }, 30_000);

  it('works in DMs, and Cancel stops a running job', async () => {
    const dm = h.fake.slashCommand({ name: 'imagine', dm: true, options: [{ name: 'prompt', type: 3, value: 'a DM fox' }] });
    const done = await h.fake.waitFor(() => {
      const m = h.fake.original(dm);
      return m && m.attachments.length ? m : undefined;
    }, 30_000, 'the DM image');
    expect(done.guildId).toBeNull();
    expect(buttons(done).map((b) => b.label)).toEqual(['Re-roll', 'Vary']);

    // In a DM, a message with an image needs no mention (and its content is visible without the intent).
    const dmChannel = h.fake.dmChannel();
    const dmQuestion = h.fake.postUserMessage({
      content: 'what is this?',
      guildId: null,
      channelId: dmChannel,
      attachments: [h.fake.addAttachment({ bytes: png, filename: 'dm.png', contentType: 'image/png', channelId: dmChannel })],
    });
    const dmAnswer = await h.fake.waitFor(() => {
      const m = h.fake.channelMessages(dmChannel).find((x) => x.referenceId === dmQuestion.id && x.author.id === h.fake.appId);
      return m && !m.content.startsWith('⏳') ? m : undefined;
    }, 30_000, 'the DM answer');
    expect(dmAnswer.content).toMatch(/what is this\?/);

    const slow = h.fake.slashCommand({ name: 'imagine', dm: true, options: [{ name: 'prompt', type: 3, value: 'a very slow fox' }] });
    const running = await h.fake.waitFor(() => {
      const m = h.fake.original(slow);
      return m && /Drawing|Reading|Loading|Decoding/.test(m.content) && buttons(m).some((b) => b.label === 'Cancel') ? m : undefined;
    }, 20_000, 'a running job with Cancel');
    const press = h.fake.pressButton(running, buttons(running).find((b) => b.label === 'Cancel')!.custom_id);
    expect(await h.fake.waitFor(() => privateText(press), 10_000, 'the cancel reply')).toMatch(/Cancel/);
    const cancelled = await h.fake.waitFor(() => {
      const m = h.fake.original(slow);
      return m?.content === 'Cancelled.' ? m : undefined;
    }, 20_000, 'the cancelled message');
    expect(cancelled.attachments).toHaveLength(0);
    expect(buttons(cancelled)).toHaveLength(0);
  }, 60_000);

  it('a refusal after deferring (a limit) removes the public "thinking…" and tells the user privately', async () => {
    const first = h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'a slow first fox' }] });
    await h.fake.waitFor(() => h.fake.original(first)?.content.startsWith('⏳'), 10_000, 'the first job queued');
    const second = h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: 'one fox too many' }] });
    const followUp = await h.fake.waitFor(
      () => second.followupIds.map((id) => h.fake.messages.get(id)).find((m) => m && m.flags & 64),
      10_000,
      'the private refusal',
    );
    expect(second.callbacks[0]!.type).toBe(5);
    expect(followUp.content).toMatch(/at a time|at once|running|queued|limit/i);
    expect(h.fake.original(second)).toBeUndefined(); // the public deferred message was deleted
    await h.fake.waitFor(() => h.fake.original(first)?.attachments.length, 30_000, 'the first image');
  }, 60_000);

  it('/blip3o-admin needs Manage Server', async () => {
    const status = [{ name: 'queue', type: 2, options: [{ name: 'status', type: 1, options: [] }] }];
    const denied = h.fake.slashCommand({ name: 'blip3o-admin', options: status });
    await h.fake.waitFor(() => denied.callbacks.length > 0, 10_000, 'the refusal');
    expect(privateText(denied)).toBe('You need the Manage Server permission for this.');

    const admin = h.fake.slashCommand({ name: 'blip3o-admin', options: status, memberPermissions: String(1n << 5n) });
    const shown = await h.fake.waitFor(() => {
      const m = h.fake.original(admin);
      return m && m.content ? m : undefined;
    }, 10_000, 'the queue status');
    expect(admin.callbacks[0]).toMatchObject({ type: 5, data: { flags: 64 } });
    expect(shown.content).toMatch(/^Queue: \d+ running/);
  }, 30_000);

  it('/blip3o-admin usage answers privately with the table and the chart as a PNG attachment', async () => {
    const usage = [{ name: 'usage', type: 1, options: [{ name: 'days', type: 4, value: 2 }] }];
    const admin = h.fake.slashCommand({ name: 'blip3o-admin', options: usage, memberPermissions: String(1n << 5n) });
    const shown = await h.fake.waitFor(() => {
      const m = h.fake.original(admin);
      return m && m.content ? m : undefined;
    }, 20_000, 'the usage report');
    expect(admin.callbacks[0]).toMatchObject({ type: 5, data: { flags: 64 } }); // ephemeral
    expect(shown.content).toMatch(/^GPU usage in this server over the last 2 days/);
    expect(shown.attachments).toHaveLength(1);
    expect(shown.attachments[0]!.filename).toBe('usage-2d.png');
  }, 30_000);
});
