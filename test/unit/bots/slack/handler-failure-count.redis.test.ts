// The Slack adapter's own "Something went wrong (ref X)" (a listener failing around core.handle: `guarded` in
// bots/slack/handlers.ts) is counted for /metrics as the core's own are (Core.commandFailed →
// blip3o_command_failures_total), by the command it was for: each listener's `what` is one of a small fixed set of
// labels. Before 2026-12-08 only its log line told of it. Real Bolt against the fake Slack, the real core, no worker.
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import type { Core } from '../../../../bots/core/submit.ts';
import { startGuard } from '../../../doubles/start-guard.ts';
import { startSlackHarness, type SlackHarness } from '../../../fakes/slack/bot-harness.ts';
import { appMention, eventCallback, slashCommand } from '../../../fakes/slack/payloads.ts';

const CHANNEL = 'C0COUNTED';
const USER = 'U0COUNTED';
let h: SlackHarness;
let png: Uint8Array;
const counted: Parameters<Core['commandFailed']>[0][] = [];

const guard = startGuard();
beforeAll(() => guard.starting(async () => {
  h = await startSlackHarness({ mode: 'socket', worker: false, ackWindowMs: 10_000 });
  h.fake.addUser(USER);
  const commandFailed = h.core.commandFailed; // a wrapper, to see what the adapter counts (undefined before 2026-12-08)
  h.core.commandFailed = (f) => void (counted.push(f), commandFailed?.(f));
  png = new Uint8Array(await sharp({ create: { width: 24, height: 16, channels: 3, background: '#4a8' } }).png().toBuffer());
}), 60_000);
afterAll(async () => h?.stop(), 30_000);
beforeEach(guard.check);

it('a listener that fails unexpectedly is counted by its command and the error\'s code', async () => {
  // startJob's status message fails with an error Slack does not explain: /imagine, then a mention
  h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text: 'a failing fox', channel: CHANNEL, user: USER })));
  await h.fake.waitFor(() => (counted.length === 1 ? true : undefined), 10_000, 'the /imagine failure counted');
  const m = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what?`, files: [h.fake.seedFile(png, 'f.png', 'image/png')] });
  h.fake.inject({ method: 'chat.postMessage', error: 'fatal_error' });
  await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
  await h.fake.waitFor(() => (counted.length === 2 ? true : undefined), 10_000, 'the mention failure counted');
  expect(counted.map(({ error, ...label }) => ({ ...label, code: (error as { code?: string }).code }))).toEqual([
    { platform: 'slack', command: 'imagine', code: 'slack_webapi_platform_error' },
    { platform: 'slack', command: 'ask', code: 'slack_webapi_platform_error' },
  ]);
});
