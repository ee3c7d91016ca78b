// A workspace of an Enterprise Grid org where the app is installed for the whole org (an org-wide installation), with
// real @slack/bolt in Socket Mode against the fake Slack: Slack then sends buttons and shortcuts with `team: null` and
// `is_enterprise_install: true`, the workspace only in `user.team_id`, which Bolt's context.teamId reads (bolt-js
// App.ts buildSource). Until 2026-12-07 the handlers read `team.id` and such a press was the empty workspace's ('').
// Events come with `authorizations[0].team_id: null`; Bolt's context.teamId is then the envelope's `team_id`, the
// workspace the event happened in (pinned here; the bot already read it through installationOf).
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACTION, SHORTCUT_DESCRIBE } from '../../../../bots/slack/blocks.ts';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { appMention, blockAction, eventCallback, messageShortcut, slashCommand } from '../../../fakes/slack/payloads.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const ORG = 'E0WIDEORG';
let h: SlackHarness;
let png: Uint8Array;
let users = 0;
let channels = 0;
let CHANNEL = 'C0WIDE';

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#48a' } }).png().toBuffer());
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000, fake: { enterpriseId: ORG, orgWideInstall: true } });
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0W${String(++channels).padStart(4, '0')}`;
});

function newUser(): string {
  const id = `U0W${String(++users).padStart(4, '0')}`;
  h.fake.addUser(id);
  return id;
}

const interactive = async (payload: Record<string, unknown>) => h.fake.link.ack(h.fake.sendEnvelope('interactive', payload));
const request = async (jobId: string) => (await h.core.queue.getJob(jobId))?.data as JobRequest | undefined;
const queued = (jobId: string) => until(() => request(jobId), 10_000, `job ${jobId}`);

describe('an org-wide installation on Enterprise Grid', () => {
  it('sends buttons and shortcuts as Slack does: team null, the workspace in user.team_id', () => {
    const user = newUser();
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'hi' });
    for (const payload of [blockAction(h.fake, { user, message, actionId: ACTION.reroll, value: 'j' }), messageShortcut(h.fake, { user, message, callbackId: SHORTCUT_DESCRIBE })]) {
      expect(payload).toMatchObject({ team: null, is_enterprise_install: true, enterprise: { id: ORG }, user: { id: user, team_id: h.fake.teamId } });
    }
  });

  it('sends events as Slack does: the authorization the org\'s (team_id null), the workspace in the envelope\'s team_id', () => {
    const user = newUser();
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> hi` });
    expect(eventCallback(h.fake, appMention(h.fake, message))).toMatchObject({
      team_id: h.fake.teamId, enterprise_id: ORG,
      authorizations: [{ enterprise_id: ORG, team_id: null, is_enterprise_install: true, user_id: h.fake.botUserId, is_bot: true }],
    });
  });

  it('a mention is the workspace\'s (Bolt reads the envelope\'s team_id when the authorization has none)', async () => {
    const user = newUser();
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: `<@${h.fake.botUserId}> what bird is this?`, files: [h.fake.seedFile(png, 'heron.png', 'image/png')] });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, message))));
    const job = await queued(jobIdFor('slack', `msg:${CHANNEL}:${message.ts}`));
    expect(job).toMatchObject({ kind: 'ask', question: 'what bird is this?' });
    expect(job.destination).toMatchObject({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user });
  });

  it('a Re-roll press is the workspace\'s, as the /imagine it re-rolls', async () => {
    const user = newUser();
    const command = slashCommand(h.fake, { text: 'a grey heron --seed 4', channel: CHANNEL, user });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', command));
    const jobId = jobIdFor('slack', `cmd:${command.trigger_id}`);
    expect((await queued(jobId)).destination).toMatchObject({ teamId: h.fake.teamId });
    const status = h.fake.botMessages(CHANNEL).find((m) => m.metadata?.event_payload.job_id === jobId)!;

    const press = blockAction(h.fake, { user, message: status, actionId: ACTION.reroll, value: jobId });
    await interactive(press);
    const again = jobIdFor('slack', `btn:${user}:${(press.actions as { action_ts: string }[])[0]!.action_ts}`);
    expect((await queued(again)).destination).toMatchObject({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user });
  });

  it('"Describe this image" is the workspace\'s', async () => {
    const user = newUser();
    const message = h.fake.postUserMessage({ channel: CHANNEL, user, text: 'describe me', files: [h.fake.seedFile(png, 'w.png', 'image/png')] });
    const shortcut = messageShortcut(h.fake, { user, message, callbackId: SHORTCUT_DESCRIBE });
    await interactive(shortcut);
    const job = await queued(jobIdFor('slack', `shortcut:${shortcut.trigger_id as string}`));
    expect(job).toMatchObject({ kind: 'ask', mode: 'describe' });
    expect(job.destination).toMatchObject({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: user });
  });
});
