// The Slack adapter: a real @slack/bolt App in Socket Mode (default: no public URL needed) or HTTP mode
// (Bolt's HTTPReceiver verifies X-Slack-Signature and refuses timestamps older than five minutes), pointed at
// `slack.apiUrl` (env SLACK_API_URL) so the same build runs against test/fakes/slack. Both the Web API client
// and the Socket Mode client use that URL (an explicit receiver needs its own copy of clientOptions).
import { App, HTTPReceiver, LogLevel, SocketModeReceiver, webApi, type Receiver } from '@slack/bolt';
import type { Logger as BoltLogger } from '@slack/logger';
import type { AppsConnectionsOpenResponse, FetchFunction, WebClientOptions } from '@slack/web-api';
import { QueueKeys } from 'bullmq';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config, Secrets } from '../../src/config/schema.ts';
import { AppError } from '../../src/errors.ts';
import { isNoLog, QueueNames } from '../../src/jobs/contract.ts';
import { DeliveryLedger } from '../../src/jobs/ledger.ts';
import type { Logger } from '../../src/log.ts';
import type { Adapter, AdapterDeps } from '../core/adapter.ts';
import type { Core } from '../core/submit.ts';
import { DownloadFailed, downloadSlackFile } from './download.ts';
import { registerHandlers } from './handlers.ts';
import { postedAtMostOnce, SlackPort, type JobTitle } from './port.ts';

/** Knobs that are not settings: tests shorten reconnect and retry waits with them. */
export interface SlackTuning {
  /** Socket Mode ping timeout; reconnects wait this × consecutive failures. @defaultValue 5000 (library default) */
  clientPingTimeoutMs?: number;
  /** Web API retry policy (p-retry options). @defaultValue the library's ten retries in about thirty minutes */
  retryConfig?: WebClientOptions['retryConfig'];
}

export interface SlackAdapter extends Adapter {
  readonly port: SlackPort;
  /** HTTP mode: where Bolt listens, once started (http://host:port/slack/events). */
  readonly eventsUrl: string | undefined;
  /** How many jobs' titles this process holds in memory (the headlines of status messages it may still edit). */
  readonly titlesKept: number;
  /**
   * Forget the titles of jobs this process will not deliver (the sweep it runs every TITLE_SWEEP_MS once started);
   * resolves to how many it forgot.
   */
  sweepTitles(): Promise<number>;
}

/** How often the adapter looks for titles it holds of jobs delivered elsewhere or gone (sweepTitles). */
const TITLE_SWEEP_MS = 60_000;

/**
 * Bolt, socket-mode and web-api log through pino, at the level pino is set to, without their payloads: at debug they
 * print every request body, API result and received envelope ("http request body: {…prompt…}"), which carry what
 * users typed and were answered. A line keeps its words up to the first JSON bracket.
 */
function boltLogger(log: Logger): BoltLogger {
  let level = LogLevel.INFO;
  const text = (msg: unknown[]) => withoutPayload(msg.map((m) => (m instanceof Error ? m.message : typeof m === 'string' ? m : JSON.stringify(m))).join(' '));
  return {
    debug: (...msg: unknown[]) => log.debug(text(msg)),
    info: (...msg: unknown[]) => log.info(text(msg)),
    warn: (...msg: unknown[]) => log.warn(text(msg)),
    error: (...msg: unknown[]) => log.error(text(msg)),
    setLevel: (l: LogLevel) => void (level = l),
    getLevel: () => level,
    setName: () => undefined,
  };
}

export function withoutPayload(line: string): string {
  const at = line.search(/[{[]/);
  return at < 0 ? line : `${line.slice(0, at).trimEnd()} (payload not logged)`;
}

function required(secrets: Readonly<Secrets>, name: 'SLACK_BOT_TOKEN' | 'SLACK_APP_TOKEN' | 'SLACK_SIGNING_SECRET', why: string): string {
  const value = secrets[name];
  if (!value) throw new AppError('config', `${name} is not set; ${why} (see config/.env.example)`);
  return value;
}

const REFUSED = new Set(['invalid_auth', 'not_authed', 'account_inactive', 'token_revoked', 'token_expired', 'not_allowed_token_type', 'invalid_token']);

/** Slack's "this token is wrong" answers → a config error naming the variable and what to put there; others unchanged. */
export function refusedToken(e: unknown, variable: string, what: string): unknown {
  // Stryker disable next-line StringLiteral: equivalent, any text without "An API error occurred" matches as little as ''
  const code = (e as { data?: { error?: unknown } }).data?.error ?? /An API error occurred: (\w+)/.exec((e as Error).message ?? '')?.[1];
  if (!REFUSED.has(code as string)) return e; // a code that is no string is in no set of strings
  return refusal(code as string, variable, what, e);
}

const refusal = (code: string, variable: string, what: string, cause?: unknown): AppError =>
  new AppError('config', `Slack refused ${variable} (${code}). Set ${variable} to ${what} (see config/.env.example), or set slack.enabled: false.`, { cause });

const BOT_TOKEN_HELP = 'the bot token (xoxb-…) from your Slack app\'s OAuth & Permissions page, app installed in the workspace';

/**
 * A fetch for the Web API clients (the app's, and those Bolt makes per event) that notices Slack refusing the bot
 * token on any call: the app uninstalled from the workspace, its tokens revoked, the token regenerated. Every call
 * after that fails the same way, so every result waiting would spend its delivery attempts and be dropped; `refused`
 * ends the process instead (the results wait in Redis for a bot with a working token). Calls with other tokens (the
 * app-level token's apps.connections.open) are superviseReconnects' business.
 */
export function noticingRefusedBotToken(token: string, refused: (code: string) => void): FetchFunction {
  return async (url, init) => {
    const response = await fetch(url, init as RequestInit);
    if (init?.headers?.Authorization === `Bearer ${token}`) {
      const body = (await response.clone().json().catch(() => undefined)) as { ok?: unknown; error?: unknown } | undefined; // not JSON (an upload's "OK"): nothing to see
      if (body?.ok === false && REFUSED.has(body.error as string)) refused(body.error as string);
    }
    return response;
  };
}

const APP_TOKEN_HELP = 'an app-level token (xapp-…) with the connections:write scope, from your Slack app\'s Basic Information page';

/** Longest wait between two tries to reconnect Socket Mode after a failure Slack's client gives up on. */
const RECONNECT_MAX_MS = 60_000;

/**
 * Socket Mode reconnects (a dropped socket, Slack's `disconnect` messages) by calling its client's own start() from a
 * timer, and a failure there is a promise nobody awaits: a revoked app token (invalid_auth), and a network error or an
 * HTTP error on apps.connections.open, which it does not retry, end the process with an unhandled rejection and a
 * stack. Once connected, the client's start() is wrapped: a refused token goes to `onFatal` naming SLACK_APP_TOKEN;
 * any other failure is logged and tried again, waiting longer each time.
 */
function superviseReconnects(receiver: SocketModeReceiver, log: Logger, onFatal: (error: Error) => void, firstWaitMs: number, stopped: () => boolean): void {
  const socket = receiver.client;
  const start = socket.start.bind(socket);
  let failures = 0;
  const reconnect = (): Promise<AppsConnectionsOpenResponse> =>
    start().then(
      (opened) => ((failures = 0), opened),
      async (e: unknown) => {
        const refused = refusedToken(e, 'SLACK_APP_TOKEN', APP_TOKEN_HELP);
        if (refused !== e) {
          log.fatal({ err: (refused as Error).message }, 'reconnecting to Slack failed');
          onFatal(refused as Error);
          // Stryker disable next-line BooleanLiteral: equivalent, what start() resolves to goes nowhere (the reconnect timer's own promise)
          return { ok: false };
        }
        const waitMs = Math.min(RECONNECT_MAX_MS, firstWaitMs * 2 ** failures++);
        log.warn({ err: (e as Error).message, waitMs }, 'reconnecting to Slack failed; trying again');
        await new Promise((r) => setTimeout(r, waitMs).unref());
        // Stryker disable next-line BooleanLiteral: equivalent, as above
        return stopped() ? { ok: false } : reconnect();
      },
    );
  socket.start = reconnect;
}

export async function createSlackAdapter(deps: AdapterDeps, tuning: SlackTuning = {}): Promise<SlackAdapter> {
  const { config, secrets } = deps;
  const log = deps.log; // bots/main.ts hands over a child logger with platform: 'slack'
  const s = config.slack;
  const token = required(secrets, 'SLACK_BOT_TOKEN', 'the Slack bot needs its xoxb- token');
  const logger = boltLogger(log);
  let running = false; // start() got past auth.test
  let stopped = false;
  let revoked = false;
  /** Slack took the bot token back while the bot ran (at start, start() says so instead): once, to onFatal. */
  const botTokenRevoked = (code: string, why: string) => {
    if (!running || stopped || revoked) return;
    revoked = true;
    const error = refusal(code, 'SLACK_BOT_TOKEN', `${BOT_TOKEN_HELP} (after reinstalling the app if it was uninstalled)`);
    log.fatal({ code, err: error.message }, why);
    deps.onFatal?.(error);
  };
  const clientOptions: WebClientOptions = {
    slackApiUrl: s.apiUrl,
    fetch: noticingRefusedBotToken(token, (code) => botTokenRevoked(code, 'Slack refused the bot token')),
    ...(tuning.retryConfig ? { retryConfig: tuning.retryConfig } : {}),
  };

  let receiver: Receiver;
  if (s.mode === 'socket') {
    // An operator who set up HTTP mode's signing secret but not slack.mode heard only about the app token, in a restart loop
    const http = secrets.SLACK_SIGNING_SECRET ? '; or, since SLACK_SIGNING_SECRET is set, run in HTTP mode: set slack.mode: http in config/local.yaml' : '';
    const appToken = required(secrets, 'SLACK_APP_TOKEN', `Socket Mode (slack.mode: socket) needs an xapp- token with connections:write${http}`);
    receiver = new SocketModeReceiver({ appToken, logger, clientPingTimeout: tuning.clientPingTimeoutMs, installerOptions: { clientOptions } });
  } else {
    const signingSecret = required(secrets, 'SLACK_SIGNING_SECRET', 'HTTP mode verifies every request with the signing secret');
    receiver = new HTTPReceiver({ signingSecret, logger, endpoints: '/slack/events' });
  }
  // The Web API client of the port and of start()'s auth.test. Bolt's App is made in start(), once auth.test has named
  // the bot: given its botId and botUserId, Bolt asks Slack nothing per event. (Made here without them, and without
  // token verification, it called auth.test before every command, mention and click reached a listener: a Web API
  // round trip before each ack, and one more call against Slack's rate limits.)
  const client = new webApi.WebClient(token, { ...clientOptions, logger });
  let app: App | undefined; // made by start()
  // Progress edits: no waiting out a 429 and no retries (SlackPort: a late edit would land on the result)
  const progressClient = new webApi.WebClient(token, { ...clientOptions, logger, rejectRateLimitedCalls: true, retryConfig: { retries: 0 } });
  // Posts: the same retries, except for a post Slack may have carried out (SlackPort: the delivery's retry looks first)
  const postClient = new webApi.WebClient(token, { ...clientOptions, logger, retryConfig: postedAtMostOnce(tuning.retryConfig ?? webApi.retryPolicies.tenRetriesInAboutThirtyMinutes) });
  const port = new SlackPort(client, config, log, progressClient, postClient);
  const titles = new Map<string, JobTitle>();
  let eventsUrl: string | undefined;
  let core: Core | undefined;
  // Socket Mode: between Slack's hello and the socket's close. HTTP mode: Slack calls in, nothing to be connected to.
  let socketUp = false;
  if (receiver instanceof SocketModeReceiver) {
    receiver.client.on('connected', () => void (socketUp = true));
    receiver.client.on('close', () => void (socketUp = false));
  }

  /**
   * The prompt or question of a job: from this process's memory, else from the job itself in Redis. Held only from a
   * job's start here until its result is delivered here (SlackPort.deliver), no job came of the request (handlers.ts
   * startJob), or a sweep finds it delivered elsewhere or gone (sweepTitles). One read from Redis is not kept: a job
   * another instance started, or one re-rolled or varied, which nothing here would ever forget (until 2026-12-08
   * every title stayed for the life of the process: test/unit/bots/slack/titles-memory.redis.test.ts).
   */
  async function titleOf(jobId: string): Promise<JobTitle | undefined> {
    const known = titles.get(jobId);
    if (known !== undefined) return known;
    const data = await core?.requestOf(jobId);
    if (!data) return undefined;
    return data.kind === 'ask' ? { kind: 'ask', text: data.question } : { kind: 'imagine', text: data.prompt };
  }

  const deliveryKeys = new QueueKeys(config.queue.prefix);
  /** Titles whose jobs the last sweep found gone: forgotten if the next one finds them gone too. */
  let goneBefore = new Set<string>();
  let sweeping: Promise<number> | undefined;
  let sweepTimer: NodeJS.Timeout | undefined;

  /**
   * Only the instance that posts a result forgets its title (SlackPort.deliver): with several bot instances on one
   * Redis any of them takes a delivery, and a delivery that failed for good is posted by none, so such titles stayed
   * for the life of the process. Forgotten here: a job delivered, by any instance; a job gone (removed, or past its
   * keep time), with no result waiting in the delivery queue and no request served without a job (cache hit, joined
   * flight: Core.requestOf). Gone only at the second sweep in a row that finds it so: the first may fall between the
   * title's set and its job's add (handlers.ts startJob). A job waiting, running or with its result waiting keeps its
   * title: a retried delivery shows the same headline, which a read from Redis would lose ("Variation of …").
   */
  async function sweepTitles(): Promise<number> {
    const c = core;
    // Stryker disable next-line ConditionalExpression,BlockStatement: equivalent, no title is held before start() sets core
    if (!c) return 0;
    const ids = [...titles.keys()];
    const delivered = await new DeliveryLedger(c.redis, config).deliveredAmong(ids);
    const rest = ids.filter((id) => !delivered.has(id));
    // One round trip; the jobs and delivery queues' keys share the prefix, and so its Cluster hash slot
    const pipeline = c.redis.pipeline();
    for (const id of rest) pipeline.exists(c.queue.toKey(id), deliveryKeys.toKey(QueueNames.delivery('slack'), id));
    const found = (await pipeline.exec()) ?? [];
    const gone = new Set<string>();
    await Promise.all(
      rest.map(async (id, i) => {
        const [error, exists] = found[i] ?? [];
        if (error) throw error;
        if (exists === 0 && (await c.requestOf(id)) === undefined) gone.add(id);
      }),
    );
    const forget = [...delivered, ...[...gone].filter((id) => goneBefore.has(id))];
    goneBefore = gone;
    for (const id of forget) titles.delete(id);
    return forget.length;
  }
  /** One sweep at a time: a timer's tick while one runs (Redis slow) joins it. */
  const sweep = (): Promise<number> => (sweeping ??= sweepTitles().finally(() => (sweeping = undefined)));

  return {
    port,
    get eventsUrl() {
      return eventsUrl;
    },
    get titlesKept() {
      return titles.size;
    },
    sweepTitles: sweep,
    coreOptions: {
      fetchImage: async (ref, destination) => {
        if (!ref.url) throw new AppError('internal', 'fetchImage called without a url');
        const image = await downloadSlackFile(
          { url: ref.url, name: ref.name, mimetype: ref.contentType, size: ref.sizeBytes },
          { token, allowedHosts: s.downloadHosts, maxBytes: s.maxFileBytes },
        ).catch((e: unknown) => {
          // the user is told to try again; the operator reads why (and where, unless the channel keeps no logs)
          if (e instanceof DownloadFailed) log.warn({ err: e.detail, ...(isNoLog(config, destination) ? {} : { url: e.url }) }, 'a Slack file download failed');
          throw e;
        });
        return image.bytes;
      },
    },

    async start(started: Core): Promise<void> {
      core = started;
      port.attach({ redis: started.redis, titleOf, forgetTitle: (jobId) => void titles.delete(jobId) });
      const auth = await client.auth.test().catch((e: unknown) => {
        throw refusedToken(e, 'SLACK_BOT_TOKEN', BOT_TOKEN_HELP);
      });
      // Stryker disable next-line StringLiteral: Slack's auth.test names both for every bot token (the fake too)
      if (!auth.user_id || !auth.bot_id) throw new AppError('platform', 'auth.test did not return the bot\'s user and bot ids');
      running = true; // a refusal from now on is a revocation (before: start's own error)
      // Given the ids, Bolt verifies nothing itself (without them, and with token verification on, it called auth.test
      // from its constructor and left a refused token as an unhandled rejection: a crash with a stack).
      const bolt = new App({ token, botId: auth.bot_id, botUserId: auth.user_id, receiver, clientOptions, logger });
      app = bolt;
      registerHandlers({ app: bolt, core: started, port, config, botUserId: auth.user_id, log, titles, titleOf });
      // Slack's word that the app is gone from the workspace (bots/slack/manifest.yaml subscribes to both): the bot
      // token is dead even before a call says so.
      bolt.event('app_uninstalled', async () => botTokenRevoked('app_uninstalled', 'Slack uninstalled the app from the workspace'));
      bolt.event('tokens_revoked', async ({ event }) => {
        if (event.tokens.bot?.includes(auth.user_id!)) botTokenRevoked('tokens_revoked', 'Slack revoked the bot token');
      });
      bolt.error(async (e) => void log.error({ err: e.message, code: e.code }, 'bolt error'));
      if (s.mode === 'socket') {
        await bolt.start().catch((e: unknown) => {
          throw refusedToken(e, 'SLACK_APP_TOKEN', APP_TOKEN_HELP);
        });
        superviseReconnects(receiver as SocketModeReceiver, log, deps.onFatal ?? (() => undefined), tuning.clientPingTimeoutMs ?? 5_000, () => stopped);
        log.info('connected to Slack (Socket Mode)');
      } else {
        const server = (await bolt.start({ port: s.httpPort, host: config.http.host })) as Server;
        const address = server.address() as AddressInfo;
        const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
        eventsUrl = `http://${host}:${address.port}/slack/events`;
        log.info({ eventsUrl }, 'listening for Slack requests (HTTP mode)');
      }
      sweepTimer = setInterval(() => {
        // Stryker disable next-line ConditionalExpression: equivalent, sweepTitles returns at once for an empty map
        if (titles.size === 0) return;
        // Redis unreachable: its connection logs that, and the next sweep tries again (a title kept longer costs nothing)
        sweep().catch((e: unknown) => log.debug({ err: (e as Error).message }, 'sweeping Slack titles failed'));
      }, TITLE_SWEEP_MS).unref();
    },

    async stop(): Promise<void> {
      stopped = true;
      clearInterval(sweepTimer);
      await app?.stop();
    },

    connected(): true | string {
      if (s.mode === 'http') return eventsUrl !== undefined || 'not listening for Slack requests yet';
      return socketUp || 'the Slack Socket Mode connection is down';
    },
  };
}
