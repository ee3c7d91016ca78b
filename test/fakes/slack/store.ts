// The fake Slack workspace's state: channels of messages (with threads), uploaded/seeded files and users.
// Shapes follow the Web API answers a bot sees (/work/shared/docs/platform-fakes.md Part B3).

export interface FakeFile {
  id: string;
  name: string;
  title: string;
  mimetype: string;
  filetype: string;
  size: number;
  bytes: Uint8Array;
  altText?: string;
  url_private: string;
  url_private_download: string;
  /** How the download route answers: the bytes, or a login page (what Slack serves a token without files:read). */
  serve: 'bytes' | 'html-login';
  /** Content-Type header to send with the bytes; defaults to `mimetype`. */
  servedContentType?: string;
  /** Upload bookkeeping: the length promised in files.getUploadURLExternal. */
  declaredLength?: number;
  uploaded: boolean;
}

export interface FakeMessage {
  type: 'message';
  /** 'tombstone': a deleted thread parent whose replies remain. */
  subtype?: 'tombstone';
  ts: string;
  channel: string;
  text: string;
  user?: string;
  bot_id?: string;
  thread_ts?: string;
  blocks?: unknown[];
  files?: FakeFile[];
  metadata?: { event_type: string; event_payload: Record<string, unknown> };
  edited?: { ts: string };
}

export interface FakeUser {
  id: string;
  name: string;
  /** Admin or owner "of the current workspace", as users.info says (api.slack.com/types/user). */
  is_admin: boolean;
  is_owner: boolean;
  is_bot: boolean;
  real_name?: string;
  profile?: { display_name?: string; real_name?: string };
  /** The user's own workspace: a Slack Connect member of another organisation has theirs. @defaultValue the fake's */
  team_id?: string;
  /** An Enterprise Grid user's org and roles there (api.slack.com/types/user: enterprise_user). */
  enterprise_user?: FakeEnterpriseUser;
}

/** users.info's `enterprise_user`: the org, and whether the user is an Org Admin or Owner of it. */
export interface FakeEnterpriseUser {
  id: string;
  enterprise_id: string;
  enterprise_name: string;
  is_admin: boolean;
  is_owner: boolean;
  is_primary_owner: boolean;
  /** The org's workspaces the user is in. */
  teams: string[];
}

export class SlackStore {
  readonly messages = new Map<string, FakeMessage[]>();
  readonly files = new Map<string, FakeFile>();
  readonly users = new Map<string, FakeUser>();
  /** Channels with a name (`conversations.info`); a channel id not here is not found, a `D…` id is a DM. */
  readonly channelNames = new Map<string, string>();
  /** Channels of `channelNames` that are private (`is_private` in conversations.info). */
  readonly privateChannels = new Set<string>();
  /**
   * Slack Connect channels (shared with another organisation), and the workspace that created each: ours, or a partner's
   * (FakeSlack.shareChannel). Events in them say so (payloads.ts eventCallback).
   */
  readonly sharedChannels = new Map<string, string>();
  private tsCounter = 0;
  private fileCounter = 0;
  private readonly baseSeconds = 1_700_000_000;

  nextTs(): string {
    this.tsCounter += 1;
    return `${this.baseSeconds + this.tsCounter}.${String(this.tsCounter).padStart(6, '0')}`;
  }

  nextFileId(): string {
    this.fileCounter += 1;
    return `F${String(this.fileCounter).padStart(10, '0')}`;
  }

  channel(id: string): FakeMessage[] {
    let list = this.messages.get(id);
    if (!list) {
      list = [];
      this.messages.set(id, list);
    }
    return list;
  }

  add(message: Omit<FakeMessage, 'type' | 'ts'> & { ts?: string }): FakeMessage {
    const stored: FakeMessage = { type: 'message', ...message, ts: message.ts ?? this.nextTs() };
    this.channel(stored.channel).push(stored);
    return stored;
  }

  find(channel: string, ts: string): FakeMessage | undefined {
    return this.messages.get(channel)?.find((m) => m.ts === ts);
  }

  /** Parent first, then replies in order (conversations.replies). */
  thread(channel: string, ts: string): FakeMessage[] {
    const list = this.messages.get(channel) ?? [];
    const parent = list.find((m) => m.ts === ts);
    if (!parent) return [];
    const root = parent.thread_ts ?? parent.ts;
    return list.filter((m) => m.ts === root || m.thread_ts === root);
  }

  /** Every message in a channel/thread that carries files (used by tests to find delivered images). */
  allMessages(): FakeMessage[] {
    return [...this.messages.values()].flat();
  }
}

/** The JSON a Web API answer carries for a file (bytes stripped). */
export function fileJson(f: FakeFile): Record<string, unknown> {
  return {
    id: f.id,
    name: f.name,
    title: f.title,
    mimetype: f.mimetype,
    filetype: f.filetype,
    size: f.size,
    url_private: f.url_private,
    url_private_download: f.url_private_download,
    permalink: f.url_private,
    ...(f.altText ? { alt_txt: f.altText } : {}),
  };
}

/** The JSON a Web API answer carries for a message. */
export function messageJson(m: FakeMessage, withMetadata: boolean): Record<string, unknown> {
  const { files, metadata, ...rest } = m;
  return {
    ...rest,
    ...(files ? { files: files.map(fileJson) } : {}),
    ...(withMetadata && metadata ? { metadata } : {}),
  };
}

/** Slack lets a trigger open a modal for 3 s (`views.open` → expired_trigger_id): the fake's carry their issue time. */
export const TRIGGER_TTL_MS = 3_000;
export const triggerId = (): string => `trig-${Date.now()}-${Math.random().toString(36).slice(2)}`;
export const triggerExpired = (trigger: string): boolean => {
  const issued = Number(/^trig-(\d+)-/.exec(trigger)?.[1]);
  return !Number.isFinite(issued) || Date.now() - issued > TRIGGER_TTL_MS;
};
