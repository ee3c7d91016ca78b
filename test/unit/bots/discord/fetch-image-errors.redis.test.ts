// The ask modal's second submit fetches its message again (bots/discord/adapter.ts fetchImageOf). A message that is
// gone (404 Unknown Message) or out of the bot's sight (403 Missing Access) has no image any more; Discord failing to
// answer (a 5xx after discord.js's retries, a timeout) says nothing about the message, and the user is told to try
// again, not that the image is gone. Real discord.js against the fake Discord, the real core on Redis, no worker.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Core } from '../../../../bots/core/submit.ts';
import type { JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { until } from '../../../doubles/spine-harness.ts';
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

function privateText(i: FakeInteraction): string | undefined {
  const first = i.callbacks[0];
  if (first?.type === 4 && Number(first.data?.flags ?? 0) & EPHEMERAL) return String(first.data?.content ?? '');
  const followUp = i.followupIds.map((id) => h.fake.messages.get(id)).find((m) => m && m.flags & EPHEMERAL);
  if (followUp) return followUp.content;
  const original = h.fake.original(i);
  return original && original.flags & EPHEMERAL && original.content ? original.content : undefined;
}
const toldPrivately = (i: FakeInteraction) => h.fake.waitFor(() => privateText(i), 20_000, 'the private answer');
const queued = (i: FakeInteraction) => until(async () => (await h.core.queue.getJob(jobIdFor('discord', i.id)))?.data as JobRequest | undefined, 10_000, 'the job');

/** An "Ask about this image" menu whose first submit was answered: the next submit fetches the message again. */
async function menuOnImage() {
  const target = h.fake.postUserMessage({ content: 'a result', author: h.fake.bot, attachments: [h.fake.addAttachment({ bytes: png, filename: 'photo.png', contentType: 'image/png' })], silent: true });
  const menu = h.fake.contextMenu({ name: 'Ask about this image', target, user: h.fake.user(`u${Math.random().toString(36).slice(2, 8)}`) });
  await h.fake.waitFor(() => menu.callbacks.find((c) => c.type === 9), 10_000, 'the modal');
  await queued(h.fake.submitModal(menu, { question: `first of ${target.id}?` })); // a question of its own: an identical one joins the other's job
  return { target, menu, route: new RegExp(`/channels/${h.fake.channelId}/messages/${target.id}$`) };
}

describe('the ask modal fetching its message again', () => {
  it('Discord failing to answer (5xx after the retries) is told to try again, and logged; the message is still there', async () => {
    const { menu, route } = await menuOnImage();
    let failing = true;
    h.fake.injectFault({ method: 'GET', path: route, status: 503, times: 100, when: () => failing });
    const told = await toldPrivately(h.fake.submitModal(menu, { question: 'second?' }));
    expect(told).toBe('Discord did not answer when I looked up that message; please try again.'); // before: "That message has no image I can read any more."
    expect(logged.some((l) => l.msg === 'fetching the message of an ask modal failed' && l.level === 40)).toBe(true);
    // Discord answers again: the same modal works
    failing = false;
    expect((await queued(h.fake.submitModal(menu, { question: 'third?' }))).kind).toBe('ask');
  });

  it('a connection dropped before Discord\'s answer is told to try again too', async () => {
    const { menu, route } = await menuOnImage();
    h.fake.injectFault({ method: 'GET', path: route, lostReply: 'closed' });
    expect(await toldPrivately(h.fake.submitModal(menu, { question: 'dropped?' }))).toBe('Discord did not answer when I looked up that message; please try again.');
  });

  it('a message gone (404) or out of sight (403 Missing Access) has no image any more', async () => {
    const { menu, route } = await menuOnImage();
    h.fake.injectFault({ method: 'GET', path: route, status: 403, code: 50001, message: 'Missing Access' });
    expect(await toldPrivately(h.fake.submitModal(menu, { question: 'hidden?' }))).toBe('That message has no image I can read any more.');
    h.fake.injectFault({ method: 'GET', path: route, status: 404, code: 10008, message: 'Unknown Message' });
    expect(await toldPrivately(h.fake.submitModal(menu, { question: 'gone?' }))).toBe('That message has no image I can read any more.');
  });
});

// An attachment Discord's CDN would not give: the user is told to try again or upload it again, and the admin finds
// why, and where, in a warning (as a Slack download failure has one). The adapter's own "Something went wrong (ref X)"
// (a failure around core.handle): one error line with the command and channel, counted for /metrics as the core's
// are (Core.commandFailed). Before 2026-12-08 neither was logged with its place, nor counted.
describe('an attachment download failing, and the adapter\'s own failures', () => {
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
});
