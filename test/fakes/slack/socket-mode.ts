// Fake Socket Mode link (/work/shared/docs/platform-fakes.md B1): hello on connect, envelopes out, acks in,
// a 3 s ack window enforced here (Bolt does not time out acks itself), `disconnect` messages and abrupt drops.
// Like Slack, an events_api envelope that was never acked is redelivered with retry_attempt + 1: once its ack window
// has passed (retry_reason "timeout"; Slack's Events API retries up to 3 times, nearly at once, then after 1 and 5
// minutes: here each one window after the last), and once a link is up again; slash commands and interactive payloads
// are not redelivered (Slack shows the user an error instead). loseAcks() makes acks go missing on the way to Slack.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

export type EnvelopeType = 'slash_commands' | 'events_api' | 'interactive';

export interface SentEnvelope {
  envelopeId: string;
  type: EnvelopeType;
  payload: Record<string, unknown>;
  retryAttempt: number;
  sentAt: number;
  /** How many times this envelope went out (first send + redeliveries). */
  sends: number;
  ackedAt?: number;
  ackPayload?: unknown;
  /** Acks that arrived after the first (a correct client sends exactly one). */
  extraAcks: number;
  /** The ack came later than the window (or never, once the window passed). */
  late: boolean;
}

export interface SocketModeOptions {
  /** @defaultValue 3000 */
  ackWindowMs?: number;
}

/** Slack's Events API retries an unacknowledged event at most this many times. */
export const EVENT_RETRIES = 3;

export class SocketModeLink {
  readonly envelopes: SentEnvelope[] = [];
  /** Every connection made (one per apps.connections.open that was used). */
  connections = 0;
  private readonly wss = new WebSocketServer({ noServer: true });
  private readonly sockets = new Set<WebSocket>();
  private readonly ackWindowMs: number;
  private readonly tickets = new Set<string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly waiters = new Set<() => void>();
  /** Acks still to be lost on the way (loseAcks). */
  private acksToLose = 0;

  constructor(options: SocketModeOptions = {}) {
    this.ackWindowMs = options.ackWindowMs ?? 3000;
  }

  /** A one-use ticket for apps.connections.open's URL. */
  issueTicket(): string {
    const ticket = randomUUID();
    this.tickets.add(ticket);
    return ticket;
  }

  get connected(): boolean {
    return [...this.sockets].some((s) => s.readyState === s.OPEN);
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const ticket = url.searchParams.get('ticket') ?? '';
    if (url.pathname !== '/link/' || !this.tickets.delete(ticket)) {
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws));
  }

  private onConnection(ws: WebSocket): void {
    this.connections += 1;
    this.sockets.add(ws);
    ws.on('close', () => this.sockets.delete(ws));
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      this.onAck(JSON.parse(String(data)) as { envelope_id?: string; payload?: unknown });
    });
    ws.send(
      JSON.stringify({
        type: 'hello',
        num_connections: this.sockets.size,
        debug_info: { host: 'fake-slack', build_number: 1, approximate_connection_time: 3600 },
        connection_info: { app_id: 'A0FAKE' },
      }),
    );
    // Redeliver events that were never acked (Slack retries events_api deliveries).
    for (const env of this.envelopes) {
      if (env.type === 'events_api' && env.ackedAt === undefined) this.transmit(env, env.retryAttempt + 1, 'timeout');
    }
    this.notify();
  }

  /** The next `n` acks the client sends never reach Slack (a link that drops them): their envelopes stay unacked. */
  loseAcks(n = 1): void {
    this.acksToLose += n;
  }

  private onAck(message: { envelope_id?: string; payload?: unknown }): void {
    const env = this.envelopes.find((e) => e.envelopeId === message.envelope_id);
    if (!env) return;
    if (this.acksToLose > 0) {
      this.acksToLose -= 1;
      return;
    }
    if (env.ackedAt !== undefined) {
      env.extraAcks += 1;
      return;
    }
    env.ackedAt = Date.now();
    env.ackPayload = message.payload;
    if (env.ackedAt - env.sentAt > this.ackWindowMs) env.late = true;
    this.notify();
  }

  /** Send an envelope to the connected client; resolves with its ack payload (rejects past the ack window). */
  send(type: EnvelopeType, payload: Record<string, unknown>): SentEnvelope {
    const env: SentEnvelope = {
      envelopeId: `env-${randomUUID()}`,
      type,
      payload,
      retryAttempt: 0,
      sentAt: Date.now(),
      sends: 0,
      extraAcks: 0,
      late: false,
    };
    this.envelopes.push(env);
    if (this.connected) this.transmit(env, 0, '');
    return env;
  }

  private transmit(env: SentEnvelope, retryAttempt: number, retryReason: string): void {
    const ws = [...this.sockets].find((s) => s.readyState === s.OPEN);
    if (!ws) return;
    env.retryAttempt = retryAttempt;
    env.sends += 1;
    // Each transmission opens a fresh ack window (a redelivery is a new chance to ack).
    env.sentAt = Date.now();
    env.late = false;
    const sendNumber = env.sends;
    ws.send(
      JSON.stringify({
        envelope_id: env.envelopeId,
        type: env.type,
        accepts_response_payload: env.type !== 'events_api',
        ...(env.type === 'events_api' ? { retry_attempt: retryAttempt, retry_reason: retryReason } : {}),
        payload: env.payload,
      }),
    );
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (env.ackedAt === undefined && env.sends === sendNumber) {
        env.late = true;
        this.notify();
        if (env.type === 'events_api' && env.retryAttempt < EVENT_RETRIES) this.transmit(env, env.retryAttempt + 1, 'timeout');
      }
    }, this.ackWindowMs);
    this.timers.add(timer);
  }

  /** Resolves once the envelope is acked (or rejects when the ack window passes without one). */
  async ack(env: SentEnvelope): Promise<unknown> {
    await this.until(() => env.ackedAt !== undefined || env.late, this.ackWindowMs + 1000);
    if (env.ackedAt === undefined || env.late) throw new Error(`envelope ${env.envelopeId} (${env.type}) was not acked within ${this.ackWindowMs} ms`);
    return env.ackPayload;
  }

  /** Ask the client to reconnect, as Slack does before it rotates a link. */
  disconnect(reason: 'refresh_requested' | 'warning' | 'link_disabled' = 'refresh_requested'): void {
    for (const ws of this.sockets) ws.send(JSON.stringify({ type: 'disconnect', reason, debug_info: { host: 'fake-slack' } }));
  }

  /** Cut every connection without a goodbye (network fault). */
  drop(): void {
    for (const ws of this.sockets) ws.terminate();
  }

  async waitForConnections(n: number, timeoutMs = 10_000): Promise<void> {
    await this.until(() => this.connections >= n && this.connected, timeoutMs);
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private until(cond: () => boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (cond()) return resolve();
      const check = () => {
        if (!cond()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        cond() ? resolve() : reject(new Error(`socket mode: condition not met within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const ws of this.sockets) ws.terminate();
    this.wss.close();
  }
}
