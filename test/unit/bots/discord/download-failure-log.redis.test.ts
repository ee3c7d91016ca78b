// An attachment Discord's CDN would not give (a 5xx, a dropped connection): the user is told to try again or upload it
// again, and the admin finds why, and where, in a warning, as a Slack download failure has one (bots/slack/adapter.ts).
// Before, nothing was logged. The adapter's own "Something went wrong (ref X)" (a failure around core.handle): one
// error line with the command and channel, counted for /metrics as the core's are (Core.commandFailed). Real
// discord.js against the fake Discord, the real core on Redis, no worker.
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import type { Core } from '../../../../bots/core/submit.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';
import type { FakeInteraction } from '../../../fakes/discord/server.ts';

const EPHEMERAL = 64;

let h: DiscordHarness;
let png: Uint8Array;
let logged: LogLine[] = [];

const { starting, check } = startGuard();
beforeEach(check);
beforeAll(() => starting(async () => {
  const captured = capturedLog('info');
  logged = captured.lines;
  h = await startDiscordHarness({ worker: false, log: captured.log });
  png = await samplePng(24);
}), 60_000);
afterAll(async () => h?.stop(), 30_000);

/** What the user alone was told: the first ephemeral answer, follow-up or edit. */
function privateText(i: FakeInteraction): string | undefined {
  const first = i.callbacks[0];
  if (first?.type === 4 && Number(first.data?.flags ?? 0) & EPHEMERAL) return String(first.data?.content ?? '');
  const followUp = i.followupIds.map((id) => h.fake.messages.get(id)).find((m) => m && m.flags & EPHEMERAL);
  if (followUp) return followUp.content;
  const original = h.fake.original(i);
  return original && original.flags & EPHEMERAL && original.content ? original.content : undefined;
}

it('a CDN answering 503: the user is told, and one warning says what the CDN answered', async () => {
  const photo = h.fake.addAttachment({ bytes: png, filename: 'photo.png', contentType: 'image/png' });
  h.fake.injectFault({ method: 'GET', path: /^\/attachments\//, status: 503 });
  const i = h.fake.slashCommand({ name: 'ask', user: h.fake.user('u-dl'), options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: 'what is it?' }], attachments: [photo] });
  expect(await h.fake.waitFor(() => privateText(i), 20_000, 'the private answer')).toBe("I couldn't download photo.png (HTTP 503); it may have expired. Please upload it again.");
  expect(logged.filter((l) => l.msg === 'a Discord attachment download failed')).toMatchObject([{ level: 40, status: 503, err: 'HTTP 503', channel: h.fake.channelId }]);
});

it('"Something went wrong (ref X)" of the adapter\'s own: one error line naming the command and channel, and counted', async () => {
  const counted: Parameters<Core['commandFailed']>[0][] = [];
  const { get } = h.core.settings;
  const commandFailed = h.core.commandFailed; // a wrapper, to see what the adapter counts (undefined before 2026-12-08)
  h.core.commandFailed = (f) => void (counted.push(f), commandFailed?.(f));
  h.core.settings.get = async () => { throw new Error('connection lost'); };
  try {
    const i = h.fake.slashCommand({ name: 'settings', user: h.fake.user('u-fail') });
    const ref = /ref ([0-9a-f]{8})/.exec(await h.fake.waitFor(() => privateText(i), 20_000, 'the private answer'))?.[1];
    expect(logged.filter((l) => l.msg === 'discord handler failed' && l.ref === ref)).toMatchObject([{ level: 50, command: 'settings', channel: h.fake.channelId, err: 'connection lost' }]);
    expect(counted).toMatchObject([{ platform: 'discord', command: 'settings', error: { message: 'connection lost' } }]);
  } finally {
    h.core.settings.get = get;
    h.core.commandFailed = commandFailed;
  }
});
