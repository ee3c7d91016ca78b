// What a Slack user sees when Slack's reply to one of the listeners' calls is lost (the connection closed after Slack
// carried the call out) or is a 5xx: real @slack/bolt in Socket Mode against the fake Slack, the real core on Redis,
// no worker (jobs stay queued). Each call is one the user waits on: the status message a job is posted under, the
// settings window a trigger opens once, a private hint, the usage chart sent by DM, an answer through response_url (the
// fake's `response_url` faults). The delivery of results is in port.redis.test.ts.
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACTION, SHORTCUT_ASK } from '../../../../bots/slack/blocks.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';
import { SIGNING_SECRET, startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { postEvent } from '../../../fakes/slack/signed-sender.ts';
import { appMention, blockAction, eventCallback, messageShortcut, slashCommand } from '../../../fakes/slack/payloads.ts';
import type { RecordedCall } from '../../../fakes/slack/server.ts';

let h: SlackHarness;
let png: Uint8Array;
let logged: LogLine[];
let users = 0;
let channels = 0;
/** The channel of the running test: each test has its own. */
let CHANNEL = 'C0LOST';

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  const captured = capturedLog('info');
  logged = captured.lines;
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000, log: captured.log });
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#a84' } }).png().toBuffer());
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0L${String(++channels).padStart(4, '0')}`;
});

function newUser(): string {
  const id = `U0L${String(++users).padStart(4, '0')}`;
  h.fake.addUser(id);
  return id;
}

const settle = () => new Promise((r) => setTimeout(r, 400));
const statusMessagesOf = (jobId: string, channel = CHANNEL) => h.fake.botMessages(channel).filter((m) => m.metadata?.event_type === 'blip3o_status' && m.metadata.event_payload.job_id === jobId);
const responses = (responseUrl: string): string[] => h.fake.calls.filter((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)).map((c) => String(c.args.text));
const ephemeralsTo = (user: string): RecordedCall[] => h.fake.apiCalls('chat.postEphemeral').filter((c) => c.args.user === user && c.status === 200);
const queued = (jobId: string) => until(async () => (await h.core.queue.getJob(jobId)) ?? undefined, 10_000, `job ${jobId}`);

describe('the status message a job is posted under', () => {
  it('/imagine whose status message was posted but its reply lost: one status message, and it shows the place in line (none left at "Queued")', async () => {
    const user = newUser();
    h.fake.inject({ method: 'chat.postMessage', lostReply: true });
    const payload = slashCommand(h.fake, { text: 'a lost lantern --seed 3', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const jobId = jobIdFor('slack', `cmd:${payload.trigger_id}`);
    const job = await queued(jobId);
    await h.fake.waitFor(() => statusMessagesOf(jobId).find((m) => /in line/.test(m.text)), 10_000, 'the place in line');
    await settle();
    const status = statusMessagesOf(jobId);
    expect(status.map((m) => m.text)).toEqual([expect.stringMatching(/^Queued: \d+(st|nd|rd|th) in line/)]);
    expect(job.data.destination).toMatchObject({ statusMessageTs: status[0]!.ts });
    expect(responses(payload.response_url)).toEqual([]); // nothing went wrong, as far as the user can tell
  });

  it('a mention whose status message in the thread was posted but its reply lost: one status message under the question', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'lost.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is it?`, files: [file] });
    h.fake.inject({ method: 'chat.postMessage', lostReply: true });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
    const jobId = jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
    const job = await queued(jobId);
    await h.fake.waitFor(() => statusMessagesOf(jobId).find((x) => /in line/.test(x.text)), 10_000, 'the place in line');
    await settle();
    const status = statusMessagesOf(jobId);
    expect(status).toHaveLength(1);
    expect(status[0]!.thread_ts).toBe(m.ts);
    expect(job.data.destination).toMatchObject({ statusMessageTs: status[0]!.ts, threadTs: m.ts });
  });
});

describe('a window a trigger opens once (views.open)', () => {
  it('/blip3o-settings whose window opened but the reply was lost: the window is open, and the user is told nothing went wrong', async () => {
    const user = newUser();
    const linesBefore = logged.length;
    h.fake.inject({ method: 'views.open', lostReply: true });
    const payload = slashCommand(h.fake, { command: '/blip3o-settings', text: '', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    await h.fake.waitFor(() => h.fake.apiCalls('views.open').filter((c) => c.args.trigger_id === payload.trigger_id).length >= 2 || undefined, 10_000, 'the retry');
    await settle();
    expect(h.fake.apiCalls('views.open').filter((c) => c.args.trigger_id === payload.trigger_id).map((c) => c.status)).toEqual([200, 200]); // opened, then refused (exchanged_trigger_id)
    expect(responses(payload.response_url)).toEqual([]);
    expect(logged.slice(linesBefore).map((l) => l.msg)).toContain('views.open was refused as already done (exchanged_trigger_id): an earlier try, whose reply was lost, opened the window');
  });

  it('"Ask about this image" whose window Slack could not open (5xx until the trigger expired): the user is told, not left with nothing', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'ask.png', 'image/png');
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'a picture', files: [file] });
    h.fake.inject({ method: 'views.open', httpStatus: 500, times: 4 }); // the harness's client tries 4 times
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', messageShortcut(h.fake, { user, message, callbackId: SHORTCUT_ASK })));
    const told = await h.fake.waitFor(() => ephemeralsTo(user)[0], 10_000, 'a word to the user');
    expect(told.args).toMatchObject({ channel: CHANNEL, user, text: expect.stringMatching(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/) });
  });
});

describe('a private hint (chat.postEphemeral)', () => {
  it('a hint posted but its reply lost is shown once', async () => {
    const user = newUser();
    const bare = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is this?` });
    const linesBefore = logged.length;
    h.fake.inject({ method: 'chat.postEphemeral', lostReply: true });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, bare))));
    await h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.user === user), 10_000, 'the hint');
    await settle();
    // the fake records a lost reply's call with its status: each recorded call is one ephemeral the user sees
    const shown = h.fake.apiCalls('chat.postEphemeral').filter((c) => c.args.user === user);
    expect(shown.map((c) => c.args.text)).toEqual(['Ask me about an image: mention me in a message with an image attached, or in the thread of a message with one.']);
    expect(logged.slice(linesBefore).filter((l) => l.msg === 'slack handler failed')).toEqual([]); // no "Something went wrong" either
  });
});

describe('a hint said once per event (onceFor)', () => {
  const HINT = 'Ask me about an image: mention me in a message with an image attached, or in the thread of a message with one.';

  it('the same mention delivered again: its hint is not shown again, and the repeat is logged as already told', async () => {
    const user = newUser();
    const bare = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is this, again?` });
    const linesBefore = logged.length;
    for (let i = 0; i < 2; i++) {
      await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, bare))));
      await h.fake.waitFor(() => ephemeralsTo(user)[0], 10_000, 'the hint');
      await settle();
    }
    expect(ephemeralsTo(user).map((c) => c.args.text)).toEqual([HINT]);
    expect(logged.slice(linesBefore).filter((l) => l.msg === 'duplicate delivery: already told')).toEqual([
      expect.objectContaining({ dedupeKey: `msg:${CHANNEL}:${bare.ts}` }),
    ]);
  });

  it('a hint Slack refused is not taken as told: the failure is logged, and the event delivered again shows the hint', async () => {
    const user = newUser();
    const bare = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and this?` });
    const linesBefore = logged.length;
    h.fake.inject({ method: 'chat.postEphemeral', error: 'fatal_error' });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, bare))));
    await h.fake.waitFor(() => logged.slice(linesBefore).find((l) => l.msg === 'slack handler failed'), 10_000, 'the failure');
    await settle();
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, bare))));
    await h.fake.waitFor(() => ephemeralsTo(user).find((c) => c.args.text === HINT), 10_000, 'the hint, on the event delivered again');
  });
});

describe('the usage chart sent by DM (files.uploadV2 from a listener)', () => {
  it('/blip3o-admin usage whose chart was shared but the reply to files.completeUploadExternal lost: one chart in the DM, and the report says it is there', async () => {
    const admin = newUser();
    h.fake.addUser(admin, { isAdmin: true });
    h.fake.inject({ method: 'files.completeUploadExternal', lostReply: true });
    const payload = slashCommand(h.fake, { command: '/blip3o-admin', text: 'usage 2', channel: CHANNEL, user: admin });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const told = await h.fake.waitFor(() => responses(payload.response_url)[0], 10_000, 'the report');
    await settle();
    const charts = h.fake.botMessages(`D${admin}`).filter((m) => m.files?.some((f) => f.name === 'usage-2d.png'));
    expect(charts).toHaveLength(1);
    expect(told).toMatch(/\n\(The chart is in your direct messages with me\.\)$/);
  });
});

describe('a private answer through response_url (respond)', () => {
  const admin = () => {
    const id = newUser();
    h.fake.addUser(id, { isAdmin: true });
    return id;
  };

  it('an answer shown but its reply lost: shown once, and no "Something went wrong" after it', async () => {
    const user = admin();
    const linesBefore = logged.length;
    h.fake.inject({ method: 'response_url', lostReply: true });
    const payload = slashCommand(h.fake, { command: '/blip3o-admin', text: 'queue', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    await h.fake.waitFor(() => responses(payload.response_url)[0], 10_000, 'the answer');
    await settle();
    expect(responses(payload.response_url)).toEqual([expect.stringMatching(/^Queue: \d+ running/)]);
    expect(ephemeralsTo(user)).toEqual([]);
    expect(logged.slice(linesBefore).filter((l) => l.msg === 'slack handler failed')).toEqual([]);
    expect(logged.slice(linesBefore).filter((l) => l.msg === 'the reply to a response_url post was lost: taken as shown, not sent again')).toEqual([
      expect.objectContaining({ level: 40, channel: CHANNEL, user, err: expect.any(String) }),
    ]);
  });

  it('an answer Slack refused with a 5xx: the answer is shown (as a private message), not "Something went wrong" in its place', async () => {
    const user = admin();
    h.fake.inject({ method: 'response_url', httpStatus: 500 });
    const payload = slashCommand(h.fake, { command: '/blip3o-admin', text: 'queue', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && payload.response_url.endsWith(c.method)), 10_000, 'the answer');
    await settle();
    const shown = [
      ...h.fake.calls.filter((c) => c.kind === 'response_url' && payload.response_url.endsWith(c.method) && c.status === 200),
      ...ephemeralsTo(user),
    ].map((c) => String(c.args.text));
    expect(shown).toEqual([expect.stringMatching(/^Queue: \d+ running/)]);
  });

  it('a button\'s answer Slack refused with a 5xx is said privately under the message pressed (its thread)', async () => {
    const owner = newUser();
    const payload = slashCommand(h.fake, { text: 'a kite nobody else may cancel --seed 4', channel: CHANNEL, user: owner });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const jobId = jobIdFor('slack', `cmd:${payload.trigger_id}`);
    await queued(jobId);
    const status = await h.fake.waitFor(() => statusMessagesOf(jobId)[0], 10_000, 'the status message');
    const other = newUser();
    h.fake.inject({ method: 'response_url', httpStatus: 500 });
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: other, message: status, actionId: ACTION.cancel, value: jobId })));
    const told = await h.fake.waitFor(() => ephemeralsTo(other)[0], 10_000, 'the answer');
    expect(told.args).toMatchObject({ channel: CHANNEL, user: other, thread_ts: status.ts, text: 'Only the person who started a job (or an admin) can cancel it.' });
  });

  it('private results on, the "in our direct messages" notice\'s reply lost: the job is queued and its DM status message shows its place (not left at "Queued")', async () => {
    const user = newUser();
    await h.core.settings.set('user', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user }, { private: true });
    h.fake.inject({ method: 'response_url', lostReply: true });
    const payload = slashCommand(h.fake, { text: 'a private lantern --seed 5', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const jobId = jobIdFor('slack', `cmd:${payload.trigger_id}`);
    await h.fake.waitFor(() => responses(payload.response_url)[0], 10_000, 'the DM notice');
    await settle();
    expect(await h.core.queue.getJob(jobId)).toBeDefined();
    await h.fake.waitFor(() => statusMessagesOf(jobId, `D${user}`).find((m) => /in line/.test(m.text)), 10_000, 'the place in line');
    expect(responses(payload.response_url)).toEqual(['Private results are on here: I am working on it in our direct messages.']);
  });
});

describe('an event whose ack Slack never received (Slack delivers it again)', () => {
  let r: SlackHarness;
  let http: SlackHarness;
  beforeAll(async () => {
    r = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 1_000 });
    http = await startSlackHarness({ mode: 'http', worker: false });
  }, 60_000);
  afterAll(async () => Promise.all([r?.stop(), http?.stop()]), 30_000);
  const user = () => {
    const id = `U0R${String(++users).padStart(4, '0')}`;
    r.fake.addUser(id);
    return id;
  };

  it('Socket Mode: a mention with an image, its ack lost, is redelivered (retry_attempt 1) and makes one job and one status message', async () => {
    const u = user();
    const m = r.fake.postUserMessage({ channel: CHANNEL, user: u, text: `<@${r.fake.botUserId}> what is it?`, files: [r.fake.seedFile(png, 'r.png', 'image/png')] });
    r.fake.link.loseAcks(1);
    const env = r.fake.sendEnvelope('events_api', eventCallback(r.fake, appMention(r.fake, m)));
    await r.fake.waitFor(() => env.ackedAt, 10_000, 'the redelivery\'s ack');
    expect(env.retryAttempt).toBe(1);
    const jobId = jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
    await until(async () => (await r.core.queue.getJob(jobId)) ?? undefined, 10_000, 'the job');
    await settle();
    expect(r.fake.botMessages(CHANNEL).filter((x) => x.metadata?.event_payload.job_id === jobId)).toHaveLength(1);
    expect(Object.values(await r.core.queue.getJobCounts()).reduce((a, b) => a + b, 0)).toBe(1);
  }, 20_000);

  it('Socket Mode: a mention without an image, its ack lost, has its hint shown once', async () => {
    const u = user();
    const m = r.fake.postUserMessage({ channel: CHANNEL, user: u, text: `<@${r.fake.botUserId}> what is this?` });
    r.fake.link.loseAcks(1);
    const env = r.fake.sendEnvelope('events_api', eventCallback(r.fake, appMention(r.fake, m)));
    await r.fake.waitFor(() => env.ackedAt, 10_000, 'the redelivery\'s ack');
    await settle();
    expect(r.fake.apiCalls('chat.postEphemeral').filter((c) => c.args.user === u).map((c) => c.args.text)).toEqual([
      'Ask me about an image: mention me in a message with an image attached, or in the thread of a message with one.',
    ]);
  }, 20_000);

  it('HTTP mode: a mention without an image whose 200 Slack never got, sent again with X-Slack-Retry-Num 1, has its hint shown once', async () => {
    http.fake.addUser('U0HTTPR');
    const m = http.fake.postUserMessage({ channel: CHANNEL, user: 'U0HTTPR', text: `<@${http.fake.botUserId}> what is this?` });
    const body = eventCallback(http.fake, appMention(http.fake, m));
    expect((await postEvent(http.adapter.eventsUrl!, body, { signingSecret: SIGNING_SECRET })).status).toBe(200); // answered; Slack did not get it
    expect((await postEvent(http.adapter.eventsUrl!, body, { signingSecret: SIGNING_SECRET, retryNum: 1 })).status).toBe(200);
    await http.fake.waitFor(() => http.fake.apiCalls('chat.postEphemeral')[0], 10_000, 'the hint');
    await settle();
    expect(http.fake.apiCalls('chat.postEphemeral').filter((c) => c.args.user === 'U0HTTPR')).toHaveLength(1);
  }, 20_000);
});
