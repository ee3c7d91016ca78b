// Stored messages of the fake Discord and their JSON shape as the API returns them
// (../shared/docs/platform-fakes.md A2 item 8 and A3: the fields discord.js dereferences).

export interface FakeUser {
  id: string;
  username: string;
  bot?: boolean;
  /** The display name (`global_name`); the username when not given, null for none. */
  globalName?: string | null;
  /** The server nickname (a guild member's `nick`). */
  nick?: string;
}

export interface FakeAttachment {
  id: string;
  filename: string;
  size: number;
  url: string;
  proxy_url: string;
  content_type: string;
  description?: string;
}

export interface FakeMessage {
  id: string;
  channelId: string;
  guildId: string | null;
  author: FakeUser;
  content: string;
  attachments: FakeAttachment[];
  embeds: Record<string, unknown>[];
  components: Record<string, unknown>[];
  flags: number;
  type: number;
  mentions: FakeUser[];
  /** The message this one replies to. */
  referenceId?: string;
  nonce?: string;
  /** Set when the message is an interaction's original response or follow-up. */
  interactionId?: string;
  createdAt: number;
  editedAt: number | null;
}

export function userJson(user: FakeUser): Record<string, unknown> {
  return { id: user.id, username: user.username, discriminator: '0', global_name: user.globalName === undefined ? user.username : user.globalName, avatar: null, bot: user.bot ?? false };
}

/**
 * The API shape of a stored message. `referenced` decides whether (and how) `referenced_message` is embedded;
 * real Discord embeds it for replies, and omitting it makes discord.js fetch the reference over REST.
 */
export function messageJson(
  message: FakeMessage,
  store: Map<string, FakeMessage>,
  referenced?: (m: FakeMessage) => FakeMessage,
): Record<string, unknown> {
  const json: Record<string, unknown> = {
    id: message.id,
    channel_id: message.channelId,
    ...(message.guildId ? { guild_id: message.guildId } : {}),
    author: userJson(message.author),
    content: message.content,
    attachments: message.attachments,
    embeds: message.embeds,
    components: message.components,
    timestamp: new Date(message.createdAt).toISOString(),
    edited_timestamp: message.editedAt === null ? null : new Date(message.editedAt).toISOString(),
    tts: false,
    pinned: false,
    mention_everyone: false,
    mentions: message.mentions.map(userJson),
    mention_roles: [],
    flags: message.flags,
    type: message.type,
  };
  if (message.interactionId) {
    json.webhook_id = message.author.id;
    json.application_id = message.author.id;
  }
  if (message.referenceId) {
    json.message_reference = {
      type: 0,
      message_id: message.referenceId,
      channel_id: message.channelId,
      ...(message.guildId ? { guild_id: message.guildId } : {}),
    };
    const parent = store.get(message.referenceId);
    if (referenced && parent) json.referenced_message = messageJson(referenced(parent), store);
  }
  return json;
}

/**
 * Without the MessageContent intent, content/embeds/attachments/components arrive empty except in the app's own
 * messages, DMs, and messages that mention the app (platform-fakes.md A2 "Intents").
 */
export function blankWithoutContentIntent(message: FakeMessage, appId: string): FakeMessage {
  const exempt = message.author.id === appId || message.guildId === null || message.mentions.some((u) => u.id === appId);
  if (exempt) return message;
  return { ...message, content: '', embeds: [], attachments: [], components: [] };
}
