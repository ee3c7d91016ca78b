// An attachment Discord's CDN would not give (a 5xx, a dropped connection): the user is told to try again or upload it
// again, and the admin finds why in a warning, as a Slack download failure has one (bots/slack/adapter.ts). Before,
// nothing was logged. Real discord.js against the fake Discord, the real core on Redis, no worker.
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
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
  expect(logged.filter((l) => l.msg === 'a Discord attachment download failed')).toMatchObject([{ level: 40, status: 503, err: 'HTTP 503' }]);
});
