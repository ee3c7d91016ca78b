// The Slack side of the shared conformance suite: drives the real @slack/bolt adapter through the fake Slack
// (Socket Mode, or HTTP mode with signed requests), over real Redis with a real worker process, and reads what a user would have seen from the
// fake's recorded state. Job ids follow from the adapter's dedupe keys (trigger_id, channel+ts, button press).
import { jobIdFor } from '../../src/jobs/queue.ts';
import { SIGNING_SECRET, startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { postEvent, postInteractive, postSlashCommand } from '../fakes/slack/signed-sender.ts';
import { appMention, blockAction, eventCallback, slashCommand } from '../fakes/slack/payloads.ts';
import type { SentEnvelope } from '../fakes/slack/socket-mode.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';
import type { Conversation, FinalImage, PlatformDriver } from './driver.ts';

const CHANNEL = 'C0CONFORM';
const USER = 'U0CONFORM';
const ADMIN = 'U0CONFADMIN';

interface SlackConversation extends Conversation {
  /** `envelope` in Socket Mode; `httpAck` (the 200 body) in HTTP mode. */
  readonly ref: { jobId: string; envelope?: SentEnvelope; httpAck?: string; responseUrl?: string; threadTs?: string };
}

const actionIds = { 'Re-roll': 'blip3o_reroll', Vary: 'blip3o_vary', Cancel: 'blip3o_cancel' } as const;

function blocksText(m: FakeMessage): string {
  return (m.blocks ?? []).map((b) => ((b as { text?: { text?: string } }).text?.text ?? '')).join('\n');
}

function buttons(m: FakeMessage): string[] {
  return (m.blocks ?? []).flatMap((b) => ((b as { type: string }).type === 'actions' ? (b as { elements: { text: { text: string } }[] }).elements.map((e) => e.text.text) : []));
}

export class SlackDriver implements PlatformDriver {
  readonly name = 'slack' as const;
  private h?: SlackHarness;

  constructor(private readonly mode: 'socket' | 'http' = 'socket') {}

  /** Deliver a payload as Slack would in this mode; returns the socket envelope or the HTTP ack body. */
  private async send(kind: 'command' | 'event' | 'interactive', payload: Record<string, unknown>): Promise<{ envelope?: SentEnvelope; httpAck?: string }> {
    const { fake, adapter } = this.harness;
    if (this.mode === 'socket') {
      const type = kind === 'command' ? 'slash_commands' : kind === 'event' ? 'events_api' : 'interactive';
      const envelope = fake.sendEnvelope(type, payload);
      await fake.link.ack(envelope);
      return { envelope };
    }
    const o = { signingSecret: SIGNING_SECRET };
    const url = adapter.eventsUrl!;
    const res =
      kind === 'command' ? await postSlashCommand(url, payload as Record<string, string>, o) : kind === 'event' ? await postEvent(url, payload, o) : await postInteractive(url, payload, o);
    if (res.status !== 200) throw new Error(`Slack request answered ${res.status} (timed out: ${res.timedOut})`);
    return { httpAck: res.body };
  }

  private get harness(): SlackHarness {
    if (!this.h) throw new Error('SlackDriver not started');
    return this.h;
  }

  async start(): Promise<void> {
    this.h = await startSlackHarness({ mode: this.mode, ackWindowMs: 10_000 }); // ack timing: slack.redis.test.ts
    this.h.fake.addUser(USER, { displayName: this.names.user, realName: 'Ada Lovelace' });
    this.h.fake.addUser(ADMIN, { isAdmin: true });
    this.h.fake.nameChannel(CHANNEL, this.names.channel);
  }

  readonly names = { channel: 'conformance', user: 'ada' };

  async usageReport(timeoutMs = 30_000): Promise<{ text: string; chart: Uint8Array }> {
    const { fake } = this.harness;
    const payload = slashCommand(fake, { command: '/blip3o-admin', text: 'usage 1', channel: CHANNEL, user: ADMIN });
    const sent = await this.send('command', payload);
    const text = await fake.waitFor(
      () => {
        const ack = (sent.envelope ? sent.envelope.ackPayload : sent.httpAck ? JSON.parse(sent.httpAck) : undefined) as { text?: string } | undefined;
        if (ack?.text?.startsWith('GPU usage')) return ack.text;
        const told = fake.calls.find((c) => c.kind === 'response_url' && payload.response_url.endsWith(c.method));
        return told ? String(told.args.text) : undefined;
      },
      timeoutMs,
      'the usage report',
    );
    const chart = await fake.waitFor(() => (fake.store.messages.get(`D${ADMIN}`) ?? []).flatMap((m) => m.files ?? []).find((f) => f.name?.startsWith('usage-')), timeoutMs, 'the chart');
    return { text, chart: chart.bytes };
  }

  async stop(): Promise<void> {
    await this.h?.stop();
  }

  async imagine(prompt: string, options: { seed?: number; aspect?: string } = {}): Promise<SlackConversation> {
    const { fake } = this.harness;
    const flags = [options.seed !== undefined ? `--seed ${options.seed}` : '', options.aspect ? `--ar ${options.aspect}` : ''].filter(Boolean).join(' ');
    const payload = slashCommand(fake, { text: `${prompt} ${flags}`.trim(), channel: CHANNEL, user: USER });
    const sent = await this.send('command', payload);
    return { ref: { jobId: jobIdFor('slack', `cmd:${payload.trigger_id}`), ...sent, responseUrl: payload.response_url } };
  }

  async askAboutImage(question: string, image: { bytes: Uint8Array; contentType: string; name: string }): Promise<SlackConversation> {
    const { fake } = this.harness;
    const file = fake.seedFile(image.bytes, image.name, image.contentType);
    const parent = fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'have a look', files: [file] });
    const mention = fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${fake.botUserId}> ${question}`, threadTs: parent.ts });
    const sent = await this.send('event', eventCallback(fake, appMention(fake, mention)));
    return { ref: { jobId: jobIdFor('slack', `msg:${CHANNEL}:${mention.ts}`), ...sent, threadTs: parent.ts } };
  }

  async pressButton(conversation: Conversation, label: 'Re-roll' | 'Vary' | 'Cancel'): Promise<SlackConversation> {
    const { fake } = this.harness;
    const { jobId } = (conversation as SlackConversation).ref;
    const message = label === 'Cancel' ? this.statusMessage(jobId) : this.resultMessage(jobId);
    if (!message) throw new Error(`no message with a ${label} button for job ${jobId}`);
    const payload = blockAction(fake, { user: USER, message, actionId: actionIds[label], value: jobId });
    const sent = await this.send('interactive', payload);
    const actionTs = (payload.actions as { action_ts: string }[])[0]!.action_ts;
    return { ref: { jobId: jobIdFor('slack', `btn:${USER}:${actionTs}`), ...sent, responseUrl: String(payload.response_url) } };
  }

  async progressTexts(conversation: Conversation): Promise<string[]> {
    const { fake } = this.harness;
    const status = await fake.waitFor(() => this.statusMessage((conversation as SlackConversation).ref.jobId), 10_000, 'the status message');
    const posted = fake.apiCalls('chat.postMessage').find((c) => (c.args.metadata as { event_payload?: { job_id?: string } } | undefined)?.event_payload?.job_id === (conversation as SlackConversation).ref.jobId);
    const updates = fake.apiCalls('chat.update').filter((c) => c.args.ts === status.ts && JSON.stringify(c.args.blocks ?? '').includes('blip3o_cancel'));
    return [posted, ...updates].filter((c) => c !== undefined).map((c) => String(c.args.text));
  }

  async waitForImage(conversation: Conversation, timeoutMs = 30_000): Promise<FinalImage> {
    const { jobId } = (conversation as SlackConversation).ref;
    const message = await this.harness.fake.waitFor(() => this.resultMessage(jobId), timeoutMs, `the image of ${jobId}`);
    return { png: message.files![0]!.bytes, buttons: buttons(message), text: `${message.text}\n${blocksText(message)}` };
  }

  async waitForAnswer(conversation: Conversation, timeoutMs = 30_000): Promise<string> {
    const { jobId } = (conversation as SlackConversation).ref;
    const message = await this.harness.fake.waitFor(() => this.answerMessages(jobId)[0], timeoutMs, `the answer of ${jobId}`);
    return message.text;
  }

  async waitForPrivateError(conversation: Conversation, timeoutMs = 30_000): Promise<string> {
    const { fake } = this.harness;
    const { envelope, httpAck, responseUrl, threadTs } = (conversation as SlackConversation).ref;
    return fake.waitFor(
      () => {
        const ack = (envelope ? envelope.ackPayload : httpAck ? JSON.parse(httpAck) : undefined) as { response_type?: string; text?: string } | undefined;
        if (ack?.response_type === 'ephemeral' && ack.text) return ack.text;
        const viaUrl = responseUrl ? fake.calls.find((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method) && c.args.response_type === 'ephemeral') : undefined;
        if (viaUrl) return String(viaUrl.args.text);
        const ephemeral = threadTs ? fake.apiCalls('chat.postEphemeral').find((c) => c.args.thread_ts === threadTs && c.args.user === USER) : undefined;
        return ephemeral ? String(ephemeral.args.text) : undefined;
      },
      timeoutMs,
      'a private error',
    );
  }

  async deliveredCount(conversation: Conversation): Promise<number> {
    const { jobId } = (conversation as SlackConversation).ref;
    await new Promise((r) => setTimeout(r, 200)); // a second, wrongly repeated delivery would land by now
    const images = this.harness.fake.store.allMessages().filter((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`));
    return images.length + this.answerMessages(jobId).length;
  }

  private statusMessage(jobId: string): FakeMessage | undefined {
    return this.harness.fake.botMessages(CHANNEL).find((m) => m.metadata?.event_type === 'blip3o_status' && m.metadata.event_payload.job_id === jobId);
  }

  private resultMessage(jobId: string): FakeMessage | undefined {
    return this.harness.fake.botMessages(CHANNEL).find((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`));
  }

  private answerMessages(jobId: string): FakeMessage[] {
    return this.harness.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_answer' && m.metadata.event_payload.job_id === jobId);
  }
}
