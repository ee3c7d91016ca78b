// The Slack listeners (bots/slack/handlers.ts) without a worker: real @slack/bolt in Socket Mode against the fake
// Slack, the real core on Redis. What each command, event, shortcut, modal and button posts, who is told what, and
// the request each one queues (jobs stay queued: no worker takes them). The end-to-end paths with a worker are in
// test/integration/slack*.redis.test.ts; these are fast enough for the `handlers` mutation group.
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACTION, SHORTCUT_ASK, SHORTCUT_DESCRIBE, VARY_ACTION } from '../../../../bots/slack/blocks.ts';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { appMention, blockAction, eventCallback, messageShortcut, slashCommand, viewSubmission } from '../../../fakes/slack/payloads.ts';
import type { RecordedCall } from '../../../fakes/slack/server.ts';
import type { FakeMessage } from '../../../fakes/slack/store.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const ADMIN = 'U0HADMIN';
let h: SlackHarness;
let png: Uint8Array;
let users = 0;
/** The bot's log lines (info and up), parsed. */
let logged: LogLine[];
let channels = 0;
/** The channel of the running test: each test has its own (limits count per channel; no worker empties the queue). */
let CHANNEL = 'C0HANDLERS';

/** A harness that fails to start, or never does, fails every test (a skipped one reads as a survivor to Stryker). */
const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  const captured = capturedLog('info');
  logged = captured.lines;
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000, log: captured.log });
  h.fake.addUser(ADMIN, { isAdmin: true });
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#4a8' } }).png().toBuffer());
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0H${String(++channels).padStart(4, '0')}`;
});

/** A fresh user per test: the adapter caches who is an admin, and limits count per user. */
function newUser(): string {
  const id = `U0H${String(++users).padStart(4, '0')}`;
  h.fake.addUser(id);
  return id;
}

/** A slash command as Slack sends it; resolves to its ack payload and the fields it was sent with. */
async function command(text: string, user: string, name = '/imagine', channel = CHANNEL) {
  const payload = slashCommand(h.fake, { command: name, text, channel, user });
  const ack = (await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload))) as { response_type?: string; text?: string } | undefined;
  return { payload, ack, jobId: jobIdFor('slack', `cmd:${payload.trigger_id}`) };
}

const mention = async (m: FakeMessage, extra: Record<string, unknown> = {}) =>
  h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, { ...appMention(h.fake, m), ...extra })));
const interactive = async (payload: Record<string, unknown>) => h.fake.link.ack(h.fake.sendEnvelope('interactive', payload));

/** What response_url was told for this command (its ephemeral answers), in order. */
const responses = (responseUrl: string): string[] =>
  h.fake.calls.filter((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)).map((c) => String(c.args.text));
const toldVia = (responseUrl: string, what: string) => h.fake.waitFor(() => responses(responseUrl)[0], 10_000, what);
const ephemeralsTo = (user: string): RecordedCall[] => h.fake.apiCalls('chat.postEphemeral').filter((c) => c.args.user === user);
const statusOf = (jobId: string, channel = CHANNEL) => h.fake.botMessages(channel).find((m) => m.metadata?.event_type === 'blip3o_status' && m.metadata.event_payload.job_id === jobId);
const request = async (jobId: string): Promise<JobRequest | undefined> => (await h.core.queue.getJob(jobId))?.data as JobRequest | undefined;
const queued = (jobId: string) => until(() => request(jobId), 10_000, `job ${jobId}`);
const settle = () => new Promise((r) => setTimeout(r, 300));
/** The first section's text of a message (a status message's first line is its headline). */
const headlineOf = (m: FakeMessage | undefined): string => String((m?.blocks?.[0] as { text?: { text?: string } } | undefined)?.text?.text ?? '').split('\n')[0]!;
const loggedAs = (msg: string) => logged.filter((l) => l.msg === msg);

describe('/imagine', () => {
  it('posts the status message first, queues the job with it as the destination, then shows the place in line', async () => {
    const user = newUser();
    const { payload, ack, jobId } = await command('a quiet lake --seed 4', user);
    expect(ack?.text).toBeUndefined(); // a plain ack: the answer is the status message
    const job = await queued(jobId);
    const status = statusOf(jobId)!;
    expect(status.thread_ts).toBeUndefined(); // top level: it becomes the job's thread
    expect(job).toMatchObject({ kind: 'imagine', prompt: 'a quiet lake', options: { seed: 4 } });
    expect(job.destination).toEqual({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user, threadTs: status.ts, statusMessageTs: status.ts, responseUrl: payload.response_url });
    expect(status.blocks).toEqual(expect.arrayContaining([expect.objectContaining({ block_id: 'status' })]));
    await h.fake.waitFor(() => (/Queued: \d+(st|nd|rd|th) in line/.test(h.fake.store.find(CHANNEL, status.ts)?.text ?? '') ? true : undefined), 10_000, 'the place in line');
    // no worker in this file: the core says so after the place in line
    expect(h.fake.store.find(CHANNEL, status.ts)?.text).toMatch(/^Queued: \d+(st|nd|rd|th) in line\. No GPU worker is running right now; your request starts as soon as one is\.$/);
    expect(headlineOf(h.fake.store.find(CHANNEL, status.ts))).toBe(':art: a quiet lake'); // the prompt heads it
  });

  it('&, < and > reach the model as typed (Slack sends them as &amp; &lt; &gt;), and are shown escaped once', async () => {
    const user = newUser();
    const { jobId } = await command('Tom &amp; Jerry &lt;3 --no cats &amp; dogs', user); // what Slack sends for "Tom & Jerry <3 --no cats & dogs"
    const job = await queued(jobId);
    expect(job).toMatchObject({ kind: 'imagine', prompt: 'Tom & Jerry <3', options: { negative: 'cats & dogs' } }); // before: "Tom &amp; Jerry &lt;3"
    expect(headlineOf(statusOf(jobId))).toBe(':art: Tom &amp; Jerry &lt;3'); // Slack shows "Tom & Jerry <3" (before: "Tom &amp;amp; Jerry")
  });

  it('asks Slack nothing before a listener runs: auth.test only at start (Bolt is told the bot\'s ids)', async () => {
    const before = h.fake.apiCalls('auth.test').length;
    const { jobId } = await command('an unasked lake', newUser());
    await queued(jobId);
    await mention(h.fake.postUserMessage({ channel: CHANNEL, user: newUser(), text: `<@${h.fake.botUserId}> hello` }));
    await settle();
    // Before: one auth.test per command, mention and click, each a Web API round trip ahead of the listener and its ack
    expect(h.fake.apiCalls('auth.test').length - before).toBe(0);
  });

  it('in a channel an admin paused, the status message says so (not a bare "Queued")', async () => {
    await toldVia((await command('queue pause', ADMIN, '/blip3o-admin')).payload.response_url, 'the pause');
    try {
      const { jobId } = await command('a held lake', newUser());
      await queued(jobId);
      const status = statusOf(jobId)!;
      await h.fake.waitFor(() => (h.fake.store.find(CHANNEL, status.ts)?.text === 'Queued. An admin paused this channel; your request waits until they resume it.' ? true : undefined), 10_000, 'the paused note');
      expect(JSON.stringify(h.fake.store.find(CHANNEL, status.ts)?.blocks)).toContain('blip3o_cancel'); // still cancellable
    } finally {
      await toldVia((await command('queue resume', ADMIN, '/blip3o-admin')).payload.response_url, 'the resume');
    }
  });

  it('bad options are the ack\'s private answer: nothing is posted or queued', async () => {
    const user = newUser();
    const before = h.fake.botMessages(CHANNEL).length;
    const { ack, jobId } = await command('a cat --ar 7:5', user);
    expect(ack).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/aspect/i) });
    await settle();
    expect(h.fake.botMessages(CHANNEL).length).toBe(before);
    expect(await request(jobId)).toBeUndefined();
  });

  it('--guidance .5 is a number (queued as 0.5); --guidance -1 is told the range, not "needs a number"', async () => {
    const { jobId } = await command('a cat --guidance .5', newUser());
    expect(await queued(jobId)).toMatchObject({ options: { guidance: 0.5 } });
    const { ack } = await command('a cat --guidance -1', newUser());
    expect(String(ack?.text).split('\n')[0]).toBe('`--guidance` must be between 0 and 20; you gave -1.');
  });

  it('a refusal of the core takes the status message back and tells the asker alone', async () => {
    const user = newUser(); // three jobs at a time per user (config limits.user.maxConcurrent): the fourth is refused
    for (let i = 0; i < 3; i++) await queued((await command(`fill ${i} --seed ${i}`, user)).jobId);
    const { payload, jobId } = await command('one too many', user);
    expect(await toldVia(payload.response_url, 'the refusal')).toMatch(/at a time|running|queued/i);
    const deleted = h.fake.apiCalls('chat.delete').at(-1)!;
    expect(deleted.args.channel).toBe(CHANNEL);
    expect(h.fake.store.find(CHANNEL, String(deleted.args.ts))).toBeUndefined();
    expect(await request(jobId)).toBeUndefined();
    // a status message that cannot be taken back (deleted by an admin meanwhile) is logged; the asker is still told
    h.fake.inject({ method: 'chat.delete', error: 'message_not_found' });
    const again = await command('still too many', user);
    expect(await toldVia(again.payload.response_url, 'the second refusal')).toMatch(/at a time|running|queued/i);
    expect(loggedAs('status delete failed').at(-1)).toMatchObject({ err: 'An API error occurred: message_not_found' });
  });

  it('a bot not invited to the channel says how to invite it (not_in_channel, channel_not_found), in another\'s DM where to ask instead; any other failure gives a reference', async () => {
    const user = newUser();
    for (const error of ['not_in_channel', 'channel_not_found']) {
      h.fake.inject({ method: 'chat.postMessage', error });
      const { payload, jobId } = await command('a fox', user, '/imagine', 'C0NOTHERE');
      expect(await toldVia(payload.response_url, error)).toBe('I am not in this channel yet: invite me with `/invite @blip3o`, then try again.');
      expect(await request(jobId)).toBeUndefined();
    }
    // a DM between the user and someone else: Slack sends the command, but no app may post there, and /invite does nothing
    h.fake.loseChannel('D0OTHERS', 'deleted');
    const inDm = await command('a fox', user, '/imagine', 'D0OTHERS');
    expect(await toldVia(inDm.payload.response_url, 'the DM hint')).toBe('I can only post in channels I am in and in our own direct messages: use the command there (Apps → blip3o).');
    h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
    const { payload, jobId } = await command('a fox', user);
    expect(await toldVia(payload.response_url, 'the reference')).toMatch(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/);
    expect(await request(jobId)).toBeUndefined();
  });

  it('private results: the status message and the job go to the asker\'s DM, the channel is only told so', async () => {
    const user = newUser();
    await h.core.settings.set('user', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user }, { private: true });
    const before = h.fake.botMessages(CHANNEL).length;
    const { payload, jobId } = await command('a secret garden', user);
    const job = await queued(jobId);
    const dm = `D${user}`;
    const status = statusOf(jobId, dm)!;
    expect(job.destination).toEqual({
      platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user, threadTs: status.ts, statusMessageTs: status.ts,
      responseUrl: payload.response_url, private: true, dmChannelId: dm,
    });
    expect(await toldVia(payload.response_url, 'the DM notice')).toBe('Private results are on here: I am working on it in our direct messages.');
    expect(h.fake.botMessages(CHANNEL).length).toBe(before);
  });

  it('the same command delivered twice at once, or again later, makes one status message and one job', async () => {
    const user = newUser();
    const payload = slashCommand(h.fake, { text: 'twice told', channel: CHANNEL, user });
    await Promise.all([h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload)), h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload))]);
    const jobId = jobIdFor('slack', `cmd:${payload.trigger_id}`);
    await queued(jobId);
    await h.fake.waitFor(() => (/in line/.test(statusOf(jobId)?.text ?? '') ? true : undefined), 10_000, 'the first delivery done');
    await settle();
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    await settle();
    expect(h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_payload.job_id === jobId)).toHaveLength(1);
    const dedupeKey = `cmd:${payload.trigger_id}`;
    expect(loggedAs('duplicate delivery ignored (already handled)')).toContainEqual(expect.objectContaining({ jobId, dedupeKey }));
  });

  it('a duplicate arriving while the first delivery is still at work is dropped at once (the in-flight guard)', async () => {
    const user = newUser();
    h.fake.inject({ method: 'chat.postMessage', retryAfterSec: 1 }); // the first delivery waits out a 429 before posting
    const payload = slashCommand(h.fake, { text: 'slowly told', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    await h.fake.waitFor(() => h.fake.apiCalls('chat.postMessage').find((c) => c.status === 429), 5_000, 'the 429');
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const jobId = jobIdFor('slack', `cmd:${payload.trigger_id}`);
    await queued(jobId);
    expect(loggedAs('duplicate delivery ignored (in flight)')).toContainEqual(expect.objectContaining({ jobId, dedupeKey: `cmd:${payload.trigger_id}` }));
    expect(h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_payload.job_id === jobId)).toHaveLength(1);
  });
});

describe('/blip3o-admin', () => {
  it('answers an admin privately; the usage chart goes to their DM with a pointer to it', async () => {
    const { payload } = await command('queue', ADMIN, '/blip3o-admin');
    expect(await toldVia(payload.response_url, 'the queue status')).toMatch(/^Queue: \d+ running/);
    const usage = await command('usage 2', ADMIN, '/blip3o-admin');
    expect(await toldVia(usage.payload.response_url, 'the report')).toMatch(/^GPU usage in this workspace over the last 2 days[\s\S]*\n\(The chart is in your direct messages with me\.\)$/);
    const upload = h.fake.apiCalls('files.completeUploadExternal').at(-1)!;
    expect(upload.args.channel_id).toBe(`D${ADMIN}`);
  });

  it('when the chart cannot go to the DM (an install without im:write), the report still comes, saying so', async () => {
    h.fake.inject({ method: 'conversations.open', error: 'missing_scope' });
    const uploads = h.fake.apiCalls('files.completeUploadExternal').length;
    const usage = await command('usage 1', ADMIN, '/blip3o-admin');
    expect(await toldVia(usage.payload.response_url, 'the report')).toMatch(/^GPU usage in this workspace over today[\s\S]*\n\(I could not send you the chart in a direct message\.\)$/);
    expect(h.fake.apiCalls('files.completeUploadExternal').length).toBe(uploads);
    expect(loggedAs('the picture of a reply could not be sent by DM').at(-1)).toMatchObject({ err: 'missing_scope', file: 'usage-1d.png' });
  });

  it('refuses anyone else, and a user whose users.info fails is no admin', async () => {
    const user = newUser();
    const { payload } = await command('queue', user, '/blip3o-admin');
    expect(await toldVia(payload.response_url, 'the refusal')).toMatch(/^Only admins/);
    const other = newUser();
    h.fake.inject({ method: 'users.info', error: 'user_not_found' });
    const again = await command('queue', other, '/blip3o-admin');
    expect(await toldVia(again.payload.response_url, 'the refusal')).toMatch(/^Only admins/);
    expect(loggedAs('users.info failed; treating the user as not an admin')).toContainEqual(expect.objectContaining({ userId: other, err: 'An API error occurred: user_not_found' }));
  });

  it('an admin is asked about each time: one demoted meanwhile is refused at once, in a settings window opened as an admin too; a non-admin is not asked again for a while', async () => {
    const boss = newUser();
    h.fake.addUser(boss, { isAdmin: true });
    const before = h.fake.apiCalls('views.open').length;
    await command('channel', boss, '/blip3o-settings');
    const view = (await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'the channel modal')).args.view as Record<string, unknown>;
    await toldVia((await command('limits', boss, '/blip3o-admin')).payload.response_url, 'the limits');
    h.fake.addUser(boss); // no longer an admin
    const limits = await command('limits set concurrent=9', boss, '/blip3o-admin');
    expect(await toldVia(limits.payload.response_url, 'the refusal')).toBe('Only admins can view or change limits.');
    expect((await h.core.gate.limiter.channelLimit(`slack:${h.fake.teamId}:${CHANNEL}`)).source).toBe('default');
    const told = ephemeralsTo(boss).length;
    await interactive(viewSubmission(h.fake, { user: boss, view, values: { steps: { value: { type: 'number_input', value: '12' } } } }));
    expect((await h.fake.waitFor(() => ephemeralsTo(boss)[told], 10_000, 'the refusal')).args.text).toBe("Only admins can change this channel's defaults.");
    expect(await h.core.settings.get('channel', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: boss })).toEqual({});

    const user = newUser();
    await toldVia((await command('queue', user, '/blip3o-admin')).payload.response_url, 'the refusal');
    const asked = h.fake.apiCalls('users.info').filter((c) => c.args.user === user).length;
    await toldVia((await command('queue', user, '/blip3o-admin')).payload.response_url, 'the refusal');
    expect(h.fake.apiCalls('users.info').filter((c) => c.args.user === user).length).toBe(asked);
  });

  it('limits set with a value out of range names what the admin typed (window=), not the stored field (windowSeconds)', async () => {
    const { payload } = await command('limits set window=0', ADMIN, '/blip3o-admin');
    expect(await toldVia(payload.response_url, 'the refusal')).toBe('Cannot set those limits: `window` must be a whole number of seconds from 1 to 2592000 (30 days); you gave 0. Usage: `/blip3o-admin limits set requests=5 window=60 burst=5 concurrent=2` (0 turns one off).');
  });

  it('unknown words are the ack\'s private usage', async () => {
    const { ack } = await command('reboot', ADMIN, '/blip3o-admin');
    expect(ack).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/^Usage:/) });
  });
});

describe('/blip3o-settings', () => {
  const viewOf = (call: RecordedCall) => call.args.view as Record<string, unknown>;

  it('opens the modal for the trigger; a channel\'s defaults are for admins only; reset clears without a modal', async () => {
    const user = newUser();
    const before = h.fake.apiCalls('views.open').length;
    const { payload } = await command('', user, '/blip3o-settings');
    const opened = await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'views.open');
    expect(opened.args.trigger_id).toBe(payload.trigger_id);
    // version: SHA-1 of '' (nothing saved yet): the submit saves only if that is still so (bots/core/settings.ts replaceIf)
    expect(JSON.parse(String(viewOf(opened).private_metadata))).toEqual({ scope: 'user', teamId: h.fake.teamId, channelId: CHANNEL, version: 'da39a3ee5e6b4b0d3255bfef95601890afd80709' });

    const channel = await command('channel', user, '/blip3o-settings');
    expect(await toldVia(channel.payload.response_url, 'the refusal')).toBe("Only workspace admins can change this channel's defaults.");
    const asAdmin = await command('channel', ADMIN, '/blip3o-settings');
    const adminView = await h.fake.waitFor(() => h.fake.apiCalls('views.open').find((c) => c.args.trigger_id === asAdmin.payload.trigger_id), 10_000, 'the channel modal');
    expect(JSON.parse(String(viewOf(adminView).private_metadata))).toMatchObject({ scope: 'channel' });

    const here = { platform: 'slack' as const, teamId: h.fake.teamId, channelId: CHANNEL, userId: user };
    await h.core.settings.set('user', here, { steps: 7 });
    const reset = await command('reset', user, '/blip3o-settings');
    expect(await toldVia(reset.payload.response_url, 'the reset')).toMatch(/reset|cleared|defaults/i);
    expect(await h.core.settings.get('user', here)).toEqual({});
    expect(h.fake.apiCalls('views.open').length).toBe(before + 2);

    const bad = await command('everyone', user, '/blip3o-settings');
    expect(bad.ack).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/^Usage:/) });
  });

  it('a settings window Slack no longer lets open (its 3 s trigger spent on a slow Redis): the user is asked to run the command again', async () => {
    const read = h.core.settings.read;
    h.core.settings.read = async (...args) => { await new Promise((r) => setTimeout(r, 3_500)); return read.apply(h.core.settings, args); };
    try {
      const { payload } = await command('', newUser(), '/blip3o-settings');
      expect(await toldVia(payload.response_url, 'the answer')).toBe('I took too long to open the settings window (Slack allows 3 seconds). Please run /blip3o-settings again.');
      expect(loggedAs('the settings window was not opened in time (Slack allows 3 s)')).toHaveLength(1);
    } finally {
      h.core.settings.read = read;
    }
  }, 20_000);

  it('a submitted modal is saved for its target and confirmed in its channel; a bad value is shown under its field; unreadable metadata is ignored', async () => {
    const before = h.fake.apiCalls('views.open').length;
    await command('channel', ADMIN, '/blip3o-settings');
    const view = viewOf(await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'views.open'));
    const here = { platform: 'slack' as const, teamId: h.fake.teamId, channelId: CHANNEL, userId: ADMIN };
    const errors = await interactive(viewSubmission(h.fake, { user: ADMIN, view, values: { retention: { value: { type: 'plain_text_input', value: 'soon' } } } }));
    expect(errors).toMatchObject({ response_action: 'errors', errors: { retention: expect.stringContaining('not a duration') } });
    // a duration past the 30 days a channel may keep jobs: said under the field in the admin's words, not as zod's "<=2592000 → at retentionSeconds"
    const tooLong = await interactive(viewSubmission(h.fake, { user: ADMIN, view, values: { retention: { value: { type: 'plain_text_input', value: '90d' } } } }));
    expect(tooLong).toEqual({ response_action: 'errors', errors: { retention: 'The retention can be at most 30 days; you gave 90 days.' } });
    expect(await h.core.settings.get('channel', here)).toEqual({});
    const told = ephemeralsTo(ADMIN).length;
    const saved = await interactive(viewSubmission(h.fake, { user: ADMIN, view, values: { steps: { value: { type: 'number_input', value: '12' } } } }));
    expect(saved).toEqual({});
    await until(async () => ((await h.core.settings.get('channel', here)).steps === 12 ? true : undefined), 10_000, 'the saved steps');
    const confirmation = await h.fake.waitFor(() => ephemeralsTo(ADMIN)[told], 10_000, 'the confirmation');
    expect(confirmation.args).toMatchObject({ channel: CHANNEL, user: ADMIN });

    const ignored = await interactive(viewSubmission(h.fake, { user: ADMIN, view: { ...view, private_metadata: '{"scope":"everyone"}' }, values: { steps: { value: { type: 'number_input', value: '3' } } } }));
    expect(ignored).toEqual({});
    await settle();
    expect(loggedAs('settings modal with unreadable metadata ignored')).toEqual([expect.objectContaining({ view: expect.stringMatching(/^V/) })]);
    expect((await h.core.settings.get('channel', here)).steps).toBe(12);
    expect(ephemeralsTo(ADMIN).length).toBe(told + 1);
  });

  it('a crafted submission (values past the inputs\' bounds, a channel scope for a non-admin) is checked again by the bot: nothing saved, the user told why', async () => {
    const user = newUser();
    const before = h.fake.apiCalls('views.open').length;
    await command('', user, '/blip3o-settings');
    const view = viewOf(await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'views.open'));
    const here = { platform: 'slack' as const, teamId: h.fake.teamId, channelId: CHANNEL, userId: user };
    const g = h.config.generation;
    const crafted: [Record<string, Record<string, unknown>>, RegExp][] = [
      [{ steps: { value: { type: 'number_input', value: String(g.maxDitSteps + 1) } } }, new RegExp(`steps can be at most ${g.maxDitSteps}`)],
      [{ count: { value: { type: 'number_input', value: '99' } } }, /Cannot save that: .*count/],
      [{ guidance: { value: { type: 'number_input', value: 'lots' } } }, /Cannot save that: .*guidance/],
      [{ aspect: { value: { type: 'static_select', selected_option: { value: '5:1' } } } }, /Cannot save that: .*aspect/],
      [{ private: { value: { type: 'checkboxes', selected_options: [{ value: 'nolog' }] } } }, /channel settings/],
      [{ retention: { value: { type: 'plain_text_input', value: '1h' } } }, /channel settings/],
    ];
    for (const [values, refusal] of crafted) {
      const told = ephemeralsTo(user).length;
      await interactive(viewSubmission(h.fake, { user, view, values: values as never }));
      const answer = await h.fake.waitFor(() => ephemeralsTo(user)[told], 10_000, 'the refusal');
      expect(String(answer.args.text), JSON.stringify(values)).toMatch(refusal);
    }
    const asChannel = { ...view, private_metadata: JSON.stringify({ ...JSON.parse(String(view.private_metadata)), scope: 'channel' }) };
    const told = ephemeralsTo(user).length;
    await interactive(viewSubmission(h.fake, { user, view: asChannel, values: { steps: { value: { type: 'number_input', value: '3' } } } }));
    expect(String((await h.fake.waitFor(() => ephemeralsTo(user)[told], 10_000, 'the refusal')).args.text)).toMatch(/Only admins/);
    expect(await h.core.settings.get('user', here)).toEqual({});
    expect(await h.core.settings.get('channel', here)).toEqual({});
  });
});

describe('mentions', () => {
  it('a question with an image in the message queues an ask in its thread, the status message under the question', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'lake.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}>   what is this?`, files: [file] });
    await mention(m);
    const jobId = jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
    const job = await queued(jobId);
    expect(job).toMatchObject({ kind: 'ask', question: 'what is this?', history: [] });
    expect(job.destination).toMatchObject({ channelId: CHANNEL, userId: user, threadTs: m.ts });
    expect(statusOf(jobId)?.thread_ts).toBe(m.ts);
    expect(headlineOf(statusOf(jobId))).toBe(':speech_balloon: what is this?');
  });

  it('a question with &, < or > reaches the model as typed, and so does the history, the bot\'s answer read back unescaped', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'sign.png', 'image/png');
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'look', files: [file] });
    h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> is it R&amp;D?`, threadTs: parent.ts });
    h.fake.store.add({ channel: CHANNEL, text: 'It says &lt;R&amp;D&gt;.', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: parent.ts, metadata: { event_type: 'blip3o_answer', event_payload: { job_id: 'earlier-amp' } } });
    const q = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and &lt;b&gt; on <#C0SIGNS|signs>?`, threadTs: parent.ts });
    await mention(q);
    const job = await queued(jobIdFor('slack', `msg:${CHANNEL}:${q.ts}`));
    expect(job).toMatchObject({ kind: 'ask', question: 'and <b> on #signs?', history: [{ role: 'user', text: 'is it R&D?' }, { role: 'assistant', text: 'It says <R&D>.' }] });
  });

  it('in a thread: the image of the parent, and the earlier turns as history', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'parent.png', 'image/png');
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'look', files: [file] });
    h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> is it green?`, threadTs: parent.ts });
    h.fake.store.add({ channel: CHANNEL, text: 'Yes, mostly green.', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: parent.ts, metadata: { event_type: 'blip3o_answer', event_payload: { job_id: 'earlier' } } });
    const q = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> how green?`, threadTs: parent.ts });
    await mention(q);
    const job = await queued(jobIdFor('slack', `msg:${CHANNEL}:${q.ts}`));
    expect(job).toMatchObject({ kind: 'ask', question: 'how green?', history: [{ role: 'user', text: 'is it green?' }, { role: 'assistant', text: 'Yes, mostly green.' }] });
    expect(job.destination).toMatchObject({ threadTs: parent.ts });
  });

  it('a follow-up about a newer image carries only the turns about it; the cache note is not part of an answer', async () => {
    const user = newUser();
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'look', files: [h.fake.seedFile(png, 'cat.png', 'image/png')] });
    const answer = (text: string, id: string) => h.fake.store.add({ channel: CHANNEL, text, bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: parent.ts, metadata: { event_type: 'blip3o_answer', event_payload: { job_id: id } } });
    h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is it?`, threadTs: parent.ts });
    answer('A cat.', 'about-cat');
    h.fake.postUserMessage({ channel: CHANNEL, user, text: 'and this one', threadTs: parent.ts, files: [h.fake.seedFile(png, 'dog.png', 'image/png')] });
    h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is this one?`, threadTs: parent.ts });
    answer('A dog.\n_from the cache, no GPU time used_', 'about-dog');
    const q = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> its colour?`, threadTs: parent.ts });
    await mention(q);
    const job = await queued(jobIdFor('slack', `msg:${CHANNEL}:${q.ts}`));
    // before: [what is it?, A cat., what is this one?, A dog.\n_from the cache…_] with the dog's image in the first turn
    expect(job).toMatchObject({ kind: 'ask', history: [{ role: 'user', text: 'what is this one?' }, { role: 'assistant', text: 'A dog.' }] });
    // an image attached to the follow-up itself starts afresh: the turns above are about another image
    const own = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and this bird?`, threadTs: parent.ts, files: [h.fake.seedFile(png, 'bird.png', 'image/png')] });
    await mention(own);
    expect(await queued(jobIdFor('slack', `msg:${CHANNEL}:${own.ts}`))).toMatchObject({ kind: 'ask', history: [] });
  });

  it('in a thread of more than one page (200 messages), the follow-up carries the latest turns, not the first page\'s', async () => {
    const user = newUser();
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'look', files: [h.fake.seedFile(png, 'busy.png', 'image/png')] });
    for (let i = 0; i < 240; i++) h.fake.postUserMessage({ channel: CHANNEL, user, text: `chat ${i}`, threadTs: parent.ts });
    h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> is it busy?`, threadTs: parent.ts });
    h.fake.store.add({ channel: CHANNEL, text: 'Very busy.', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: parent.ts, metadata: { event_type: 'blip3o_answer', event_payload: { job_id: 'busy' } } });
    const q = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> how busy?`, threadTs: parent.ts });
    const calls = h.fake.apiCalls('conversations.replies').length;
    await mention(q);
    const job = await queued(jobIdFor('slack', `msg:${CHANNEL}:${q.ts}`));
    expect(job).toMatchObject({ kind: 'ask', history: [{ role: 'user', text: 'is it busy?' }, { role: 'assistant', text: 'Very busy.' }] });
    expect(h.fake.apiCalls('conversations.replies').length - calls).toBe(2); // one call a page
  });

  it('without an image, or without a question, the asker alone is told what to do, in the thread', async () => {
    const user = newUser();
    const bare = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is this?` });
    await mention(bare);
    const noImage = await h.fake.waitFor(() => ephemeralsTo(user)[0], 10_000, 'the hint');
    expect(noImage.args).toMatchObject({ channel: CHANNEL, thread_ts: bare.ts, text: 'Ask me about an image: mention me in a message with an image attached, or in the thread of a message with one.' });
    const file = h.fake.seedFile(png, 'q.png', 'image/png');
    const silent = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}>`, files: [file] });
    await mention(silent);
    const noQuestion = await h.fake.waitFor(() => ephemeralsTo(user)[1], 10_000, 'the question hint');
    expect(noQuestion.args.text).toBe('What would you like to know about the image? Mention me with a question.');
    expect(await request(jobIdFor('slack', `msg:${CHANNEL}:${silent.ts}`))).toBeUndefined();
  });

  it('a file stub is resolved with files.info; a file the event describes fully is not looked up', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'stub.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and this?`, files: [file] });
    const looked = h.fake.apiCalls('files.info').length;
    await mention(m, { files: [{ id: file.id, file_access: 'check_file_info' }] });
    const job = await queued(jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`));
    expect(job.kind === 'ask' && job.imageKey).toBeTruthy(); // downloaded from the stub's real URL
    expect(h.fake.apiCalls('files.info').slice(looked).map((c) => c.args.file)).toEqual([file.id]);
    const plain = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and that?`, files: [h.fake.seedFile(png, 'full.png', 'image/png')] });
    await mention(plain);
    await queued(jobIdFor('slack', `msg:${CHANNEL}:${plain.ts}`));
    const viewOnly = h.fake.seedFile(png, 'view-only.png', 'image/png');
    const linked = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and those?`, files: [viewOnly] });
    await mention(linked, { files: [{ id: viewOnly.id, name: viewOnly.name, mimetype: 'image/png', url_private: viewOnly.url_private }] }); // no download URL
    await queued(jobIdFor('slack', `msg:${CHANNEL}:${linked.ts}`));
    expect(h.fake.apiCalls('files.info').length).toBe(looked + 1);
    const unlinked = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> and this one?` });
    await mention(unlinked, { files: [{ name: 'nowhere.png', mimetype: 'image/png' }] }); // no id, no URL
    expect((await h.fake.waitFor(() => ephemeralsTo(user).find((c) => c.args.thread_ts === unlinked.ts), 10_000, 'the refusal')).args.text).toBe('That file has no usable download link.');
  });
});

describe('shortcuts and the ask modal', () => {
  it('"Ask about this image" opens a modal holding only what the download needs; submitting it queues the ask in the message\'s thread', async () => {
    const user = newUser();
    const file = h.fake.seedFile(png, 'shortcut.png', 'image/png');
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'a picture', files: [file] });
    const before = h.fake.apiCalls('views.open').length;
    await interactive(messageShortcut(h.fake, { user, message, callbackId: SHORTCUT_ASK }));
    const opened = await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'views.open');
    const view = opened.args.view as Record<string, unknown>;
    const meta = JSON.parse(String(view.private_metadata)) as { c: string; t: string; f: Record<string, unknown> };
    expect(meta).toMatchObject({ c: CHANNEL, t: message.ts });
    expect(Object.keys(meta.f).sort()).toEqual(['id', 'mimetype', 'name', 'size', 'url_private', 'url_private_download'].filter((k) => k in meta.f).sort());
    expect(meta.f).not.toHaveProperty('thumb_64');
    const submission = viewSubmission(h.fake, { user, view, values: { question: { value: { type: 'plain_text_input', value: '  is it day?  ' } } } });
    await interactive(submission);
    const jobId = jobIdFor('slack', `view:${(submission.view as { id: string }).id}`);
    const job = await queued(jobId);
    expect(job).toMatchObject({ kind: 'ask', question: 'is it day?', history: [] });
    expect(job.destination).toMatchObject({ channelId: CHANNEL, userId: user, threadTs: message.ts });
    expect(headlineOf(statusOf(jobId))).toBe(':speech_balloon: is it day?'); // trimmed for the headline too
    const empty = viewSubmission(h.fake, { user, view, values: {} }); // no question field at all
    await interactive(empty);
    expect((await h.fake.waitFor(() => ephemeralsTo(user).find((c) => c.args.thread_ts === message.ts), 10_000, 'the refusal')).args.text).toMatch(/question/i);
  });

  it('"Ask about this image" on a message without an image, or with a PDF, is answered privately without a modal', async () => {
    const user = newUser();
    const before = h.fake.apiCalls('views.open').length;
    const text = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'just words' });
    await interactive(messageShortcut(h.fake, { user, message: text, callbackId: SHORTCUT_ASK }));
    expect((await h.fake.waitFor(() => ephemeralsTo(user)[0], 10_000, 'the hint')).args.text).toBe('That message has no image to ask about.');
    const pdf = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'a report', files: [h.fake.seedFile(new TextEncoder().encode('%PDF-1.7'), 'r.pdf', 'application/pdf')] });
    await interactive(messageShortcut(h.fake, { user, message: pdf, callbackId: SHORTCUT_ASK }));
    expect((await h.fake.waitFor(() => ephemeralsTo(user)[1], 10_000, 'the refusal')).args.text).toBe('`r.pdf` is a PDF, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(h.fake.apiCalls('views.open').length).toBe(before);
  });

  it('the ask modal with unreadable metadata is ignored', async () => {
    const user = newUser();
    const posted = h.fake.botMessages().length;
    const submission = viewSubmission(h.fake, { user, view: { callback_id: 'blip3o_ask_view', private_metadata: '{"c":1}' }, values: { question: { value: { type: 'plain_text_input', value: 'hm?' } } } });
    await interactive(submission);
    await settle();
    expect(h.fake.botMessages().length).toBe(posted);
    expect(ephemeralsTo(user)).toHaveLength(0);
    expect(loggedAs('ask modal with unreadable metadata ignored')).toContainEqual(expect.objectContaining({ view: (submission.view as { id: string }).id }));
  });

  it('"Describe this image" queues a describe in the message\'s thread; without an image the asker is told', async () => {
    const user = newUser();
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'describe me', files: [h.fake.seedFile(png, 'd.png', 'image/png')] });
    const shortcut = messageShortcut(h.fake, { user, message, callbackId: SHORTCUT_DESCRIBE });
    await interactive(shortcut);
    const jobId = jobIdFor('slack', `shortcut:${shortcut.trigger_id as string}`);
    const job = await queued(jobId);
    expect(job).toMatchObject({ kind: 'ask', mode: 'describe' });
    expect(job.destination).toMatchObject({ channelId: CHANNEL, userId: user, threadTs: message.ts });
    expect(headlineOf(statusOf(jobId))).toBe(':speech_balloon: Describe this image');
    const none = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'nothing here' });
    await interactive(messageShortcut(h.fake, { user, message: none, callbackId: SHORTCUT_DESCRIBE }));
    expect((await h.fake.waitFor(() => ephemeralsTo(user)[0], 10_000, 'the hint')).args).toMatchObject({ text: 'That message has no image to describe.', thread_ts: none.ts });
  });
});

describe('unexpected failures', () => {
  /** A response_url Slack no longer takes (it allows five answers): respond() throws. */
  async function usedUp(): Promise<string> {
    const url = `${h.fake.origin}/response/used-${Math.random().toString(36).slice(2)}`;
    for (let i = 0; i < 5; i++) await fetch(url, { method: 'POST', body: '{}' });
    return url;
  }
  /** The ref the asker was told, by response_url or ephemerally. */
  const refIn = (text: string | undefined) => /^Something went wrong \(ref ([0-9a-f]{8})\)\.$/.exec(text ?? '')?.[1];

  it('each listener logs what it was doing with the reference the asker is told', async () => {
    const user = newUser();
    const failedAs = (what: string) => logged.filter((l) => l.msg === 'slack handler failed' && l.what === what);
    // startJob's first post fails unexpectedly: /imagine, a mention, both shortcuts' jobs, and the three buttons that start jobs
    const imagineCmd = await (async () => {
      h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
      return command('a failing fox', user);
    })();
    const ref = refIn(await toldVia(imagineCmd.payload.response_url, 'the reference'));
    // where it was asked and the stack, for the admin the asker gives the ref to
    expect(failedAs('/imagine')).toContainEqual(expect.objectContaining({ ref, err: 'An API error occurred: fatal_error', channel: CHANNEL, workspace: expect.any(String), stack: expect.stringContaining('fatal_error') }));

    const file = () => h.fake.seedFile(png, 'f.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what?`, files: [file()] });
    h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
    await mention(m);
    const mentionRef = refIn(String((await h.fake.waitFor(() => ephemeralsTo(user).find((c) => c.args.thread_ts === m.ts), 10_000, 'the mention reference')).args.text));
    expect(failedAs('app_mention')).toContainEqual(expect.objectContaining({ ref: mentionRef }));

    const target = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'pic', files: [file()] });
    h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
    await interactive(messageShortcut(h.fake, { user, message: target, callbackId: SHORTCUT_DESCRIBE }));
    await h.fake.waitFor(() => (failedAs('describe shortcut').length ? true : undefined), 10_000, 'the describe failure');

    const before = h.fake.apiCalls('views.open').length;
    await interactive(messageShortcut(h.fake, { user, message: target, callbackId: SHORTCUT_ASK }));
    const view = (await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'views.open')).args.view as Record<string, unknown>;
    h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
    await interactive(viewSubmission(h.fake, { user, view, values: { question: { value: { type: 'plain_text_input', value: 'why?' } } } }));
    await h.fake.waitFor(() => (failedAs('ask shortcut').length ? true : undefined), 10_000, 'the ask failure');
    h.fake.inject({ method: 'views.open', error: 'fatal_error' }); // the window itself
    await interactive(messageShortcut(h.fake, { user, message: target, callbackId: SHORTCUT_ASK }));
    await h.fake.waitFor(() => (failedAs('ask shortcut window').length ? true : undefined), 10_000, 'the ask window failure');

    const { jobId } = await command('a kite to fail on --seed 1', newUser());
    await queued(jobId);
    const status = statusOf(jobId)!;
    const result = h.fake.store.add({ channel: CHANNEL, text: 'r', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: status.ts, files: [h.fake.seedFile(png, `blip3o-${jobId}.png`, 'image/png')] });
    const prompts = h.fake.store.add({ channel: CHANNEL, text: 'p', bot_id: h.fake.botId, user: h.fake.botUserId, blocks: [{ type: 'actions', block_id: 'result', elements: [{ type: 'button', action_id: ACTION.imagineThis, value: 'a failing hill' }] }] });
    for (const [what, message, actionId] of [['re-roll', status, ACTION.reroll], ['vary', result, ACTION.vary], ['imagine this', prompts, ACTION.imagineThis]] as const) {
      h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
      await interactive(blockAction(h.fake, { user: newUser(), message, actionId, value: actionId === ACTION.imagineThis ? 'a failing hill' : jobId }));
      await h.fake.waitFor(() => (failedAs(what).length ? true : undefined), 10_000, `the ${what} failure`);
    }

    // simpleCommand's answer cannot be given: Cancel and /blip3o-admin (a used-up response_url, and chat.postEphemeral,
    // said instead, refused: the answer and then the reference), the settings modal (postEphemeral)
    const cancel = blockAction(h.fake, { user: newUser(), message: status, actionId: ACTION.cancel, value: jobId });
    h.fake.inject({ method: 'chat.postEphemeral', error: 'fatal_error', times: 2 });
    await interactive({ ...cancel, response_url: await usedUp() });
    await h.fake.waitFor(() => (failedAs('cancel').length ? true : undefined), 10_000, 'the cancel failure');
    const admin = slashCommand(h.fake, { command: '/blip3o-admin', text: 'queue', channel: CHANNEL, user: ADMIN });
    h.fake.inject({ method: 'chat.postEphemeral', error: 'fatal_error', times: 2 });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', { ...admin, response_url: await usedUp() }));
    await h.fake.waitFor(() => (failedAs('/blip3o-admin').length ? true : undefined), 10_000, 'the admin failure');
    h.fake.inject({ method: 'views.open', error: 'fatal_error' });
    await command('', user, '/blip3o-settings');
    await h.fake.waitFor(() => (failedAs('/blip3o-settings').length ? true : undefined), 10_000, 'the settings failure');
    const settingsBefore = h.fake.apiCalls('views.open').length;
    await command('', user, '/blip3o-settings');
    const settingsView = (await h.fake.waitFor(() => h.fake.apiCalls('views.open')[settingsBefore], 10_000, 'views.open')).args.view as Record<string, unknown>;
    h.fake.inject({ method: 'chat.postEphemeral', error: 'fatal_error', times: 2 });
    await interactive(viewSubmission(h.fake, { user, view: settingsView, values: { steps: { value: { type: 'number_input', value: '5' } } } }));
    await h.fake.waitFor(() => (failedAs('settings modal').length ? true : undefined), 10_000, 'the settings modal failure');
  }, 60_000);
});

describe('buttons', () => {
  /** A job of `user`'s, queued, and its status message. */
  async function jobOf(user: string, prompt: string): Promise<{ jobId: string; status: FakeMessage }> {
    const { jobId } = await command(`${prompt} --seed 3`, user);
    await queued(jobId);
    return { jobId, status: statusOf(jobId)! };
  }
  const press = async (user: string, message: FakeMessage, actionId: string, value: string) => {
    const payload = blockAction(h.fake, { user, message, actionId, value });
    await interactive(payload);
    const actionTs = (payload.actions as { action_ts: string }[])[0]!.action_ts;
    return { payload, jobId: jobIdFor('slack', `btn:${user}:${actionTs}`) };
  };

  it('Re-roll queues a re-roll of the job, titled by its prompt, in the thread it was pressed in', async () => {
    const user = newUser();
    const { jobId, status } = await jobOf(user, 'a red kite');
    const { jobId: again } = await press(user, status, ACTION.reroll, jobId);
    const job = await queued(again);
    expect(job).toMatchObject({ kind: 'imagine', prompt: 'a red kite' });
    expect(job.destination).toMatchObject({ channelId: CHANNEL, userId: user, threadTs: status.ts });
    expect(headlineOf(statusOf(again))).toBe(':art: a red kite');
    // a job no instance knows any more: the status message is titled "Re-roll" until the core refuses it
    const posts = h.fake.apiCalls('chat.postMessage').length;
    const { payload } = await press(user, status, ACTION.reroll, 'j-long-gone');
    expect(await toldVia(String(payload.response_url), 'the refusal')).toMatch(/^That image is too old to re-roll/);
    expect(headlineOf({ blocks: h.fake.apiCalls('chat.postMessage').slice(posts)[0]!.args.blocks } as FakeMessage)).toBe(':art: Re-roll');
  });

  it('Vary takes the image from the pressed message, or by its file name in the thread; a gone image is told, privately', async () => {
    const user = newUser();
    const { jobId, status } = await jobOf(user, 'a blue kite');
    const file = h.fake.seedFile(png, `blip3o-${jobId}.png`, 'image/png');
    const result = h.fake.store.add({ channel: CHANNEL, text: 'a blue kite', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: status.ts, files: [file] });
    const lookUps = () => h.fake.apiCalls('conversations.replies').length;
    const before = lookUps();
    const { jobId: varied } = await press(user, result, ACTION.vary, jobId);
    const job = await queued(varied);
    expect(job).toMatchObject({ kind: 'vary', prompt: '' });
    expect(headlineOf(statusOf(varied))).toBe(':art: Variation of a blue kite');
    expect(lookUps()).toBe(before); // the pressed message had it (before: a look-up per Vary, once a minute allowed)
    // A payload whose message lacks the file: found in the thread
    const { jobId: fromThread } = await press(newUser(), status, ACTION.vary, jobId);
    expect((await queued(fromThread)).kind).toBe('vary');
    expect(lookUps()).toBe(before + 1);
    // A file stub in the payload (no URLs): files.info has the real thing
    const stubbed = blockAction(h.fake, { user: newUser(), message: result, actionId: ACTION.vary, value: jobId });
    (stubbed.message as { files: unknown[] }).files = [{ id: file.id, name: file.name, file_access: 'check_file_info' }];
    await interactive(stubbed);
    const stubJob = jobIdFor('slack', `btn:${(stubbed.user as { id: string }).id}:${(stubbed.actions as { action_ts: string }[])[0]!.action_ts}`);
    expect(await queued(stubJob)).toMatchObject({ kind: 'vary' });
    expect(h.fake.apiCalls('files.info').at(-1)?.args.file).toBe(file.id);
    expect(lookUps()).toBe(before + 1);
    // the image of a job no instance knows the prompt of any more
    const orphan = h.fake.seedFile(png, 'blip3o-j-orphan.png', 'image/png');
    const orphanResult = h.fake.store.add({ channel: CHANNEL, text: '', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: status.ts, files: [orphan] });
    const { jobId: orphanVaried } = await press(newUser(), orphanResult, ACTION.vary, 'j-orphan'); // another user: three jobs each at a time
    await until(async () => (await h.core.requestOf(orphanVaried)) ?? undefined, 10_000, 'the variation'); // a job, or joined to the identical one above
    expect(headlineOf(statusOf(orphanVaried))).toBe(':art: Variation of an image');
    // a several-image result: Vary of image 2 takes the file named for it, not the message's first
    const otherPng = new Uint8Array(await sharp({ create: { width: 16, height: 24, channels: 3, background: '#a48' } }).png().toBuffer());
    const first = h.fake.seedFile(png, `blip3o-${jobId}-1.png`, 'image/png');
    const second = h.fake.seedFile(otherPng, `blip3o-${jobId}-2.png`, 'image/png');
    const gallery = h.fake.store.add({ channel: CHANNEL, text: 'two', bot_id: h.fake.botId, user: h.fake.botUserId, thread_ts: status.ts, files: [first, second] });
    const { jobId: secondVaried } = await press(user, gallery, `${ACTION.vary}_2`, jobId);
    const secondJob = await queued(secondVaried);
    expect(secondJob).toMatchObject({ kind: 'vary' });
    expect(await h.core.blobs.get((secondJob as Extract<JobRequest, { kind: 'vary' }>).imageKey)).toEqual(otherPng);
    expect(VARY_ACTION.test(`${ACTION.vary}_2`)).toBe(true);

    const { payload } = await press(user, status, ACTION.vary, 'j-gone');
    expect(await toldVia(String(payload.response_url), 'the hint')).toBe('I cannot find that image any more; run /imagine again.');
  });

  it('"Imagine this" queues its prompt; pressed in the DM of a private channel\'s describe job (named in its block), it is that channel\'s job', async () => {
    const user = newUser();
    const here = { platform: 'slack' as const, teamId: h.fake.teamId, channelId: CHANNEL, userId: user };
    await h.core.settings.set('user', here, { private: true });
    const { jobId: described } = await command('a described thing --seed 2', user);
    await queued(described);
    await h.core.settings.set('user', here, { private: false });
    const dm = `D${user}`;
    const prompts = (block_id: string) => h.fake.store.add({
      channel: dm, text: 'prompts', bot_id: h.fake.botId, user: h.fake.botUserId,
      blocks: [{ type: 'section', block_id, text: { type: 'mrkdwn', text: '1. a hill' }, accessory: { type: 'button', action_id: ACTION.imagineThis, value: 'a green hill at noon' } }],
    });
    const { jobId } = await press(user, prompts(`prompt_0_${described}`), ACTION.imagineThis, 'a green hill at noon');
    const job = await queued(jobId);
    expect(job).toMatchObject({ kind: 'imagine', prompt: 'a green hill at noon' });
    expect(job.destination).toMatchObject({ channelId: CHANNEL, private: true, dmChannelId: dm });
    // a block that names no job: the DM's own job
    const { jobId: other } = await press(user, prompts('result'), ACTION.imagineThis, 'a green hill at noon');
    expect((await queued(other)).destination).toMatchObject({ channelId: dm });
  });

  it('Cancel removes a waiting job for its owner or an admin; anyone else is refused privately', async () => {
    const user = newUser();
    const { jobId, status } = await jobOf(user, 'to be cancelled');
    const stranger = newUser();
    const refused = await press(stranger, status, ACTION.cancel, jobId);
    expect(await toldVia(String(refused.payload.response_url), 'the refusal')).toMatch(/only|cancel/i);
    expect(await request(jobId)).toBeDefined();
    const cancelled = await press(user, status, ACTION.cancel, jobId);
    expect(await toldVia(String(cancelled.payload.response_url), 'the confirmation')).toMatch(/cancel/i);
    await h.fake.waitFor(() => (h.fake.store.find(CHANNEL, status.ts)?.text === 'Cancelled' ? true : undefined), 10_000, 'the cancelled status');
    const { jobId: second, status: secondStatus } = await jobOf(user, 'an admin cancels');
    await press(ADMIN, secondStatus, ACTION.cancel, second);
    await h.fake.waitFor(() => (h.fake.store.find(CHANNEL, secondStatus.ts)?.text === 'Cancelled' ? true : undefined), 10_000, 'the admin\'s cancel');
  });

  it('a button pressed in the DM of a private channel\'s job starts that channel\'s job, posted in the same DM', async () => {
    const user = newUser();
    await h.core.settings.set('user', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user }, { private: true });
    const { jobId } = await command('a private kite --seed 5', user);
    await queued(jobId);
    const dm = `D${user}`;
    const status = statusOf(jobId, dm)!;
    await h.core.settings.set('user', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user }, { private: false }); // the job stays private
    const { jobId: again } = await press(user, status, ACTION.reroll, jobId);
    const job = await queued(again);
    expect(job.destination).toMatchObject({ channelId: CHANNEL, private: true, dmChannelId: dm });
    expect(job.destination).not.toHaveProperty('threadTs', status.ts);
    expect(statusOf(again, dm)).toBeDefined();
    // the same job's button anywhere else (its message shared into a channel): a job of where it was pressed
    const shared = h.fake.store.add({ channel: CHANNEL, text: 'shared', bot_id: h.fake.botId, user: h.fake.botUserId, blocks: status.blocks });
    const { jobId: there } = await press(newUser(), shared, ACTION.reroll, jobId);
    const thereJob = await queued(there);
    expect(thereJob.destination).toMatchObject({ channelId: CHANNEL, threadTs: shared.ts });
    expect(thereJob.destination).not.toHaveProperty('dmChannelId');
  });

  it('"Imagine this" carries the describe job it came from: the new job is at least as private as it (no-log, retention)', async () => {
    const user = newUser();
    const quiet = { platform: 'slack' as const, teamId: h.fake.teamId, channelId: CHANNEL, userId: ADMIN };
    await h.core.settings.set('channel', quiet, { noLog: true, retentionSeconds: 900 });
    const { jobId: described } = await command('a quiet thing --seed 8', user);
    await queued(described);
    const elsewhere = 'C0ELSEWHERE';
    const prompts = h.fake.store.add({
      channel: elsewhere, text: 'prompts', bot_id: h.fake.botId, user: h.fake.botUserId,
      blocks: [{ type: 'section', block_id: `prompt_0_${described}`, text: { type: 'mrkdwn', text: '1. a hush' }, accessory: { type: 'button', action_id: ACTION.imagineThis, value: 'a hush at dawn' } }],
    });
    const { jobId } = await press(user, prompts, ACTION.imagineThis, 'a hush at dawn');
    expect((await queued(jobId)).destination).toMatchObject({ channelId: elsewhere, noLog: true, retentionSeconds: 900 });
  });
});
