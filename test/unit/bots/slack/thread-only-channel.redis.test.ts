// A channel where a workspace setting lets members post only in threads, with real @slack/bolt in Socket Mode against
// the fake Slack (FakeSlack.threadsOnly: a post at the channel's top level is refused with
// `restricted_action_thread_only_channel`), the real core on Redis and a worker. Of what the bot posts, only a slash
// command's status message goes to a channel's top level (a command comes with no thread); mentions, shortcuts and
// buttons post in their message's thread, and results go under the status message.
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { appMention, eventCallback, slashCommand } from '../../../fakes/slack/payloads.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

let h: SlackHarness;
let png: Uint8Array;
let channels = 0;
let users = 0;
let CHANNEL = 'C0THREADS';

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#48a' } }).png().toBuffer());
  h = await startSlackHarness({ mode: 'socket', ackWindowMs: 10_000 });
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0TO${String(++channels).padStart(4, '0')}`;
  h.fake.threadsOnly(CHANNEL);
});

function newUser(): string {
  const id = `U0TO${String(++users).padStart(4, '0')}`;
  h.fake.addUser(id);
  return id;
}

const queued = (jobId: string) => until(async () => ((await h.core.queue.getJob(jobId))?.data as JobRequest | undefined) ?? undefined, 10_000, `job ${jobId}`);
/** What went back through a response_url (a command's private answers), in order. */
const answered = (responseUrl: string) => h.fake.calls.filter((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)).map((c) => String(c.args.text ?? ''));

describe('a channel where members may post only in threads', () => {
  it('/imagine: the job runs in the asker\'s DM, the channel\'s job still, and they are told why', async () => {
    const user = newUser();
    const dm = `D${user}`;
    const command = slashCommand(h.fake, { text: 'a lighthouse in fog --seed 5', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', command));
    const jobId = jobIdFor('slack', `cmd:${command.trigger_id}`);
    await h.fake.waitFor(() => answered(command.response_url).length > 0, 10_000, 'a private answer');
    // before: "Something went wrong (ref …)", and no job
    expect(answered(command.response_url)).toEqual(['This channel takes posts only in threads, and a command has none to post in: I am working on it in our direct messages.']);
    expect((await queued(jobId)).destination).toMatchObject({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user, dmChannelId: dm });
    const result = await h.fake.waitFor(() => h.fake.botMessages(dm).find((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`)), 45_000, 'the image in the DM');
    const status = h.fake.botMessages(dm).find((m) => m.metadata?.event_payload.job_id === jobId && m.thread_ts === undefined);
    expect(result.thread_ts).toBe(status?.ts);
    expect(h.fake.botMessages(CHANNEL)).toEqual([]);
  }, 60_000);

  it('/imagine from someone Slack opens no DM with (another organisation\'s member): told why, nothing started', async () => {
    const user = newUser();
    h.fake.inject({ method: 'conversations.open', error: 'user_not_visible' });
    const command = slashCommand(h.fake, { text: 'a lighthouse at dawn', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', command));
    await h.fake.waitFor(() => answered(command.response_url).length > 0, 10_000, 'a private answer');
    expect(answered(command.response_url)).toEqual([
      'This channel takes posts only in threads, and a command has none to post in; I would have worked on it in our direct messages, but Slack would not let me open one with you. Nothing was started.',
    ]);
    expect(await h.core.requestOf(jobIdFor('slack', `cmd:${command.trigger_id}`))).toBeUndefined();
    expect(h.fake.botMessages(`D${user}`)).toEqual([]);
  });

  it('a mention: the status message and the answer are in the mention\'s thread', async () => {
    const user = newUser();
    const m = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what is in this picture?`, files: [h.fake.seedFile(png, 'sea.png', 'image/png')] });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
    const jobId = jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
    expect((await queued(jobId)).destination).toMatchObject({ channelId: CHANNEL, threadTs: m.ts });
    const answer = await h.fake.waitFor(() => h.fake.botMessages(CHANNEL).find((x) => x.metadata?.event_type === 'blip3o_answer' && x.metadata.event_payload.job_id === jobId), 45_000, 'the answer');
    expect(answer.thread_ts).toBe(m.ts);
    expect(h.fake.botMessages(CHANNEL).filter((x) => x.thread_ts !== m.ts)).toEqual([]);
  }, 60_000);
});
