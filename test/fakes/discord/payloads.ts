// Gateway payloads the fake dispatches, with the fields discord.js dereferences unconditionally
// (platform-fakes.md A2 items 5 and 7: entitlements must be an array, authorizing_integration_owners an object,
// user or member.user present, channel.id the source of interaction.channelId).
import { userJson, type FakeUser } from './messages.ts';

type Json = Record<string, unknown>;

/** View Channel | Send Messages: what a plain member has. */
const MEMBER_PERMISSIONS = String((1n << 10n) | (1n << 11n));
/** View Channel | Send Messages | Attach Files | Read Message History | Use Application Commands. */
const EVERYONE_PERMISSIONS = String((1n << 10n) | (1n << 11n) | (1n << 15n) | (1n << 16n) | (1n << 31n));

/** A server text channel, or a public thread in one, as Discord sends it (GUILD_CREATE, CHANNEL_CREATE, THREAD_CREATE, `GET /channels/{id}`). */
export interface FakeChannel {
  id: string;
  name: string;
  /** Marked age-restricted in the channel's settings (a thread has no flag of its own: its parent's applies). */
  nsfw: boolean;
  /** A thread's channel. */
  parentId?: string;
  /**
   * Permissions the server's admins denied the bot here: `send` (Send Messages: a post is 403, 50013), `readHistory`
   * (Read Message History: a reply is 403, 160002). Interaction responses need neither, as on Discord.
   */
  botCannot?: readonly ('send' | 'readHistory')[];
  /** The bot's user id, for the overwrite that denies `botCannot`. */
  botId?: string;
  /** The server it is in, when not the fake's first one (`addGuild`). */
  guildId?: string;
  /** Hidden from @everyone (its overwrite denies View Channel): only some members see it. */
  private?: boolean;
  /**
   * A thread archived (by inactivity or a moderator): its messages cannot be edited or deleted (400 50083); a new
   * post unarchives it, as on Discord, unless it is also `locked`, which only Manage Threads (not the bot's) may undo.
   */
  archived?: boolean;
  /** A thread locked by a moderator: the bot may not post in it (403 160005; archived too: 400 50083). */
  locked?: boolean;
}

const VIEW_CHANNEL = 1n << 10n;
const SEND_MESSAGES = 1n << 11n;
const READ_MESSAGE_HISTORY = 1n << 16n;

/**
 * The channel's overwrites: for the bot's member (type 1) denying what `botCannot` lists, as an admin's would; for
 * @everyone (the role whose id is the server's) denying View Channel in a private channel.
 */
function overwritesOf(guildId: string, channel: FakeChannel): Json[] {
  const out: Json[] = channel.private ? [{ id: guildId, type: 0, allow: '0', deny: String(VIEW_CHANNEL) }] : [];
  const denied = channel.botCannot ?? [];
  if (denied.length === 0 || !channel.botId) return out;
  const deny = (denied.includes('send') ? SEND_MESSAGES : 0n) | (denied.includes('readHistory') ? READ_MESSAGE_HISTORY : 0n);
  return [...out, { id: channel.botId, type: 1, allow: '0', deny: String(deny) }];
}

export function channelJson(guildId: string, channel: FakeChannel): Json {
  if (channel.parentId === undefined) {
    return { id: channel.id, type: 0, guild_id: guildId, name: channel.name, position: 0, permission_overwrites: overwritesOf(guildId, channel), parent_id: null, nsfw: channel.nsfw };
  }
  return {
    id: channel.id, type: 11, guild_id: guildId, name: channel.name, parent_id: channel.parentId, owner_id: '0', flags: 0,
    message_count: 0, member_count: 1, rate_limit_per_user: 0, last_message_id: null,
    thread_metadata: { archived: false, auto_archive_duration: 1440, archive_timestamp: new Date().toISOString(), locked: false },
  };
}

/** GUILD_CREATE: the server's text channels, the @everyone role and the bot's own member. */
export function guildPayload(input: { guildId: string; channels: FakeChannel[]; ownerId: string; bot: FakeUser }): Json {
  const now = new Date().toISOString();
  return {
    id: input.guildId,
    name: 'Fake Guild',
    icon: null,
    owner_id: input.ownerId,
    features: [],
    unavailable: false,
    member_count: 2,
    large: false,
    joined_at: now,
    roles: [
      {
        id: input.guildId,
        name: '@everyone',
        permissions: EVERYONE_PERMISSIONS,
        position: 0,
        color: 0,
        hoist: false,
        managed: false,
        mentionable: false,
        flags: 0,
      },
    ],
    channels: input.channels.filter((c) => c.parentId === undefined).map((c) => channelJson(input.guildId, c)),
    members: [{ user: userJson(input.bot), roles: [], joined_at: now, deaf: false, mute: false, flags: 0 }],
    threads: input.channels.filter((c) => c.parentId !== undefined).map((c) => channelJson(input.guildId, c)),
    emojis: [],
    stickers: [],
  };
}

/** INTERACTION_CREATE `d` for a guild channel (member) or a DM with the bot (user, context 1). */
export function interactionPayload(input: {
  interaction: { id: string; token: string; channelId: string; guildId: string | null };
  /** The server channel it was invoked in (absent in a DM). */
  channel?: FakeChannel;
  appId: string;
  user: FakeUser;
  type: number;
  data: Json;
  message?: Json;
  memberPermissions?: string;
}): Json {
  const { interaction, user } = input;
  const dm = interaction.guildId === null;
  const channelId = interaction.channelId;
  const d: Json = {
    id: interaction.id,
    application_id: input.appId,
    type: input.type,
    token: interaction.token,
    version: 1,
    channel_id: channelId,
    channel: dm ? { id: channelId, type: 1 } : channelJson(interaction.guildId!, input.channel ?? { id: channelId, name: 'general', nsfw: false }),
    app_permissions: String((1n << 11n) | (1n << 15n)),
    locale: 'en-US',
    entitlements: [],
    authorizing_integration_owners: dm ? { '1': user.id } : { '0': interaction.guildId },
    context: dm ? 1 : 0,
    attachment_size_limit: 10 * 1024 * 1024,
    data: input.data,
  };
  if (dm) d.user = userJson(user);
  else {
    d.guild_id = interaction.guildId;
    d.guild_locale = 'en-US';
    d.member = {
      user: userJson(user),
      roles: [],
      permissions: input.memberPermissions ?? MEMBER_PERMISSIONS,
      joined_at: new Date().toISOString(),
      deaf: false,
      mute: false,
      flags: 0,
    };
  }
  if (input.message) d.message = input.message;
  return d;
}
