// What the Slack adapter keeps per job in memory over weeks of traffic: a job's title (its prompt or question, the
// headline of its status message) is held while the bot may still edit that message, and forgotten once this process
// has delivered the result, or once no job came of the request (refused, or its status message could not be posted). Until 2026-12-08 every title
// stayed for the life of the bot: one entry per request, a prompt kept in memory past a retention channel's deadline
// too, and each Re-roll or Vary of an older job added that job's title as well.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ACTION } from '../../../../bots/slack/blocks.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { blockAction, slashCommand } from '../../../fakes/slack/payloads.ts';
import type { FakeMessage } from '../../../fakes/slack/store.ts';

const CHANNEL = 'C0TITLES';
const JOBS = 4;
let h: SlackHarness;

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'socket', pipelineExtra: { stepDelayMs: 5, maxSteps: 2 } });
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const statusOf = (jobId: string) => h.fake.botMessages(CHANNEL).find((m) => m.metadata?.event_type === 'blip3o_status' && m.metadata.event_payload.job_id === jobId);
const done = (status: FakeMessage) => h.fake.waitFor(() => (h.fake.store.find(CHANNEL, status.ts)?.text === 'Done: the image is in the thread' ? true : undefined), 30_000, 'the final status');

async function imagine(user: string, text: string): Promise<{ jobId: string; responseUrl: string }> {
  const payload = slashCommand(h.fake, { text, channel: CHANNEL, user });
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
  return { jobId: jobIdFor('slack', `cmd:${payload.trigger_id}`), responseUrl: String(payload.response_url) };
}

it('titles are forgotten once a result is delivered here, or the request refused; a Re-roll keeps no title of the job it re-rolls', async () => {
  const user = 'U0TITLES';
  h.fake.addUser(user);
  for (let i = 0; i < JOBS; i++) {
    const { jobId } = await imagine(user, `a lake number ${i} --seed ${i}`);
    await done(await h.fake.waitFor(() => statusOf(jobId), 10_000, 'the status message'));
  }
  // Not queued: the bot is not in the channel (its status message refused), told privately.
  for (let i = 0; i < JOBS; i++) {
    h.fake.inject({ method: 'chat.postMessage', error: 'not_in_channel' });
    const { responseUrl } = await imagine(user, `a lake nobody sees ${i}`);
    await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)), 10_000, 'the refusal');
  }
  // A Re-roll of the first job, pressed on its status message: its own title, and the source's read for it.
  const first = await imagine(user, 'a pond --seed 9');
  const status = await h.fake.waitFor(() => statusOf(first.jobId), 10_000, 'the status message');
  await done(status);
  const payload = blockAction(h.fake, { user, message: status, actionId: ACTION.reroll, value: first.jobId });
  await h.fake.link.ack(h.fake.sendEnvelope('interactive', payload));
  const again = jobIdFor('slack', `btn:${user}:${(payload.actions as { action_ts: string }[])[0]!.action_ts}`);
  await done(await h.fake.waitFor(() => statusOf(again), 10_000, 'the re-roll\'s status message'));
  await new Promise((r) => setTimeout(r, 300)); // the last delivery's own end (the final status is its last call)
  expect(h.adapter.titlesKept).toBe(0);
}, 120_000);
