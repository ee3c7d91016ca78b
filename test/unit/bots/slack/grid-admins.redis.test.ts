// Who is an admin of the workspace a Slack request came from (bots/slack/admin.ts adminOfWorkspace), with real
// @slack/bolt in Socket Mode against a fake workspace on Enterprise Grid: users.info answers as Slack does
// (api.slack.com/types/user) for an Org Admin or Owner who holds no workspace role, and for a Slack Connect member of
// another organisation who is an admin there. The core enforces what an admin may do where (bots/core/submit.ts
// cancel, bots/core/commands/limits.ts); these check what the adapter tells it.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACTION } from '../../../../bots/slack/blocks.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { blockAction, slashCommand, viewSubmission } from '../../../fakes/slack/payloads.ts';
import type { FakeMessage } from '../../../fakes/slack/store.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const ORG = 'E0GRIDORG';
/** Another workspace of the same org (the bot answers it too: Slack sends its requests with its own team id). */
const SISTER = 'T0SISTER';
const CANCEL_REFUSED = 'Only the person who started a job (or an admin) can cancel it.';
let h: SlackHarness;
let users = 0;
let channels = 0;
let CHANNEL = 'C0GRID';

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000, fake: { enterpriseId: ORG } });
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => {
  guard.check();
  CHANNEL = `C0G${String(++channels).padStart(4, '0')}`;
});

/** A fresh user per test (the adapter remembers who is no admin): a member of the org unless `from` says otherwise. */
function newUser(flags: Parameters<SlackHarness['fake']['addUser']>[1] = {}): string {
  const id = `U0G${String(++users).padStart(4, '0')}`;
  h.fake.addUser(id, flags);
  return id;
}

/** An interactive payload's `team` when sent by workspace `teamId` of the org. */
const teamOf = (teamId: string) => ({ id: teamId, domain: teamId.toLowerCase(), enterprise_id: ORG, enterprise_name: 'Fake Org' });

async function command(text: string, user: string, name: string, teamId = h.fake.teamId) {
  const payload = { ...slashCommand(h.fake, { command: name, text, channel: CHANNEL, user }), team_id: teamId };
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
  return { payload, jobId: jobIdFor('slack', `cmd:${payload.trigger_id}`) };
}

/** A button pressed on `message` in workspace `teamId` of the org. */
async function press(user: string, message: FakeMessage, actionId: string, value: string, teamId = h.fake.teamId) {
  const payload: Record<string, unknown> = { ...blockAction(h.fake, { user, message, actionId, value }), team: teamOf(teamId) };
  await h.fake.link.ack(h.fake.sendEnvelope('interactive', payload));
  return payload;
}

const responses = (responseUrl: string): string[] =>
  h.fake.calls.filter((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)).map((c) => String(c.args.text));
const toldVia = (responseUrl: string, what: string) => h.fake.waitFor(() => responses(responseUrl)[0], 10_000, what);
const queuedJob = (jobId: string) => until(async () => (await h.core.queue.getJob(jobId)) ?? undefined, 10_000, `job ${jobId}`);
const limitOf = (teamId: string) => h.core.gate.limiter.channelLimit(`slack:${teamId}:${CHANNEL}`);

/** Someone's /imagine, queued, and its status message. */
async function jobOf(user: string, teamId = h.fake.teamId): Promise<{ jobId: string; status: FakeMessage }> {
  const { jobId } = await command(`a lighthouse, ${user}'s --seed 5`, user, '/imagine', teamId); // a prompt of its own: none joins another's run
  await queuedJob(jobId);
  const status = h.fake.botMessages(CHANNEL).find((m) => m.metadata?.event_payload.job_id === jobId)!;
  return { jobId, status };
}

describe('Enterprise Grid: Org Admins and Owners', () => {
  it('an Org Admin or Owner who holds no workspace role is an admin of the workspace: /blip3o-admin, a channel\'s defaults', async () => {
    const orgAdmin = newUser({ orgAdmin: true });
    const set = await command('limits set concurrent=3', orgAdmin, '/blip3o-admin');
    expect(await toldVia(set.payload.response_url, 'the new limits')).not.toMatch(/^Only admins/);
    expect(await limitOf(h.fake.teamId)).toMatchObject({ source: 'redis', limit: { maxConcurrent: 3 } });

    const orgOwner = newUser({ orgOwner: true });
    const settings = await command('channel', orgOwner, '/blip3o-settings');
    const opened = await h.fake.waitFor(() => h.fake.apiCalls('views.open').find((c) => c.args.trigger_id === settings.payload.trigger_id), 10_000, 'the channel modal');
    const view = opened.args.view as Record<string, unknown>;
    expect(JSON.parse(String(view.private_metadata))).toMatchObject({ scope: 'channel' });
    // saved: the submission (view_submission, its org in `enterprise`) is checked again
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', viewSubmission(h.fake, { user: orgOwner, view, values: { steps: { value: { type: 'number_input', value: '12' } } } })));
    const here = { platform: 'slack' as const, teamId: h.fake.teamId, channelId: CHANNEL, userId: orgOwner };
    await until(async () => ((await h.core.settings.get('channel', here)).steps === 12 ? true : undefined), 10_000, 'the saved steps');

    const member = newUser();
    expect(await toldVia((await command('queue', member, '/blip3o-admin')).payload.response_url, 'the refusal')).toBe('Only admins can manage the queue.');
  });

  it('an Org Admin acting in one workspace acts on it alone: another workspace\'s job is not theirs to cancel from here, nor its limits', async () => {
    const orgAdmin = newUser({ orgAdmin: true });
    const { jobId, status } = await jobOf(newUser(), SISTER);
    const fromHere = await press(orgAdmin, status, ACTION.cancel, jobId);
    expect(await toldVia(String(fromHere.response_url), 'the refusal')).toBe(CANCEL_REFUSED);
    expect(await h.core.queue.getJob(jobId)).toBeDefined();
    // the same admin in that workspace (of the same org): theirs to cancel
    const there = await press(orgAdmin, status, ACTION.cancel, jobId, SISTER);
    expect(await toldVia(String(there.response_url), 'the confirmation')).toBe('Cancelling…');

    await toldVia((await command('limits set concurrent=2', orgAdmin, '/blip3o-admin')).payload.response_url, 'the new limits');
    expect(await limitOf(h.fake.teamId)).toMatchObject({ source: 'redis', limit: { maxConcurrent: 2 } });
    expect((await limitOf(SISTER)).source).toBe('default');
  });
});

describe('Slack Connect: members of another organisation', () => {
  it('an admin and owner of their own workspace and org is no admin here: their Cancel on another\'s job is refused', async () => {
    const partner = newUser({ isAdmin: true, isOwner: true, orgAdmin: true, orgOwner: true, from: { teamId: 'T0PARTNER', enterpriseId: 'E0PARTNER' } });
    const { jobId, status } = await jobOf(newUser());
    const refused = await press(partner, status, ACTION.cancel, jobId);
    expect(await toldVia(String(refused.response_url), 'the refusal')).toBe(CANCEL_REFUSED);
    expect(await h.core.queue.getJob(jobId)).toBeDefined();

    // one from a workspace outside Grid: the same
    const solo = newUser({ isAdmin: true, from: { teamId: 'T0SOLO' } });
    const again = await press(solo, status, ACTION.cancel, jobId);
    expect(await toldVia(String(again.response_url), 'the refusal')).toBe(CANCEL_REFUSED);
    expect(await h.core.queue.getJob(jobId)).toBeDefined();
  });
});

describe('the remembered "not an admin"', () => {
  it('is remembered for the workspace it was found in: a workspace admin refused in another org\'s workspace is not refused here for it', async () => {
    const admin = newUser({ isAdmin: true });
    const { jobId, status } = await jobOf(newUser());
    const elsewhere: Record<string, unknown> = { ...blockAction(h.fake, { user: admin, message: status, actionId: ACTION.cancel, value: jobId }), team: { id: 'T0OTHER', domain: 'other', enterprise_id: 'E0OTHER' }, enterprise: { id: 'E0OTHER', name: 'Other' } };
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', elsewhere));
    expect(await toldVia(String(elsewhere.response_url), 'the refusal')).toBe(CANCEL_REFUSED);
    const here = await command('queue', admin, '/blip3o-admin');
    expect(await toldVia(here.payload.response_url, 'the queue')).not.toMatch(/^Only admins/);
  });
});
