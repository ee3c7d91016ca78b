// SLACK_API_URL steers the whole adapter (Web API and the Socket Mode handshake) to another Slack, here the fake;
// missing secrets fail at start-up with a config error that names the variable; in HTTP mode Bolt verifies every
// request with SLACK_SIGNING_SECRET on /slack/events; a token Slack refuses is a config error naming the variable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSlackAdapter, refusedToken, type SlackAdapter, type SlackTuning } from '../../../../bots/slack/adapter.ts';
import type { Core } from '../../../../bots/core/submit.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { CONTRACT_VERSION } from '../../../../src/jobs/contract.ts';
import { createLogger } from '../../../../src/log.ts';
import { capturedLog } from '../../../doubles/core-harness.ts';
import { freePort } from '../../../doubles/free-port.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { FakeSlack } from '../../../fakes/slack/server.ts';
import { postEvent } from '../../../fakes/slack/signed-sender.ts';
import { eventCallback } from '../../../fakes/slack/payloads.ts';

let fake: FakeSlack;
beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
});
afterAll(() => fake.stop());

const log = createLogger('test', 'silent');

/**
 * For a test with a fake Slack of its own (revoking changes its tokens): `adapter()` makes an adapter with the fake's
 * tokens as they are now, whose onFatal calls (`fatal`) and log lines (`lines`, info and up) are kept.
 */
function watched(own: FakeSlack, tuning: SlackTuning = {}) {
  const captured = capturedLog('info');
  const fatal: Error[] = [];
  const config = loadConfig({ env: { SLACK_API_URL: own.apiUrl } });
  const adapter = () =>
    createSlackAdapter(
      { config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: own.botToken, SLACK_APP_TOKEN: own.appToken }, log: captured.log, onFatal: (e) => void fatal.push(e) },
      { retryConfig: { retries: 0 }, ...tuning },
    );
  return { adapter, fatal, lines: captured.lines };
}
/** start() needs a core to exist; nothing reaches it before an event arrives. */
const NO_CORE = { redis: {}, queue: {} } as unknown as Core;

describe('createSlackAdapter', () => {
  it('connects through SLACK_API_URL in Socket Mode', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    expect(config.slack.mode).toBe('socket');
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'redis://unused', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken }, log });
    // Nothing reaches the core before an event arrives; start() only needs it to exist.
    await adapter.start({ redis: {}, queue: {} } as unknown as Core);
    try {
      expect(fake.apiCalls('auth.test').at(-1)?.token).toBe(fake.botToken);
      expect(fake.apiCalls('apps.connections.open').at(-1)?.token).toBe(fake.appToken);
      expect(fake.link.connected).toBe(true);
    } finally {
      await adapter.stop();
    }
  });

  it('names the missing secret for the configured mode', async () => {
    const socket = loadConfig({ env: {} });
    await expect(createSlackAdapter({ config: socket, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-1' }, log })).rejects.toThrow(
      'SLACK_APP_TOKEN is not set; Socket Mode (slack.mode: socket) needs an xapp- token with connections:write (see config/.env.example)',
    );
    // HTTP mode's secret set, slack.mode left at socket: said how to get there (before: only the app token, in a restart loop)
    await expect(createSlackAdapter({ config: socket, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-1', SLACK_SIGNING_SECRET: 's' }, log })).rejects.toThrow(
      'SLACK_APP_TOKEN is not set; Socket Mode (slack.mode: socket) needs an xapp- token with connections:write; or, since SLACK_SIGNING_SECRET is set, run in HTTP mode: set slack.mode: http in config/local.yaml (see config/.env.example)',
    );
    const http = loadConfig({ env: {}, overrides: { slack: { mode: 'http' } } });
    await expect(createSlackAdapter({ config: http, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-1' }, log })).rejects.toThrow(
      'SLACK_SIGNING_SECRET is not set; HTTP mode verifies every request with the signing secret (see config/.env.example)',
    );
    await expect(createSlackAdapter({ config: http, secrets: { REDIS_URL: 'x' }, log })).rejects.toThrow(
      'SLACK_BOT_TOKEN is not set; the Slack bot needs its xoxb- token (see config/.env.example)',
    );
    await expect(createSlackAdapter({ config: http, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-1', SLACK_SIGNING_SECRET: '' }, log })).rejects.toMatchObject({ code: 'config' });
  });

  it('in HTTP mode, answers /slack/events only for requests signed with SLACK_SIGNING_SECRET', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl }, overrides: { slack: { mode: 'http', httpPort: await freePort() }, http: { host: '127.0.0.1' } } });
    const signingSecret = 'the-signing-secret';
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'redis://unused', SLACK_BOT_TOKEN: fake.botToken, SLACK_SIGNING_SECRET: signingSecret }, log });
    expect(adapter.eventsUrl).toBeUndefined();
    await adapter.start({ redis: {}, queue: {} } as unknown as Core);
    try {
      const url = adapter.eventsUrl!;
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/slack\/events$/);
      const challenge = { token: 't', challenge: 'chal-42', type: 'url_verification' };
      const ok = await postEvent(url, challenge, { signingSecret });
      expect(ok.status).toBe(200);
      expect(JSON.parse(ok.body)).toEqual({ challenge: 'chal-42' });
      expect((await postEvent(url, challenge, { signingSecret: 'not-the-secret' })).status).toBe(401);
      expect((await postEvent(url, challenge, { signingSecret: '' })).status).toBe(401);
      expect((await postEvent(url.replace('/slack/events', '/'), challenge, { signingSecret })).status).toBe(404); // one endpoint only
    } finally {
      await adapter.stop();
    }
  });

  it('names the variable when Slack refuses the bot token or the app token', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    const badBot = await createSlackAdapter({ config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-revoked', SLACK_APP_TOKEN: fake.appToken }, log }, { retryConfig: { retries: 0 } });
    const botError = await badBot.start({ redis: {}, queue: {} } as unknown as Core).then(() => undefined, (e: unknown) => e);
    expect(botError).toMatchObject({ code: 'config' });
    expect((botError as Error).message).toMatch(/^Slack refused SLACK_BOT_TOKEN \(invalid_auth\)\. Set SLACK_BOT_TOKEN to the bot token/);
    const badApp = await createSlackAdapter({ config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: 'xapp-revoked' }, log }, { retryConfig: { retries: 0 } });
    const appError = await badApp.start({ redis: {}, queue: {} } as unknown as Core).then(() => undefined, (e: unknown) => e);
    await badApp.stop().catch(() => undefined);
    expect(appError).toMatchObject({ code: 'config' });
    expect((appError as Error).message).toMatch(/^Slack refused SLACK_APP_TOKEN \(invalid_auth\)\. Set SLACK_APP_TOKEN to an app-level token/);
  });

  it('Socket Mode reconnects Slack refuses (the app token revoked) go to onFatal naming SLACK_APP_TOKEN, not an unhandled rejection; other failures are tried again', async () => {
    const own = new FakeSlack(); // revoking changes its token
    await own.start();
    const { adapter: make, fatal, lines } = watched(own, { clientPingTimeoutMs: 100 });
    const adapter = await make();
    try {
      await adapter.start(NO_CORE);
      expect(adapter.connected()).toBe(true);
      const opened = () => own.apiCalls('apps.connections.open').length;
      // Slack's apps.connections.open answers 500 twice (the client gives up on an HTTP error): tried again, connected
      own.inject({ method: 'apps.connections.open', httpStatus: 500, times: 2 });
      own.link.disconnect('refresh_requested');
      await until(async () => (opened() === 4 && own.link.connected ? true : undefined), 10_000, 'connected again');
      const retried = lines.filter((l) => l.msg === 'reconnecting to Slack failed; trying again');
      expect(retried.map((l) => l.waitMs)).toEqual([100, 200]); // doubling from the ping timeout
      expect(retried[0]!.err).toMatch(/500/);
      expect(fatal).toEqual([]);
      await until(async () => adapter.connected() === true || undefined, 5_000, 'ready again');

      own.revokeAppToken();
      await until(async () => (fatal.length > 0 ? true : undefined), 10_000, 'onFatal');
      expect(fatal.map((e) => e.message)).toEqual([
        "Slack refused SLACK_APP_TOKEN (invalid_auth). Set SLACK_APP_TOKEN to an app-level token (xapp-…) with the connections:write scope, from your Slack app's Basic Information page (see config/.env.example), or set slack.enabled: false.",
      ]);
      expect(lines.filter((l) => l.msg === 'reconnecting to Slack failed')).toEqual([expect.objectContaining({ level: 60, err: fatal[0]!.message })]);
      const tries = opened();
      await new Promise((r) => setTimeout(r, 500));
      expect(opened()).toBe(tries); // not tried again
      expect(adapter.connected()).toBe('the Slack Socket Mode connection is down');
    } finally {
      await adapter.stop();
      await own.stop();
    }
  });

  it('the app uninstalled while the bot runs: Slack\'s events go to onFatal once, naming SLACK_BOT_TOKEN; a user\'s token revoked does not', async () => {
    const own = new FakeSlack(); // uninstalling revokes its token
    await own.start();
    const { adapter: make, fatal, lines } = watched(own);
    const adapter = await make();
    try {
      await adapter.start(NO_CORE);
      // Another user's tokens revoked (a person who authorized the app): not the bot's
      const other = own.link.send('events_api', eventCallback(own, { type: 'tokens_revoked', tokens: { oauth: ['U0SOMEONE'] } }));
      await own.link.ack(other);
      expect(fatal).toEqual([]);
      own.uninstall();
      await until(async () => (fatal.length > 0 ? true : undefined), 5_000, 'onFatal');
      await new Promise((r) => setTimeout(r, 300)); // the second event (tokens_revoked) arrives too
      expect(fatal.map((e) => e.message)).toEqual([
        "Slack refused SLACK_BOT_TOKEN (app_uninstalled). Set SLACK_BOT_TOKEN to the bot token (xoxb-…) from your Slack app's OAuth & Permissions page, app installed in the workspace (after reinstalling the app if it was uninstalled) (see config/.env.example), or set slack.enabled: false.",
      ]);
      expect(fatal[0]).toMatchObject({ code: 'config' });
      expect(lines.filter((l) => l.level === 60)).toEqual([expect.objectContaining({ code: 'app_uninstalled', err: fatal[0]!.message, msg: 'Slack uninstalled the app from the workspace' })]);
    } finally {
      await adapter.stop();
    }
    // Only the bot token revoked (the app stays installed): tokens_revoked alone
    own.reinstall();
    fatal.length = 0;
    const again = await make();
    try {
      await again.start(NO_CORE);
      await own.link.ack(own.link.send('events_api', eventCallback(own, { type: 'tokens_revoked', tokens: { bot: [own.botUserId] } })));
      await until(async () => (fatal.length > 0 ? true : undefined), 5_000, 'onFatal');
      expect(fatal.map((e) => e.message)).toEqual([expect.stringMatching(/^Slack refused SLACK_BOT_TOKEN \(tokens_revoked\)\. Set SLACK_BOT_TOKEN to the bot token/)]);
      expect(lines.filter((l) => l.level === 60).at(-1)).toEqual(expect.objectContaining({ code: 'tokens_revoked', msg: 'Slack revoked the bot token' }));
    } finally {
      await again.stop();
      await own.stop();
    }
  });

  it('the bot token refused on a Web API call while the bot runs (no event: a manifest without them) goes to onFatal once; not at start, and not after stop', async () => {
    const own = new FakeSlack();
    await own.start();
    const { adapter: make, fatal, lines } = watched(own);
    const names = (a: SlackAdapter) => a.port.displayNames({ platform: 'slack', teamId: own.teamId, channelId: 'C1', userId: 'U1' }, { channels: ['C1'], users: ['U1'] });
    const adapter = await make();
    try {
      await adapter.start(NO_CORE);
      await names(adapter); // answered: nothing refused
      own.uninstall({ events: false });
      await names(adapter).catch(() => undefined);
      await names(adapter).catch(() => undefined);
      expect(fatal.map((e) => e.message)).toEqual([expect.stringMatching(/^Slack refused SLACK_BOT_TOKEN \(token_revoked\)\. Set SLACK_BOT_TOKEN to the bot token/)]);
      expect(lines.filter((l) => l.level === 60)).toEqual([expect.objectContaining({ code: 'token_revoked', msg: 'Slack refused the bot token' })]);
    } finally {
      await adapter.stop();
    }
    // Refused at start: start's own error, not onFatal; and nothing once stopped.
    await expect((await make()).start(NO_CORE)).rejects.toThrow(/^Slack refused SLACK_BOT_TOKEN \(token_revoked\)/);
    own.reinstall();
    const stopped = await make();
    await stopped.start(NO_CORE);
    await stopped.stop();
    own.uninstall({ events: false });
    await names(stopped).catch(() => undefined);
    expect(fatal).toHaveLength(1);
    await own.stop();
  });

  it('a reconnect waiting to be tried again after a failure is not tried once the adapter stopped', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken }, log }, { clientPingTimeoutMs: 200, retryConfig: { retries: 0 } });
    await adapter.start({ redis: {}, queue: {} } as unknown as Core);
    const opened = () => fake.apiCalls('apps.connections.open').length;
    const before = opened();
    fake.inject({ method: 'apps.connections.open', httpStatus: 500 });
    fake.link.disconnect('refresh_requested');
    await until(async () => opened() > before || undefined, 5_000, 'the failed reconnect');
    await adapter.stop(); // the next try was 200 ms away
    await new Promise((r) => setTimeout(r, 800));
    expect(opened()).toBe(before + 1);
  });

  it('treats each of Slack\'s "wrong token" answers as a config error, and passes other failures on unchanged', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    const secrets = { REDIS_URL: 'x', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken };
    const startWith = async (error: string) => {
      fake.inject({ method: 'auth.test', error });
      const adapter = await createSlackAdapter({ config, secrets, log }, { retryConfig: { retries: 0 } });
      return adapter.start({ redis: {}, queue: {} } as unknown as Core).then(() => undefined, (e: unknown) => e as Error & { code?: string });
    };
    for (const code of ['invalid_auth', 'not_authed', 'account_inactive', 'token_revoked', 'token_expired', 'not_allowed_token_type', 'invalid_token']) {
      const e = await startWith(code);
      expect(e?.message).toContain(`Slack refused SLACK_BOT_TOKEN (${code}).`);
      expect(e?.code).toBe('config');
    }
    const other = await startWith('fatal_error');
    expect(other?.message).toMatch(/fatal_error/);
    expect(other?.message).not.toMatch(/Slack refused/);
  });

  it('passes its Web API retry policy to the client (a test asks for none: the first 500 fails start)', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    fake.inject({ method: 'auth.test', httpStatus: 500 });
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken }, log }, { retryConfig: { retries: 0 } });
    const before = fake.apiCalls('auth.test').length;
    await expect(adapter.start({ redis: {}, queue: {} } as unknown as Core)).rejects.toThrow(/500/);
    expect(fake.apiCalls('auth.test').length - before).toBe(1);
  });

  it('posts results through a client that does not send a post again whose reply was lost: the delivery fails, and its retry finds the post', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: fake.botToken, SLACK_APP_TOKEN: fake.appToken }, log }, { retryConfig: { retries: 2, minTimeout: 10, maxTimeout: 10 } });
    const parent = fake.postUserMessage({ channel: 'C0LOST', user: 'U1', text: 'what is this?' });
    const destination = { platform: 'slack' as const, teamId: fake.teamId, channelId: 'C0LOST', userId: 'U1', threadTs: parent.ts };
    const result = { v: CONTRACT_VERSION, jobId: 'lost-answer', destination, kind: 'ask' as const, status: 'succeeded' as const, answer: { text: 'A fox.', tokenCount: 2 }, timingsMs: {}, finishedAt: 1 };
    const answers = () => fake.botMessages('C0LOST').filter((m) => m.metadata?.event_payload.job_id === 'lost-answer');
    fake.inject({ method: 'chat.postMessage', lostReply: true });
    const failed = await adapter.port.deliver(result, undefined).then(() => undefined, (e: unknown) => e);
    expect(answers()).toHaveLength(1); // before: 2, the adapter's client had posted it again
    expect(failed).toMatchObject({ code: 'slack_webapi_request_error' });
    await adapter.port.deliver(result, undefined); // the core's retry (without a core, every delivery counts as a repeat)
    expect(answers()).toHaveLength(1);
  });

  it('keeps Slack\'s own error as the cause of the config error', async () => {
    const config = loadConfig({ env: { SLACK_API_URL: fake.apiUrl } });
    const adapter = await createSlackAdapter({ config, secrets: { REDIS_URL: 'x', SLACK_BOT_TOKEN: 'xoxb-revoked', SLACK_APP_TOKEN: fake.appToken }, log }, { retryConfig: { retries: 0 } });
    const e = await adapter.start({ redis: {}, queue: {} } as unknown as Core).then(() => undefined, (x: unknown) => x as Error);
    expect((e?.cause as { data?: { error?: string } } | undefined)?.data?.error).toBe('invalid_auth');
  });

  it('reads Slack\'s code from the error data, or from the message when a client leaves the data out', () => {
    const asConfig = (e: unknown) => refusedToken(e, 'SLACK_APP_TOKEN', 'an app token') as Error & { code?: string };
    const fromMessage = new Error('An API error occurred: token_revoked');
    expect(asConfig(fromMessage)).toMatchObject({ code: 'config', message: 'Slack refused SLACK_APP_TOKEN (token_revoked). Set SLACK_APP_TOKEN to an app token (see config/.env.example), or set slack.enabled: false.' });
    expect(asConfig(fromMessage).cause).toBe(fromMessage);
    expect(asConfig({ data: { error: 'not_authed' }, message: 'An API error occurred: invalid_auth' }).message).toContain('(not_authed)');
    const other = new Error('An API error occurred: channel_not_found');
    expect(asConfig(other)).toBe(other);
    const numeric = { data: { error: 42 } };
    expect(asConfig(numeric)).toBe(numeric);
    expect(asConfig({})).toEqual({});
  });
});

