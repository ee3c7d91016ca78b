// A fake Discord for tests: REST under /api/v10 and the gateway WebSocket on one loopback port, so the
// unmodified discord.js client runs against it (`rest: { api: fake.apiBase }`). It records every request and
// injects faults (429 + Retry-After, 5xx, a reply lost after the request was carried out, expired interaction tokens,
// dropped gateway with resume).
// Protocol facts and the checklist this follows: ../shared/docs/platform-fakes.md Part A.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { FakeGateway, MESSAGE_CONTENT, shardOf, type Shard } from './gateway.ts';
import { recordRequest, replyFault, type Fault, type RecordedFile, type RecordedRequest, type Reply } from './http.ts';
import { channelJson, guildPayload, interactionPayload, type FakeChannel } from './payloads.ts';
import { FakeRestApi, type FakeInteraction } from './rest.ts';
import { snowflake } from './snowflake.ts';
import {
  type FakeAttachment,
  type FakeMessage,
  type FakeUser,
  blankWithoutContentIntent,
  messageJson,
  userJson,
} from './messages.ts';

export type { FakeAttachment, FakeMessage, FakeUser };
export type { Fault, FakeInteraction, RecordedFile, RecordedRequest };


export interface FakeDiscordOptions {
  token?: string;
  /** Sent in HELLO; short intervals exercise heartbeats. @defaultValue 41250 */
  heartbeatIntervalMs?: number;
  /** The developer-portal switch: when false, IDENTIFY with MessageContent is closed with 4014. @defaultValue true */
  messageContentAllowed?: boolean;
  /** Interaction callbacks must arrive within this window (10062 otherwise). @defaultValue 3000 */
  callbackWindowMs?: number;
  /** Interaction tokens stop working for webhooks after this long (401 50027). @defaultValue 900000 */
  tokenTtlMs?: number;
  /** On RESUME: replay missed dispatches (true) or answer op 9 invalid session (false). @defaultValue true */
  resumable?: boolean;
  /** A shard holding more servers than this is closed 4011 at IDENTIFY (Discord: 2,500). @defaultValue 2500 */
  maxGuildsPerShard?: number;
  /** `GET /gateway/bot` recommends a shard per this many servers (Discord: about 1,000). @defaultValue 1000 */
  guildsPerRecommendedShard?: number;
  /** `session_start_limit.max_concurrency`: shards identifying together (large bots get 16). @defaultValue 1 */
  maxConcurrency?: number;
}

type Json = Record<string, unknown>;
const EPHEMERAL = 1 << 6;

export class FakeDiscord {
  readonly appId = snowflake();
  readonly guildId = snowflake();
  readonly channelId = snowflake();
  readonly bot: FakeUser;
  /** A regular member; tests may add more with `user()`. */
  readonly alice: FakeUser;
  readonly requests: RecordedRequest[] = [];
  readonly messages = new Map<string, FakeMessage>();
  readonly interactions = new Map<string, FakeInteraction>();
  readonly commands: { global: Json[]; guild: Map<string, Json[]> } = { global: [], guild: new Map() };
  /** CDN downloads that carried an Authorization header (a bot leaking its token would show up here). */
  readonly cdnAuthLeaks: string[] = [];

  private readonly options: Required<FakeDiscordOptions>;
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly gateway: FakeGateway;
  private readonly rest: FakeRestApi;
  private readonly faults: (Fault & { left: number })[] = [];
  private readonly blobs = new Map<string, { bytes: Uint8Array; contentType: string }>();
  private readonly waiters = new Set<() => void>();
  private readonly dmChannels = new Map<string, string>();
  private readonly closedDms = new Set<string>();
  /** Every user the fake has seen (alice, the bot, anyone who acted), and those of them who left the server. */
  private readonly users = new Map<string, FakeUser>();
  private readonly departed = new Set<string>();
  /** The server's text channels by id: "general" and any `addChannel` made. */
  readonly channels = new Map<string, FakeChannel>();
  /** Every server the bot is in: `guildId` and any `addGuild` made. */
  readonly guildIds = new Set<string>();
  private port = 0;

  private constructor(options: FakeDiscordOptions) {
    this.options = {
      token: options.token ?? 'fake-bot-token',
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 41_250,
      messageContentAllowed: options.messageContentAllowed ?? true,
      callbackWindowMs: options.callbackWindowMs ?? 3_000,
      tokenTtlMs: options.tokenTtlMs ?? 15 * 60_000,
      resumable: options.resumable ?? true,
      maxGuildsPerShard: options.maxGuildsPerShard ?? 2_500,
      guildsPerRecommendedShard: options.guildsPerRecommendedShard ?? 1_000,
      maxConcurrency: options.maxConcurrency ?? 1,
    };
    this.guildIds.add(this.guildId);
    this.bot = { id: this.appId, username: 'blip3o', bot: true };
    this.alice = { id: snowflake(), username: 'alice' };
    for (const u of [this.bot, this.alice]) this.users.set(u.id, u);
    this.channels.set(this.channelId, { id: this.channelId, name: 'general', nsfw: false });
    this.http = createServer((req, res) => void this.onHttp(req, res));
    this.wss = new WebSocketServer({ server: this.http, path: '/gateway' });
    this.gateway = new FakeGateway(this.wss, this.options, {
      guildIds: () => [...this.guildIds],
      ready: (sessionId, shard, guildIds) => ({
        v: 10,
        user: { ...userJson(this.bot), bot: true },
        guilds: guildIds.map((id) => ({ id, unavailable: true })),
        session_id: sessionId,
        resume_gateway_url: `ws://127.0.0.1:${this.port}/gateway`,
        application: { id: this.appId, flags: 0 },
        shard,
      }),
      guild: (guildId) =>
        guildPayload({ guildId, channels: [...this.channels.values()].filter((c) => this.guildOfChannel(c.id) === guildId), ownerId: this.alice.id, bot: this.bot }),
      activity: () => this.wake(),
    });
    // The REST handlers get the state and the few internals they need, nothing else.
    const fake = this;
    this.rest = new FakeRestApi({
      get token() {
        return fake.token;
      },
      appId: this.appId,
      guildId: this.guildId,
      channelId: this.channelId,
      bot: this.bot,
      get port() {
        return fake.port;
      },
      messages: this.messages,
      interactions: this.interactions,
      commands: this.commands,
      options: this.options,
      dmChannels: this.dmChannels,
      closedDms: this.closedDms,
      visible: (m, target) => this.visible(m, target),
      userById: (id) => this.userById(id),
      knownUser: (id) => this.users.get(id),
      isMember: (id) => this.users.has(id) && !this.departed.has(id),
      channels: this.channels,
      guildOfChannel: (id) => this.guildOfChannel(id),
      isGuild: (id) => this.guildIds.has(id),
      recommendedShards: () => Math.max(1, Math.ceil(this.guildIds.size / this.options.guildsPerRecommendedShard)),
      dmChannelFor: (user) => this.dmChannelFor(user),
      dispatch: (t, d) => this.dispatch(t, d),
      dispatchMessageCreate: (m, omit) => this.dispatchMessageCreate(m, omit),
      deleteMessage: (m) => this.deleteMessage(m),
      channelMessages: (c) => this.channelMessages(c),
      addAttachment: (input) => this.addAttachment(input),
    });
  }

  static async start(options: FakeDiscordOptions = {}): Promise<FakeDiscord> {
    const fake = new FakeDiscord(options);
    await new Promise<void>((resolve) => fake.http.listen(0, '127.0.0.1', resolve));
    fake.port = (fake.http.address() as AddressInfo).port;
    return fake;
  }

  /** The bot token the fake accepts (gateway and REST); resetToken() changes it. */
  get token(): string {
    return this.options.token;
  }

  /**
   * The Developer Portal's "Reset Token": the old token is refused from now on (REST 401, IDENTIFY 4004, RESUME invalid
   * session), and Discord closes the bot's gateway session. Returns the new token.
   */
  resetToken(): string {
    this.options.token = `fake-bot-token-${snowflake()}`;
    this.gateway.endSession(4000);
    return this.options.token;
  }

  /**
   * The Developer Portal's Message Content switch. Switching it off ends the gateway session (`endSession`): the bot's
   * next IDENTIFY with the intent is closed with 4014.
   */
  setMessageContentAllowed(allowed: boolean): void {
    this.options.messageContentAllowed = allowed;
    if (!allowed) this.gateway.endSession(4000);
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  /** What the bot passes as discord.apiBaseUrl / discord.js `rest.api`. */
  get apiBase(): string {
    return `${this.origin}/api`;
  }

  async close(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }

  // ---- test hooks -------------------------------------------------------------------------------------

  injectFault(fault: Fault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 });
  }

  /** Make an interaction's token stop working now (as if 15 minutes had passed). */
  expireToken(token: string): void {
    const interaction = [...this.interactions.values()].find((i) => i.token === token);
    if (interaction) interaction.expired = true;
  }

  /**
   * Discord forgets the bot's sessions and closes them with `code` (4000): the client's RESUME is refused, and it
   * identifies again, which the servers it is in now decide (4011 when a shard holds too many).
   */
  invalidateSessions(code = 4000): void {
    this.gateway.endSession(code);
  }

  /** Close the gateway socket (the client resumes; dispatches sent meanwhile are replayed on RESUME). */
  dropGateway(code = 4000): void {
    this.gateway.drop(code);
  }

  /**
   * Send any dispatch on the gateway (buffered for replay while the socket is down), to the shard of its server
   * (`guild_id`, a GUILD_CREATE's `id`; none: a DM, shard 0).
   */
  dispatch(t: string, d: unknown): void {
    const json = d as Json;
    const guildId = typeof json.guild_id === 'string' ? json.guild_id : t === 'GUILD_CREATE' ? String(json.id) : null;
    this.gateway.dispatch(t, d, guildId);
  }

  /** The shards the bot identified, as [id, count], with whether each socket is open. */
  get shards(): { shard: Shard; connected: boolean }[] {
    return this.gateway.shards;
  }

  /**
   * The bot joins another server, with a "general" text channel (GUILD_CREATE tells the shard that holds it). `onShard`
   * picks an id that Discord's formula puts on that shard.
   */
  addGuild(options: { onShard?: Shard } = {}): { guildId: string; channelId: string } {
    let guildId = snowflake();
    while (options.onShard && shardOf(guildId, options.onShard[1]) !== options.onShard[0]) guildId = snowflake();
    const channelId = snowflake();
    this.guildIds.add(guildId);
    this.channels.set(channelId, { id: channelId, name: 'general', nsfw: false, guildId });
    if (this.gateway.hasSession) this.dispatch('GUILD_CREATE', guildPayload({ guildId, channels: [this.channels.get(channelId)!], ownerId: this.alice.id, bot: this.bot }));
    return { guildId, channelId };
  }

  /** The server a channel (or thread) of the fake is in: its own, else the first server's; null for a DM. */
  guildOfChannel(channelId: string): string | null {
    const channel = this.channels.get(channelId);
    if (!channel) return null;
    return channel.guildId ?? (channel.parentId ? this.guildOfChannel(channel.parentId) : null) ?? this.guildId;
  }

  get connected(): boolean {
    return this.gateway.connected;
  }

  /** Every gateway frame the client sent ({op, d}, and when it arrived), in order. */
  get gatewayFrames(): { op: number; d: unknown; at: number }[] {
    return this.gateway.frames;
  }

  /** Bytes served from the fake CDN; returns the attachment as it appears in payloads. */
  addAttachment(input: {
    bytes: Uint8Array;
    filename: string;
    contentType: string;
    /** Declared size; defaults to the real length (tests lie here to check the bot re-checks). */
    size?: number;
    channelId?: string;
    /** Serve from this origin instead of the fake's own (for disallowed-host tests; still loopback). */
    origin?: string;
  }): FakeAttachment {
    const id = snowflake();
    const path = `/attachments/${input.channelId ?? this.channelId}/${id}/${encodeURIComponent(input.filename)}`;
    this.blobs.set(path, { bytes: input.bytes, contentType: input.contentType });
    const url = `${input.origin ?? this.origin}${path}?ex=0&is=0&hm=fake`;
    return {
      id,
      filename: input.filename,
      size: input.size ?? input.bytes.byteLength,
      url,
      proxy_url: url,
      content_type: input.contentType,
    };
  }

  /** A user posts a message (stored, then dispatched as MESSAGE_CREATE). */
  postUserMessage(input: {
    content: string;
    author?: FakeUser;
    channelId?: string;
    guildId?: string | null;
    attachments?: FakeAttachment[];
    mentionBot?: boolean;
    replyTo?: string;
    /** Leave `referenced_message` out, so the client must fetch it. @defaultValue false */
    omitReferenced?: boolean;
    /** Store without dispatching (posted before the bot connected; not in its cache). @defaultValue false */
    silent?: boolean;
  }): FakeMessage {
    const author = input.author ?? this.alice;
    if (!this.users.has(author.id)) this.users.set(author.id, author);
    const guildId = input.guildId === undefined ? (this.guildOfChannel(input.channelId ?? this.channelId) ?? this.guildId) : input.guildId;
    const message: FakeMessage = {
      id: snowflake(),
      channelId: input.channelId ?? this.channelId,
      guildId,
      author,
      content: input.mentionBot ? `<@${this.appId}> ${input.content}` : input.content,
      attachments: input.attachments ?? [],
      embeds: [],
      components: [],
      flags: 0,
      type: input.replyTo ? 19 : 0,
      mentions: input.mentionBot ? [this.bot] : [],
      referenceId: input.replyTo,
      createdAt: Date.now(),
      editedAt: null,
    };
    this.messages.set(message.id, message);
    if (!input.silent) this.dispatchMessageCreate(message, input.omitReferenced ?? false);
    return message;
  }

  /**
   * A user edits their message: new text, and the attachments that stay (`keep`: Discord's client lets its author
   * remove files, never add them). MESSAGE_UPDATE carries the whole message as edited, its attachments array complete
   * (discord-api-docs: the payload of MESSAGE_CREATE), blanked without the MessageContent intent as MESSAGE_CREATE is.
   */
  editUserMessage(message: FakeMessage, edit: { content?: string; keep?: (a: FakeAttachment) => boolean }): void {
    if (edit.content !== undefined) message.content = edit.content;
    if (edit.keep) message.attachments = message.attachments.filter(edit.keep);
    message.editedAt = Date.now();
    const json = messageJson(this.visible(message, false), this.messages);
    if (message.guildId) json.member = { roles: [], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 };
    this.dispatch('MESSAGE_UPDATE', json);
  }

  /**
   * A message is deleted (its author, a moderator, or the bot through REST): gone from the channel, and MESSAGE_DELETE
   * `{id, channel_id, guild_id?}` on the gateway, as Discord sends it to a bot with GUILD_MESSAGES (DIRECT_MESSAGES in
   * a DM), whether or not the bot has the message cached. An ephemeral message has no gateway events.
   */
  deleteMessage(message: FakeMessage): void {
    this.messages.delete(message.id);
    if (message.flags & EPHEMERAL) return;
    this.dispatch('MESSAGE_DELETE', { id: message.id, channel_id: message.channelId, ...(message.guildId ? { guild_id: message.guildId } : {}) });
  }

  /**
   * A moderator's purge (`POST /channels/{c}/messages/bulk-delete`, 2 to 100 messages of one channel): one
   * MESSAGE_DELETE_BULK `{ids, channel_id, guild_id}`, no MESSAGE_DELETE per message.
   */
  bulkDelete(messages: FakeMessage[]): void {
    const channelId = messages[0]!.channelId;
    if (messages.some((m) => m.channelId !== channelId)) throw new Error('a bulk delete is within one channel');
    for (const m of messages) this.messages.delete(m.id);
    const guildId = this.guildOfChannel(channelId);
    this.dispatch('MESSAGE_DELETE_BULK', { ids: messages.map((m) => m.id), channel_id: channelId, ...(guildId ? { guild_id: guildId } : {}) });
  }

  /** A slash command (type 2, command type 1) or message context menu (command type 3) invocation. */
  slashCommand(input: {
    name: string;
    options?: Json[];
    user?: FakeUser;
    dm?: boolean;
    channelId?: string;
    /** Attachments referenced by type-11 options. */
    attachments?: FakeAttachment[];
    memberPermissions?: string;
  }): FakeInteraction {
    const resolved = input.attachments?.length
      ? { attachments: Object.fromEntries(input.attachments.map((a) => [a.id, a])) }
      : undefined;
    return this.interact(input, 2, { id: snowflake(), name: input.name, type: 1, options: input.options ?? [], resolved });
  }

  /** A message context menu, invoked where its target message is (as in Discord). */
  contextMenu(input: { name: string; target: FakeMessage; user?: FakeUser }): FakeInteraction {
    const target = messageJson(this.visible(input.target, true), this.messages);
    return this.interact({ user: input.user, channelId: input.target.channelId, dm: input.target.guildId === null }, 2, {
      id: snowflake(),
      name: input.name,
      type: 3,
      target_id: input.target.id,
      resolved: { messages: { [input.target.id]: target } },
    });
  }

  /** A button press on a message the bot posted. */
  pressButton(message: FakeMessage, customId: string, user?: FakeUser): FakeInteraction {
    const interaction = this.interact(
      { user, channelId: message.channelId, dm: message.guildId === null },
      3,
      { custom_id: customId, component_type: 2 },
      messageJson(message, this.messages),
    );
    interaction.sourceMessageId = message.id;
    return interaction;
  }

  /** Submit a modal the bot opened (fields: custom_id → value). */
  submitModal(opened: FakeInteraction, fields: Record<string, string>): FakeInteraction {
    const modal = opened.callbacks.find((c) => c.type === 9)?.data;
    if (!modal) throw new Error('that interaction did not open a modal');
    const components = Object.entries(fields).map(([custom_id, value]) => ({
      type: 1,
      components: [{ type: 4, custom_id, value }],
    }));
    return this.interact(
      { user: this.userById(opened.userId), channelId: opened.channelId, dm: opened.guildId === null },
      5,
      { custom_id: modal.custom_id, components },
    );
  }

  /** Messages in a channel, oldest first (including ephemeral ones, which carry flag 64). */
  channelMessages(channelId = this.channelId): FakeMessage[] {
    return [...this.messages.values()].filter((m) => m.channelId === channelId);
  }

  /** The original response message of an interaction, if created. */
  original(interaction: FakeInteraction): FakeMessage | undefined {
    return interaction.originalId ? this.messages.get(interaction.originalId) : undefined;
  }

  /** Resolve when `check` returns a value other than undefined/false; re-checked after every request/frame. */
  async waitFor<T>(check: () => T | undefined | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
    const first = check();
    if (first !== undefined && first !== false) return first;
    return new Promise<T>((resolve, reject) => {
      const wake = (): void => {
        const value = check();
        if (value === undefined || value === false) return;
        cleanup();
        resolve(value);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`fake discord: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const poll = setInterval(wake, 100);
      const cleanup = (): void => {
        clearTimeout(timer);
        clearInterval(poll);
        this.waiters.delete(wake);
      };
      this.waiters.add(wake);
    });
  }

  requestsTo(method: string, path: RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && path.test(r.path));
  }

  private userById(id: string): FakeUser {
    return this.users.get(id) ?? { id, username: `user${id.slice(-4)}` };
  }

  /** A user (a member of the server until `leave`): a username, or its names (display name, server nickname). */
  user(input: string | { username: string; globalName?: string | null; nick?: string }): FakeUser {
    const user: FakeUser = { id: snowflake(), ...(typeof input === 'string' ? { username: input } : input) };
    this.users.set(user.id, user);
    return user;
  }

  /** The user leaves the server: they are no member any more (404 Unknown Member), still a user (GET /users/{id}). */
  leave(user: FakeUser): void {
    this.departed.add(user.id);
  }

  /** Another text channel of the server, named, perhaps age-restricted (its id is returned; CHANNEL_CREATE tells the bot). */
  addChannel(name: string, options: { nsfw?: boolean; botCannot?: FakeChannel['botCannot']; guildId?: string; private?: boolean } = {}): string {
    const channel: FakeChannel = { id: snowflake(), name, nsfw: options.nsfw ?? false, botCannot: options.botCannot, botId: this.bot.id, guildId: options.guildId, private: options.private };
    this.channels.set(channel.id, channel);
    if (this.gateway.hasSession) this.dispatch('CHANNEL_CREATE', channelJson(this.guildOfChannel(channel.id)!, channel)); // else GUILD_CREATE will list it
    return channel.id;
  }

  /**
   * A public thread in a channel (its id is returned). THREAD_CREATE tells the bot, unless `unseen`: a thread the
   * bot's cache lacks (created while it was away), whose parent discord.js learns only from `GET /channels/{id}`.
   */
  addThread(parentId: string, name: string, options: { unseen?: boolean } = {}): string {
    const thread: FakeChannel = { id: snowflake(), name, nsfw: false, parentId };
    this.channels.set(thread.id, thread);
    if (this.gateway.hasSession && !options.unseen) this.dispatch('THREAD_CREATE', { ...channelJson(this.guildOfChannel(thread.id)!, thread), newly_created: true });
    return thread.id;
  }

  /** A moderator (or inactivity) archives a thread, `locked` too: see FakeChannel's `archived` and `locked`. */
  archiveThread(threadId: string, options: { locked?: boolean } = {}): void {
    const thread = this.channels.get(threadId)!;
    thread.archived = true;
    thread.locked = options.locked ?? false;
  }

  /** The user turns off "Allow direct messages from server members": the bot's DMs to them fail (403 50007). */
  closeDirectMessages(user: FakeUser = this.alice): void {
    this.closedDms.add(user.id);
  }

  /** The DM channel between the bot and a user (for postUserMessage in DMs). */
  dmChannel(user: FakeUser = this.alice): string {
    return this.dmChannelFor(user);
  }

  private dmChannelFor(user: FakeUser): string {
    let id = this.dmChannels.get(user.id);
    if (!id) {
      id = snowflake();
      this.dmChannels.set(user.id, id);
    }
    return id;
  }

  private interact(
    input: { user?: FakeUser; dm?: boolean; channelId?: string; memberPermissions?: string },
    type: number,
    data: Json,
    message?: Json,
  ): FakeInteraction {
    const user = input.user ?? this.alice;
    if (!this.users.has(user.id)) this.users.set(user.id, user);
    const dm = input.dm ?? false;
    const channelId = dm ? this.dmChannelFor(user) : (input.channelId ?? this.channelId);
    const interaction: FakeInteraction = {
      id: snowflake(),
      token: `tok-${snowflake()}-${Math.random().toString(36).slice(2)}`,
      createdAt: Date.now(),
      userId: user.id,
      channelId,
      guildId: dm ? null : (this.guildOfChannel(channelId) ?? this.guildId),
      callbacks: [],
      expired: false,
      followupIds: [],
    };
    this.interactions.set(interaction.id, interaction);
    const d = interactionPayload({
      interaction,
      channel: this.channels.get(channelId),
      appId: this.appId,
      user,
      type,
      data,
      message,
      memberPermissions: input.memberPermissions,
    });
    interaction.payload = d;
    this.dispatch('INTERACTION_CREATE', d);
    return interaction;
  }

  private dispatchMessageCreate(message: FakeMessage, omitReferenced: boolean): void {
    const json = messageJson(this.visible(message, false), this.messages, omitReferenced ? undefined : (m) => this.visible(m, false));
    if (message.guildId) json.member = { roles: [], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 };
    // As Discord does (discord-api-docs #8311): discord.js needs it to build a DM channel it has not cached (0 a
    // server text channel, 1 a DM, 11 a public thread); without it a new user's first DM is dropped before any
    // listener sees it.
    json.channel_type = message.guildId ? (this.channels.get(message.channelId)?.parentId !== undefined ? 11 : 0) : 1;
    this.dispatch('MESSAGE_CREATE', json);
  }

  /** What the connected client may see of a message, given its intents (MessageContent blanking). */
  private visible(message: FakeMessage, contextMenuTarget: boolean): FakeMessage {
    if (this.gateway.intents & MESSAGE_CONTENT || contextMenuTarget) return message;
    return blankWithoutContentIntent(message, this.appId);
  }

  // ---- REST -------------------------------------------------------------------------------------------

  private async onHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const record = await recordRequest(req, this.origin);
    const path = record.path;
    this.requests.push(record);
    const reply = (status: number, body?: unknown, headers: Record<string, string> = {}): void => {
      record.status = status;
      const payload = body === undefined ? undefined : JSON.stringify(body);
      res.writeHead(status, {
        ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      });
      res.end(payload);
      this.wake();
    };
    try {
      const fault = this.takeFault(record);
      if (fault?.lostReply) return this.rest.route(record, path.slice('/api/v10'.length), this.loseReply(record, req, fault.lostReply));
      if (fault) return replyFault(fault, reply);
      if (path.startsWith('/attachments/')) return this.serveCdn(req, path, res, record);
      if (!path.startsWith('/api/v10/')) return reply(404, { code: 0, message: '404: Not Found' });
      this.rest.route(record, path.slice('/api/v10'.length), reply);
    } catch (e) {
      reply(500, { code: 0, message: `fake discord error: ${(e as Error).message}` });
    }
  }

  /** A reply that never comes: the request was carried out, then its connection is dropped (`how`). */
  private loseReply(record: RecordedRequest, req: IncomingMessage, how: 'closed' | 'reset'): Reply {
    return (status) => {
      record.status = status;
      record.lost = true;
      if (how === 'reset') req.socket.resetAndDestroy();
      else req.socket.destroy();
      this.wake();
    };
  }

  private takeFault(record: RecordedRequest): Fault | undefined {
    const index = this.faults.findIndex((f) => (!f.method || f.method === record.method) && f.path.test(record.path) && (!f.when || f.when(record)),
    );
    if (index < 0) return undefined;
    const fault = this.faults[index]!;
    if (--fault.left <= 0) this.faults.splice(index, 1);
    return fault;
  }

  private serveCdn(req: IncomingMessage, path: string, res: ServerResponse, record: RecordedRequest): void {
    if (req.headers.authorization) this.cdnAuthLeaks.push(path);
    const blob = this.blobs.get(path);
    record.status = blob ? 200 : 404;
    if (!blob) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    } else {
      res.writeHead(200, { 'content-type': blob.contentType, 'content-length': String(blob.bytes.byteLength) });
      res.end(Buffer.from(blob.bytes));
    }
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

