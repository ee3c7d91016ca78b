// The fake Discord's gateway (platform-fakes.md A2): HELLO, heartbeat ACKs, IDENTIFY (token and intents; 4014
// when the "portal" refuses MessageContent), READY + a GUILD_CREATE per server, and RESUME that replays the
// dispatches the client missed. Text JSON frames only.
//
// Sharding as Discord does it (discord.com/developers/docs/events/gateway, "Sharding"): IDENTIFY carries
// `shard: [id, count]`; a server's events go to the sessions whose `(guild_id >> 22) % count` is their id, DMs to
// shard 0. A shard id not below its count is closed 4010, a shard that would hold more servers than the fake's
// `maxGuildsPerShard` 4011. One session per [id, count]: a new IDENTIFY for it replaces the old one.
import type { WebSocket, WebSocketServer } from 'ws';
import { snowflake } from './snowflake.ts';

type Json = Record<string, unknown>;

export const MESSAGE_CONTENT = 1 << 15;
/** Dispatches kept for replay on RESUME, per session. */
const REPLAY_BUFFER = 500;

export interface GatewayOptions {
  token: string;
  heartbeatIntervalMs: number;
  messageContentAllowed: boolean;
  resumable: boolean;
  /** Discord's limit is 2,500: a shard over it is closed 4011 (sharding required). */
  maxGuildsPerShard: number;
}

/** What the gateway needs from the rest of the fake. */
export interface GatewayWorld {
  /** The ids of every server the bot is in. */
  guildIds(): string[];
  /** READY's `d` for a new session of `shard`, holding `guildIds`. */
  ready(sessionId: string, shard: Shard, guildIds: string[]): Json;
  /** GUILD_CREATE's `d` for one server. */
  guild(guildId: string): Json;
  /** Called after every client frame (wakes `waitFor`). */
  activity(): void;
}

export type Shard = readonly [id: number, count: number];

interface Session {
  id: string;
  shard: Shard;
  seq: number;
  intents: number;
  buffer: { s: number; t: string; d: unknown }[];
  socket: WebSocket | undefined;
}

/** The shard a server's events go to, out of `count` (Discord's sharding formula). */
export function shardOf(guildId: string | null, count: number): number {
  return guildId === null ? 0 : Number((BigInt(guildId) >> 22n) % BigInt(count));
}

export class FakeGateway {
  /** Every frame the client sent ({op, d}, and when it arrived), in order. */
  readonly frames: { op: number; d: unknown; at: number }[] = [];
  /** Sessions by `id/count`. */
  private readonly sessions = new Map<string, Session>();

  constructor(
    wss: WebSocketServer,
    private readonly options: GatewayOptions,
    private readonly world: GatewayWorld,
  ) {
    wss.on('connection', (socket) => this.onSocket(socket));
  }

  /**
   * Send a dispatch (op 0) to the sessions whose shard holds `guildId` (null: a DM, shard 0), with each session's next
   * sequence number; buffered for replay while a socket is down.
   */
  dispatch(t: string, d: unknown, guildId: string | null): void {
    if (this.sessions.size === 0) throw new Error('no gateway session: has the client logged in?');
    for (const session of this.sessions.values()) {
      if (shardOf(guildId, session.shard[1]) === session.shard[0]) this.send(session, t, d);
    }
  }

  /** Close every session's socket with `code`; the client resumes (1000, 4000–4009 except 4004). */
  drop(code: number): void {
    for (const session of this.sessions.values()) session.socket?.close(code, 'dropped by test');
  }

  /**
   * Forget every session (a RESUME is answered op 9, invalid session) and close their sockets with `code`: the client
   * identifies again, which the current token and intents decide.
   */
  endSession(code: number): void {
    const sockets = [...this.sessions.values()].map((s) => s.socket);
    this.sessions.clear();
    for (const socket of sockets) socket?.close(code, 'session ended by test');
  }

  /** Whether a client has identified (dispatches go to its sessions, or are replayed to them on resume). */
  get hasSession(): boolean {
    return this.sessions.size > 0;
  }

  /** Every session's socket is open. */
  get connected(): boolean {
    return this.sessions.size > 0 && [...this.sessions.values()].every((s) => s.socket?.readyState === 1);
  }

  /** The intents the sessions identified with (the latest session's). */
  get intents(): number {
    return [...this.sessions.values()].at(-1)?.intents ?? 0;
  }

  /** The shards identified, as [id, count], with whether each socket is open. */
  get shards(): { shard: Shard; connected: boolean }[] {
    return [...this.sessions.values()].map((s) => ({ shard: s.shard, connected: s.socket?.readyState === 1 }));
  }

  private send(session: Session, t: string, d: unknown): void {
    const frame = { s: ++session.seq, t, d };
    session.buffer.push(frame);
    if (session.buffer.length > REPLAY_BUFFER) session.buffer.shift();
    if (session.socket?.readyState === 1) session.socket.send(JSON.stringify({ op: 0, ...frame }));
  }

  private onSocket(socket: WebSocket): void {
    socket.send(JSON.stringify({ op: 10, d: { heartbeat_interval: this.options.heartbeatIntervalMs } }));
    socket.on('message', (raw) => {
      let frame: { op: number; d: Json };
      try {
        frame = JSON.parse(String(raw)) as { op: number; d: Json };
      } catch {
        socket.close(4002, 'Decode error');
        return;
      }
      this.frames.push({ ...frame, at: Date.now() });
      this.onFrame(socket, frame);
      this.world.activity();
    });
    socket.on('close', (code) => {
      for (const [key, session] of this.sessions) {
        if (session.socket !== socket) continue;
        session.socket = undefined;
        // A client closing with 1000/1001 ends its session (Discord: not resumable); discord.js's destroy() does.
        if (code === 1000 || code === 1001) this.sessions.delete(key);
      }
    });
  }

  private onFrame(socket: WebSocket, frame: { op: number; d: Json }): void {
    switch (frame.op) {
      case 1:
        socket.send(JSON.stringify({ op: 11 }));
        return;
      case 2:
        return this.onIdentify(socket, frame.d);
      case 6:
        return this.onResume(socket, frame.d);
      default:
        return; // presence updates, voice state, request guild members: ignored
    }
  }

  private onIdentify(socket: WebSocket, d: Json): void {
    if (d.token !== this.options.token) return socket.close(4004, 'Authentication failed.');
    const intents = Number(d.intents);
    if (intents & MESSAGE_CONTENT && !this.options.messageContentAllowed) {
      return socket.close(4014, 'Disallowed intent(s).');
    }
    const [id = 0, count = 1] = Array.isArray(d.shard) ? (d.shard as unknown[]).map(Number) : [];
    if (!(Number.isInteger(id) && Number.isInteger(count) && count >= 1 && id >= 0 && id < count)) return socket.close(4010, 'Invalid shard.');
    const shard: Shard = [id, count];
    const guildIds = this.world.guildIds().filter((g) => shardOf(g, shard[1]) === shard[0]);
    if (guildIds.length > this.options.maxGuildsPerShard) return socket.close(4011, 'Sharding required.');
    const key = `${shard[0]}/${shard[1]}`;
    const old = this.sessions.get(key)?.socket;
    if (old && old !== socket) old.terminate();
    const session: Session = { id: snowflake(), shard, seq: 0, intents, buffer: [], socket };
    this.sessions.set(key, session);
    this.send(session, 'READY', this.world.ready(session.id, shard, guildIds));
    for (const guildId of guildIds) this.send(session, 'GUILD_CREATE', this.world.guild(guildId));
  }

  private onResume(socket: WebSocket, d: Json): void {
    const session = [...this.sessions.values()].find((s) => s.id === d.session_id);
    if (!this.options.resumable || !session || d.token !== this.options.token) {
      socket.send(JSON.stringify({ op: 9, d: false }));
      return;
    }
    session.socket = socket;
    const after = Number(d.seq ?? 0);
    for (const frame of session.buffer) if (frame.s > after) socket.send(JSON.stringify({ op: 0, ...frame }));
    this.send(session, 'RESUMED', {});
  }
}
