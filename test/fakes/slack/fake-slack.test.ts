// The fake Slack against the real @slack/bolt App (no bot code): if these pass, the fake speaks the protocol the
// library expects, so adapter tests that fail point at the adapter, not the fake.
import { App, LogLevel, SocketModeReceiver } from '@slack/bolt';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeSlack } from './server.ts';
import { appMention, eventCallback, slashCommand } from './payloads.ts';
import { postEvent, postSlashCommand } from './signed-sender.ts';

const quiet = { logLevel: LogLevel.ERROR };
const fastRetries = { retries: 2, factor: 1, minTimeout: 10, maxTimeout: 10 };

describe('fake Slack with real Bolt in Socket Mode', () => {
  let fake: FakeSlack;
  let app: App;
  beforeEach(async () => {
    fake = new FakeSlack({ ackWindowMs: 1000 });
    await fake.start();
    const clientOptions = { slackApiUrl: fake.apiUrl, retryConfig: fastRetries };
    // An explicit receiver takes its own clientOptions (App copies them only into a receiver it builds);
    // a short clientPingTimeout makes reconnects (clientPingTimeout × failures) quick.
    const receiver = new SocketModeReceiver({ appToken: fake.appToken, clientPingTimeout: 300, installerOptions: { clientOptions }, ...quiet });
    app = new App({ token: fake.botToken, receiver, clientOptions, ...quiet });
  });
  afterEach(async () => {
    await app.stop();
    await fake.stop();
  });

  it('connects, delivers a slash command and collects its ack payload', async () => {
    app.command('/imagine', async ({ ack, command }) => ack({ response_type: 'ephemeral', text: `got ${command.text}` }));
    await app.start();
    expect(fake.apiCalls('auth.test')[0]?.token).toBe(fake.botToken);
    expect(fake.apiCalls('apps.connections.open')[0]?.token).toBe(fake.appToken);
    const env = fake.sendEnvelope('slash_commands', slashCommand(fake, { text: 'a fox', channel: 'C1', user: 'U1' }));
    expect(await fake.link.ack(env)).toEqual({ response_type: 'ephemeral', text: 'got a fox' });
  });

  it('flags an envelope acked after the window', async () => {
    app.command('/imagine', async ({ ack }) => {
      await new Promise((r) => setTimeout(r, 1300));
      await ack();
    });
    await app.start();
    const env = fake.sendEnvelope('slash_commands', slashCommand(fake, { text: 'slow', channel: 'C1', user: 'U1' }));
    await expect(fake.link.ack(env)).rejects.toThrow(/not acked within 1000 ms/);
    await fake.waitFor(() => env.ackedAt !== undefined, 3000, 'the late ack'); // let the listener finish before stop
    expect(env.late).toBe(true);
  });

  it('redelivers an unacked event after a disconnect with retry_attempt 1', async () => {
    const seen: { retryNum?: number; text: string }[] = [];
    app.event('app_mention', async ({ event, context }) => {
      seen.push({ retryNum: context.retryNum, text: event.text });
    });
    await app.start();
    fake.link.drop();
    const msg = fake.postUserMessage({ channel: 'C1', user: 'U1', text: `<@${fake.botUserId}> hi` });
    const env = fake.sendEnvelope('events_api', eventCallback(fake, appMention(fake, msg))); // no link: queued
    await fake.link.waitForConnections(2);
    await fake.link.ack(env);
    await fake.waitFor(() => seen.length === 1, 5000, 'the mention');
    expect(seen[0]).toEqual({ retryNum: 1, text: `<@${fake.botUserId}> hi` });
    expect(env.sends).toBe(1);

    fake.link.disconnect('refresh_requested');
    await fake.link.waitForConnections(3);
    const after = fake.sendEnvelope('events_api', eventCallback(fake, appMention(fake, msg)));
    await fake.link.ack(after); // the new link works (and the client is ready before stop)
  });

  it('redelivers an event whose ack was lost once its ack window passed, with retry_attempt 1 and retry_reason timeout', async () => {
    const seen: { retryNum?: number; retryReason?: string }[] = [];
    app.event('app_mention', async ({ context }) => void seen.push({ retryNum: context.retryNum, retryReason: context.retryReason }));
    await app.start();
    const msg = fake.postUserMessage({ channel: 'C1', user: 'U1', text: `<@${fake.botUserId}> hi` });
    fake.link.loseAcks(1);
    const env = fake.sendEnvelope('events_api', eventCallback(fake, appMention(fake, msg)));
    await fake.waitFor(() => env.ackedAt, 5000, 'the redelivery\'s ack');
    expect(seen).toEqual([{ retryNum: 0, retryReason: '' }, { retryNum: 1, retryReason: 'timeout' }]);
    expect(env).toMatchObject({ sends: 2, retryAttempt: 1, extraAcks: 0 });
  });

  it('answers Web API calls, honours 429 Retry-After, and surfaces ok:false codes', async () => {
    await app.start();
    fake.inject({ method: 'chat.postMessage', retryAfterSec: 1 });
    const started = Date.now();
    const posted = await app.client.chat.postMessage({ channel: 'C1', text: 'hello' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(fake.apiCalls('chat.postMessage').map((c) => c.status)).toEqual([429, 200]);
    expect(fake.store.find('C1', String(posted.ts))?.text).toBe('hello');

    fake.inject({ method: 'chat.update', error: 'cant_update_message' });
    await expect(app.client.chat.update({ channel: 'C1', ts: String(posted.ts), text: 'x' })).rejects.toMatchObject({ data: { error: 'cant_update_message' } });
  });

  it('uploads a file with files.uploadV2 into a thread and serves url_private only with the bot token', async () => {
    await app.start();
    const parent = await app.client.chat.postMessage({ channel: 'C1', text: 'parent' });
    const bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
    await app.client.filesUploadV2({ channel_id: 'C1', thread_ts: String(parent.ts), file: bytes, filename: 'out.png', alt_text: 'a fox' });
    const [reply] = fake.store.thread('C1', String(parent.ts)).slice(1);
    const file = reply?.files?.[0];
    expect(file).toMatchObject({ name: 'out.png', mimetype: 'image/png', altText: 'a fox', size: bytes.length });

    const authed = await fetch(file!.url_private, { headers: { authorization: `Bearer ${fake.botToken}` } });
    expect(Buffer.from(await authed.arrayBuffer())).toEqual(bytes);
    const anonymous = await fetch(file!.url_private, { redirect: 'manual' });
    expect(anonymous.status).toBe(302);
    const followed = await fetch(file!.url_private);
    expect(followed.headers.get('content-type')).toMatch(/text\/html/);
  });
});

describe('fake Slack signed sender with real Bolt in HTTP mode', () => {
  const signingSecret = 'fake-signing-secret';
  let fake: FakeSlack;
  let app: App;
  let url: string;
  beforeEach(async () => {
    fake = new FakeSlack();
    await fake.start();
    app = new App({ token: fake.botToken, signingSecret, clientOptions: { slackApiUrl: fake.apiUrl }, ...quiet });
    app.command('/imagine', async ({ ack }) => ack({ response_type: 'ephemeral', text: 'on it' }));
    const server = (await app.start({ port: 0, host: '127.0.0.1' })) as Server;
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/slack/events`;
  });
  afterEach(async () => {
    await app.stop();
    await fake.stop();
  });

  it('a correctly signed slash command gets the ack as its 200 body; forged and stale ones get 401', async () => {
    const fields = slashCommand(fake, { text: 'a fox', channel: 'C1', user: 'U1' });
    const ok = await postSlashCommand(url, fields, { signingSecret });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toEqual({ response_type: 'ephemeral', text: 'on it' });
    expect((await postSlashCommand(url, fields, { signingSecret: 'wrong-secret' })).status).toBe(401);
    expect((await postSlashCommand(url, fields, { signingSecret, timestamp: Math.floor(Date.now() / 1000) - 6 * 60 })).status).toBe(401);
  });

  it('respond() reaches response_url without auth, at most five times', async () => {
    const fields = slashCommand(fake, { text: 'x', channel: 'C1', user: 'U1' });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await fetch(fields.response_url, { method: 'POST', body: JSON.stringify({ text: `m${i}` }) })).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 404]);
    expect(fake.calls.filter((c) => c.kind === 'response_url').every((c) => c.headers.authorization === undefined)).toBe(true);
  });

  it('answers url_verification with the challenge', async () => {
    const res = await postEvent(url, { token: 't', challenge: 'chal123', type: 'url_verification' }, { signingSecret });
    expect(JSON.parse(res.body)).toEqual({ challenge: 'chal123' });
  });
});
