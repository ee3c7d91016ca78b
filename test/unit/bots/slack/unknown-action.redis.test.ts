// A press of one of our buttons whose action_id this version does not know: a newer or older bot's, posted by it
// during a rolling upgrade (blip3o_upscale, a renamed one). Slack sends every press on the app's messages to this app,
// and one left unacked shows the user an error icon and nothing else. Discord answers the same case privately
// (bots/discord/custom-ids.ts isOurButtonId); Slack acks it and says the same, privately. Real @slack/bolt in Socket
// Mode against the fake Slack, the real core on Redis, no worker.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACTION } from '../../../../bots/slack/blocks.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { blockAction } from '../../../fakes/slack/payloads.ts';
import type { FakeMessage } from '../../../fakes/slack/store.ts';
import { startGuard } from '../../../doubles/start-guard.ts';

const CHANNEL = 'C0UNKNOWNACT';
const NO_LONGER_WORKS = 'This button no longer works here. Please run the command again.';
let h: SlackHarness;
let users = 0;

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 2_000 });
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(() => guard.check());

function newUser(): string {
  const id = `U0UA${String(++users).padStart(4, '0')}`;
  h.fake.addUser(id);
  return id;
}

/** A result message of the bot's carrying a button with `actionId` (as another version of the bot would post it). */
const botMessageWith = (actionId: string): FakeMessage =>
  h.fake.store.add({
    channel: CHANNEL, text: 'a result', bot_id: h.fake.botId, user: h.fake.botUserId,
    blocks: [{ type: 'actions', block_id: 'result', elements: [{ type: 'button', action_id: actionId, value: 'j-elsewhere' }] }],
  });

const responses = (responseUrl: string): string[] =>
  h.fake.calls.filter((c) => c.kind === 'response_url' && responseUrl.endsWith(c.method)).map((c) => String(c.args.text));

describe('a button of another version of the bot', () => {
  it('is acked and its presser told privately that it no longer works, as on Discord', async () => {
    for (const actionId of ['blip3o_upscale', `${ACTION.vary}_x`, `${ACTION.reroll}_all`]) {
      const payload = blockAction(h.fake, { user: newUser(), message: botMessageWith(actionId), actionId, value: 'j-elsewhere' });
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', payload)); // before the fix: "envelope … was not acked within 2000 ms"
      const told = await h.fake.waitFor(() => responses(String(payload.response_url))[0], 10_000, `the answer to ${actionId}`);
      expect(told).toBe(NO_LONGER_WORKS);
      const sent = h.fake.calls.find((c) => c.kind === 'response_url' && String(payload.response_url).endsWith(c.method))!;
      expect(sent.args).toMatchObject({ response_type: 'ephemeral', replace_original: false });
    }
  });

  it('a button that is not ours (no blip3o_ prefix) is left alone: another app\'s, never sent to this one', async () => {
    const payload = blockAction(h.fake, { user: newUser(), message: botMessageWith('someone_else'), actionId: 'someone_else', value: 'x' });
    await expect(h.fake.link.ack(h.fake.sendEnvelope('interactive', payload))).rejects.toThrow(/was not acked/);
    expect(responses(String(payload.response_url))).toEqual([]);
  });

  it('the buttons this version knows are answered by their own listeners, not told they no longer work', async () => {
    const payload = blockAction(h.fake, { user: newUser(), message: botMessageWith(ACTION.cancel), actionId: ACTION.cancel, value: 'j-unknown-job' });
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', payload));
    const told = await h.fake.waitFor(() => responses(String(payload.response_url))[0], 10_000, 'the cancel answer');
    expect(told).not.toBe(NO_LONGER_WORKS);
    await new Promise((r) => setTimeout(r, 300));
    expect(responses(String(payload.response_url))).toHaveLength(1); // one answer, not two listeners'
  });
});
