// The Discord adapter: discord.js events → the core's CommandInput/Invocation, and the core's Replies back.
// Thin on purpose: validation, limits, queues and delivery live in bots/core; results and progress go out
// through DiscordDelivery (./delivery.ts). Errors are caught here and only here: a UserError's text is shown
// privately (ephemeral), anything else as "Something went wrong (ref …)" with the cause logged.
//
//   /imagine, /ask, buttons, modal ──► defer (within Discord's 3 s) ──► core.handle ──► edit "Queued: 2nd"
//   @mention with/replying to an image ──► reply "Looking…" (the status message) ──► core.handle ──► edit it
import { createHash, randomUUID } from 'node:crypto';
import {
  Client,
  Events,
  GatewayDispatchEvents,
  GatewayIntentBits,
  MessageFlags,
  Partials,
  PermissionFlagsBits,
  REST,
  Routes,
  Status,
  TextInputStyle,
  ComponentType,
  DiscordAPIError,
  Options,
  SnowflakeUtil,
  type APIMessage,
  type AttachmentPayload,
  type ButtonInteraction,
  type Channel,
  type ChatInputCommandInteraction,
  type ClientOptions,
  type Interaction,
  type InteractionReplyOptions,
  type Message,
  type MessageContextMenuCommandInteraction,
  type ModalSubmitInteraction,
  type RepliableInteraction,
  type WebSocketOptions,
} from 'discord.js';
import type { Config, DiscordShards, Secrets } from '../../src/config/schema.ts';
import { AppError, UserError, isUserError } from '../../src/errors.ts';
import type { DiscordDestination } from '../../src/jobs/contract.ts';
import { channelKey } from '../../src/jobs/contract.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import type { Adapter } from '../core/adapter.ts';
import type { CommandInput, Invocation, Reply } from '../core/port.ts';
import type { CommandLabel, Core } from '../core/submit.ts';
import { within } from '../core/deadline.ts';
import { parseDuration, type SavedSettings } from '../core/settings.ts';
import { adminInput } from './admin.ts';
import { AskedCopies, DeletedMessages, attachmentsLeft, type CopyAt } from './asked-copies.ts';
import { ASKED_IMAGE_FILE, askedImageFile } from './asked-image.ts';
import { checkBeforeDownload, downloadImage, isImageAttachment, type AttachmentMeta, type DownloadPolicy } from './attachments.ts';
import { COMMAND } from './commands.ts';
import { addressesBot, botRoleIds, walkChain, firstImage, imageAt, MAX_CHAIN } from './conversation.ts';
import { QUESTION_INPUT_ID, askModalId, isOurButtonId, parseAskModalId, parseButtonId, parseSettingsButton, settingsRow } from './custom-ids.ts';
import { DMS_CLOSED_HELP, DiscordDelivery, keepNewest, forbiddenToPost, logRateLimits, missingPermission, nonceFor, refusesDirectMessages, statusChannelOf } from './delivery.ts';
import { redisIdentifyThrottler } from './identify-throttle.ts';
import { callbacksAcknowledgedOnce, followUpsAtMostOnce, MayHaveBeenPosted } from './lost-replies.ts';
import { NOTICE_FLAGS, contentChunks, describedPrompt } from './render.ts';
import { imagineInput, questionFromMention, requireQuestion } from './options.ts';

export type Handle = (invocation: Invocation) => Promise<Reply>;

export interface DiscordAdapterOptions {
  config: Readonly<Config>;
  secrets: Readonly<Secrets>;
  log?: Logger;
  /** The gateway is gone and logging in again failed (AdapterFactory's `onFatal`). @defaultValue nothing beyond the log line */
  onFatal?: (error: Error) => void;
}

/**
 * Why Discord closes a gateway for good, by close code: the codes discord.js does not reconnect after
 * (discord.com/developers/docs/topics/opcodes-and-status-codes, "Gateway Close Event Codes").
 */
export const GATEWAY_CLOSED: Readonly<Record<number, string>> = {
  4004: 'it refused the token: was it reset in the Developer Portal?',
  4010: 'an invalid shard: do the bot processes agree on the shard count in discord.shards (DISCORD_SHARDS)?',
  4011: 'a shard holds too many servers (Discord wants a shard per 2,500): set discord.shards (DISCORD_SHARDS) to auto, or raise its count',
  4012: 'an API version it no longer serves: update the bot',
  4013: 'invalid intents',
  4014: 'an intent the Developer Portal no longer allows (Message Content was switched off?)',
};

/** Without the Message Content intent, a mention-reply can't see the image it replies to: say what to do. */
export const MESSAGE_CONTENT_HELP =
  "I can't see images in other messages: this bot runs without the Message Content intent. " +
  'Attach the image to the message that mentions me, use `/ask`, or right-click the image message → Apps → "Ask about this image". ' +
  '(Server admins: enable "Message Content Intent" under Bot → Privileged Gateway Intents in the Discord Developer Portal.)';

const NO_IMAGE_HELP =
  'Mention me in a reply to a message with an image (or attach one) and ask your question, or use `/ask`.';
/** A chain longer than walkChain follows (MAX_CHAIN): the image may well be up there, so "attach one" would mislead. */
const LONG_CHAIN_HELP = `I followed this conversation ${MAX_CHAIN} replies up without reaching its image. Reply to the image's own message (or attach the image) to ask again.`;

/**
 * discord.js keeps by default every user and server member it is sent, for the life of the client: with the
 * GuildMessages intent that is every author of every message posted where the bot can read, and nothing evicts them
 * (no GuildMembers intent, so no "member left"). Nothing here reads either cache (each message and interaction carries
 * its user and member), so only the bot's own are kept: `guild.members.me` (conversation.ts). Before 2026-12-08 they
 * grew with every distinct user seen (test/unit/bots/discord/cache-memory.redis.test.ts).
 */
const USER_CACHES = Options.cacheWithLimits({
  ...Options.DefaultMakeCacheSettings,
  UserManager: { maxSize: 0, keepOverLimit: (user) => user.id === user.client.user?.id },
  GuildMemberManager: { maxSize: 0, keepOverLimit: (member) => member.id === member.client.user?.id },
});

/** Ids of interactions/messages seen recently: a replayed gateway dispatch is handled once. */
const SEEN_LIMIT = 5_000;

/**
 * A DM channel with no message for this long is dropped from discord.js's cache (sweepIdleDirectMessages, every
 * DM_SWEEP_MS): discord.js keeps every DM channel it is sent, with up to 200 of its messages, and has no sweeper for
 * channels (its Sweepers cover messages, threads, users…). Nothing here needs one cached: a later DM event makes it
 * again (Partials.Channel), and what reads the cache (a DM mention's reply chain: fetchReference) runs right after a
 * message in it. Before 2026-12-08 one stayed per user who ever used the bot in DMs
 * (test/unit/bots/discord/dm-channels-memory.redis.test.ts).
 */
export const DM_IDLE_MS = 60 * 60_000;
const DM_SWEEP_MS = 10 * 60_000;

/**
 * How long a job's Redis reads before its defer may take (where a DM button's job belongs, saved privacy): Discord
 * drops an interaction not answered within 3 s of its creation. They take milliseconds, unless Redis is failing over
 * or down; then the bot defers privately first (privacy it cannot read stays private) and waits after the defer.
 */
export const DEFER_WITHIN_MS = 1_500;

export class DiscordAdapter implements Adapter {
  readonly port: DiscordDelivery;
  private readonly config: Readonly<Config>;
  private readonly token: string;
  private readonly log: Logger;
  private readonly policy: DownloadPolicy;
  private client: Client | undefined;
  private handle: Handle | undefined;
  private core: Pick<Core, 'settings' | 'requestOf' | 'commandFailed'> | undefined;
  /** Where the copies of Ask form targets are, in Redis (asked-copies.ts); set by start(). */
  private copies: AskedCopies | undefined;
  /** The first "Queued: …" edit, through the core so it never lands on top of a result another instance posted. */
  // Stryker disable next-line BlockStatement,StringLiteral: unreachable, no event reaches the adapter before start() replaces it
  private showQueued: (destination: DiscordDestination, jobId: string, text: string) => Promise<void> = async () => {
    throw new AppError('internal', 'the Discord adapter was not started');
  };
  // Stryker disable next-line BooleanLiteral: equivalent, login() sets it before any event is handled
  private messageContent = false;
  private readonly seen = new Set<string>();
  /** The attachment an Ask form's submit asked about, for its copy's link (attachAskedImage); gone with the interaction. */
  private readonly askedAttachments = new WeakMap<ModalSubmitInteraction, string | undefined>();
  /** Context-menu targets waiting for their modal (the modal submit does not carry the message). */
  private readonly modalTargets = new Map<string, { image: AttachmentMeta; at: number }>();
  private readonly onFatal: (error: Error) => void;
  private stopped = false;
  private dmSweep: NodeJS.Timeout | undefined;
  private identifyThrottler: NonNullable<WebSocketOptions['buildIdentifyThrottler']> | undefined;

  constructor(options: DiscordAdapterOptions) {
    this.config = options.config;
    // Stryker disable next-line StringLiteral: a default logger's name; bots/main.ts and the tests pass their own
    this.log = options.log ?? createLogger('discord', options.config.logLevel);
    this.onFatal = options.onFatal ?? (() => undefined);
    if (!options.secrets.DISCORD_TOKEN) {
      throw new AppError('config', 'DISCORD_TOKEN is not set (config/.env.example); set it, or set discord.enabled: false.');
    }
    this.token = options.secrets.DISCORD_TOKEN;
    const d = this.config.discord;
    this.policy = {
      allowedHosts: d.downloadHosts,
      maxBytes: Math.min(d.maxAttachmentBytes, this.config.understanding.maxInputImageBytes),
    };
    const rest = new REST({ api: d.apiBaseUrl, timeout: d.restTimeoutMs, retries: d.restRetries }).setToken(this.token);
    this.port = new DiscordDelivery(rest, this.config, this.log);
  }

  /** Drops the DM channels with no message since DM_IDLE_MS before `now` (or none at all) from discord.js's cache; → how many. */
  sweepIdleDirectMessages(now = Date.now()): number {
    const lastAt = (id: string | null | undefined) => (id ? SnowflakeUtil.timestampFrom(id) : 0);
    return this.client?.channels.cache.sweep((c) => c.isDMBased() && now - lastAt(c.lastMessageId) > DM_IDLE_MS) ?? 0;
  }

  /** Whether the gateway connection has the Message Content intent (false after the portal refused it). */
  get hasMessageContent(): boolean {
    return this.messageContent;
  }

  /** Log in and start handling events with the core's `handle` (the core's delivery consumer is already running). */
  async start(core: Pick<Core, 'handle' | 'showBeforeResult' | 'settings' | 'requestOf' | 'redis' | 'commandFailed'>): Promise<void> {
    this.core = core;
    this.copies = new AskedCopies(core.redis, this.config.queue.prefix);
    this.port.followCopies(this.copies);
    // Shards of this application in every process identify in turn (identify-throttle.ts); keyed by the token's digest.
    this.identifyThrottler = redisIdentifyThrottler(core.redis, this.config.queue.prefix, createHash('sha256').update(this.token).digest('hex').slice(0, 16), this.config.discord.identifyWindowMs);
    this.handle = (invocation) => core.handle(invocation);
    this.showQueued = (destination, jobId, text) =>
      core.showBeforeResult(jobId, () => this.port.showQueued(destination, jobId, text)).then(() => undefined);
    this.dmSweep = setInterval(() => this.sweepIdleDirectMessages(), DM_SWEEP_MS).unref();
    await this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.dmSweep);
    await this.client?.destroy();
    this.client = undefined;
    this.port.close();
  }

  connected(): true | string {
    const shards = this.client?.ws.shards;
    if (shards && shards.size > 0 && shards.every((shard) => shard.status === Status.Ready)) return true;
    return 'the Discord gateway is not connected';
  }

  /** Log in with the Message Content intent if configured, without it if the portal refuses it. */
  private async connect(): Promise<void> {
    const wantContent = this.config.discord.messageContentIntent;
    try {
      await this.login(wantContent);
    } catch (e) {
      if (!wantContent || !/disallowed intents/i.test((e as Error).message)) throw e;
      this.log.warn(
        'the Developer Portal does not allow the Message Content intent; continuing without it (mention-replies will explain /ask)',
      );
      await this.client?.destroy();
      await this.login(false);
    }
  }

  /**
   * Discord closed the gateway with a code discord.js does not reconnect after (GATEWAY_CLOSED): without this the bot
   * would run on, hearing nothing. Log in again as at start (falling back without Message Content, naming the token
   * if Discord refuses it); what still fails is fatal, for the process to be restarted.
   */
  private async onGatewayClosed(client: Client, code: number): Promise<void> {
    // Stryker disable next-line ConditionalExpression,LogicalOperator: equivalent, discord.js emits this for a close Discord sent, never for destroy() (an old client's, a stopped one's)
    if (client !== this.client || this.stopped) return;
    // Stryker disable next-line StringLiteral: equivalent, discord.js gives up only after GATEWAY_CLOSED's codes
    this.log.error({ code }, `Discord closed the gateway for good (${GATEWAY_CLOSED[code] ?? `close code ${code}`}); logging in again`);
    try {
      await client.destroy();
      await this.connect();
      // Stryker disable next-line OptionalChaining: equivalent, connect() has just set the client
      if (this.stopped) await this.client?.destroy();
    } catch (e) {
      if (this.stopped) return; // stop() destroyed the client that was logging in
      this.log.fatal({ err: (e as Error).message }, 'logging in to Discord again failed');
      this.onFatal(e as Error);
    }
  }

  private async login(withContent: boolean): Promise<void> {
    const d = this.config.discord;
    const intents = [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.DirectMessages];
    if (withContent) intents.push(GatewayIntentBits.MessageContent);
    const client = new Client({
      intents,
      // DM channels and uncached messages arrive as partials; without these, DMs and old reply targets are dropped.
      partials: [Partials.Channel, Partials.Message],
      makeCache: USER_CACHES,
      rest: { api: d.apiBaseUrl, timeout: d.restTimeoutMs, retries: d.restRetries },
      ...shardOptions(d.shards),
      ...(this.identifyThrottler ? { ws: { buildIdentifyThrottler: this.identifyThrottler } } : {}),
    });
    this.client = client;
    this.messageContent = withContent;
    client.on(Events.InteractionCreate, (i) => void this.onInteraction(i));
    client.on(Events.MessageCreate, (m) => void this.onMessage(m));
    // An Ask form's copy follows its target (asked-copies.ts), read from the gateway's payloads: discord.js drops these
    // three events in a channel it holds no object for (until 2026-12-08 a deletion there left the copy).
    client.ws.on(GatewayDispatchEvents.MessageDelete, (data: unknown) => void this.onDeleted(data));
    client.ws.on(GatewayDispatchEvents.MessageDeleteBulk, (data: unknown) => void this.onDeleted(data));
    client.ws.on(GatewayDispatchEvents.MessageUpdate, (data: unknown) => void this.onEdited(data));
    client.on(Events.ShardResume, (_id, replayed) => this.log.info({ replayed }, 'gateway resumed'));
    logRateLimits(client.rest, this.log);
    followUpsAtMostOnce(client.rest); // a follow-up has no nonce: never sent twice (lost-replies.ts)
    callbacksAcknowledgedOnce(client.rest); // a callback whose reply was lost: Discord's 40060 to the repeat means it took
    const ready = new Promise<void>((resolve) => client.once(Events.ClientReady, () => resolve()));
    await client.login(this.token).catch((e: unknown) => {
      if ((e as { code?: unknown }).code !== 'TokenInvalid') throw e;
      throw new AppError('config', 'Discord refused DISCORD_TOKEN (invalid token). Set DISCORD_TOKEN to the bot token from the Developer Portal\'s Bot page (see config/.env.example), or set discord.enabled: false.', { cause: e });
    });
    await ready;
    // Only now: a close during the login itself rejects login(), which start() and onGatewayClosed() handle.
    client.on(Events.ShardDisconnect, (event) => void this.onGatewayClosed(client, event.code));
    this.log.info({ user: client.user?.tag, messageContent: withContent, shards: client.ws.shards.map((shard) => shard.id), shardCount: client.options.shardCount }, 'discord ready');
  }

  // ---- interactions -----------------------------------------------------------------------------------

  private async onInteraction(interaction: Interaction): Promise<void> {
    if (this.firstTime(interaction.id) === false) return;
    try {
      if (interaction.isChatInputCommand()) {
        if (interaction.commandName === COMMAND.imagine) return await this.onImagine(interaction);
        if (interaction.commandName === COMMAND.ask) return await this.onAsk(interaction);
        if (interaction.commandName === COMMAND.describe) return await this.onDescribe(interaction);
        if (interaction.commandName === COMMAND.settings) return await this.onSettings(interaction);
        if (interaction.commandName === COMMAND.admin) return await this.onAdmin(interaction);
      } else if (interaction.isMessageContextMenuCommand() && interaction.commandName === COMMAND.askAboutImage) {
        return await this.onAskMenu(interaction);
      } else if (interaction.isMessageContextMenuCommand() && interaction.commandName === COMMAND.describeImage) {
        return await this.onDescribeMenu(interaction);
      } else if (interaction.isModalSubmit()) {
        return await this.onAskModal(interaction);
      } else if (interaction.isButton()) {
        return await this.onButton(interaction);
      }
    } catch (e) {
      await this.failInteraction(interaction, e);
    }
  }

  private async onImagine(interaction: ChatInputCommandInteraction): Promise<void> {
    await this.runJob(interaction, () => imagineInput(interaction.options, this.config.generation));
  }

  private async onAsk(interaction: ChatInputCommandInteraction): Promise<void> {
    const attachment = interaction.options.getAttachment('image', true);
    const image: AttachmentMeta = { url: attachment.url, filename: attachment.name, size: attachment.size, contentType: attachment.contentType };
    await this.runJob(
      interaction,
      () => {
        const question = requireQuestion(interaction.options.getString('question'));
        checkBeforeDownload(image, this.policy);
        return question;
      },
      async (question) => ({ command: 'ask', question, image: await this.download(image, interaction.channelId) }),
    );
  }

  /** /settings: show, set or reset saved defaults (yours, or this channel's for Manage Server); always ephemeral. */
  private async onSettings(interaction: ChatInputCommandInteraction): Promise<void> {
    if (!(await this.allowed(interaction))) return;
    const o = interaction.options;
    const scope = o.getString('for') === 'channel' ? 'channel' : 'user';
    const values = {
      aspect: o.getString('aspect') ?? undefined,
      steps: o.getInteger('steps') ?? undefined,
      guidance: o.getNumber('guidance') ?? undefined,
      count: o.getInteger('images') ?? undefined,
      negative: o.getString('negative') ?? undefined,
      private: o.getBoolean('private') ?? undefined,
      retentionSeconds: undefined as number | undefined,
      noLog: o.getBoolean('no-log') ?? undefined,
    };
    const retention = o.getString('retention');
    if (retention !== null) values.retentionSeconds = parseDuration(retention); // a bad one: its UserError, privately, before any defer
    // One of the choices commands.ts offers: a saved default's name
    const clear = (o.getString('clear') ?? undefined) as NonNullable<Extract<CommandInput, { command: 'settings' }>['clear']>[number] | undefined;
    const action = o.getBoolean('reset') ? 'reset' : clear || Object.values(values).some((v) => v !== undefined) ? 'set' : 'show';
    await interaction.deferReply({ flags: MessageFlags.Ephemeral });
    await this.settingsReply(interaction, { command: 'settings', scope, action, values, ...(clear ? { clear: [clear] } : {}) });
  }

  /** Run a settings command and show the answer with its components: Private on/off and Reset. */
  private async settingsReply(interaction: RepliableInteraction, input: Extract<CommandInput, { command: 'settings' }>): Promise<void> {
    const reply = await this.call(this.invocation(interaction, input));
    const now = await this.core?.settings.get(input.scope, this.destination(interaction));
    const privateOn = now?.private === true;
    const components = reply.kind === 'error' ? [] : [settingsRow(input.scope, privateOn)];
    await interaction.editReply({ content: reply.text, components, allowedMentions: { parse: [] } });
  }

  /** /describe image:<attachment> → four prompts, each with "Imagine this". */
  private async onDescribe(interaction: ChatInputCommandInteraction): Promise<void> {
    const attachment = interaction.options.getAttachment('image', true);
    const image: AttachmentMeta = { url: attachment.url, filename: attachment.name, size: attachment.size, contentType: attachment.contentType };
    await this.describeJob(interaction, image);
  }

  /** Right-click an image message → Apps → "Describe this image". */
  private async onDescribeMenu(interaction: MessageContextMenuCommandInteraction): Promise<void> {
    await this.describeJob(interaction, firstImage(interaction.targetMessage));
  }

  private async describeJob(interaction: RepliableInteraction, image: AttachmentMeta | undefined): Promise<void> {
    await this.runJob(
      interaction,
      () => {
        if (!image) throw new UserError('bad_image', 'That message has no image I can describe.');
        checkBeforeDownload(image, this.policy);
        return image;
      },
      async (checked) => ({ command: 'describe', image: await this.download(checked, interaction.channelId) }),
    );
  }

  private async onAskMenu(interaction: MessageContextMenuCommandInteraction): Promise<void> {
    if (!(await this.allowed(interaction))) return;
    const image = firstImage(interaction.targetMessage);
    if (!image) return void (await this.replyPrivately(interaction, 'That message has no image I can read.'));
    try {
      checkBeforeDownload(image, this.policy);
    } catch (e) {
      return void (await this.replyPrivately(interaction, userText(e)));
    }
    this.modalTargets.set(interaction.targetMessage.id, { image, at: Date.now() });
    // Stryker disable next-line ConditionalExpression,EqualityOperator,ArithmeticOperator: memory, a modal's 15 minutes; a submit after them fetches the message again
    for (const [id, t] of this.modalTargets) if (Date.now() - t.at > 15 * 60_000) this.modalTargets.delete(id);
    await interaction.showModal({
      custom_id: askModalId(interaction.channelId, interaction.targetMessage.id),
      title: 'Ask about this image',
      components: [
        {
          type: ComponentType.ActionRow,
          components: [
            {
              type: ComponentType.TextInput,
              custom_id: QUESTION_INPUT_ID,
              label: 'Your question',
              style: TextInputStyle.Paragraph,
              required: true,
              max_length: Math.min(4000, this.config.understanding.maxQuestionChars),
            },
          ],
        },
      ],
    });
  }

  private async onAskModal(interaction: ModalSubmitInteraction): Promise<void> {
    const { channelId, messageId } = parseAskModalId(interaction.customId);
    await this.runJob(
      interaction,
      () => requireQuestion(interaction.fields.getTextInputValue(QUESTION_INPUT_ID)),
      async (question) => {
        const image = this.modalTargets.get(messageId)?.image ?? (await this.fetchImageOf(channelId, messageId));
        this.modalTargets.delete(messageId);
        this.askedAttachments.set(interaction, image.id); // none where the image was not read from a message
        return { command: 'ask', question, image: await this.download(image, interaction.channelId) };
      },
    );
  }

  private async onButton(interaction: ButtonInteraction): Promise<void> {
    const setting = parseSettingsButton(interaction.customId);
    if (setting) {
      if (!(await this.allowed(interaction))) return;
      await interaction.deferReply({ flags: MessageFlags.Ephemeral }); // a fresh private answer with the new state
      const input = setting.action === 'reset'
        ? ({ command: 'settings', scope: setting.scope, action: 'reset' } as const)
        : ({ command: 'settings', scope: setting.scope, action: 'set', values: { private: setting.action === 'private-on' } } as const);
      return this.settingsReply(interaction, input);
    }
    const parsed = parseButtonId(interaction.customId);
    if (!parsed) {
      if (isOurButtonId(interaction.customId)) await this.replyPrivately(interaction, 'This button no longer works here. Please run the command again.');
      return;
    }
    if (parsed.action === 'cancel') {
      await interaction.deferReply({ flags: MessageFlags.Ephemeral }); // the core's answer needs Redis: no 3 s limit on it
      // The job's channel decides, not the DM a private channel's progress is in: before 2026-12-07 a bot not enabled
      // in DMs refused its own asker's Cancel there ("not enabled in direct messages").
      const where = await this.fromResultOf(interaction, parsed.jobId);
      if (!this.channelAllowed(where)) return this.refuseHere(interaction, where);
      const reply = await this.call(this.invocation(interaction, { command: 'cancel', jobId: parsed.jobId }));
      return void (await this.replyPrivately(interaction, reply.text));
    }
    const where = this.fromResultOf(interaction, parsed.jobId); // read in runJob, within its deadline
    if (parsed.action === 'reroll') return this.runJob(interaction, () => ({ command: 'reroll', jobId: parsed.jobId }) as const, undefined, where);
    if (parsed.action === 'imagine') {
      // "Imagine this" under a /describe answer: the prompt is the numbered line of that message.
      return this.runJob(interaction, () => {
        const prompt = describedPrompt(interaction.message.content, parsed.index ?? 0);
        if (!prompt) throw new UserError('bad_request', 'I cannot read that prompt any more; copy it into /imagine.');
        return { command: 'imagine', prompt, from: parsed.jobId } as const;
      }, undefined, where);
    }
    const source = imageAt(interaction.message, parsed.index);
    await this.runJob(
      interaction,
      () => {
        if (!source) throw new UserError('bad_request', 'That message has no image to vary any more.');
        checkBeforeDownload(source, this.policy);
        return source;
      },
      async (image) => ({ command: 'vary', image: await this.download(image, interaction.channelId), from: parsed.jobId }),
      where,
    );
  }

  private async onAdmin(interaction: ChatInputCommandInteraction): Promise<void> {
    if (!interaction.inGuild()) return void (await this.replyPrivately(interaction, 'Admin commands work in servers only.'));
    // Manage Server in a server the bot is not enabled in (discord.allowedGuildIds) is no say over the bot or its users
    const guilds = this.config.discord.allowedGuildIds;
    if (guilds.length && !guilds.includes(interaction.guildId)) return this.refuseHere(interaction, this.destination(interaction));
    // Stryker disable next-line OptionalChaining: equivalent, in a server (checked above) memberPermissions is always there
    if (!interaction.memberPermissions?.has(PermissionFlagsBits.ManageGuild)) {
      return void (await this.replyPrivately(interaction, 'You need the Manage Server permission for this.'));
    }
    const destination = this.destination(interaction);
    const input = adminInput(interaction.options, channelKey(destination));
    await interaction.deferReply({ flags: MessageFlags.Ephemeral });
    const reply = await this.call({ input, destination, dedupeKey: interaction.id, isAdmin: true });
    const image = reply.kind === 'text' ? reply.image : undefined; // the usage chart: as private as the text (ephemeral)
    const files = image ? [{ attachment: Buffer.from(image.png), name: image.name, description: image.altText }] : [];
    await this.replyPrivately(interaction, reply.text, files);
  }

  /**
   * The common path of every job-starting interaction. `check` runs before deferring (cheap checks: its UserError
   * is a plain ephemeral reply); `finish` runs after (downloads), then the core decides.
   */
  private async runJob<T>(
    interaction: RepliableInteraction,
    check: () => T,
    finish: (checked: T) => Promise<CommandInput> = async (checked) => checked as unknown as CommandInput,
    where: DiscordDestination | Promise<DiscordDestination> = this.destination(interaction),
  ): Promise<void> {
    const lookup = this.placeOf(where);
    let place = await within(lookup, DEFER_WITHIN_MS);
    if (!place) {
      await interaction.deferReply({ flags: MessageFlags.Ephemeral });
      place = { ...(await lookup), private: true };
      this.log.warn({ interaction: interaction.id, waitedMs: DEFER_WITHIN_MS }, 'Redis was slow before a defer: deferred privately first');
    }
    if (!place.allowed) return this.refuseHere(interaction, place.destination);
    let checked: T;
    try {
      checked = check();
    } catch (e) {
      if (!isUserError(e)) throw e;
      return void (await this.replyPrivately(interaction, e.message));
    }
    // A private channel (or a user who chose private results): the whole exchange is ephemeral, never public.
    const destination: DiscordDestination = place.private ? { ...place.destination, private: true } : place.destination;
    if (!interaction.deferred) await interaction.deferReply(destination.private ? { flags: MessageFlags.Ephemeral } : {});
    let reply: Reply;
    let input: CommandInput | undefined;
    try {
      input = await finish(checked);
      reply = await this.call(this.invocation(interaction, input, destination));
    } catch (e) {
      reply = this.errorReply(e, askedIn(interaction));
    }
    if (reply.kind === 'queued') {
      await Promise.all([this.showQueued(destination, reply.jobId, reply.text), this.attachAskedImage(interaction, destination, input, place.saved, reply.jobId)]);
      return;
    }
    // Refused (a job-starting command has no other answer): remove the "thinking…", tell the user alone.
    await interaction.deleteReply().catch(() => undefined);
    await this.followUp(interaction, { content: reply.text, flags: MessageFlags.Ephemeral, allowedMentions: { parse: [] } });
  }

  /**
   * An /ask or Ask form answer: the copy of its image and its question, on the interaction's original response
   * (asked-image.ts), for a mention-reply to it to continue the conversation. Only `attachments`: Discord keeps the
   * text, and the progress and answer edits (which name no `attachments`) keep the copy, in whichever order they
   * land. A private answer is ephemeral, which nobody can reply to: no copy. Nor where the channel keeps little (a
   * retention TTL, no-log): a copy of the user's image posted by the bot would outlive what the bot stores. `saved`:
   * the settings runJob read for this request before deferring (until 2026-12-07 read here a second time). An Ask
   * form's copy follows its target: linked in Redis (asked-copies.ts) for onDeleted, and taken off again where the link
   * cannot be written. Best effort: the answer comes without.
   */
  private async attachAskedImage(interaction: RepliableInteraction, destination: DiscordDestination, input: CommandInput | undefined, saved: SavedSettings, jobId: string): Promise<void> {
    if (input?.command !== 'ask' || !input.image.bytes || destination.private) return;
    try {
      if (this.config.noLog || saved.noLog || saved.retentionSeconds !== undefined) return;
      const { description, ...file } = await askedImageFile(input.image.bytes, input.question, this.config.understanding.maxPixels);
      const original = Routes.webhookMessage(interaction.applicationId, interaction.token, '@original');
      const answer = (await this.client!.rest.patch(original, {
        body: { attachments: [{ id: '0', filename: file.name, description }] },
        files: [file],
        auth: false,
      })) as APIMessage;
      if (!interaction.isModalSubmit()) return; // an /ask upload is in no message: nothing to follow
      const target = { messageId: parseAskModalId(interaction.customId).messageId, attachmentId: this.askedAttachments.get(interaction) };
      await this.copies!.link(target, jobId, { channelId: answer.channel_id, messageId: answer.id }).catch(async (e: unknown) => {
        await this.client!.rest.patch(original, { body: { attachments: [] }, auth: false });
        throw e;
      });
    } catch (e) {
      this.log.warn({ interaction: interaction.id, err: (e as Error).message }, 'could not attach the asked-about image to its answer: a reply to it will not find the image');
    }
  }

  /**
   * Messages deleted (MESSAGE_DELETE, a moderator's MESSAGE_DELETE_BULK; any message in the bot's channels, cached or
   * not): the answers about those that were Ask form targets lose their copy of the image (asked-copies.ts). One Redis
   * round trip per event, a second and the edits only for a target.
   */
  private async onDeleted(payload: unknown): Promise<void> {
    const parsed = DeletedMessages.safeParse(payload);
    if (!parsed.success) return void this.log.warn({ err: parsed.error.message }, 'a message deletion from the gateway could not be read: copies of its images stay');
    const messageIds = parsed.data;
    try {
      const copies = (await this.copies?.take(messageIds)) ?? [];
      await Promise.all(copies.map((at) => this.removeCopy(at)));
    } catch (e) {
      this.log.warn({ messages: messageIds.length, err: (e as Error).message }, 'could not look up the answers about a deleted message: their copies of its image stay');
    }
  }

  /**
   * A message edited (MESSAGE_UPDATE: its author removed files, the bot edited its own, a link preview came): the
   * answers about an image it no longer has lose their copy, as at its deletion. Not where the payload's attachments
   * cannot be trusted (attachmentsLeft: no Message Content intent). One Redis round trip per edit, more for a target.
   */
  private async onEdited(payload: unknown): Promise<void> {
    const botId = this.client?.user?.id;
    const edit = botId ? attachmentsLeft(payload, botId, this.messageContent) : undefined;
    if (!edit) return;
    try {
      const copies = (await this.copies?.takeRemoved(edit.messageId, edit.left)) ?? [];
      await Promise.all(copies.map((at) => this.removeCopy(at)));
    } catch (e) {
      this.log.warn({ message: edit.messageId, err: (e as Error).message }, 'could not look up the answers about an edited message: their copies of its image stay');
    }
  }

  /**
   * The copy taken off a message of the bot's, through the channel (the interaction token may have expired): an edit
   * listing the attachments that stay, which Discord keeps, and not the copy, which it deletes. An answer deleted
   * since has nothing to take off.
   */
  private async removeCopy(at: CopyAt): Promise<void> {
    const route = Routes.channelMessage(at.channelId, at.messageId);
    try {
      const message = (await this.client!.rest.get(route)) as APIMessage;
      if (!message.attachments.some((a) => a.filename === ASKED_IMAGE_FILE)) return;
      const kept = message.attachments.filter((a) => a.filename !== ASKED_IMAGE_FILE).map((a) => ({ id: a.id }));
      await this.client!.rest.patch(route, { body: { attachments: kept } });
    } catch (e) {
      if (e instanceof DiscordAPIError && e.status === 404) return;
      this.log.warn({ channel: at.channelId, message: at.messageId, err: (e as Error).message }, 'could not remove the copy of a deleted image from its answer');
    }
  }

  // ---- mentions ---------------------------------------------------------------------------------------

  private async onMessage(message: Message): Promise<void> {
    const client = this.client;
    if (!client?.user || message.author.bot || message.system) return;
    if (!addressesBot(message, client.user.id, botRoleIds(message, client.user.id))) return;
    // Stryker disable next-line ConditionalExpression: discord.js drops a replayed message still in its cache itself; this catches one it evicted
    if (this.firstTime(message.id) === false) return;
    try {
      const where: DiscordDestination = { platform: 'discord', guildId: message.guildId, ...(await placeOfMessage(message)), userId: message.author.id, applicationId: client.user.id };
      if (!this.channelAllowed(where)) return;
      await this.onMention(message, client.user.id, where);
    } catch (e) {
      if (forbiddenToPost(e)) return this.cannotReplyIn(message, e);
      const text = this.errorReply(e, { command: 'ask', channel: message.channelId }).text;
      await message.reply({ content: text, flags: NOTICE_FLAGS, allowedMentions: { parse: [], repliedUser: false }, ...postedOnce(message, 'error') }).catch(() => undefined);
    }
  }

  /**
   * The channel's permissions forbid the bot's reply (nothing was queued: the status reply comes first). Without
   * this the mention went unanswered, and the operator read "discord handler failed" with a stack. The asker learns
   * why in a DM, and that `/ask` works there (interaction responses need no channel permission).
   */
  private async cannotReplyIn(message: Message, e: DiscordAPIError): Promise<void> {
    const missing = missingPermission(e);
    this.log.warn({ channel: message.channelId, code: e.code }, `no permission to reply in a channel (${missing}): give the bot Send Messages, Read Message History and Attach Files there`);
    const text =
      `I can't reply in <#${message.channelId}>: I don't have the ${missing} permission there (a server admin can give it in the channel's settings → Permissions). ` +
      'Meanwhile `/ask` works there: its answers need no permission in the channel.';
    await message.author.send({ content: text, flags: NOTICE_FLAGS, allowedMentions: { parse: [] }, ...postedOnce(message, 'cannot-reply') }).catch(() => undefined); // DMs closed: nowhere left to say it
  }

  private async onMention(message: Message, botId: string, where: DiscordDestination): Promise<void> {
    const question = questionFromMention(message.content, botId, botRoleIds(message, botId));
    const chain = await walkChain(message, botId, this.config.understanding.maxHistoryTurns);
    if (!chain.image) {
      // Without the intent, a message on the chain that arrived empty probably had the image we could not see.
      const help = !this.messageContent && chain.blankedMessages > 0 ? MESSAGE_CONTENT_HELP : chain.tooLong ? LONG_CHAIN_HELP : NO_IMAGE_HELP;
      await message.reply({ content: help, flags: NOTICE_FLAGS, allowedMentions: { parse: [], repliedUser: false }, ...postedOnce(message, 'help') });
      return;
    }
    const image = chain.image;
    requireQuestion(question);
    checkBeforeDownload(image, this.policy);
    // Stryker disable next-line BooleanLiteral: equivalent, start() sets the core before any event is handled
    const isPrivate = this.core ? (await this.core.settings.effective(where)).private === true : false;
    let destination: DiscordDestination;
    if (isPrivate && message.guildId !== null) {
      // A private channel: the answer goes to the asker's DM, never to the channel.
      const dm = await message.author.createDM();
      const status = await dm.send({ content: '⏳ Looking at the image…', allowedMentions: { parse: [] }, ...postedOnce(message, 'status') }).catch((e: unknown) => {
        if (refusesDirectMessages(e)) throw new UserError('forbidden', `Answers in this channel are private, so they go to your direct messages, but ${DMS_CLOSED_HELP} Or use \`/ask\`: its answer is shown only to you.`);
        throw e;
      });
      // channelId stays the channel asked in: its settings (no-log, retention), limits and checks apply to the job
      destination = { ...where, dmChannelId: dm.id, statusMessageId: status.id, private: true };
    } else {
      const status = (await message.reply({ content: '⏳ Looking at the image…', allowedMentions: { parse: [], repliedUser: false }, ...postedOnce(message, 'status') })) as Message;
      destination = { ...where, replyToMessageId: message.id, statusMessageId: status.id };
    }
    let reply: Reply;
    try {
      const input: CommandInput = { command: 'ask', question, image: await this.download(image, message.channelId), history: chain.history };
      // Stryker disable next-line BooleanLiteral: equivalent, the core reads isAdmin for cancel, channel settings and admin commands only
      reply = await this.call({ input, destination, dedupeKey: message.id, isAdmin: false }); // a question needs no admin
    } catch (e) {
      reply = this.errorReply(e, { command: 'ask', channel: message.channelId });
    }
    if (reply.kind === 'queued') return this.showQueued(destination, reply.jobId, reply.text);
    // refused (a limit, a budget, a check): the status message says why, marked as no answer (render.ts NOTICE_FLAGS)
    await this.client!.rest.patch(Routes.channelMessage(statusChannelOf(destination), destination.statusMessageId!), { body: { content: reply.text, flags: NOTICE_FLAGS, allowed_mentions: { parse: [] } } });
  }

  // ---- helpers ----------------------------------------------------------------------------------------

  private async call(invocation: Invocation): Promise<Reply> {
    // Stryker disable next-line StringLiteral: unreachable, no event reaches the adapter before start() sets it
    if (!this.handle) throw new AppError('internal', 'the Discord adapter was not started');
    return this.handle(invocation);
  }

  private invocation(interaction: RepliableInteraction, input: CommandInput, destination = this.destination(interaction)): Invocation {
    return {
      input,
      destination,
      dedupeKey: interaction.id,
      isAdmin: interaction.memberPermissions?.has(PermissionFlagsBits.ManageGuild) ?? false,
    };
  }

  /**
   * Where a button on job `jobId`'s result starts a job. Pressed in a DM on the requester's own server job (a private
   * one's result went there once the interaction token expired; any one's when its channel refused the bot's message,
   * DiscordDelivery's postToRequester): that job's channel, so its limits, settings and checks apply, and the exchange
   * stays in the DM, private; anywhere else, where it was pressed. (Before 2026-12-07 only a private job's: a public
   * one's Re-roll there was a DM job, refused where DMs are off.) Pressed on an ephemeral result (only its asker saw
   * it), the job is private too, whatever the channel's setting is now: before 2026-12-07 a private channel made
   * public since had the Re-roll of a private prompt posted for everyone.
   */
  private async fromResultOf(interaction: ButtonInteraction, jobId: string): Promise<DiscordDestination> {
    const here = this.destination(interaction);
    if (interaction.message.flags.has(MessageFlags.Ephemeral)) here.private = true;
    if (interaction.guildId !== null || !this.core) return here;
    const original = (await this.core.requestOf(jobId))?.destination;
    // Stryker disable next-line ConditionalExpression: equivalent, a DM's own job is the DM's either way, and the core keeps its privacy (asPrivateAs)
    if (original?.platform !== 'discord' || original.guildId === null || original.userId !== here.userId) return here;
    return { ...here, guildId: original.guildId, channelId: original.channelId, private: true, ...(original.nsfw ? { nsfw: true } : {}) };
  }

  private destination(interaction: RepliableInteraction): DiscordDestination {
    return {
      platform: 'discord',
      guildId: interaction.guildId,
      ...placeOfChannel(interaction.channel, interaction.channelId ?? interaction.user.id),
      userId: interaction.user.id,
      applicationId: interaction.applicationId,
      interactionToken: interaction.token,
      interactionAt: interaction.createdTimestamp,
    };
  }

  /** Whether the bot works there: DMs if allowed; a server and channel on the allow-lists (a thread: its own id or its parent's). */
  private channelAllowed(at: Pick<DiscordDestination, 'guildId' | 'channelId' | 'threadId'>): boolean {
    const d = this.config.discord;
    if (at.guildId === null) return d.allowDirectMessages;
    if (d.allowedGuildIds.length && !d.allowedGuildIds.includes(at.guildId)) return false;
    return d.allowedChannelIds.length === 0 || [at.channelId, at.threadId].some((id) => id !== undefined && d.allowedChannelIds.includes(id));
  }

  /** Whether the bot works in the interaction's channel; if not, the user is told so. */
  private async allowed(interaction: RepliableInteraction): Promise<boolean> {
    const here = this.destination(interaction);
    if (this.channelAllowed(here)) return true;
    await this.refuseHere(interaction, here);
    return false;
  }

  private async refuseHere(interaction: RepliableInteraction, at: DiscordDestination): Promise<void> {
    await this.replyPrivately(interaction, `This bot isn't enabled ${at.guildId === null ? 'in direct messages' : 'in this server or channel'}.`);
  }

  /**
   * Where a job goes (the interaction's channel, or the server channel a DM button's job belongs to), whether the bot
   * works there, and whether saved settings make its results private (a destination already private, a DM button's
   * private job, stays so: runJob keeps its flag), with the saved settings read (the /ask copy's retention and no-log
   * check uses them: no second read). Reads Redis.
   */
  private async placeOf(where: DiscordDestination | Promise<DiscordDestination>): Promise<{ destination: DiscordDestination; allowed: boolean; private: boolean; saved: SavedSettings }> {
    const destination = await where;
    // Stryker disable next-line BooleanLiteral: equivalent, a place the bot is not enabled in is refused before its privacy matters
    if (!this.channelAllowed(destination)) return { destination, allowed: false, private: false, saved: {} };
    const saved = this.core ? await this.core.settings.effective(destination) : {};
    return { destination, allowed: true, private: saved.private === true, saved };
  }

  private async download(image: AttachmentMeta, channel: string | null): Promise<{ bytes: Uint8Array; name: string; contentType: string; sizeBytes: number }> {
    const got = await downloadImage(image, this.policy).catch((e: unknown) => {
      // the user is told to try again; the operator reads why: the CDN's answer, or the network error (its cause)
      if (isUserError(e) && (e.context.status !== undefined || e.cause !== undefined))
        this.log.warn({ channel, status: e.context.status, err: e.cause instanceof Error ? e.cause.message : `HTTP ${String(e.context.status)}` }, 'a Discord attachment download failed');
      throw e;
    });
    return { bytes: got.bytes, name: image.filename, contentType: got.contentType, sizeBytes: got.bytes.byteLength };
  }

  /**
   * The image of the message an ask modal is about, fetched again. A message gone (404 Unknown Message, Unknown Channel)
   * or out of the bot's sight (403 Missing Access) has none any more; any other failure (a 5xx after the client's
   * retries, a timeout, a refused connection) says nothing about the message, and the user is told to try again
   * (before 2026-12-07 they were told the image was gone; found by a review).
   */
  private async fetchImageOf(channelId: string, messageId: string): Promise<AttachmentMeta> {
    const message = (await this.client!.rest.get(Routes.channelMessage(channelId, messageId)).catch((e: unknown) => {
      if (e instanceof DiscordAPIError && (e.status === 403 || e.status === 404)) return undefined;
      this.log.warn({ channel: channelId, err: (e as Error).message }, 'fetching the message of an ask modal failed');
      throw new UserError('bad_image', 'Discord did not answer when I looked up that message; please try again.', { cause: e });
    })) as APIMessage | undefined;
    // as firstImage() picks the menu's target: the first image, else the first file (checkBeforeDownload says why not)
    // Stryker disable next-line LogicalOperator: equivalent in practice, without a type the extension decides and Discord uploads carry both
    const all = (message?.attachments ?? []).map((a): AttachmentMeta => ({ id: a.id, url: a.url, filename: a.filename, size: a.size, contentType: a.content_type ?? null }));
    const image = all.find((a) => isImageAttachment(a)) ?? all[0];
    if (!image) throw new UserError('bad_image', 'That message has no image I can read any more.');
    return image;
  }

  /** A failure as the user is told it: a UserError's text, else a ref to the error line (the command, where) and a count. */
  private errorReply(e: unknown, asked: Asked): Reply & { kind: 'error' } {
    if (isUserError(e)) return { kind: 'error', text: e.message, private: true };
    const ref = randomUUID().slice(0, 8);
    // Stryker disable next-line OptionalChaining: equivalent, nothing here throws null or undefined
    this.log.error({ ref, ...asked, err: (e as Error)?.message, stack: (e as Error)?.stack }, 'discord handler failed');
    this.core?.commandFailed({ platform: 'discord', command: asked.command, error: e });
    return { kind: 'error', text: `Something went wrong (ref ${ref}).`, private: true };
  }

  /**
   * Tell the user alone: a reply, the edit of a private "thinking…" (a follow-up would leave it thinking), or a
   * follow-up; a text past Discord's 2,000 characters in several (contentChunks), `files` with the first.
   */
  private async replyPrivately(interaction: RepliableInteraction, text: string, files: AttachmentPayload[] = []): Promise<void> {
    const [first, ...rest] = contentChunks(text);
    const attach = (attached: AttachmentPayload[]) => (attached.length ? { files: attached } : {});
    const payload = (content: string, attached: AttachmentPayload[] = []) => ({ content, ...attach(attached), flags: MessageFlags.Ephemeral as const, allowedMentions: { parse: [] } });
    // Stryker disable next-line ConditionalExpression,LogicalOperator: `deferred && !replied` → `true` or `deferred || !replied` differ only for an interaction already *replied* to privately, and no handler fails after its private reply
    if (interaction.deferred && !interaction.replied && interaction.ephemeral) await interaction.editReply({ content: first, components: [], ...attach(files), allowedMentions: { parse: [] } });
    else if (interaction.deferred || interaction.replied) await this.followUp(interaction, payload(first!, files));
    else await interaction.reply(payload(first!, files));
    for (const more of rest) await this.followUp(interaction, payload(more));
  }

  /**
   * An ephemeral follow-up. Execute Webhook takes no nonce, so discord.js never sends one again that Discord may have
   * posted (followUpsAtMostOnce), and one that Discord may have posted (MayHaveBeenPosted) is taken as posted: before
   * 2026-12-07 a follow-up whose reply was lost was posted twice, or followed by "Something went wrong".
   */
  private async followUp(interaction: RepliableInteraction, options: InteractionReplyOptions): Promise<void> {
    try {
      await interaction.followUp(options);
    } catch (e) {
      if (!(e instanceof MayHaveBeenPosted)) throw e;
      this.log.warn({ interaction: interaction.id, err: e.message }, 'a follow-up may have been posted: not sent again');
    }
  }

  private async failInteraction(interaction: Interaction, e: unknown): Promise<void> {
    const reply = this.errorReply(e, askedIn(interaction));
    if (!interaction.isRepliable()) return;
    await this.replyPrivately(interaction, reply.text).catch((err: Error) => this.log.warn({ err: err.message }, 'could not report an error'));
  }

  /** False when this id was already handled (a gateway replay); bounded memory. */
  private firstTime(id: string): boolean {
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    keepNewest(this.seen, SEEN_LIMIT);
    return true;
  }
}

/**
 * discord.js's shard options for discord.shards. Always explicit: left at its defaults, discord.js would read SHARDS
 * and SHARD_COUNT from the environment (its ShardingManager's variables), which a self-hoster may have set for
 * something else.
 */
export function shardOptions(shards: DiscordShards): Pick<ClientOptions, 'shards' | 'shardCount'> {
  if (shards === 'auto') return { shards: 'auto' };
  return { shards: shards.ids ?? Array.from({ length: shards.count }, (_, id) => id), shardCount: shards.count };
}

/**
 * nonce + enforce_nonce for the bot's message about `message` (`what`: its status reply, the help, an error…): discord.js
 * sends a message again after a timeout, a reset connection or a 5xx, which Discord may have posted already; with
 * these it answers the repeat with the earlier message. Before 2026-12-07 such a reply was posted twice (a second
 * "⏳ Looking at the image…" that stayed so for ever).
 */
const postedOnce = (message: Message, what: string) => ({ nonce: nonceFor(`${what}:${message.id}`), enforceNonce: true });

/** What failed, for its error line and count: the command (a bounded label) and the channel it was asked in. */
interface Asked {
  command: CommandLabel;
  channel: string | null;
}

/** Each command's name as Discord sends it (commands.ts) → the label its failures are counted by. */
const COMMAND_LABEL: Readonly<Record<string, CommandLabel>> = {
  [COMMAND.imagine]: 'imagine',
  [COMMAND.ask]: 'ask',
  [COMMAND.askAboutImage]: 'ask',
  [COMMAND.describe]: 'describe',
  [COMMAND.describeImage]: 'describe',
  [COMMAND.settings]: 'settings',
  [COMMAND.admin]: 'admin',
};

/** The command an interaction is for (the Ask form is the one modal; a button's action is its command), and where. */
function askedIn(interaction: Interaction): Asked {
  const id = interaction.isButton() ? interaction.customId : '';
  let command: CommandLabel = 'other';
  if (interaction.isCommand()) command = COMMAND_LABEL[interaction.commandName] ?? 'other';
  else if (interaction.isModalSubmit()) command = 'ask';
  else if (interaction.isButton()) command = parseSettingsButton(id) ? 'settings' : (parseButtonId(id)?.action ?? 'other');
  return { command, channel: interaction.channelId };
}

function userText(e: unknown): string {
  if (isUserError(e)) return e.message;
  throw e;
}

/** The AdapterFactory bots/main.ts loads (bots/core/adapter.ts). */
export const createDiscordAdapter = async (options: DiscordAdapterOptions): Promise<DiscordAdapter> => new DiscordAdapter(options);

/** A guild channel marked age-restricted (Discord's nsfw flag): the relaxed check policy applies there (issue 16). */
function isAgeRestricted(channel: unknown): boolean {
  // Stryker disable next-line ConditionalExpression,LogicalOperator: defensive, discord.js gives an interaction in a server its channel (the Guilds intent caches them)
  return typeof channel === 'object' && channel !== null && 'nsfw' in channel && (channel as { nsfw?: unknown }).nsfw === true;
}

type Place = Pick<DiscordDestination, 'channelId' | 'threadId' | 'nsfw'>;

/**
 * Where a job asked in `channel` belongs. A thread (a forum post, a thread under a message) is a channel of its own on
 * Discord but part of its parent: the parent's settings, limits, allow-list and checks apply, and threads take their
 * parent's age restriction; the bot posts in the thread. A thread whose parent is unknown stands for itself.
 */
function placeOfChannel(channel: Channel | null, channelId: string): Place {
  const thread = channel?.isThread() && channel.parentId !== null ? channel : undefined;
  const place: Place = thread ? { channelId: thread.parentId!, threadId: thread.id } : { channelId };
  if (isAgeRestricted(thread ? thread.parent : channel)) place.nsfw = true;
  return place;
}

/** A message's place; a thread the bot has not seen created (no THREAD_CREATE: its parent unknown) is fetched first. */
async function placeOfMessage(message: Message): Promise<Place> {
  let channel: Channel = message.channel;
  if (channel.isThread() && channel.parentId === null) channel = await channel.fetch().catch(() => channel);
  return placeOfChannel(channel, message.channelId);
}
