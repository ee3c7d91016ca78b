// The fake Discord's REST API under /api/v10 (platform-fakes.md A3 and checklist items 2, 5–9): gateway info,
// command registration, interaction callbacks (3 s window, single use), the interaction webhook (@original,
// follow-ups, token expiry → 401 50027), channel messages (replies, nonce + enforce_nonce, fetches) and DMs.
import { snowflake } from './snowflake.ts';
import type { RecordedFile, RecordedRequest, Reply } from './http.ts';
import { messageJson, userJson, type FakeAttachment, type FakeMessage, type FakeUser } from './messages.ts';
import { channelJson, type FakeChannel } from './payloads.ts';

type Json = Record<string, unknown>;

const EPHEMERAL = 1 << 6;
/** Set on a deferred original ("… is thinking") until its first edit. */
const LOADING = 1 << 7;

/** Discord's answer to an edit or delete in an archived thread, and to a post in a locked one (JSON code 50083). */
const ARCHIVED = { code: 50083, message: 'Thread is archived' };

export interface FakeInteraction {
  id: string;
  token: string;
  createdAt: number;
  userId: string;
  channelId: string;
  guildId: string | null;
  /** Callback types received, in order (5 = defer, 4 = reply, 9 = modal, 6/7 = component update). */
  callbacks: { type: number; data: Record<string, unknown> | undefined }[];
  /** The message that is this interaction's original response, once created. */
  originalId?: string;
  /** The message a component interaction was attached to. */
  sourceMessageId?: string;
  expired: boolean;
  followupIds: string[];
  /** The INTERACTION_CREATE payload as dispatched (tests may dispatch it again, as a faulty replay would). */
  payload?: Json;
}

/** The fake's state and gateway side, as the REST handlers see them. */
export interface RestWorld {
  readonly token: string;
  readonly appId: string;
  readonly guildId: string;
  readonly channelId: string;
  readonly bot: FakeUser;
  readonly port: number;
  readonly messages: Map<string, FakeMessage>;
  readonly interactions: Map<string, FakeInteraction>;
  readonly commands: { global: Json[]; guild: Map<string, Json[]> };
  readonly options: { callbackWindowMs: number; tokenTtlMs: number; maxConcurrency: number };
  readonly dmChannels: Map<string, string>;
  /** Users whose privacy settings refuse direct messages from this bot (Discord answers 403 50007). */
  readonly closedDms: Set<string>;
  visible(message: FakeMessage, contextMenuTarget: boolean): FakeMessage;
  userById(id: string): FakeUser;
  /** A user the fake has seen (alice, the bot, anyone who acted), or undefined. */
  knownUser(id: string): FakeUser | undefined;
  /** Whether a known user is a member of the guild (not left). */
  isMember(userId: string): boolean;
  /** The server's text channels by id. */
  readonly channels: Map<string, FakeChannel>;
  /** The server a channel is in; null for a DM or an unknown channel. */
  guildOfChannel(channelId: string): string | null;
  /** Whether the bot is in this server. */
  isGuild(guildId: string): boolean;
  /** What `GET /gateway/bot` recommends (Discord: a shard per about 1,000 servers). */
  recommendedShards(): number;
  dmChannelFor(user: FakeUser): string;
  dispatch(t: string, d: unknown): void;
  dispatchMessageCreate(message: FakeMessage, omitReferenced: boolean): void;
  /** Removes the message and tells the gateway (MESSAGE_DELETE), as any deletion does on Discord. */
  deleteMessage(message: FakeMessage): void;
  channelMessages(channelId: string): FakeMessage[];
  addAttachment(input: { bytes: Uint8Array; filename: string; contentType: string; channelId?: string }): FakeAttachment;
}

/**
 * Discord's limits on a message body (discord.com/developers/docs/resources/message#create-message, embed and
 * component limits): a body past one is refused whole with 400 / 50035 "Invalid Form Body", as Discord does, so a
 * message our code would have lost is a failing test here.
 */
/** What a message's attachments may weigh together in a server without boosts. */
export const UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024;

export function messageFormErrors(body: Json | undefined): Json | undefined {
  if (!body) return undefined;
  const errors: Json = {};
  const tooLong = (path: string, value: unknown, max: number) => {
    if (typeof value === 'string' && value.length > max) errors[path] = { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: `Must be ${max} or fewer in length.` }] };
  };
  tooLong('content', body.content, 2000);
  const embeds = (body.embeds ?? []) as Json[];
  if (embeds.length > 10) errors.embeds = { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 10 or fewer in length.' }] };
  embeds.forEach((e, i) => {
    tooLong(`embeds.${i}.title`, e.title, 256);
    tooLong(`embeds.${i}.description`, e.description, 4096);
    const fields = (e.fields ?? []) as Json[];
    if (fields.length > 25) errors[`embeds.${i}.fields`] = { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 25 or fewer in length.' }] };
  });
  const rows = (body.components ?? []) as Json[];
  if (rows.length > 5) errors.components = { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 5 or fewer in length.' }] };
  rows.forEach((r, i) => {
    const items = (r.components ?? []) as Json[];
    if (items.length > 5) errors[`components.${i}.components`] = { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 5 or fewer in length.' }] };
    items.forEach((c, j) => {
      tooLong(`components.${i}.components.${j}.custom_id`, c.custom_id, 100);
      tooLong(`components.${i}.components.${j}.label`, c.label, 80);
    });
  });
  ((body.attachments ?? []) as Json[]).forEach((a, i) => tooLong(`attachments.${i}.description`, a.description, 1024));
  return Object.keys(errors).length ? errors : undefined;
}

export class FakeRestApi {
  constructor(private readonly w: RestWorld) {}

  route(
    record: RecordedRequest,
    route: string,
    reply: Reply,
  ): void {
    const botAuth = record.authorization === `Bot ${this.w.token}`;
    const m = (re: RegExp): RegExpMatchArray | null => route.match(re);
    const method = record.method;
    let match: RegExpMatchArray | null;

    if (route === '/gateway/bot' && method === 'GET') {
      if (!botAuth) return reply(401, { code: 0, message: '401: Unauthorized' });
      return reply(200, {
        url: `ws://127.0.0.1:${this.w.port}/gateway`,
        shards: this.w.recommendedShards(),
        session_start_limit: { total: 1000, remaining: 1000, reset_after: 0, max_concurrency: this.w.options.maxConcurrency },
      });
    }

    if (route === '/applications/@me' && method === 'GET') {
      if (!botAuth) return reply(401, { code: 0, message: '401: Unauthorized' });
      return reply(200, { id: this.w.appId, name: this.w.bot.username, description: '', bot_public: true, bot_require_code_grant: false, flags: 0 });
    }

    if ((match = m(/^\/applications\/(\d+)\/(?:guilds\/(\d+)\/)?commands$/))) {
      if (!botAuth) return reply(401, { code: 0, message: '401: Unauthorized' });
      const guildId = match[2];
      if (method === 'PUT') {
        const echoed = (record.body as Json[]).map((c) => ({
          id: snowflake(),
          application_id: this.w.appId,
          version: snowflake(),
          type: 1,
          default_member_permissions: null,
          ...c,
          ...(guildId ? { guild_id: guildId } : {}),
        }));
        if (guildId) this.w.commands.guild.set(guildId, echoed);
        else this.w.commands.global = echoed;
        return reply(200, echoed);
      }
      return reply(200, guildId ? (this.w.commands.guild.get(guildId) ?? []) : this.w.commands.global);
    }

    const messageRoute = /^\/(interactions\/\d+\/[^/]+\/callback|webhooks\/\d+\/[^/]+(\/messages\/[^/]+)?|channels\/\d+\/messages(\/\d+)?)$/.test(route);
    if (messageRoute && (method === 'POST' || method === 'PATCH')) {
      // Discord's upload limit without boosts (its interactions carry it as attachment_size_limit): refused whole
      if (record.files.reduce((n, f) => n + f.bytes.byteLength, 0) > UPLOAD_LIMIT_BYTES) return reply(413, { code: 40005, message: 'Request entity too large' });
      const body = record.body as Json | undefined;
      const message = route.startsWith('/interactions/') ? (body?.data as Json | undefined) : body;
      const errors = messageFormErrors(message);
      if (errors) return reply(400, { code: 50035, message: 'Invalid Form Body', errors });
    }

    if ((match = m(/^\/interactions\/(\d+)\/([^/]+)\/callback$/)) && method === 'POST') {
      return this.onCallback(record, match[1]!, match[2]!, reply);
    }

    if ((match = m(/^\/webhooks\/(\d+)\/([^/]+)(?:\/messages\/([^/]+))?$/))) {
      return this.onWebhook(record, match[2]!, match[3], reply);
    }

    if ((match = m(/^\/channels\/(\d+)\/typing$/)) && method === 'POST') {
      return botAuth ? reply(204) : reply(401, { code: 0, message: '401: Unauthorized' });
    }

    if ((match = m(/^\/channels\/(\d+)\/messages(?:\/(\d+))?$/))) {
      if (!botAuth) return reply(401, { code: 0, message: '401: Unauthorized' });
      const channelId = match[1]!;
      const messageId = match[2];
      if (method === 'POST' && !messageId) return this.onChannelPost(record, channelId, reply);
      if (method === 'GET' && messageId) {
        const message = this.w.messages.get(messageId);
        if (!message || message.channelId !== channelId) return reply(404, { code: 10008, message: 'Unknown Message' });
        return reply(200, messageJson(this.w.visible(message, false), this.w.messages));
      }
      if (method === 'GET') {
        const limit = Math.min(Number(record.query.get('limit') ?? 50), 100);
        const list = this.w.channelMessages(channelId)
          .filter((x) => !(x.flags & EPHEMERAL))
          .reverse()
          .slice(0, limit);
        return reply(200, list.map((x) => messageJson(this.w.visible(x, false), this.w.messages)));
      }
      if ((method === 'DELETE' || method === 'PATCH') && messageId && this.w.channels.get(channelId)?.archived) return reply(400, ARCHIVED);
      if (method === 'DELETE' && messageId) {
        const message = this.w.messages.get(messageId);
        if (!message || message.channelId !== channelId) return reply(404, { code: 10008, message: 'Unknown Message' });
        // Deleting another user's message needs Manage Messages, which the bot is not given here.
        if (message.author.id !== this.w.appId) return reply(403, { code: 50013, message: 'Missing Permissions' });
        this.w.deleteMessage(message);
        return reply(204);
      }
      if (method === 'PATCH' && messageId) {
        const message = this.w.messages.get(messageId);
        if (!message) return reply(404, { code: 10008, message: 'Unknown Message' });
        if (message.author.id !== this.w.appId) return reply(403, { code: 50005, message: 'Cannot edit a message authored by another user' });
        this.applyEdit(message, record);
        return reply(200, messageJson(message, this.w.messages));
      }
    }

    if (route === '/users/@me/channels' && method === 'POST') {
      const recipient = String((record.body as Json).recipient_id);
      const id = this.w.dmChannelFor(this.w.userById(recipient));
      return reply(200, { id, type: 1, recipients: [userJson(this.w.userById(recipient))] });
    }

    if ((match = m(/^\/guilds\/(\d+)\/members\/(\d+)$/)) && method === 'GET') {
      if (!botAuth) return reply(401, { code: 0, message: '401: Unauthorized' });
      const user = this.w.knownUser(match[2]!);
      if (!this.w.isGuild(match[1]!) || !user || !this.w.isMember(user.id)) return reply(404, { code: 10007, message: 'Unknown Member' });
      return reply(200, { user: userJson(user), nick: user.nick ?? null, roles: [], joined_at: new Date(0).toISOString(), deaf: false, mute: false, flags: 0 });
    }

    if ((match = m(/^\/users\/(\d+)$/)) && method === 'GET') {
      if (!botAuth) return reply(401, { code: 0, message: '401: Unauthorized' });
      const user = this.w.knownUser(match[1]!);
      return user ? reply(200, userJson(user)) : reply(404, { code: 10013, message: 'Unknown User' });
    }

    if ((match = m(/^\/channels\/(\d+)$/)) && method === 'GET') {
      const id = match[1]!;
      const channel = this.w.channels.get(id);
      if (channel) return reply(200, channelJson(this.w.guildOfChannel(id)!, channel));
      if ([...this.w.dmChannels.values()].includes(id)) return reply(200, { id, type: 1, recipients: [] });
      return reply(404, { code: 10003, message: 'Unknown Channel' });
    }

    reply(404, { code: 0, message: `404: Not Found (${method} ${route} is not in the fake)` });
  }

  private onCallback(
    record: RecordedRequest,
    id: string,
    token: string,
    reply: Reply,
  ): void {
    const interaction = this.w.interactions.get(id);
    if (!interaction || interaction.token !== token) return reply(404, { code: 10062, message: 'Unknown interaction' });
    if (Date.now() - interaction.createdAt > this.w.options.callbackWindowMs) {
      return reply(404, { code: 10062, message: 'Unknown interaction' });
    }
    if (interaction.callbacks.length > 0) {
      return reply(400, { code: 40060, message: 'Interaction has already been acknowledged.' });
    }
    const body = record.body as { type: number; data?: Json };
    interaction.callbacks.push({ type: body.type, data: body.data });
    if (body.type === 4 || body.type === 5) {
      const data = body.data ?? {};
      const message = this.createMessage({
        channelId: interaction.channelId,
        guildId: interaction.guildId,
        data: body.type === 5 ? { flags: (Number(data.flags ?? 0) & EPHEMERAL) | LOADING } : data,
        files: record.files,
        interaction,
      });
      interaction.originalId = message.id;
    } else if (body.type === 7 && interaction.sourceMessageId) {
      const source = this.w.messages.get(interaction.sourceMessageId);
      if (source) this.applyEdit(source, { ...record, body: body.data ?? {} });
    }
    reply(204);
  }

  private onWebhook(
    record: RecordedRequest,
    token: string,
    messageId: string | undefined,
    reply: Reply,
  ): void {
    const interaction = [...this.w.interactions.values()].find((i) => i.token === token);
    if (!interaction) return reply(404, { code: 10015, message: 'Unknown Webhook' });
    if (interaction.expired || Date.now() - interaction.createdAt > this.w.options.tokenTtlMs) {
      return reply(401, { code: 50027, message: 'Invalid Webhook Token' });
    }
    const method = record.method;
    if (!messageId) {
      if (method !== 'POST') return reply(405, { code: 0, message: '405: Method Not Allowed' });
      const message = this.createMessage({
        channelId: interaction.channelId,
        guildId: interaction.guildId,
        data: record.body as Json,
        files: record.files,
        interaction,
      });
      interaction.followupIds.push(message.id);
      return reply(200, messageJson(message, this.w.messages));
    }
    const id = messageId === '@original' ? interaction.originalId : messageId;
    const message = id ? this.w.messages.get(id) : undefined;
    if (!message) return reply(404, { code: 10008, message: 'Unknown Message' });
    if (method === 'GET') return reply(200, messageJson(message, this.w.messages));
    if (this.w.channels.get(message.channelId)?.archived) return reply(400, ARCHIVED); // an interaction's messages too (discord-api-docs#5517)
    if (method === 'DELETE') {
      this.w.deleteMessage(message);
      return reply(204);
    }
    if (method === 'PATCH') {
      this.applyEdit(message, record);
      return reply(200, messageJson(message, this.w.messages));
    }
    reply(405, { code: 0, message: '405: Method Not Allowed' });
  }

  private onChannelPost(record: RecordedRequest, channelId: string, reply: Reply): void {
    const body = (record.body ?? {}) as Json;
    // Like Discord: opening the DM channel works, posting in it fails when the user does not accept DMs.
    const recipient = [...this.w.dmChannels].find(([, dm]) => dm === channelId)?.[0];
    if (recipient !== undefined && this.w.closedDms.has(recipient)) return reply(403, { code: 50007, message: 'Cannot send messages to this user' });
    const denied = this.w.channels.get(channelId)?.botCannot ?? [];
    if (denied.includes('send')) return reply(403, { code: 50013, message: 'Missing Permissions' });
    const thread = this.w.channels.get(channelId);
    if (thread?.locked) return thread.archived ? reply(400, ARCHIVED) : reply(403, { code: 160005, message: 'Thread is locked' });
    if (thread?.archived) thread.archived = false; // a new message unarchives a thread that is not locked
    if (denied.includes('readHistory') && (body.message_reference as Json | undefined)?.message_id) {
      return reply(403, { code: 160002, message: 'Cannot reply without permission to read message history' });
    }
    if (body.enforce_nonce && body.nonce !== undefined) {
      const existing = [...this.w.messages.values()].find(
        (x) => x.author.id === this.w.appId && x.nonce === String(body.nonce) && Date.now() - x.createdAt < 5 * 60_000,
      );
      if (existing) return reply(200, { ...messageJson(existing, this.w.messages), nonce: existing.nonce });
    }
    const reference = body.message_reference as { message_id?: string; fail_if_not_exists?: boolean } | undefined;
    if (reference?.message_id && !this.w.messages.has(reference.message_id) && reference.fail_if_not_exists !== false) {
      return reply(400, {
        code: 50035,
        message: 'Invalid Form Body',
        errors: { message_reference: { _errors: [{ code: 'REPLIES_UNKNOWN_MESSAGE', message: 'Unknown message' }] } },
      });
    }
    const guildId = this.w.guildOfChannel(channelId);
    const message = this.createMessage({ channelId, guildId, data: body, files: record.files });
    // Like Discord: the nonce comes back in the create response (and MESSAGE_CREATE), never in later fetches.
    reply(200, { ...messageJson(message, this.w.messages), ...(message.nonce === undefined ? {} : { nonce: message.nonce }) });
  }

  private createMessage(input: {
    channelId: string;
    guildId: string | null;
    data: Json;
    files: RecordedFile[];
    interaction?: FakeInteraction;
  }): FakeMessage {
    const reference = input.data.message_reference as { message_id?: string } | undefined;
    const referenceId = reference?.message_id && this.w.messages.has(reference.message_id) ? reference.message_id : undefined;
    const message: FakeMessage = {
      id: snowflake(),
      channelId: input.channelId,
      guildId: input.guildId,
      author: this.w.bot,
      content: typeof input.data.content === 'string' ? input.data.content : '',
      attachments: [],
      embeds: (input.data.embeds as Json[] | undefined) ?? [],
      components: (input.data.components as Json[] | undefined) ?? [],
      flags: Number(input.data.flags ?? 0),
      type: input.interaction ? 20 : referenceId ? 19 : 0,
      mentions: [],
      referenceId,
      nonce: input.data.nonce === undefined ? undefined : String(input.data.nonce),
      interactionId: input.interaction?.id,
      createdAt: Date.now(),
      editedAt: null,
    };
    message.attachments = this.storeFiles(message, input.data, input.files);
    this.w.messages.set(message.id, message);
    if (!(message.flags & EPHEMERAL)) this.w.dispatchMessageCreate(message, false);
    return message;
  }

  /** PATCH semantics: given keys replace; `attachments` lists what survives (old by id, new by file index). */
  private applyEdit(message: FakeMessage, record: RecordedRequest): void {
    const data = (record.body ?? {}) as Json;
    if ('content' in data) message.content = typeof data.content === 'string' ? data.content : '';
    if ('embeds' in data) message.embeds = (data.embeds as Json[] | null) ?? [];
    if ('components' in data) message.components = (data.components as Json[] | null) ?? [];
    if ('flags' in data) message.flags = Number(data.flags ?? 0) | (message.flags & EPHEMERAL);
    else message.flags &= ~LOADING; // an edit ends the "thinking…" state
    if ('attachments' in data || record.files.length > 0) message.attachments = this.storeFiles(message, data, record.files);
    message.editedAt = Date.now();
    if (!(message.flags & EPHEMERAL)) this.w.dispatch('MESSAGE_UPDATE', messageJson(message, this.w.messages));
  }

  private storeFiles(message: FakeMessage, data: Json, files: RecordedFile[]): FakeAttachment[] {
    const listed = (data.attachments as { id: string | number; description?: string }[] | undefined) ?? undefined;
    const byField = new Map(files.map((f) => [f.field.match(/^files\[(\d+)\]$/)?.[1] ?? f.field, f]));
    const out: FakeAttachment[] = [];
    const entries: { id: string | number; description?: string }[] = listed ?? files.map((_, i) => ({ id: String(i) }));
    for (const entry of entries) {
      const file = byField.get(String(entry.id));
      if (file) {
        const attachment = this.w.addAttachment({
          bytes: file.bytes,
          filename: file.filename,
          contentType: file.contentType,
          channelId: message.channelId,
        });
        if (entry.description) attachment.description = entry.description;
        out.push(attachment);
        continue;
      }
      const old = message.attachments.find((a) => a.id === String(entry.id));
      if (old) out.push(old);
    }
    return out;
  }
}
