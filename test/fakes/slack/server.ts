// A fake Slack on 127.0.0.1 that the real @slack/bolt (web-api 8, socket-mode 3) talks to unmodified:
// Web API under /api/, the Socket Mode link, the upload endpoint, url_private downloads and response_url.
// Every call is recorded; faults (429 + Retry-After, ok:false codes, HTTP 5xx) are injected per method.
// Protocol: /work/shared/docs/platform-fakes.md Part B and its "Fake Slack" checklist.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eventCallback } from './payloads.ts';
import { SocketModeLink, type EnvelopeType, type SentEnvelope } from './socket-mode.ts';
import { SlackStore, fileJson, messageJson, triggerExpired, type FakeFile, type FakeMessage } from './store.ts';

export interface FakeSlackOptions {
  botToken?: string;
  appToken?: string;
  teamId?: string;
  /** The Enterprise Grid org the workspace belongs to (E…): payloads, auth.test and users.info then say so. */
  enterpriseId?: string;
  /**
   * The app is installed for the whole org (an org-wide installation, needs enterpriseId): buttons and shortcuts then
   * come with `team: null` and `is_enterprise_install: true`, the workspace only in `user.team_id` (Slack's
   * block_actions and shortcut payloads; bolt-js App.ts buildSource reads user.team_id for that reason); events with
   * `authorizations[0].team_id: null`, the workspace in the envelope's `team_id` (which Bolt then reads).
   */
  orgWideInstall?: boolean;
  botUserId?: string;
  botId?: string;
  appId?: string;
  /** @defaultValue 3000 */
  ackWindowMs?: number;
}

export interface RecordedCall {
  at: number;
  kind: 'api' | 'upload' | 'download' | 'response_url' | 'other';
  /** Web API method (`chat.update`) or the request path. */
  method: string;
  token?: string;
  headers: IncomingMessage['headers'];
  args: Record<string, unknown>;
  status: number;
}

export interface Fault {
  /** A Web API method (`chat.postMessage`), or `response_url` for the posts to any command's or button's response_url. */
  method: string;
  /** ok:false with this error code. */
  error?: string;
  /** 429 with this Retry-After (integer seconds). */
  retryAfterSec?: number;
  /** Any other HTTP status (e.g. 500). */
  httpStatus?: number;
  /**
   * The call is carried out as usual, then its reply is lost: the connection is closed without an answer (a reset, a
   * proxy's timeout). The caller cannot tell whether Slack did it.
   */
  lostReply?: boolean;
  /** How many calls it applies to. @defaultValue 1 */
  times?: number;
}

type ApiHandler = (args: Record<string, unknown>, token: string | undefined) => Record<string, unknown>;

const LOGIN_PAGE = '<!DOCTYPE html><html><head><title>Slack</title></head><body><form action="/signin">Sign in to Slack</form></body></html>';

export class FakeSlack {
  readonly store = new SlackStore();
  readonly calls: RecordedCall[] = [];
  readonly link: SocketModeLink;
  /** The bot token the Web API accepts; uninstall() revokes it, reinstall() issues another. */
  botToken: string;
  /** The app-level token apps.connections.open accepts; revokeAppToken() changes it. */
  appToken: string;
  readonly teamId: string;
  /** The workspace's Grid org; undefined: a workspace outside Grid. */
  readonly enterpriseId: string | undefined;
  /** Installed for the whole org (FakeSlackOptions.orgWideInstall). */
  readonly orgWideInstall: boolean;
  readonly botUserId: string;
  readonly botId: string;
  readonly appId: string;
  private readonly server: Server;
  private readonly faults: Fault[] = [];
  /** Channels that take none of the bot's posts any more → the error Slack answers (loseChannel). */
  private readonly lostChannels = new Map<string, string>();
  /** Channels whose members may post only in threads (threadsOnly). */
  private readonly threadOnlyChannels = new Set<string>();
  /** Bot tokens Slack took back: answered token_revoked (a token it never issued: invalid_auth). */
  private readonly revokedBotTokens = new Set<string>();
  private readonly responseUrlUses = new Map<string, number>();
  /** Trigger ids a views.open has used: Slack answers a second use `exchanged_trigger_id`. */
  private readonly exchangedTriggers = new Set<string>();
  private readonly handlers: Record<string, ApiHandler>;
  private port = 0;

  constructor(options: FakeSlackOptions = {}) {
    this.botToken = options.botToken ?? 'xoxb-fake-bot-token';
    this.appToken = options.appToken ?? 'xapp-fake-app-token';
    this.teamId = options.teamId ?? 'T0FAKE';
    this.enterpriseId = options.enterpriseId;
    if (options.orgWideInstall && !options.enterpriseId) throw new Error('FakeSlack: an org-wide installation needs a Grid org (enterpriseId)');
    this.orgWideInstall = options.orgWideInstall ?? false;
    this.botUserId = options.botUserId ?? 'U0BOT';
    this.botId = options.botId ?? 'B0BOT';
    this.appId = options.appId ?? 'A0FAKE';
    this.link = new SocketModeLink({ ackWindowMs: options.ackWindowMs });
    this.server = createServer((req, res) => void this.route(req, res));
    this.server.on('upgrade', (req, socket, head) => this.link.handleUpgrade(req, socket, head));
    this.handlers = this.apiHandlers();
    this.store.users.set(this.botUserId, { id: this.botUserId, name: 'blip3o', is_admin: false, is_owner: false, is_bot: true });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.link.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /**
   * The app's "Revoke" of its app-level token: apps.connections.open refuses the old one (invalid_auth) from now on,
   * and Slack disconnects the app's Socket Mode connections (a `disconnect` message, then a reconnect that is refused).
   */
  revokeAppToken(): void {
    this.appToken = `xapp-fake-app-token-${Date.now()}`;
    this.link.disconnect('link_disabled');
  }

  /**
   * The app removed from the workspace (or its tokens revoked in the app's settings): the bot token is refused from
   * now on (token_revoked), and Slack sends an app subscribed to them `app_uninstalled` and `tokens_revoked` (here:
   * over a connected Socket Mode link; `events: false` for an app whose manifest does not subscribe to them).
   */
  uninstall(options: { events?: boolean } = {}): void {
    this.revokedBotTokens.add(this.botToken);
    if (options.events === false || !this.link.connected) return;
    this.link.send('events_api', eventCallback(this, { type: 'app_uninstalled' }));
    this.link.send('events_api', eventCallback(this, { type: 'tokens_revoked', tokens: { bot: [this.botUserId] } }));
  }

  /** Installed again: a new bot token. */
  reinstall(): void {
    this.botToken = `xoxb-fake-bot-token-${Date.now()}`;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  /** For `clientOptions.slackApiUrl` / SLACK_API_URL. */
  get apiUrl(): string {
    return `${this.origin}/api/`;
  }
  /** For the bot's download allow-list. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  // ---- test hooks --------------------------------------------------------------------------------------

  inject(fault: Fault): void {
    this.faults.push({ times: 1, ...fault });
  }

  /**
   * The bot loses a channel as Slack tells it: removed from it (`not_in_channel` for everything but
   * conversations.info), the channel deleted (`channel_not_found`), or archived (`is_archived` for what writes; reading
   * it still works). Or its posts are refused by the workspace's settings, reading still working (chat.postMessage's
   * documented errors): posting restricted to some members (`restricted_action`), a read-only channel
   * (`restricted_action_read_only_channel`), a thread an admin locked (`restricted_action_thread_locked`), or the
   * administrators' Enterprise Key Management revoked access to it (`ekm_access_denied`).
   */
  loseChannel(channel: string, how: 'removed' | 'deleted' | 'archived' | 'restricted' | 'read-only' | 'thread-locked' | 'ekm'): void {
    const codes = {
      removed: 'not_in_channel', deleted: 'channel_not_found', archived: 'is_archived', restricted: 'restricted_action',
      'read-only': 'restricted_action_read_only_channel', 'thread-locked': 'restricted_action_thread_locked', ekm: 'ekm_access_denied',
    } as const;
    this.lostChannels.set(channel, codes[how]);
  }

  /**
   * A channel where a workspace setting lets members post only in threads: a post at its top level (chat.postMessage or
   * a shared upload without a `thread_ts` naming a message there) is refused with `restricted_action_thread_only_channel`
   * (chat.postMessage's documented error); replies in threads, edits, deletes, ephemerals and reads go on working.
   */
  threadsOnly(channel: string): void {
    this.threadOnlyChannels.add(channel);
  }

  /** The channel takes the bot's posts again (loseChannel undone). */
  restoreChannel(channel: string): void {
    this.lostChannels.delete(channel);
    this.threadOnlyChannels.delete(channel);
  }

  /**
   * A user: admin or owner flags, and the names Slack shows (full name, display name; the handle is the id in lower
   * case). In a Grid workspace (options.enterpriseId) every member also has `enterprise_user`, with their Org Admin or
   * Owner role (`orgAdmin`, `orgOwner`; a workspace role is separate: an org admin need not be one). `from`: a Slack
   * Connect member of another organisation (their workspace, and their Grid org if it has one), whose flags are their
   * roles there: users.info names their own team_id, not this workspace's.
   */
  addUser(
    id: string,
    flags: { isAdmin?: boolean; isOwner?: boolean; orgAdmin?: boolean; orgOwner?: boolean; from?: { teamId: string; enterpriseId?: string }; realName?: string; displayName?: string } = {},
  ): void {
    const names = flags.realName !== undefined || flags.displayName !== undefined;
    const teamId = flags.from?.teamId ?? this.teamId;
    const enterpriseId = flags.from ? flags.from.enterpriseId : this.enterpriseId;
    if ((flags.orgAdmin || flags.orgOwner) && !enterpriseId) throw new Error(`addUser(${id}): an org role needs a Grid org (FakeSlackOptions.enterpriseId, or from.enterpriseId)`);
    this.store.users.set(id, {
      id,
      name: id.toLowerCase(),
      is_admin: flags.isAdmin ?? false,
      is_owner: flags.isOwner ?? false,
      is_bot: false,
      team_id: teamId,
      ...(names ? { real_name: flags.realName ?? '', profile: { display_name: flags.displayName ?? '', real_name: flags.realName ?? '' } } : {}),
      ...(enterpriseId
        ? {
            enterprise_user: {
              id,
              enterprise_id: enterpriseId,
              enterprise_name: enterpriseId === this.enterpriseId ? 'Fake Org' : 'Another Org',
              is_admin: flags.orgAdmin ?? false,
              is_owner: flags.orgOwner ?? false,
              is_primary_owner: false,
              teams: [teamId],
            },
          }
        : {}),
    });
  }

  /** A channel's name, as `conversations.info` answers it; a private channel's with `is_private: true`. */
  nameChannel(id: string, name: string, options: { private?: boolean } = {}): void {
    this.store.channelNames.set(id, name);
    if (options.private) this.store.privateChannels.add(id);
  }

  /**
   * A Slack Connect channel, shared between this workspace and another organisation's; `createdBy`: the workspace that
   * created it and shared it (a partner's team id, or this one's). Its events then carry `is_ext_shared_channel: true`
   * and, in the envelope's top-level `team_id`, the creating workspace's id, while `authorizations` names the
   * installation the event is delivered for, this one (Slack's Events API: the outer team_id of a shared channel's
   * event is the originating workspace's; bolt-js and java-slack-sdk read authorizations[0] for that reason).
   */
  shareChannel(id: string, createdBy: string = this.teamId): void {
    this.store.sharedChannels.set(id, createdBy);
  }

  /** A file as if a user had uploaded it; its url_private points here. */
  seedFile(bytes: Uint8Array, name: string, mimetype: string, serve: FakeFile['serve'] = 'bytes', servedContentType?: string): FakeFile {
    const id = this.store.nextFileId();
    const file = this.makeFile(id, name, bytes, mimetype);
    file.serve = serve;
    file.servedContentType = servedContentType;
    file.uploaded = true;
    this.store.files.set(id, file);
    return file;
  }

  /** A user's message (optionally with files, optionally in a thread). */
  postUserMessage(m: { channel: string; user: string; text: string; files?: FakeFile[]; threadTs?: string }): FakeMessage {
    return this.store.add({ channel: m.channel, user: m.user, text: m.text, files: m.files, thread_ts: m.threadTs });
  }

  sendEnvelope(type: EnvelopeType, payload: Record<string, unknown>): SentEnvelope {
    return this.link.send(type, payload);
  }

  apiCalls(method: string): RecordedCall[] {
    return this.calls.filter((c) => c.kind === 'api' && c.method === method);
  }

  /** Messages the bot wrote (posted or uploaded), in order. */
  botMessages(channel?: string): FakeMessage[] {
    return this.store.allMessages().filter((m) => m.bot_id === this.botId && (channel === undefined || m.channel === channel));
  }

  /** Poll the recorded state until `predicate` returns a value. */
  async waitFor<T>(predicate: () => T | undefined | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = predicate();
      if (value !== undefined && value !== false) return value;
      if (Date.now() > deadline) throw new Error(`fake slack: timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  // ---- HTTP routing ------------------------------------------------------------------------------------

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.origin);
    const raw = await readBody(req);
    const token = bearer(req);
    const record = (kind: RecordedCall['kind'], method: string, args: Record<string, unknown>, status: number) =>
      this.calls.push({ at: Date.now(), kind, method, token, headers: req.headers, args, status });
    try {
      if (req.method === 'POST' && url.pathname.startsWith('/api/')) {
        const method = url.pathname.slice('/api/'.length);
        const args = await parseArgs(req, raw, url);
        const { status, body, headers, lost } = this.callApi(method, args, token);
        record('api', method, args, status);
        if (lost) return void req.socket.destroy();
        return send(res, status, JSON.stringify(body), { 'content-type': 'application/json; charset=utf-8', ...headers });
      }
      if (req.method === 'POST' && url.pathname.startsWith('/upload/v1/')) {
        const status = await this.onUpload(url.pathname.slice('/upload/v1/'.length), req, raw, token);
        record('upload', url.pathname, {}, status);
        return send(res, status, status === 200 ? `OK - ${raw.length}` : 'failed', { 'content-type': 'text/plain' });
      }
      if (req.method === 'GET' && url.pathname.startsWith('/files-pri/')) return this.onDownload(url, token, res, record);
      if (req.method === 'GET' && url.pathname === '/signin') {
        record('other', url.pathname, {}, 200);
        return send(res, 200, LOGIN_PAGE, { 'content-type': 'text/html; charset=utf-8' });
      }
      if (req.method === 'POST' && url.pathname.startsWith('/response/')) {
        const args = JSON.parse(raw.toString('utf8') || '{}') as Record<string, unknown>;
        // A 5xx is not carried out (not shown, no use counted); a lost reply is, as with the Web API's faults.
        const fault = this.takeFault('response_url');
        if (fault?.httpStatus !== undefined) {
          record('response_url', url.pathname, args, fault.httpStatus);
          return send(res, fault.httpStatus, 'internal_error', { 'content-type': 'text/plain' });
        }
        // Slack: a response_url takes at most five messages (within 30 minutes).
        const uses = (this.responseUrlUses.get(url.pathname) ?? 0) + 1;
        this.responseUrlUses.set(url.pathname, uses);
        const status = uses > 5 ? 404 : 200;
        record('response_url', url.pathname, args, status);
        if (fault?.lostReply) return void req.socket.destroy();
        return send(res, status, status === 200 ? 'ok' : 'used_url', { 'content-type': 'text/plain' });
      }
      record('other', url.pathname, {}, 404);
      send(res, 404, 'not found', { 'content-type': 'text/plain' });
    } catch (e) {
      record('other', url.pathname, { error: String(e) }, 500);
      send(res, 500, String(e), { 'content-type': 'text/plain' });
    }
  }

  /** The next injected fault for `method`, counted as used; undefined when none is left. */
  private takeFault(method: string): Fault | undefined {
    const fault = this.faults.find((f) => f.method === method && (f.times ?? 1) > 0);
    if (fault) fault.times = (fault.times ?? 1) - 1;
    return fault;
  }

  private callApi(method: string, args: Record<string, unknown>, token: string | undefined): { status: number; body: Record<string, unknown>; headers: Record<string, string>; lost?: boolean } {
    const fault = this.takeFault(method);
    if (fault) {
      if (fault.lostReply) return { ...this.answer(method, args, token), lost: true };
      if (fault.retryAfterSec !== undefined) return { status: 429, body: { ok: false, error: 'ratelimited' }, headers: { 'retry-after': String(fault.retryAfterSec) } };
      if (fault.httpStatus !== undefined) return { status: fault.httpStatus, body: { ok: false, error: 'fatal_error' }, headers: {} };
      return { status: 200, body: { ok: false, error: fault.error ?? 'fatal_error' }, headers: {} };
    }
    return this.answer(method, args, token);
  }

  /** A call carried out as Slack would, faults aside. */
  private answer(method: string, args: Record<string, unknown>, token: string | undefined): { status: number; body: Record<string, unknown>; headers: Record<string, string> } {
    const handler = this.handlers[method];
    if (!handler) return { status: 200, body: { ok: false, error: 'unknown_method' }, headers: {} };
    const wantsAppToken = method === 'apps.connections.open';
    if (token !== (wantsAppToken ? this.appToken : this.botToken) || this.revokedBotTokens.has(token)) {
      const error = !token ? 'not_authed' : this.revokedBotTokens.has(token) ? 'token_revoked' : 'invalid_auth';
      return { status: 200, body: { ok: false, error }, headers: {} };
    }
    const lost = this.lostChannels.get(String(args.channel ?? args.channel_id ?? ''));
    const reads = method.startsWith('conversations.');
    const stillReads = lost === 'is_archived' || lost?.startsWith('restricted_action') === true;
    if (lost && !(stillReads && reads) && !(lost === 'not_in_channel' && method === 'conversations.info')) return { status: 200, body: { ok: false, error: lost }, headers: {} };
    if (this.postsAtTopLevelOfThreadOnly(method, args)) return { status: 200, body: { ok: false, error: 'restricted_action_thread_only_channel' }, headers: {} };
    return { status: 200, body: handler(args, token), headers: {} };
  }

  /** A post (a message, a shared upload) at the top level of a channel that takes posts only in threads (threadsOnly). */
  private postsAtTopLevelOfThreadOnly(method: string, args: Record<string, unknown>): boolean {
    if (method !== 'chat.postMessage' && method !== 'files.completeUploadExternal') return false;
    const channel = String(args.channel ?? args.channel_id ?? '');
    if (!this.threadOnlyChannels.has(channel)) return false;
    // a reply to a message that is gone would land at the top level (threadOf in apiHandlers): refused too
    return !(args.thread_ts && this.store.find(channel, String(args.thread_ts)));
  }

  private async onUpload(fileId: string, req: IncomingMessage, raw: Buffer, token: string | undefined): Promise<number> {
    const file = this.store.files.get(fileId);
    if (!file || file.uploaded || token !== this.botToken) return 403;
    const form = await new Request('http://fake/upload', { method: 'POST', headers: { 'content-type': String(req.headers['content-type']) }, body: raw }).formData();
    const part = form.get('body');
    if (!(part instanceof Blob)) return 400;
    const bytes = new Uint8Array(await part.arrayBuffer());
    if (file.declaredLength !== undefined && bytes.length !== file.declaredLength) return 400;
    file.bytes = bytes;
    file.size = bytes.length;
    file.uploaded = true;
    return 200;
  }

  private onDownload(url: URL, token: string | undefined, res: ServerResponse, record: (k: RecordedCall['kind'], m: string, a: Record<string, unknown>, s: number) => void): void {
    // /files-pri/<team>-<file id>/<name> or /files-pri/<team>-<file id>/download/<name>
    const id = url.pathname.split('/')[2]?.split('-')[1] ?? '';
    const file = this.store.files.get(id);
    if (!file) {
      record('download', url.pathname, {}, 404);
      return send(res, 404, 'file not found', { 'content-type': 'text/plain' });
    }
    if (token !== this.botToken) {
      // Real Slack redirects an unauthenticated download to the sign-in page (status 200 after redirects).
      record('download', url.pathname, {}, 302);
      return send(res, 302, '', { location: `${this.origin}/signin?redir=${encodeURIComponent(url.pathname)}` });
    }
    if (file.serve === 'html-login') {
      record('download', url.pathname, {}, 200);
      return send(res, 200, LOGIN_PAGE, { 'content-type': 'text/html; charset=utf-8' });
    }
    record('download', url.pathname, {}, 200);
    send(res, 200, Buffer.from(file.bytes), { 'content-type': file.servedContentType ?? file.mimetype, 'content-length': String(file.bytes.length) });
  }

  private makeFile(id: string, name: string, bytes: Uint8Array, mimetype: string): FakeFile {
    const safe = encodeURIComponent(name);
    return {
      id,
      name,
      title: name,
      mimetype,
      filetype: name.split('.').pop() ?? 'bin',
      size: bytes.length,
      bytes,
      url_private: `${this.origin}/files-pri/${this.teamId}-${id}/${safe}`,
      url_private_download: `${this.origin}/files-pri/${this.teamId}-${id}/download/${safe}`,
      serve: 'bytes',
      uploaded: false,
    };
  }

  // ---- Web API methods -----------------------------------------------------------------------------------

  private apiHandlers(): Record<string, ApiHandler> {
    const s = this.store;
    const needMessage = (args: Record<string, unknown>): FakeMessage | undefined => s.find(String(args.channel), String(args.ts));
    // A reply whose parent is gone (deleted with nothing under it) is posted at the top level, as Slack does, and its
    // answer then has no thread_ts.
    const threadOf = (args: Record<string, unknown>): string | undefined =>
      args.thread_ts && s.find(String(args.channel), String(args.thread_ts)) ? String(args.thread_ts) : undefined;
    return {
      'auth.test': () => ({
        ok: true, url: 'https://fake.slack.com/', team: 'Fake', user: 'blip3o', team_id: this.teamId, user_id: this.botUserId, bot_id: this.botId,
        ...(this.enterpriseId ? { enterprise_id: this.enterpriseId } : {}),
        is_enterprise_install: false,
      }),
      'apps.connections.open': () => ({ ok: true, url: `ws://127.0.0.1:${this.port}/link/?ticket=${this.link.issueTicket()}&app_id=${this.appId}` }),
      'chat.postMessage': (args) => {
        if (!args.channel) return { ok: false, error: 'channel_not_found' };
        const m = s.add({
          channel: String(args.channel),
          text: String(args.text ?? ''),
          bot_id: this.botId,
          user: this.botUserId,
          thread_ts: threadOf(args),
          blocks: args.blocks as unknown[] | undefined,
          metadata: args.metadata as FakeMessage['metadata'],
        });
        return { ok: true, channel: m.channel, ts: m.ts, message: messageJson(m, false) };
      },
      'chat.update': (args) => {
        const m = needMessage(args);
        if (!m) return { ok: false, error: 'message_not_found' };
        if (m.bot_id !== this.botId) return { ok: false, error: 'cant_update_message' };
        if (args.text !== undefined) m.text = String(args.text);
        if (args.blocks !== undefined) m.blocks = args.blocks as unknown[];
        if (args.metadata !== undefined) m.metadata = args.metadata as FakeMessage['metadata'];
        m.edited = { ts: s.nextTs() };
        return { ok: true, channel: m.channel, ts: m.ts, text: m.text, message: messageJson(m, false) };
      },
      'chat.delete': (args) => {
        const list = s.messages.get(String(args.channel)) ?? [];
        const i = list.findIndex((m) => m.ts === String(args.ts) && m.subtype !== 'tombstone');
        if (i < 0) return { ok: false, error: 'message_not_found' };
        const m = list[i]!;
        // A thread parent with replies stays as Slack's "This message was deleted." tombstone (no longer the bot's
        // message): the replies and conversations.replies on it go on working.
        if (list.some((r) => r.thread_ts === m.ts && r.ts !== m.ts)) list[i] = { type: 'message', subtype: 'tombstone', channel: m.channel, ts: m.ts, thread_ts: m.ts, user: 'USLACKBOT', text: 'This message was deleted.' };
        else list.splice(i, 1);
        return { ok: true, channel: args.channel, ts: args.ts };
      },
      'chat.postEphemeral': (args) => ({ ok: true, message_ts: s.nextTs(), channel: args.channel, user: args.user }),
      // the bot's direct-message channel with a user (Slack answers with the same id every time)
      'conversations.open': (args) => {
        const user = String(args.users ?? '');
        if (!user || user.includes(',')) return { ok: false, error: 'not_supported' };
        return { ok: true, channel: { id: `D${user}` } };
      },
      'conversations.replies': (args) => {
        const thread = s.thread(String(args.channel), String(args.ts));
        if (thread.length === 0) return { ok: false, error: 'thread_not_found' };
        const withMetadata = args.include_all_metadata === true || args.include_all_metadata === 'true';
        // pages of `limit` (Slack's default 1000), oldest first; the cursor is opaque to the client (here: where the next page starts)
        const limit = Number(args.limit ?? 1000);
        const from = Number(String(args.cursor ?? '').replace(/^at_/, '') || 0);
        const more = from + limit < thread.length;
        return { ok: true, messages: thread.slice(from, from + limit).map((m) => messageJson(m, withMetadata)), has_more: more, response_metadata: { next_cursor: more ? `at_${from + limit}` : '' } };
      },
      // the channel's top-level messages (and thread parents), newest first
      'conversations.history': (args) => {
        const top = (s.messages.get(String(args.channel)) ?? []).filter((m) => m.thread_ts === undefined || m.thread_ts === m.ts);
        const withMetadata = args.include_all_metadata === true || args.include_all_metadata === 'true';
        const limit = Number(args.limit ?? 100);
        return { ok: true, messages: top.reverse().slice(0, limit).map((m) => messageJson(m, withMetadata)), has_more: top.length > limit, response_metadata: { next_cursor: '' } };
      },
      'files.info': (args) => {
        const f = s.files.get(String(args.file));
        return f ? { ok: true, file: fileJson(f) } : { ok: false, error: 'file_not_found' };
      },
      'files.getUploadURLExternal': (args) => {
        const id = s.nextFileId();
        const file = this.makeFile(id, String(args.filename ?? 'file.txt'), new Uint8Array(), 'application/octet-stream');
        file.declaredLength = Number(args.length);
        if (args.alt_text) file.altText = String(args.alt_text);
        s.files.set(id, file);
        return { ok: true, upload_url: `${this.origin}/upload/v1/${id}`, file_id: id };
      },
      'files.completeUploadExternal': (args) => {
        const entries = (args.files ?? []) as { id: string; title?: string }[];
        const files: FakeFile[] = [];
        for (const e of entries) {
          const f = s.files.get(e.id);
          if (!f || !f.uploaded) return { ok: false, error: 'file_not_found' };
          if (e.title) f.title = e.title;
          f.mimetype = sniffMime(f.bytes);
          files.push(f);
        }
        if (args.channel_id) {
          s.add({
            channel: String(args.channel_id),
            text: String(args.initial_comment ?? ''),
            bot_id: this.botId,
            user: this.botUserId,
            thread_ts: threadOf({ ...args, channel: args.channel_id }),
            blocks: args.blocks as unknown[] | undefined,
            files,
          });
        }
        return { ok: true, files: files.map((f) => ({ id: f.id, title: f.title })) };
      },
      'conversations.info': (args) => {
        const id = String(args.channel);
        const name = s.channelNames.get(id);
        if (name !== undefined) return { ok: true, channel: { id, name, is_channel: true, is_private: s.privateChannels.has(id) } };
        return id.startsWith('D') ? { ok: true, channel: { id, is_im: true, user: id.slice(1) } } : { ok: false, error: 'channel_not_found' };
      },
      'users.info': (args) => {
        const u = s.users.get(String(args.user));
        return u ? { ok: true, user: { team_id: this.teamId, ...u } } : { ok: false, error: 'user_not_found' };
      },
      // A trigger opens one view, within 3 s: a second views.open with it (a retry after a lost reply) is refused.
      'views.open': (args) => {
        const trigger = String(args.trigger_id);
        if (this.exchangedTriggers.has(trigger)) return { ok: false, error: 'exchanged_trigger_id' };
        if (triggerExpired(trigger)) return { ok: false, error: 'expired_trigger_id' };
        const problems = viewProblems(args.view as Record<string, unknown>);
        if (problems.length) return { ok: false, error: 'invalid_arguments', response_metadata: { messages: problems.map((p) => `[ERROR] ${p}`) } };
        this.exchangedTriggers.add(trigger);
        return { ok: true, view: { id: `V${s.nextTs().replace('.', '')}`, ...(args.view as Record<string, unknown>) } };
      },
    };
  }
}

// ---- helpers ----------------------------------------------------------------------------------------------

/**
 * What Slack refuses in a modal the bot builds, with the whole views.open (`invalid_arguments`, the reasons in
 * response_metadata.messages): the Block Kit limits of docs.slack.dev (title, submit and close 24 characters; input
 * label and hint 2,000; placeholder 150; option text 75 and value 150; plain_text_input max_length 1–3,000, min_length
 * 0–3,000; private_metadata 3,000). An initial_value longer than its input's max_length is refused too: the docs do
 * not say so, and a modal that opened would show a value its own Submit refuses. Lengths in UTF-16 code units, never
 * fewer than the code points Slack may count (src/text.ts).
 */
export function viewProblems(view: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const text = (at: string, t: unknown, max: number) => {
    const s = (t as { text?: unknown } | undefined)?.text;
    if (typeof s === 'string' && s.length > max) problems.push(`must be less than ${max + 1} characters [json-pointer:${at}/text]`);
  };
  for (const key of ['title', 'submit', 'close']) text(`/view/${key}`, view[key], 24);
  if (typeof view.private_metadata === 'string' && view.private_metadata.length > 3000) problems.push('must be less than 3001 characters [json-pointer:/view/private_metadata]');
  const blocks = Array.isArray(view.blocks) ? (view.blocks as Record<string, unknown>[]) : [];
  blocks.forEach((block, i) => {
    const at = `/view/blocks/${i}`;
    text(`${at}/label`, block.label, 2000);
    text(`${at}/hint`, block.hint, 2000);
    const el = (block.element ?? {}) as Record<string, unknown>;
    text(`${at}/element/placeholder`, el.placeholder, 150);
    const options = [...((el.options as unknown[] | undefined) ?? []), ...((el.initial_options as unknown[] | undefined) ?? []), ...(el.initial_option ? [el.initial_option] : [])];
    options.forEach((o, j) => {
      text(`${at}/element/options/${j}`, (o as { text?: unknown }).text, 75);
      const value = (o as { value?: unknown }).value;
      if (typeof value === 'string' && value.length > 150) problems.push(`must be less than 151 characters [json-pointer:${at}/element/options/${j}/value]`);
    });
    if (el.type !== 'plain_text_input') return;
    const max = el.max_length as number | undefined;
    if (max !== undefined && !(Number.isInteger(max) && max >= 1 && max <= 3000)) problems.push(`must be between 1 and 3000 [json-pointer:${at}/element/max_length]`);
    const min = el.min_length as number | undefined;
    if (min !== undefined && !(Number.isInteger(min) && min >= 0 && min <= 3000)) problems.push(`must be between 0 and 3000 [json-pointer:${at}/element/min_length]`);
    const initial = el.initial_value;
    if (typeof initial === 'string' && initial.length > Math.min(max ?? 3000, 3000)) problems.push(`must be at most ${Math.min(max ?? 3000, 3000)} characters [json-pointer:${at}/element/initial_value]`);
  });
  return problems;
}

function send(res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string>): void {
  res.writeHead(status, headers);
  res.end(body);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  return h?.startsWith('Bearer ') ? h.slice('Bearer '.length) : undefined;
}

/** Form bodies carry objects and arrays as JSON strings (web-api serializeBody); decode those back. */
async function parseArgs(req: IncomingMessage, raw: Buffer, url: URL): Promise<Record<string, unknown>> {
  const type = String(req.headers['content-type'] ?? '');
  const args: Record<string, unknown> = Object.fromEntries(url.searchParams);
  if (type.startsWith('application/json')) return { ...args, ...(JSON.parse(raw.toString('utf8') || '{}') as Record<string, unknown>) };
  const params = type.startsWith('multipart/form-data')
    ? [...(await new Request('http://fake/', { method: 'POST', headers: { 'content-type': type }, body: raw }).formData()).entries()].map(([k, v]) => [k, String(v)] as const)
    : [...new URLSearchParams(raw.toString('utf8'))];
  for (const [k, v] of params) args[k] = decodeJsonish(v);
  return args;
}

function decodeJsonish(v: string): unknown {
  if (!/^[[{]/.test(v)) return v;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v;
  }
}

function sniffMime(bytes: Uint8Array): string {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'image/png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'image/jpeg';
  return 'application/octet-stream';
}
