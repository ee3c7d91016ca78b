// Private results live in the bot's DM with the asker (bots/slack/handlers.ts privateDm). Where Slack refuses to open
// one for good (slack-connect.redis.test.ts: invalid_user_combination) the asker is told so; a failure that says
// nothing of the asker (Slack's internal_error) is no refusal, and telling them "Slack would not let me open one with
// you" was wrong: they get the usual "Something went wrong", and may simply ask again. Real Bolt in Socket Mode
// against the fake Slack, the real core on Redis, no worker.
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { appMention, eventCallback } from '../../../fakes/slack/payloads.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const ADMIN = 'U0PDADMIN';
const MEMBER = 'U0PDMEMBER';
let h: SlackHarness;
let png: Uint8Array;
let channels = 0;
let CHANNEL = 'C0PD';

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000 });
  h.fake.addUser(ADMIN, { isAdmin: true });
  h.fake.addUser(MEMBER);
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#48a' } }).png().toBuffer());
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0PD${String(++channels).padStart(4, '0')}`;
});

async function mention(question: string): Promise<string> {
  const m = h.fake.postUserMessage({ channel: CHANNEL, user: MEMBER, text: `<@${h.fake.botUserId}> ${question}`, files: [h.fake.seedFile(png, 'harbour.png', 'image/png')] });
  await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
  return jobIdFor('slack', `msg:${CHANNEL}:${m.ts}`);
}

const toldPrivately = () => h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.channel === CHANNEL && c.args.user === MEMBER)?.args.text as string | undefined, 10_000, 'what the asker was told');

describe('private results: a DM Slack could not open this time', () => {
  it('an error that is no refusal (internal_error) is not told as one: "Something went wrong", nothing started', async () => {
    await h.core.settings.set('channel', { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: ADMIN }, { private: true });
    h.fake.inject({ method: 'conversations.open', error: 'internal_error' });
    const jobId = await mention('what harbour is this?');
    expect(await toldPrivately()).toMatch(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/);
    expect((await h.core.queue.getJob(jobId))?.data as JobRequest | undefined).toBeUndefined();
  });
});
