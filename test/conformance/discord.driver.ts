// The Discord side of the shared conformance suite: drives the real discord.js adapter through the fake Discord
// (REST + gateway on loopback), over real Redis with a real worker process, and reads what a user would have
// seen from the fake's recorded requests and messages.
// askAboutImage uses `/ask` with the image attached (the user posts the image with the command), because Discord
// can only answer privately (ephemeral) to interactions; the mention-reply path is covered in
// test/integration/discord.redis.test.ts.
import { nonceFor } from '../../bots/discord/delivery.ts';
import { jobIdFor } from '../../src/jobs/queue.ts';
import { startDiscordHarness, type DiscordHarness } from '../fakes/discord/bot-harness.ts';
import type { FakeInteraction, FakeMessage, RecordedRequest } from '../fakes/discord/server.ts';
import type { Conversation, FinalImage, PlatformDriver } from './driver.ts';

interface DiscordConversation extends Conversation {
  readonly ref: { interaction: FakeInteraction; jobId: string };
}

const EPHEMERAL = 64;

function buttonsOf(m: FakeMessage): { label: string; custom_id: string }[] {
  return m.components.flatMap((r) => (r as { components?: { label: string; custom_id: string }[] }).components ?? []);
}

const contentOf = (r: RecordedRequest): string => String((r.body as { content?: unknown } | undefined)?.content ?? '');
const isProgress = (r: RecordedRequest): boolean => contentOf(r).startsWith('⏳');
/** A result's edit: it sets the text, and is no progress line (an /ask answer's copy of its image comes in an edit of its attachments only). */
const isResult = (r: RecordedRequest): boolean => r.status === 200 && r.body !== null && typeof r.body === 'object' && 'content' in r.body && !isProgress(r);

export class DiscordDriver implements PlatformDriver {
  readonly name = 'discord' as const;
  private h?: DiscordHarness;

  private get harness(): DiscordHarness {
    if (!this.h) throw new Error('DiscordDriver not started');
    return this.h;
  }

  readonly names = { channel: 'general', user: 'Alice Liddell' };

  async start(): Promise<void> {
    this.h = await startDiscordHarness();
    this.h.fake.alice.globalName = this.names.user; // her display name; "general" is the fake's channel
  }

  async usageReport(timeoutMs = 30_000): Promise<{ text: string; chart: Uint8Array }> {
    const { fake } = this.harness;
    const usage = [{ name: 'usage', type: 1, options: [{ name: 'days', type: 4, value: 1 }] }];
    const MANAGE_GUILD = String(1n << 5n);
    const admin = fake.slashCommand({ name: 'blip3o-admin', options: usage, user: fake.user('admin'), memberPermissions: MANAGE_GUILD });
    const shown = await fake.waitFor(
      () => {
        const m = fake.original(admin);
        return m && m.attachments.length > 0 ? m : undefined;
      },
      timeoutMs,
      'the usage report',
    );
    const chart = new Uint8Array(await (await fetch(shown.attachments[0]!.url)).arrayBuffer());
    return { text: shown.content, chart };
  }

  async stop(): Promise<void> {
    await this.h?.stop();
  }

  private conversation(interaction: FakeInteraction): DiscordConversation {
    return { ref: { interaction, jobId: jobIdFor('discord', interaction.id) } };
  }

  async imagine(prompt: string, options: { seed?: number; aspect?: string } = {}): Promise<DiscordConversation> {
    const opts: Record<string, unknown>[] = [{ name: 'prompt', type: 3, value: prompt }];
    if (options.seed !== undefined) opts.push({ name: 'seed', type: 4, value: options.seed });
    if (options.aspect !== undefined) opts.push({ name: 'aspect', type: 3, value: options.aspect });
    return this.conversation(this.harness.fake.slashCommand({ name: 'imagine', options: opts }));
  }

  async askAboutImage(question: string, image: { bytes: Uint8Array; contentType: string; name: string }): Promise<DiscordConversation> {
    const { fake } = this.harness;
    const attachment = fake.addAttachment({ bytes: image.bytes, filename: image.name, contentType: image.contentType });
    const interaction = fake.slashCommand({
      name: 'ask',
      options: [
        { name: 'image', type: 11, value: attachment.id },
        { name: 'question', type: 3, value: question },
      ],
      attachments: [attachment],
    });
    return this.conversation(interaction);
  }

  async pressButton(conversation: Conversation, label: 'Re-roll' | 'Vary' | 'Cancel'): Promise<DiscordConversation> {
    const { fake } = this.harness;
    const { interaction } = (conversation as DiscordConversation).ref;
    const message = await fake.waitFor(
      () => {
        const m = fake.original(interaction);
        return m && buttonsOf(m).some((b) => b.label === label) ? m : undefined;
      },
      10_000,
      `a ${label} button`,
    );
    const button = buttonsOf(message).find((b) => b.label === label)!;
    return this.conversation(fake.pressButton(message, button.custom_id));
  }

  private edits(c: Conversation): RecordedRequest[] {
    const { interaction } = (c as DiscordConversation).ref;
    return this.harness.fake.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${interaction.token}/messages/@original$`));
  }

  async progressTexts(conversation: Conversation): Promise<string[]> {
    return this.edits(conversation).filter((r) => r.status === 200 && isProgress(r)).map(contentOf);
  }

  async waitForImage(conversation: Conversation, timeoutMs = 30_000): Promise<FinalImage> {
    const { fake } = this.harness;
    const { interaction } = (conversation as DiscordConversation).ref;
    const message = await fake.waitFor(
      () => {
        const m = fake.original(interaction);
        return m && m.attachments.length > 0 ? m : undefined;
      },
      timeoutMs,
      'the image',
    );
    const png = new Uint8Array(await (await fetch(message.attachments[0]!.url)).arrayBuffer());
    return { png, buttons: buttonsOf(message).map((b) => b.label), text: message.content };
  }

  async waitForAnswer(conversation: Conversation, timeoutMs = 30_000): Promise<string> {
    const final = await this.harness.fake.waitFor(
      () => this.edits(conversation).find(isResult),
      timeoutMs,
      'the answer',
    );
    return contentOf(final) || String((final.body as { embeds?: { description?: string }[] }).embeds?.[0]?.description ?? '');
  }

  async waitForPrivateError(conversation: Conversation, timeoutMs = 30_000): Promise<string> {
    const { fake } = this.harness;
    const { interaction } = (conversation as DiscordConversation).ref;
    return fake.waitFor(
      () => {
        const first = interaction.callbacks[0];
        if (first?.type === 4 && Number(first.data?.flags ?? 0) & EPHEMERAL) return String(first.data?.content ?? '');
        const followUp = interaction.followupIds.map((id) => fake.messages.get(id)).find((m) => m && m.flags & EPHEMERAL);
        return followUp?.content;
      },
      timeoutMs,
      'a private error',
    );
  }

  async deliveredCount(conversation: Conversation): Promise<number> {
    const { jobId } = (conversation as DiscordConversation).ref;
    await new Promise((r) => setTimeout(r, 300)); // a second, wrongly repeated delivery would land by now
    const finalEdits = this.edits(conversation).filter(isResult).length;
    const nonce = nonceFor(jobId);
    const channelPosts = this.harness.fake
      .requestsTo('POST', /\/channels\/\d+\/messages$/)
      .filter((r) => r.status === 200 && (r.body as { nonce?: string } | undefined)?.nonce === nonce).length;
    return finalEdits + channelPosts;
  }
}
