// Slack Connect channels (shared with another organisation) with real @slack/bolt in Socket Mode against the fake
// Slack, the real core on Redis, no worker (jobs stay queued). Whose workspace a request there belongs to: always the
// installation Slack delivered it for (this one), whoever asks and whichever workspace created the channel, so the
// channel's limits, settings and budgets set here apply to everyone in it. Slack's payloads name other workspaces in
// two places (test/fakes/slack/payloads.ts): an event's top-level team_id is the workspace that created the channel,
// and a modal submitted by a member of the other organisation names their workspace in `team`.
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SHORTCUT_ASK, SHORTCUT_DESCRIBE } from '../../../../bots/slack/blocks.ts';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { appMention, eventCallback, messageShortcut, slashCommand, viewSubmission } from '../../../fakes/slack/payloads.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const PARTNER = 'T0PARTNER';
const ADMIN = 'U0CADMIN';
const MEMBER = 'U0CMEMBER';
/** A member of the partner's organisation, in the shared channel. */
const GUEST = 'U0CGUEST';
let h: SlackHarness;
let png: Uint8Array;
/** The bot's log lines (info and up), parsed. */
let logged: LogLine[];
let channels = 0;
let CHANNEL = 'C0CONNECT';

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  const captured = capturedLog('info');
  logged = captured.lines;
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000, log: captured.log });
  h.fake.addUser(ADMIN, { isAdmin: true });
  h.fake.addUser(MEMBER);
  h.fake.addUser(GUEST, { from: { teamId: PARTNER } });
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#48a' } }).png().toBuffer());
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0SC${String(++channels).padStart(4, '0')}`;
});

async function command(name: string, text: string, user: string) {
  const payload = slashCommand(h.fake, { command: name, text, channel: CHANNEL, user });
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
  return { payload, jobId: jobIdFor('slack', `cmd:${payload.trigger_id}`) };
}

/** One request in this channel, for everyone in it together (an admin's limit here). */
async function oneRequestAnHour(): Promise<void> {
  const { payload } = await command('/blip3o-admin', 'limits set requests=1 window=1h burst=1', ADMIN);
  await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && payload.response_url.endsWith(c.method)), 10_000, 'the new limits');
}

async function mention(user: string, question: string): Promise<string> {
  const m = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> ${question}`, files: [h.fake.seedFile(png, 'harbour.png', 'image/png')] });
  await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
  return jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
}

const queued = (jobId: string) => until(async () => ((await h.core.queue.getJob(jobId))?.data as JobRequest | undefined) ?? undefined, 10_000, `job ${jobId}`);
/** What `user` was told privately in this channel (chat.postEphemeral). */
const toldPrivately = (user: string) => h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.channel === CHANNEL && c.args.user === user)?.args.text as string | undefined, 10_000, `what ${user} was told`);

describe('Slack Connect: whose workspace a request in a shared channel belongs to', () => {
  it('a mention in a channel the partner created is this workspace\'s: the channel\'s limit set here counts it, the partner\'s member is refused', async () => {
    h.fake.shareChannel(CHANNEL, PARTNER);
    await oneRequestAnHour();
    const first = await queued(await mention(MEMBER, 'what harbour is this?'));
    expect(first.destination).toMatchObject({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: MEMBER });

    const second = await mention(GUEST, 'and which boat?');
    expect(await toldPrivately(GUEST)).toMatch(/^This channel allows 1 request per hour.*try again in/);
    expect(await h.core.queue.getJob(second)).toBeUndefined();
  });

  it('"Ask about this image" submitted by the partner\'s member is this workspace\'s: the channel\'s limit set here counts it', async () => {
    h.fake.shareChannel(CHANNEL);
    await oneRequestAnHour();
    await queued((await command('/imagine', 'a harbour at dawn --seed 3', MEMBER)).jobId);

    const message = h.fake.postUserMessage({ channel: CHANNEL, user: MEMBER, text: 'our harbour', files: [h.fake.seedFile(png, 'harbour.png', 'image/png')] });
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', messageShortcut(h.fake, { user: GUEST, message, callbackId: SHORTCUT_ASK })));
    const opened = await h.fake.waitFor(() => h.fake.apiCalls('views.open').at(-1), 10_000, 'views.open');
    const submitted = viewSubmission(h.fake, { user: GUEST, view: opened.args.view as Record<string, unknown>, values: { question: { value: { type: 'plain_text_input', value: 'is it sunny?' } } } });
    expect(submitted.team).toMatchObject({ id: PARTNER }); // as Slack sends it: the submitter's own workspace
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', submitted));

    const jobId = jobIdFor('slack', `view:${(submitted.view as { id: string }).id}`);
    // refused, or (before 2026-12-07) queued for the partner's workspace, where no limit was set
    const outcome = await until(async () => {
      const told = h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.channel === CHANNEL && c.args.user === GUEST)?.args.text;
      const job = (await h.core.queue.getJob(jobId))?.data as JobRequest | undefined;
      return told !== undefined || job ? { told, queuedFor: job?.destination } : undefined;
    }, 10_000, 'the refusal');
    expect(outcome).toEqual({ told: expect.stringMatching(/^This channel allows 1 request per hour/), queuedFor: undefined });
  });

  it('a mention delivered twice (once for each organisation\'s installation of the app, each with its own event id) makes one job', async () => {
    h.fake.shareChannel(CHANNEL, PARTNER);
    const m = h.fake.postUserMessage({ channel: CHANNEL, user: GUEST, text: `<@${h.fake.botUserId}> what is this?`, files: [h.fake.seedFile(png, 'harbour.png', 'image/png')] });
    const ours = eventCallback(h.fake, appMention(h.fake, m));
    const theirs = { ...eventCallback(h.fake, appMention(h.fake, m)), authorizations: [{ enterprise_id: null, team_id: PARTNER, user_id: h.fake.botUserId, is_bot: true, is_enterprise_install: false }] };
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', ours));
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', theirs));
    const jobId = jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
    expect((await queued(jobId)).destination).toMatchObject({ teamId: h.fake.teamId, userId: GUEST });
    // the second delivery found the first's job, and posted nothing: one status message in the channel
    await until(async () => (logged.some((l) => l.msg.startsWith('duplicate delivery ignored') && l.jobId === jobId) ? true : undefined), 10_000, 'the duplicate ignored');
    expect(h.fake.botMessages(CHANNEL).filter((x) => x.metadata?.event_payload.job_id === jobId)).toHaveLength(1);
  });

  it('private results here, and Slack will not open a direct message with the partner\'s member: they are told so, and nothing is started or posted', async () => {
    h.fake.shareChannel(CHANNEL, PARTNER);
    await h.core.settings.set('channel', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: ADMIN }, { private: true });
    // conversations.open's answer for people it will not put together (docs: invalid_user_combination)
    h.fake.inject({ method: 'conversations.open', error: 'invalid_user_combination' });
    const jobId = await mention(GUEST, 'what harbour is this?');
    expect(await toldPrivately(GUEST)).toBe(
      'Your results here are private: I send them in a direct message, but Slack would not let me open one with you. Nothing was started.',
    );
    expect(await h.core.requestOf(jobId)).toBeUndefined();
    expect(h.fake.botMessages(CHANNEL)).toEqual([]);
    // the operator's line names Slack's reason (its error code, not the Web API's sentence around it)
    expect(logged.filter((l) => l.msg === 'no DM for private results could be opened').map((l) => [l.level, l.err])).toEqual([[40, 'invalid_user_combination']]);
  });

  it('an image the partner\'s member shared comes to a message shortcut as a stub (check_file_info): "Describe this image" and "Ask about this image" read it with files.info', async () => {
    h.fake.shareChannel(CHANNEL, PARTNER);
    const file = h.fake.seedFile(png, 'their-harbour.png', 'image/png');
    const message = h.fake.postUserMessage({ channel: CHANNEL, user: GUEST, text: 'our harbour', files: [file] });

    const describe = messageShortcut(h.fake, { user: MEMBER, message, callbackId: SHORTCUT_DESCRIBE });
    expect((describe.message as { files: unknown[] }).files).toEqual([expect.objectContaining({ id: file.id, file_access: 'check_file_info' })]);
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', describe));
    const described = await until(async () => {
      const told = h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.channel === CHANNEL && c.args.user === MEMBER)?.args.text;
      const job = (await h.core.queue.getJob(jobIdFor('slack', `shortcut:${String(describe.trigger_id)}`)))?.data as JobRequest | undefined;
      return told !== undefined || job ? { told, kind: job?.kind } : undefined;
    }, 10_000, 'the describe job');
    expect(described).toEqual({ told: undefined, kind: 'ask' }); // a describe is an ask job of its own purpose (src/jobs/contract.ts)
    expect(h.fake.apiCalls('files.info').map((c) => c.args.file)).toContain(file.id);

    const ask = messageShortcut(h.fake, { user: MEMBER, message, callbackId: SHORTCUT_ASK });
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', ask));
    const opened = await until(async () => {
      const told = h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.channel === CHANNEL && c.args.user === MEMBER)?.args.text;
      const view = h.fake.apiCalls('views.open').find((c) => c.args.trigger_id === ask.trigger_id)?.args.view as { private_metadata: string } | undefined;
      return told !== undefined || view ? { told, about: view && (JSON.parse(view.private_metadata) as { f: unknown }).f } : undefined;
    }, 10_000, 'the ask window');
    expect(opened).toMatchObject({ told: undefined, about: { url_private_download: file.url_private_download } });
  });
});

describe('Slack Connect: the partner\'s members and this workspace\'s result cache', () => {
  // The cache's tenant is the workspace (src/checks/policy.ts tenantOf), and a cache hit or a joined run tells the asker
  // someone in it asked the same. A request of another organisation's member goes outside the cache: with a retention
  // TTL, the contract's one way to say so (src/cache/fanout.ts digestOf), of the longest this deployment keeps a job
  // anyway (blobs.ttlSeconds, queue.keepFailedSeconds: a day here).
  const KEPT_ANYWAY = 86_400;
  // Jobs stay queued here (no worker): a person of their own per request, under the user's limit of 3 at once.
  let people = 0;
  const person = (from?: string): string => {
    const id = `U0CP${String(++people).padStart(3, '0')}`;
    h.fake.addUser(id, from ? { from: { teamId: from } } : {});
    return id;
  };

  it('the partner\'s member\'s mention leads no run that this workspace\'s identical request joins, and joins none', async () => {
    h.fake.shareChannel(CHANNEL, PARTNER);
    const question = 'which harbour is this, asked on both sides?';
    const [guest, member, otherGuest] = [person(PARTNER), person(), person(PARTNER)];
    const theirs = await queued(await mention(guest, question));
    expect(theirs.destination).toMatchObject({ teamId: h.fake.teamId, userId: guest, retentionSeconds: KEPT_ANYWAY });
    // before: joined the partner's run ("An identical request is already queued…"), and had no job of its own
    const ours = await queued(await mention(member, question));
    expect(ours.destination).toMatchObject({ teamId: h.fake.teamId, userId: member });
    expect(ours.destination).not.toHaveProperty('retentionSeconds'); // this workspace's own requests share as before
    const again = await mention(otherGuest, question);
    expect((await queued(again)).destination).toMatchObject({ userId: otherGuest, retentionSeconds: KEPT_ANYWAY }); // nor joins ours
  });

  it('the partner\'s member\'s "Ask about this image" goes outside the cache too; a channel\'s own retention TTL still wins', async () => {
    h.fake.shareChannel(CHANNEL);
    const ask = async (ttl?: number) => {
      const guest = person(PARTNER);
      const message = h.fake.postUserMessage({ channel: CHANNEL, user: MEMBER, text: 'our harbour', files: [h.fake.seedFile(png, 'harbour.png', 'image/png')] });
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', messageShortcut(h.fake, { user: guest, message, callbackId: SHORTCUT_ASK })));
      const opened = await h.fake.waitFor(() => h.fake.apiCalls('views.open').find((c) => (c.args.view as { private_metadata: string }).private_metadata.includes(message.ts)), 10_000, 'views.open');
      const submitted = viewSubmission(h.fake, { user: guest, view: opened.args.view as Record<string, unknown>, values: { question: { value: { type: 'plain_text_input', value: `is it sunny? (${ttl ?? 'none'})` } } } });
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', submitted));
      return queued(jobIdFor('slack', `view:${(submitted.view as { id: string }).id}`));
    };
    expect((await ask()).destination).toMatchObject({ retentionSeconds: KEPT_ANYWAY });
    await h.core.settings.set('channel', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: ADMIN }, { retentionSeconds: 600 });
    expect((await ask(600)).destination).toMatchObject({ retentionSeconds: 600 });
  });
});
