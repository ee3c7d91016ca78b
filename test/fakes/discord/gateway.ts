// The fake Discord's gateway (platform-fakes.md A2): HELLO, heartbeat ACKs, IDENTIFY (token and intents; 4014
// when the "portal" refuses MessageContent), READY + GUILD_CREATE, and RESUME that replays the dispatches the
// client missed. One session at a time (one shard), text JSON frames only.
import type { WebSocket, WebSocketServer } from 'ws';
import { snowflake } from './snowflake.ts';

type Json = Record<string, unknown>;

export const MESSAGE_CONTENT = 1 << 15;
/** Dispatches kept for replay on RESUME. */
const REPLAY_BUFFER = 500;

export interface GatewayOptions {
  token: string;
  heartbeatIntervalMs: number;
  messageContentAllowed: boolean;
  resumable: boolean;
}

/** What the gateway needs from the rest of the fake. */
export interface GatewayWorld {
  /** READY's `d`, given the new session id. */
  ready(sessionId: string): Json;
  /** GUILD_CREATE's `d`. */
  guild(): Json;
  /** Called after every client frame (wakes `waitFor`). */
  activity(): void;
}

interface Session {
  id: string;
  seq: number;
  intents: number;
  buffer: { s: number; t: string; d: unknown }[];
  socket: WebSocket | undefined;
}

export class FakeGateway {
  /** Every frame the client sent ({op, d}), in order. */
  readonly frames: { op: number; d: unknown }[] = [];
  private session: Session | undefined;

  constructor(
    wss: WebSocketServer,
    private readonly options: GatewayOptions,
    private readonly world: GatewayWorld,
  ) {
    wss.on('connection', (socket) => this.onSocket(socket));
  }

  /** Send a dispatch (op 0) with the next sequence number; buffered for replay while the socket is down. */
  dispatch(t: string, d: unknown): void {
    const session = this.session;
    if (!session) throw new Error('no gateway session: has the client logged in?');
    const frame = { s: ++session.seq, t, d };
    session.buffer.push(frame);
    if (session.buffer.length > REPLAY_BUFFER) session.buffer.shift();
    if (session.socket?.readyState === 1) session.socket.send(JSON.stringify({ op: 0, ...frame }));
  }

  /** Close the socket with `code`; the client resumes (1000, 4000–4009 except 4004). */
  drop(code: number): void {
    this.session?.socket?.close(code, 'dropped by test');
  }

  /**
   * Forget the session (a RESUME is answered op 9, invalid session) and close its socket with `code`: the client
   * identifies again, which the current token and intents decide.
   */
  endSession(code: number): void {
    const socket = this.session?.socket;
    this.session = undefined;
    socket?.close(code, 'session ended by test');
  }

  /** Whether a client has identified (dispatches go to its session, or are replayed to it on resume). */
  get hasSession(): boolean {
    return this.session !== undefined;
  }

  get connected(): boolean {
    return this.session?.socket?.readyState === 1;
  }

  /** The intents the current session identified with. */
  get intents(): number {
    return this.session?.intents ?? 0;
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
      this.frames.push(frame);
      this.onFrame(socket, frame);
      this.world.activity();
    });
    socket.on('close', () => {
      if (this.session?.socket === socket) this.session.socket = undefined;
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
    if (this.session?.socket && this.session.socket !== socket) this.session.socket.terminate();
    this.session = { id: snowflake(), seq: 0, intents, buffer: [], socket };
    this.dispatch('READY', this.world.ready(this.session.id));
    this.dispatch('GUILD_CREATE', this.world.guild());
  }

  private onResume(socket: WebSocket, d: Json): void {
    const session = this.session;
    if (!this.options.resumable || !session || d.session_id !== session.id || d.token !== this.options.token) {
      socket.send(JSON.stringify({ op: 9, d: false }));
      return;
    }
    session.socket = socket;
    const after = Number(d.seq ?? 0);
    for (const frame of session.buffer) if (frame.s > after) socket.send(JSON.stringify({ op: 0, ...frame }));
    this.dispatch('RESUMED', {});
  }
}
