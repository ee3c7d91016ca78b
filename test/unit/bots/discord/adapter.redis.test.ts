// The Discord adapter's gateway glue (bots/discord/adapter.ts) without a worker: real discord.js against the fake
// Discord, the real core on Redis. What each slash command, context menu, modal, button and mention answers, and the
// request each one queues (jobs stay queued: no worker takes them). The end-to-end paths with a worker are in
// test/integration/discord*.redis.test.ts; these are fast enough for the `gateway` mutation group.
import { pino } from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buttonId, settingsButtonId } from '../../../../bots/discord/custom-ids.ts';
import type { DiscordDestination, JobRequest } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { until } from '../../../doubles/spine-harness.ts';
import { capturedLog, type LogLine } from '../../../doubles/core-harness.ts';
import { startGuard } from '../../../doubles/start-guard.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { DiscordAdapter } from '../../../../bots/discord/adapter.ts';
import { startDiscordHarness, type DiscordHarness } from '../../../fakes/discord/bot-harness.ts';
import { messageJson, userJson } from '../../../fakes/discord/messages.ts';
import type { FakeInteraction, FakeMessage, FakeUser, RecordedRequest } from '../../../fakes/discord/server.ts';

const EPHEMERAL = 64;
const MANAGE_GUILD = String(1n << 5n);
let h: DiscordHarness;
let png: Uint8Array;
/** A server channel the bot is not enabled in (discord.allowedChannelIds names the fake's own channel only). */
let closedChannel: string;
/** A channel marked age-restricted (nsfw), where the bot is enabled too. */
let adults: string;
/** Enabled channels whose permissions deny the bot Send Messages, and Read Message History. */
let readOnly: string;
let noHistory: string;

/** Every harness this file starts: one that fails to start, or never does (a login waiting for ever), fails every test. */
const { starting, check } = startGuard();
beforeEach(check);

/** The bot's log lines (info and up), parsed. */
let logged: LogLine[] = [];
const loggedAs = (msg: string, lines = logged) => lines.filter((l) => l.msg === msg);

beforeAll(() => starting(async () => {
  const captured = capturedLog('info');
  logged = captured.lines;
  h = await startDiscordHarness({ worker: false, log: captured.log, config: (fake) => {
    adults = fake.addChannel('adults', { nsfw: true });
    readOnly = fake.addChannel('read-only', { botCannot: ['send'] });
    noHistory = fake.addChannel('no-history', { botCannot: ['readHistory'] });
    // smaller than understanding.maxInputImageBytes (20 MiB): the smaller of the two is the limit
    return { discord: { allowedChannelIds: [fake.channelId, adults, readOnly, noHistory], maxAttachmentBytes: 8 * 2 ** 20 } };
  } });
  closedChannel = h.fake.addChannel('closed');
  png = await samplePng(24);
}), 60_000);
afterAll(async () => h?.stop(), 30_000);

/** A fresh user per test: limits and saved settings are per user. */
const newUser = (): FakeUser => h.fake.user(`user${Math.random().toString(36).slice(2, 8)}`);
const request = async (jobId: string): Promise<JobRequest | undefined> => (await h.core.queue.getJob(jobId))?.data as JobRequest | undefined;
const queued = (i: FakeInteraction | string) => until(() => request(typeof i === 'string' ? i : jobIdFor('discord', i.id)), 10_000, 'the job');
const settle = () => new Promise((r) => setTimeout(r, 300));
/**
 * The adapter's identifyWindowMs for the harnesses that log in again: each re-login identifies once or twice, and
 * Discord's 5 s between IDENTIFYs (identify-throttle.ts; its own tests keep it) made them wait most of a minute.
 */
const QUICK_IDENTIFY_MS = 100;
const LONG_CHAIN_HELP = "I followed this conversation 24 replies up without reaching its image. Reply to the image's own message (or attach the image) to ask again.";
const NO_IMAGE_HELP = 'Mention me in a reply to a message with an image (or attach one) and ask your question, or use `/ask`.';
/** The bot's replies to a message. */
const repliesTo = (m: FakeMessage) => [...h.fake.messages.values()].filter((x) => x.author.id === h.fake.appId && x.referenceId === m.id);
/** A mention the bot answers: once its job is queued, every message the adapter got before it has been handled. */
let sentinels = 0;
async function sentinel(user: FakeUser): Promise<void> {
  const m = h.fake.postUserMessage({ content: `and this one (${++sentinels})?`, author: user, mentionBot: true, attachments: [attachment()] });
  await until(async () => h.core.requestOf(jobIdFor('discord', m.id)), 10_000, 'the sentinel mention handled'); // a job, or served as an identical one
}

/** The private answer an interaction got: its ephemeral reply, or an ephemeral follow-up, or its ephemeral original. */
function privateText(i: FakeInteraction): string | undefined {
  const first = i.callbacks[0];
  if (first?.type === 4 && Number(first.data?.flags ?? 0) & EPHEMERAL) return String(first.data?.content ?? '');
  const followUp = i.followupIds.map((id) => h.fake.messages.get(id)).find((m) => m && m.flags & EPHEMERAL);
  if (followUp) return followUp.content;
  const original = h.fake.original(i);
  return original && original.flags & EPHEMERAL && original.content ? original.content : undefined;
}
const toldPrivately = (i: FakeInteraction, what = 'the private answer') => h.fake.waitFor(() => privateText(i), 10_000, what);

function imagine(prompt: string, user?: FakeUser, extra: Record<string, unknown>[] = [], channelId?: string): FakeInteraction {
  return h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: prompt }, ...extra], user, channelId });
}
const attachment = (bytes = png, filename = 'photo.png', contentType = 'image/png') => h.fake.addAttachment({ bytes, filename, contentType });
/** A message of the bot's with an image (a delivered result), for Vary and the context menus. */
const botImage = (content = 'a result') => h.fake.postUserMessage({ content, author: h.fake.bot, attachments: [attachment()], silent: true });

describe('slash commands', () => {
  it('/imagine defers publicly, queues the job for this interaction, then shows the place in line with a Cancel button', async () => {
    const user = newUser();
    const i = imagine('a red fox', user, [{ name: 'seed', type: 4, value: 5 }]);
    const job = await queued(i);
    expect(i.callbacks[0]).toEqual({ type: 5, data: { flags: 0 } }); // public
    expect(job).toMatchObject({ kind: 'imagine', prompt: 'a red fox', options: { seed: 5 } });
    expect(job.destination).toEqual({
      platform: 'discord', guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId,
      interactionToken: i.token, interactionAt: expect.any(Number),
    } satisfies DiscordDestination);
    const shown = await h.fake.waitFor(() => (h.fake.original(i)?.content.startsWith('⏳ Queued') ? h.fake.original(i) : undefined), 10_000, 'the place in line');
    expect(JSON.stringify(shown.components)).toContain(buttonId('cancel', jobIdFor('discord', i.id)));
    // no worker in this file: the core says so after the place in line
    expect(shown.content).toMatch(/^⏳ Queued: \d+(st|nd|rd|th) in line\. No GPU worker is running right now; your request starts as soon as one is\.$/);
  });

  it('a bad option is a private reply before any defer; nothing is queued', async () => {
    const i = imagine('a cat', newUser(), [{ name: 'aspect', type: 3, value: '7:5' }]);
    expect(await toldPrivately(i)).toMatch(/aspect/i);
    expect(i.callbacks).toHaveLength(1);
    expect(i.callbacks[0]!.data).toMatchObject({ flags: EPHEMERAL, allowed_mentions: { parse: [] } }); // the option's text is the user's
    await settle();
    expect(await request(jobIdFor('discord', i.id))).toBeUndefined();
  });

  it("/imagine reads Midjourney's flags in the prompt (as Slack's does); a typed option wins; a bad flag gets the usage privately", async () => {
    const job = await queued(imagine('a red fox --n 4 --ar 16:9 --seed 7', newUser()));
    expect(job).toMatchObject({ kind: 'imagine', prompt: 'a red fox', options: { count: 4, aspect: '16:9', seed: 7 } });
    const typed = await queued(imagine('a red fox --ar 16:9 --seed 7', newUser(), [{ name: 'seed', type: 4, value: 5 }]));
    expect(typed).toMatchObject({ kind: 'imagine', prompt: 'a red fox', options: { aspect: '16:9', seed: 5 } });
    const bad = imagine('a red fox --n 9', newUser());
    expect(await toldPrivately(bad)).toMatch(/^`--n` must be between 1 and 4; you gave 9\.\nUsage: `\/imagine/);
    await settle();
    expect(await request(jobIdFor('discord', bad.id))).toBeUndefined();
  });

  it('private results: the defer is ephemeral and the job private', async () => {
    const user = newUser();
    await h.core.settings.set('user', { platform: 'discord', guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId }, { private: true });
    const i = imagine('a secret', user);
    const job = await queued(i);
    expect(i.callbacks[0]).toMatchObject({ type: 5, data: { flags: EPHEMERAL } });
    expect(job.destination).toMatchObject({ private: true });
  });

  it('a refusal of the core after a public defer: the public message goes, the user alone is told', async () => {
    const user = newUser();
    const i = imagine('x'.repeat(10), user, [{ name: 'negative', type: 3, value: 'y'.repeat(5000) }]);
    expect(await toldPrivately(i)).toMatch(/negative|long|characters/i);
    await h.fake.waitFor(() => (h.fake.requestsTo('DELETE', new RegExp(`/webhooks/\\d+/${i.token}/messages/@original$`)).length > 0 ? true : undefined), 10_000, 'the public reply deleted');
    const followUp = h.fake.requestsTo('POST', new RegExp(`/webhooks/\\d+/${i.token}$`)).at(-1)!;
    expect(followUp.body).toMatchObject({ flags: EPHEMERAL, allowed_mentions: { parse: [] } });
    expect(await request(jobIdFor('discord', i.id))).toBeUndefined();
  });

  it("a follow-up whose reply was lost after Discord posted it is posted once, with no \"Something went wrong\" after it: a refusal (discord.js sent it again on a reset connection; a closed one failed the handler), a failure told after a public defer", async () => {
    const followUps = (token: string) => h.fake.requestsTo('POST', new RegExp(`/webhooks/\\d+/${token}$`));
    const warned = () => loggedAs('a follow-up may have been posted: not sent again').length;
    for (const lostReply of ['reset', 'closed'] as const) {
      const before = warned();
      const i = imagine('x'.repeat(10), newUser(), [{ name: 'negative', type: 3, value: 'y'.repeat(5000) }]); // refused by the core
      h.fake.injectFault({ method: 'POST', path: new RegExp(`/webhooks/\\d+/${i.token}$`), lostReply });
      await until(async () => (warned() > before || i.followupIds.length > 1 ? true : undefined), 10_000, 'the follow-up');
      // Before: the refusal twice ('reset'), or the refusal then "Something went wrong" ('closed')
      expect(i.followupIds.map((id) => h.fake.messages.get(id)!.content)).toEqual([expect.stringMatching(/negative|long|characters/i)]);
      expect(followUps(i.token).map((r) => r.lost)).toEqual([true]);
    }
    const show = h.core.showBeforeResult;
    h.core.showBeforeResult = async () => { throw new Error('connection lost'); };
    try {
      const before = warned();
      const i = imagine('a lighthouse, lost', newUser());
      h.fake.injectFault({ method: 'POST', path: new RegExp(`/webhooks/\\d+/${i.token}$`), lostReply: 'reset' });
      await until(async () => (warned() > before || i.followupIds.length > 1 ? true : undefined), 10_000, 'the follow-up');
      expect(i.followupIds.map((id) => h.fake.messages.get(id)!.content)).toEqual([expect.stringMatching(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/)]);
    } finally {
      h.core.showBeforeResult = show;
    }
  });

  it("a defer whose reply was lost after Discord acknowledged it: the job is still queued, and the place in line replaces the \"thinking…\"", async () => {
    for (const lostReply of ['reset', 'closed'] as const) {
      const i = imagine(`a lighthouse, defer lost ${lostReply}`, newUser());
      h.fake.injectFault({ method: 'POST', path: new RegExp(`/interactions/${i.id}/[^/]+/callback$`), lostReply });
      // Before: discord.js sent the defer again ('reset'; Discord answered 40060) or failed ('closed'), the handler
      // threw, and the user was left with "thinking…": no job, no answer.
      expect(await queued(i)).toMatchObject({ kind: 'imagine', prompt: `a lighthouse, defer lost ${lostReply}` });
      await h.fake.waitFor(() => (h.fake.original(i)?.content.startsWith('⏳ Queued') ? true : undefined), 10_000, 'the place in line');
      expect(i.callbacks).toHaveLength(1);
      const sent = h.fake.requestsTo('POST', new RegExp(`/interactions/${i.id}/[^/]+/callback$`));
      expect(sent.map((r) => r.lost ?? false)).toEqual([true, false]); // the lost one, then the repeat Discord refused
    }
  });

  it('a channel the bot is not enabled in, and the same interaction dispatched twice', async () => {
    const refused = imagine('elsewhere', newUser(), [], closedChannel);
    expect(await toldPrivately(refused)).toBe("This bot isn't enabled in this server or channel.");
    const user = newUser();
    const i = imagine('only once', user);
    await queued(i);
    h.fake.dispatch('INTERACTION_CREATE', i.payload); // a gateway replay
    await settle();
    expect(h.fake.requestsTo('POST', new RegExp(`/interactions/${i.id}/[^/]+/callback$`))).toHaveLength(1); // not even tried again
  });

  it('/ask queues a question about the attached image; a PDF or a missing question is refused before downloading', async () => {
    const user = newUser();
    const photo = attachment();
    const i = h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: 'what is it?' }], attachments: [photo] });
    expect(await queued(i)).toMatchObject({ kind: 'ask', question: 'what is it?', history: [] });
    const pdf = attachment(new TextEncoder().encode('%PDF-1.7'), 'r.pdf', 'application/pdf');
    const bad = h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: pdf.id }, { name: 'question', type: 3, value: 'what?' }], attachments: [pdf] });
    expect(await toldPrivately(bad)).toMatch(/^r\.pdf isn't an image \(application\/pdf\)\. Please attach /);
    const blank = h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: '   ' }], attachments: [photo] });
    expect(await toldPrivately(blank)).toMatch(/question/i);
    expect(bad.callbacks).toHaveLength(1);
    expect(blank.callbacks).toHaveLength(1);
  });

  it('an image over the smaller of the two size limits (discord.maxAttachmentBytes here) is refused before downloading, by /ask and by the Ask menu', async () => {
    const user = newUser();
    const big = h.fake.addAttachment({ bytes: png, filename: 'big.png', contentType: 'image/png', size: 9 * 2 ** 20 });
    const ask = h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: big.id }, { name: 'question', type: 3, value: 'what?' }], attachments: [big] });
    expect(await toldPrivately(ask)).toBe('big.png is 9 MiB; the limit is 8 MiB.');
    const message = h.fake.postUserMessage({ content: 'a big one', author: h.fake.bot, attachments: [big], silent: true });
    const menu = h.fake.contextMenu({ name: 'Ask about this image', target: message, user });
    expect(await toldPrivately(menu)).toBe('big.png is 9 MiB; the limit is 8 MiB.');
    expect(menu.callbacks.map((c) => c.type)).toEqual([4]); // no modal
    expect(h.fake.requestsTo('GET', /\/attachments\/.*big\.png$/)).toEqual([]);
  });

  it('/describe queues a describe of the attached image', async () => {
    const photo = attachment();
    const i = h.fake.slashCommand({ name: 'describe', user: newUser(), options: [{ name: 'image', type: 11, value: photo.id }], attachments: [photo] });
    expect(await queued(i)).toMatchObject({ kind: 'ask', mode: 'describe' });
  });

  it('/settings shows, sets and resets, privately, with the Private and Reset buttons; a bad retention is refused', async () => {
    const user = newUser();
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    const set = h.fake.slashCommand({ name: 'settings', user, options: [{ name: 'steps', type: 4, value: 9 }, { name: 'private', type: 5, value: true }] });
    const answer = await toldPrivately(set);
    expect(set.callbacks[0]).toMatchObject({ type: 5, data: { flags: EPHEMERAL } });
    expect(answer).toMatch(/steps/i);
    expect(h.fake.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${set.token}/messages/@original$`)).at(-1)!.body).toMatchObject({ allowed_mentions: { parse: [] } });
    expect(await h.core.settings.get('user', here)).toMatchObject({ steps: 9, private: true });
    expect(JSON.stringify(h.fake.original(set)!.components)).toContain(settingsButtonId({ scope: 'user', action: 'private-off' }));

    const show = h.fake.slashCommand({ name: 'settings', user });
    expect(await toldPrivately(show)).not.toMatch(/now/i); // shown, not set
    expect(await h.core.settings.get('user', here)).toMatchObject({ steps: 9 }); // showing changes nothing
    const off = h.fake.pressButton(h.fake.original(set)!, settingsButtonId({ scope: 'user', action: 'private-off' }), user);
    await toldPrivately(off);
    expect((await h.core.settings.get('user', here)).private).toBe(false);
    expect(JSON.stringify(h.fake.original(off)!.components)).toContain(settingsButtonId({ scope: 'user', action: 'private-on' }));
    const reset = h.fake.pressButton(h.fake.original(set)!, settingsButtonId({ scope: 'user', action: 'reset' }), user);
    await toldPrivately(reset);
    expect(await h.core.settings.get('user', here)).toEqual({});

    const every = h.fake.slashCommand({ name: 'settings', user, options: [
      { name: 'aspect', type: 3, value: '16:9' }, { name: 'guidance', type: 10, value: 4.5 }, { name: 'images', type: 4, value: 2 },
      { name: 'negative', type: 3, value: 'blur' },
    ] });
    await toldPrivately(every);
    expect(await h.core.settings.get('user', here)).toMatchObject({ aspect: '16:9', guidance: 4.5, count: 2, negative: 'blur' });
    const channel = h.fake.slashCommand({ name: 'settings', user, options: [{ name: 'for', type: 3, value: 'channel' }, { name: 'steps', type: 4, value: 5 }] });
    expect(await toldPrivately(channel)).toMatch(/admin/i); // the channel's defaults: Manage Server only
    expect(h.fake.original(channel)!.components).toEqual([]); // no buttons under a refusal
    const quiet = h.fake.slashCommand({ name: 'settings', user: newUser(), options: [{ name: 'for', type: 3, value: 'channel' }, { name: 'no-log', type: 5, value: true }], memberPermissions: MANAGE_GUILD });
    await toldPrivately(quiet);
    expect((await h.core.settings.get('channel', here)).noLog).toBe(true);
    await h.core.settings.reset('channel', here);
    const bad = h.fake.slashCommand({ name: 'settings', user, options: [{ name: 'retention', type: 3, value: 'soon' }] });
    expect(await toldPrivately(bad)).toMatch(/duration/i);
    const resetCommand = h.fake.slashCommand({ name: 'settings', user, options: [{ name: 'steps', type: 4, value: 4 }, { name: 'reset', type: 5, value: true }] });
    await toldPrivately(resetCommand);
    expect(await h.core.settings.get('user', here)).toEqual({}); // reset wins over values given with it
  });

  it('/settings clear:<one default> forgets that one and keeps the others; for a channel too (its retention TTL alone)', async () => {
    const user = newUser();
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('user', here, { steps: 9, negative: 'blur', private: true });
    const clear = h.fake.slashCommand({ name: 'settings', user, options: [{ name: 'clear', type: 3, value: 'negative' }, { name: 'images', type: 4, value: 2 }] });
    expect(await toldPrivately(clear)).toMatch(/^Your defaults are now: 9 steps · 2 images · results private\./);
    expect(await h.core.settings.get('user', here)).toEqual({ steps: 9, count: 2, private: true });
    await h.core.settings.set('channel', here, { retentionSeconds: 600, noLog: true });
    const channel = h.fake.slashCommand({ name: 'settings', user: newUser(), options: [{ name: 'for', type: 3, value: 'channel' }, { name: 'clear', type: 3, value: 'retentionSeconds' }], memberPermissions: MANAGE_GUILD });
    await toldPrivately(channel);
    expect(await h.core.settings.get('channel', here)).toEqual({ noLog: true });
    await h.core.settings.reset('channel', here);
  });

  it('/settings retention past 30 days, or 0, is refused in words the admin typed in, not as a schema dump; a user is told it is a channel setting', async () => {
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: 'x', applicationId: h.fake.appId };
    const cases: [string, string][] = [
      ['90d', 'The retention can be at most 30 days; you gave 90 days.'],
      ['0', 'The retention must be at least 1 second.'],
    ];
    for (const [typed, expected] of cases) {
      const i = h.fake.slashCommand({ name: 'settings', user: newUser(), options: [{ name: 'for', type: 3, value: 'channel' }, { name: 'retention', type: 3, value: typed }], memberPermissions: MANAGE_GUILD });
      expect(await toldPrivately(i), typed).toBe(expected);
    }
    expect(await h.core.settings.get('channel', here)).toEqual({});
    const user = h.fake.slashCommand({ name: 'settings', user: newUser(), options: [{ name: 'retention', type: 3, value: '90d' }] });
    expect(await toldPrivately(user)).toBe('The retention TTL and no-log mode are channel settings: an admin sets them for the whole channel.');
  });

  it('Redis too slow for Discord\'s 3 s (a failover): the bot defers privately in time, then queues the job as private', async () => {
    const effective = h.core.settings.effective;
    // Redis answers nothing for 4 s, then all at once: the adapter's read is late, the core's after the defer is not
    const back = Date.now() + 4_000;
    h.core.settings.effective = async (d) => { await new Promise((r) => setTimeout(r, back - Date.now())); return effective.call(h.core.settings, d); };
    try {
      const i = imagine('during a failover', newUser());
      const job = await queued(i);
      expect(i.callbacks).toEqual([{ type: 5, data: { flags: EPHEMERAL } }]); // accepted: within the fake's 3 s window
      expect(job.destination).toMatchObject({ channelId: h.fake.channelId, private: true });
      expect(loggedAs('Redis was slow before a defer: deferred privately first')).toContainEqual(expect.objectContaining({ interaction: i.id, waitedMs: 1_500 }));
    } finally {
      h.core.settings.effective = effective;
    }
  }, 20_000);

  it('a failure after a private defer becomes that reply ("Something went wrong" with its ref), not a follow-up under a "thinking…"', async () => {
    const get = h.core.settings.get;
    h.core.settings.get = async () => { throw new Error('connection lost'); };
    try {
      const i = h.fake.slashCommand({ name: 'settings', user: newUser() });
      const shown = await h.fake.waitFor(() => (h.fake.original(i)?.content.startsWith('Something went wrong') ? h.fake.original(i) : undefined), 10_000, 'the error in the reply');
      expect(shown.content).toMatch(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/);
      const ref = /ref ([0-9a-f]{8})/.exec(shown.content)![1];
      expect(loggedAs('discord handler failed')).toContainEqual(expect.objectContaining({ ref, err: 'connection lost', stack: expect.stringContaining('Error: connection lost') }));
      expect(shown.components).toEqual([]);
      expect(h.fake.requestsTo('PATCH', /\/messages\/@original$/).at(-1)?.body).toMatchObject({ allowed_mentions: { parse: [] } });
      expect(i.callbacks).toHaveLength(1); // the defer, then only its edit
      expect(i.followupIds).toEqual([]);
      // Discord refuses that edit too: the operator reads that the user was not told, and why
      const before = loggedAs('could not report an error').length;
      const refused = h.fake.slashCommand({ name: 'settings', user: newUser() });
      // this interaction's edits only (the REST client retries once): the fault must not outlive the test
      h.fake.injectFault({ method: 'PATCH', path: /\/webhooks\/\d+\/[^/]+\/messages\/@original$/, status: 500, code: 0, message: 'Internal Server Error', times: 10, when: (r) => r.path.includes(refused.token) });
      const [warned] = await until(async () => { const l = loggedAs('could not report an error').slice(before); return l.length > 0 ? l : undefined; }, 15_000, 'the warning');
      expect(warned).toMatchObject({ level: 40, err: expect.stringMatching(/Internal Server Error/) });
    } finally {
      h.core.settings.get = get;
    }
  });

  it('a failure after a public defer is told privately in a follow-up; the public "thinking…" stays for the result (the job was queued)', async () => {
    const show = h.core.showBeforeResult;
    h.core.showBeforeResult = async () => { throw new Error('connection lost'); };
    try {
      const i = imagine('a lighthouse at night', newUser());
      const told = await toldPrivately(i);
      expect(i.callbacks).toEqual([{ type: 5, data: { flags: 0 } }]); // a public defer
      expect(told).toMatch(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/);
      expect(i.followupIds).toHaveLength(1);
      expect(h.fake.messages.get(i.followupIds[0]!)).toMatchObject({ content: told, flags: EPHEMERAL });
      expect(h.fake.requestsTo('POST', new RegExp(`/webhooks/\\d+/${i.token}$`)).at(-1)?.body).toMatchObject({ allowed_mentions: { parse: [] } });
      expect(h.fake.original(i)?.content ?? '').toBe(''); // not edited into the error
      expect(await request(jobIdFor('discord', i.id))).toBeDefined();
    } finally {
      h.core.showBeforeResult = show;
    }
  });

  it('/blip3o-admin: servers only, Manage Server only, then a private answer (the usage chart attached)', async () => {
    const admin = [{ name: 'queue', type: 2, options: [{ name: 'status', type: 1, options: [] }] }];
    const dm = h.fake.slashCommand({ name: 'blip3o-admin', options: admin, dm: true, memberPermissions: MANAGE_GUILD });
    expect(await toldPrivately(dm)).toBe('Admin commands work in servers only.');
    const member = h.fake.slashCommand({ name: 'blip3o-admin', options: admin });
    expect(await toldPrivately(member)).toBe('You need the Manage Server permission for this.');
    const status = h.fake.slashCommand({ name: 'blip3o-admin', options: admin, memberPermissions: MANAGE_GUILD });
    expect((await toldPrivately(status)).split('\n')[1]).toBe('No GPU worker is ready: jobs wait until one is (a worker\'s first start downloads and converts the model first).');
    const usage = h.fake.slashCommand({ name: 'blip3o-admin', options: [{ name: 'usage', type: 1, options: [{ name: 'days', type: 4, value: 1 }] }], memberPermissions: MANAGE_GUILD });
    const report = await h.fake.waitFor(() => (h.fake.original(usage)?.attachments.length ? h.fake.original(usage) : undefined), 10_000, 'the report');
    expect(usage.callbacks[0]).toMatchObject({ type: 5, data: { flags: EPHEMERAL } });
    expect(report.content).toMatch(/^GPU usage in this server/);
    expect(report.attachments[0]!.filename).toBe('usage-1d.png');
    const edit = h.fake.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${usage.token}/messages/@original$`)).at(-1)!;
    expect(edit.body).toMatchObject({ allowed_mentions: { parse: [] } });
  });
});

describe('/blip3o-admin limits set with a value out of range', () => {
  it('names the option the admin typed (per-minute), not the stored fields (requestsPerWindow, windowSeconds) Discord has no option for', async () => {
    const set = h.fake.slashCommand({ name: 'blip3o-admin', options: [{ name: 'limits', type: 2, options: [{ name: 'set', type: 1, options: [{ name: 'per-minute', type: 4, value: 2_000_000 }] }] }], memberPermissions: MANAGE_GUILD });
    expect(await toldPrivately(set)).toBe('Cannot set those limits: `per-minute` must be a whole number from 0 to 1000000; you gave 2000000. Usage: `/blip3o-admin limits set per-minute:5 concurrent:2` (0 turns one off).');
  });
});

describe('/blip3o-admin in a busy server', () => {
  it('a report longer than Discord takes in one message (a line per busy channel) comes in several, each within 2,000', async () => {
    // 40 channels of this server with a job waiting each (no worker runs in this file)
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const where = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: `9${String(i).padStart(17, '0')}`, userId: `8${String(i).padStart(17, '0')}`, applicationId: h.fake.appId };
      const reply = await h.core.handle({ input: { command: 'imagine', prompt: `a busy channel ${i}` }, destination: where, dedupeKey: `busy-${i}-${Math.random()}`, isAdmin: false });
      if (reply.kind === 'queued') ids.push(reply.jobId);
    }
    expect(ids).toHaveLength(40);
    try {
      const status = h.fake.slashCommand({ name: 'blip3o-admin', options: [{ name: 'queue', type: 2, options: [{ name: 'status', type: 1, options: [] }] }], memberPermissions: MANAGE_GUILD });
      const parts = await h.fake.waitFor(() => {
        const original = h.fake.original(status);
        const followUps = status.followupIds.map((id) => h.fake.messages.get(id)!);
        return original?.content && followUps.length > 0 ? [original, ...followUps] : undefined;
      }, 10_000, 'the report in several messages'); // before: Discord refused the one message (50035) and the admin saw nothing
      expect(parts.every((m) => m.flags & EPHEMERAL)).toBe(true);
      expect(parts.every((m) => m.content.length <= 2000)).toBe(true);
      const report = parts.map((m) => m.content).join('\n');
      expect(report.split('\n').filter((l) => / 1 waiting/.test(l))).toHaveLength(40);
    } finally {
      for (const jobId of ids) await h.core.handle({ input: { command: 'cancel', jobId }, destination: { platform: 'discord', guildId: h.fake.guildId, channelId: 'x', userId: 'admin', applicationId: h.fake.appId }, dedupeKey: `c-${jobId}`, isAdmin: true });
    }
  });
});

describe('where and who', () => {
  it('in a channel the bot is not enabled in, /settings, the Ask menu, the settings buttons and Cancel are refused too', async () => {
    const user = newUser();
    const refusal = "This bot isn't enabled in this server or channel.";
    const settings = h.fake.slashCommand({ name: 'settings', user, channelId: closedChannel, options: [{ name: 'steps', type: 4, value: 3 }] });
    expect(await toldPrivately(settings)).toBe(refusal);
    await settle();
    expect(settings.callbacks).toHaveLength(1); // refused, and nothing after
    expect(settings.followupIds).toEqual([]);
    const there = h.fake.postUserMessage({ content: 'x', author: h.fake.bot, channelId: closedChannel, attachments: [attachment()], silent: true });
    expect(await toldPrivately(h.fake.contextMenu({ name: 'Ask about this image', target: there, user }))).toBe(refusal);
    expect(await toldPrivately(h.fake.pressButton(there, settingsButtonId({ scope: 'user', action: 'private-on' }), user))).toBe(refusal);
    expect(await toldPrivately(h.fake.pressButton(there, buttonId('cancel', 'j-any'), user))).toBe(refusal);
    expect(await h.core.settings.get('user', { platform: 'discord', guildId: h.fake.guildId, channelId: closedChannel, userId: user.id, applicationId: h.fake.appId })).toEqual({});
  });

  it('a command or context menu that is not ours gets no answer', async () => {
    const other = h.fake.slashCommand({ name: 'weather', user: newUser() });
    const menu = h.fake.contextMenu({ name: 'Translate', target: botImage(), user: newUser() });
    await settle();
    expect(other.callbacks).toEqual([]);
    expect(menu.callbacks).toEqual([]);
  });

  it('in a DM nobody is an admin: another user\'s job cannot be cancelled from there', async () => {
    const owner = newUser();
    const i = imagine('not yours', owner);
    const jobId = jobIdFor('discord', i.id);
    await queued(i);
    const stranger = newUser();
    const inDm = h.fake.postUserMessage({ content: 'x', author: h.fake.bot, channelId: h.fake.dmChannel(stranger), guildId: null, silent: true });
    const press = h.fake.pressButton(inDm, buttonId('cancel', jobId), stranger);
    expect(await toldPrivately(press)).toMatch(/only|cancel/i);
    expect(await request(jobId)).toBeDefined();
  });
});

describe('what it logs for the operator', () => {
  it('ready with the intent; a resumed gateway', async () => {
    expect(loggedAs('discord ready')).toEqual([expect.objectContaining({ user: expect.any(String), messageContent: true })]);
    const before = loggedAs('gateway resumed').length;
    h.fake.dropGateway(4000);
    await until(async () => (loggedAs('gateway resumed').length > before ? true : undefined), 20_000, 'the resume logged');
    expect(loggedAs('gateway resumed').at(-1)).toMatchObject({ replayed: expect.any(Number) });
  }, 30_000);
});

describe('threads', () => {
  it('/imagine in a thread of an enabled channel: the channel\'s job (its settings and limits), posted in the thread', async () => {
    const thread = h.fake.addThread(h.fake.channelId, 'ideas');
    const user = newUser();
    const job = await queued(imagine('a fox in a thread', user, [], thread));
    expect(job.destination).toMatchObject({ guildId: h.fake.guildId, channelId: h.fake.channelId, threadId: thread });
    // the channel's saved settings are the thread's: a private channel makes its threads' results private
    const channel = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('channel', channel, { private: true });
    try {
      const quiet = imagine('a private fox in a thread', user, [], thread);
      expect((await queued(quiet)).destination).toMatchObject({ channelId: h.fake.channelId, threadId: thread, private: true });
      expect(quiet.callbacks[0]).toMatchObject({ type: 5, data: { flags: EPHEMERAL } });
    } finally {
      await h.core.settings.reset('channel', channel);
    }
  });

  it('a mention in a thread: the status reply in the thread, the channel\'s job; also in a thread the bot never saw created', async () => {
    const user = newUser();
    const threads = [h.fake.addThread(h.fake.channelId, 'seen'), h.fake.addThread(h.fake.channelId, 'unseen', { unseen: true })];
    for (const thread of threads) {
      const m = h.fake.postUserMessage({ content: `what is in thread ${thread}?`, author: user, mentionBot: true, channelId: thread, attachments: [attachment()] });
      const job = await queued(jobIdFor('discord', m.id));
      const status = repliesTo(m)[0]!;
      expect(status.channelId).toBe(thread);
      expect(job.destination).toMatchObject({ channelId: h.fake.channelId, threadId: thread, replyToMessageId: m.id, statusMessageId: status.id });
    }
    // only the thread whose parent discord.js did not know was fetched
    expect(threads.map((id) => h.fake.requestsTo('GET', new RegExp(`/channels/${id}$`)).length)).toEqual([0, 1]);
  });

  it('a thread takes its channel\'s age restriction and allow-list: marked under an age-restricted one, refused and ignored under a closed one', async () => {
    const user = newUser();
    const dark = h.fake.addThread(adults, 'dark');
    expect((await queued(imagine('a dark thread', user, [], dark))).destination).toMatchObject({ channelId: adults, threadId: dark, nsfw: true });
    const shut = h.fake.addThread(closedChannel, 'shut');
    expect(await toldPrivately(imagine('not here', user, [], shut))).toBe("This bot isn't enabled in this server or channel.");
    const m = h.fake.postUserMessage({ content: 'in a closed thread?', author: user, mentionBot: true, channelId: shut, attachments: [attachment()] });
    await sentinel(user);
    expect(repliesTo(m)).toEqual([]);
    expect(await request(jobIdFor('discord', m.id))).toBeUndefined();
  });
});

describe('context menus and the ask modal', () => {
  it('the modal asks for one required question of at most the configured length; a second submit fetches the message again', async () => {
    const user = newUser();
    const target = botImage();
    const menu = h.fake.contextMenu({ name: 'Ask about this image', target, user });
    const modal = await h.fake.waitFor(() => menu.callbacks.find((c) => c.type === 9), 10_000, 'the modal');
    expect((modal.data as { components: { components: unknown[] }[] }).components[0]!.components[0]).toEqual({
      type: 4, custom_id: 'question', label: 'Your question', style: 2, required: true, max_length: Math.min(4000, h.config.understanding.maxQuestionChars),
    });
    await queued(h.fake.submitModal(menu, { question: 'first?' }));
    const fetched = h.fake.requestsTo('GET', new RegExp(`/channels/${h.fake.channelId}/messages/${target.id}$`)).length;
    await queued(h.fake.submitModal(menu, { question: 'second?' })); // the remembered target was used once: fetched now
    expect(h.fake.requestsTo('GET', new RegExp(`/channels/${h.fake.channelId}/messages/${target.id}$`)).length).toBe(fetched + 1);
    // fetched again, it is checked as the menu checked it: the first image of the message, within the limits
    const pdf = attachment(new TextEncoder().encode('%PDF-1.7'), 'notes.pdf', 'application/pdf');
    target.attachments = [pdf, attachment()];
    expect((await queued(h.fake.submitModal(menu, { question: 'fourth?' }))).kind).toBe('ask');
    target.attachments = [h.fake.addAttachment({ bytes: png, filename: 'huge.png', contentType: 'image/png', size: 9 * 2 ** 20 })];
    expect(await toldPrivately(h.fake.submitModal(menu, { question: 'fifth?' }))).toBe('huge.png is 9 MiB; the limit is 8 MiB.');
    h.fake.messages.delete(target.id);
    expect(await toldPrivately(h.fake.submitModal(menu, { question: 'third?' }))).toBe('That message has no image I can read any more.');
  });


  it('"Ask about this image" opens a modal; its answer queues the ask about that message\'s image', async () => {
    const user = newUser();
    const target = botImage();
    const menu = h.fake.contextMenu({ name: 'Ask about this image', target, user });
    const modal = await h.fake.waitFor(() => menu.callbacks.find((c) => c.type === 9), 10_000, 'the modal');
    expect(modal.data).toMatchObject({ custom_id: `b3:ask:${h.fake.channelId}:${target.id}`, title: 'Ask about this image' });
    const submitted = h.fake.submitModal(menu, { question: 'what colour?' });
    expect(await queued(submitted)).toMatchObject({ kind: 'ask', question: 'what colour?' });
  });

  it('a message without an image gets a private answer and no modal; "Describe this image" queues a describe', async () => {
    const user = newUser();
    const words = h.fake.postUserMessage({ content: 'just words', silent: true });
    const menu = h.fake.contextMenu({ name: 'Ask about this image', target: words, user });
    expect(await toldPrivately(menu)).toBe('That message has no image I can read.');
    const describe = h.fake.contextMenu({ name: 'Describe this image', target: botImage(), user });
    expect(await queued(describe)).toMatchObject({ kind: 'ask', mode: 'describe' });
    const nothing = h.fake.contextMenu({ name: 'Describe this image', target: words, user });
    expect(await toldPrivately(nothing)).toBe('That message has no image I can describe.');
  });
});

describe('buttons', () => {
  it('Re-roll queues a re-roll of the job; Vary downloads the image of the message it is on', async () => {
    const user = newUser();
    const first = imagine('a kite', user);
    const jobId = jobIdFor('discord', first.id);
    await queued(first);
    const result = botImage('a kite');
    const reroll = h.fake.pressButton(result, buttonId('reroll', jobId), user);
    expect(await queued(reroll)).toMatchObject({ kind: 'imagine', prompt: 'a kite' });
    const vary = h.fake.pressButton(result, buttonId('vary', jobId), user);
    expect(await queued(vary)).toMatchObject({ kind: 'vary' });
    const words = h.fake.postUserMessage({ content: 'no image', author: h.fake.bot, silent: true });
    const gone = h.fake.pressButton(words, buttonId('vary', jobId), user);
    expect(await toldPrivately(gone)).toBe('That message has no image to vary any more.');
    const stray = h.fake.pressButton(result, 'someone-elses:button', user);
    await settle();
    expect(stray.callbacks).toHaveLength(0); // not ours: left alone
  });

  it('"Imagine this" queues the numbered prompt of its message; a prompt no longer there is refused', async () => {
    const user = newUser();
    const described = h.fake.postUserMessage({ content: '1. a green hill\n2. a blue lake…', author: h.fake.bot, silent: true });
    const second = h.fake.pressButton(described, buttonId('imagine', 'jdescribe', 1), user);
    expect(await queued(second)).toMatchObject({ kind: 'imagine', prompt: 'a blue lake' });
    const missing = h.fake.pressButton(described, buttonId('imagine', 'jdescribe', 4), user);
    expect(await toldPrivately(missing)).toBe('I cannot read that prompt any more; copy it into /imagine.');
  });

  it('Cancel: its owner removes a waiting job; anyone else is refused, privately', async () => {
    const user = newUser();
    const i = imagine('to be cancelled', user);
    const jobId = jobIdFor('discord', i.id);
    await queued(i);
    const status = await h.fake.waitFor(() => h.fake.original(i), 10_000, 'the status');
    const stranger = h.fake.pressButton(status, buttonId('cancel', jobId), newUser());
    expect(await toldPrivately(stranger)).toMatch(/only|cancel/i);
    expect(await request(jobId)).toBeDefined();
    const own = h.fake.pressButton(status, buttonId('cancel', jobId), user);
    expect(await toldPrivately(own)).toMatch(/cancel/i);
    await until(async () => ((await request(jobId)) === undefined ? true : undefined), 10_000, 'the job removed');
    expect(own.callbacks).toEqual([{ type: 5, data: { flags: EPHEMERAL } }]); // deferred first: the core's answer needs Redis
  });

  it('a Re-roll pressed in a DM on the requester\'s own private server job is that channel\'s private job', async () => {
    const user = newUser();
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('user', here, { private: true });
    const first = imagine('a private kite', user);
    const jobId = jobIdFor('discord', first.id);
    await queued(first);
    await h.core.settings.set('user', here, { private: false });
    const inDm = h.fake.postUserMessage({ content: 'a private kite', author: h.fake.bot, channelId: h.fake.dmChannel(user), guildId: null, attachments: [attachment()], silent: true });
    const reroll = h.fake.pressButton(inDm, buttonId('reroll', jobId), user);
    expect((await queued(reroll)).destination).toMatchObject({ guildId: h.fake.guildId, channelId: h.fake.channelId, private: true });
    expect(reroll.callbacks[0]).toEqual({ type: 5, data: { flags: EPHEMERAL } }); // the whole exchange private
    // Pressed in a server channel, a button's job is that channel's, even on one's own private job of another channel
    await h.core.settings.set('user', here, { private: true });
    const elsewhere = imagine('a private kite for adults', user, [], adults);
    await queued(elsewhere);
    await h.core.settings.set('user', here, { private: false });
    const inChannel = h.fake.postUserMessage({ content: 'a private kite for adults', author: h.fake.bot, attachments: [attachment()], silent: true });
    const pressedHere = h.fake.pressButton(inChannel, buttonId('reroll', jobIdFor('discord', elsewhere.id)), user);
    expect((await queued(pressedHere)).destination).toMatchObject({ guildId: h.fake.guildId, channelId: h.fake.channelId });
    const someoneElse = newUser();
    const theirs = h.fake.pressButton({ ...inDm, channelId: h.fake.dmChannel(someoneElse) }, buttonId('reroll', jobId), someoneElse);
    expect((await queued(theirs)).destination).toMatchObject({ guildId: null, channelId: h.fake.dmChannel(someoneElse) }); // not their job: their DM's

    // The job's look-up slower than Discord's 3 s allow: a private defer in time, then still the channel's job.
    const requestOf = h.core.requestOf;
    h.core.requestOf = async (id) => { await new Promise((r) => setTimeout(r, 4_000)); return requestOf.call(h.core, id); };
    try {
      const slow = h.fake.pressButton(inDm, buttonId('reroll', jobId), user);
      expect((await queued(slow)).destination).toMatchObject({ guildId: h.fake.guildId, channelId: h.fake.channelId, private: true });
      expect(slow.callbacks).toEqual([{ type: 5, data: { flags: EPHEMERAL } }]);
    } finally {
      h.core.requestOf = requestOf;
    }
  }, 20_000);
});

describe('mentions', () => {
  it('a mention with an image replies with the status message and queues the ask', async () => {
    const user = newUser();
    const m = h.fake.postUserMessage({ content: 'what is this?', author: user, mentionBot: true, attachments: [attachment()] });
    const job = await queued(jobIdFor('discord', m.id));
    expect(job).toMatchObject({ kind: 'ask', question: 'what is this?' });
    const status = h.fake.channelMessages().find((x) => x.author.id === h.fake.appId && x.referenceId === m.id)!;
    expect(status.content.startsWith('⏳')).toBe(true);
    expect(job.destination).toMatchObject({ channelId: h.fake.channelId, userId: user.id, replyToMessageId: m.id, statusMessageId: status.id });
    expect(h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.channelId}/messages$`)).find((r) => (r.body as { message_reference?: { message_id?: string } }).message_reference?.message_id === m.id)?.body)
      .toMatchObject({ content: '⏳ Looking at the image…', allowed_mentions: { parse: [], replied_user: false } });
    h.fake.dispatch('MESSAGE_CREATE', { ...messageJson(m, h.fake.messages), member: { roles: [], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 } }); // replayed
    await sentinel(user);
    expect(repliesTo(m)).toHaveLength(1);
  });

  it("a reply whose answer was lost after Discord posted it (discord.js sends it again on a reset connection) is posted once, by its nonce: the status reply, the help, a private channel's status in the DM, the DM saying why not here", async () => {
    const posts = (channel: string) => h.fake.requestsTo('POST', new RegExp(`/channels/${channel}/messages$`));
    const sentTwice: RecordedRequest[][] = [];
    /** Posts a message whose reply in `channel` is lost, and waits until discord.js has sent it again and been answered. */
    async function lost(channel: string, post: () => FakeMessage): Promise<FakeMessage> {
      h.fake.injectFault({ method: 'POST', path: new RegExp(`/channels/${channel}/messages$`), lostReply: 'reset' });
      const before = posts(channel).length;
      const m = post();
      await h.fake.waitFor(() => { const sent = posts(channel).slice(before); return sent.length >= 2 && sent.every((r) => r.status !== 0) ? true : undefined; }, 10_000, 'the post sent again');
      sentTwice.push(posts(channel).slice(before));
      return m;
    }
    const user = newUser();
    const asked = await lost(h.fake.channelId, () => h.fake.postUserMessage({ content: 'what is this, lost?', author: user, mentionBot: true, attachments: [attachment()] }));
    const job = await queued(jobIdFor('discord', asked.id));
    // Before: two "⏳ Looking at the image…", one of them so for ever
    expect(repliesTo(asked).map((x) => x.id)).toEqual([(job.destination as DiscordDestination).statusMessageId]);
    const bare = await lost(h.fake.channelId, () => h.fake.postUserMessage({ content: 'hello, lost?', author: user, mentionBot: true }));
    expect(repliesTo(bare).map((x) => x.content)).toEqual([NO_IMAGE_HELP]);
    const other = newUser();
    await lost(h.fake.dmChannel(other), () => h.fake.postUserMessage({ content: 'hello from read-only?', author: other, mentionBot: true, channelId: readOnly }));
    expect(h.fake.channelMessages(h.fake.dmChannel(other)).map((x) => x.content)).toEqual([expect.stringMatching(/^I can't reply in <#\d+>: I don't have the Send Messages permission there/)]);
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('channel', here, { private: true });
    try {
      const privately = await lost(h.fake.dmChannel(user), () => h.fake.postUserMessage({ content: 'and privately, lost?', author: user, mentionBot: true, attachments: [attachment()] }));
      const inDm = await queued(jobIdFor('discord', privately.id));
      expect(h.fake.channelMessages(h.fake.dmChannel(user)).filter((x) => x.author.id === h.fake.appId).map((x) => x.id)).toEqual([(inDm.destination as DiscordDestination).statusMessageId]);
    } finally {
      await h.core.settings.reset('channel', here);
    }
    // each was sent again with the nonce (and enforce_nonce) it was first sent with, its own
    const nonceOf = (r: RecordedRequest | undefined) => (r?.body as { nonce?: string }).nonce;
    for (const [first, again] of sentTwice) {
      expect([first?.lost, again?.lost]).toEqual([true, undefined]);
      expect(first?.body).toMatchObject({ nonce: expect.any(String), enforce_nonce: true });
      expect(nonceOf(again)).toBe(nonceOf(first));
    }
    expect(new Set(sentTwice.map(([first]) => nonceOf(first))).size).toBe(4);
  });

  it('a mention whose question is empty is answered in a reply that pings no one; nothing is queued', async () => {
    const user = newUser();
    const m = h.fake.postUserMessage({ content: '', author: user, mentionBot: true, attachments: [attachment()] });
    const told = await h.fake.waitFor(() => repliesTo(m)[0], 10_000, 'the answer');
    expect(told.content).toMatch(/question/i);
    expect(h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.channelId}/messages$`)).find((r) => (r.body as { message_reference?: { message_id?: string } }).message_reference?.message_id === m.id)?.body)
      .toMatchObject({ allowed_mentions: { parse: [], replied_user: false } });
    expect(await request(jobIdFor('discord', m.id))).toBeUndefined();
  });

  it('a refusal of the core is written into the status message, pinging no one', async () => {
    const user = newUser();
    const m = h.fake.postUserMessage({ content: 'q'.repeat(h.config.understanding.maxQuestionChars + 1), author: user, mentionBot: true, attachments: [attachment()] });
    const status = await h.fake.waitFor(() => repliesTo(m).find((x) => !x.content.startsWith('⏳')), 10_000, 'the refusal');
    expect(status.content).toMatch(/question|long|characters/i);
    const patch = h.fake.requestsTo('PATCH', new RegExp(`/channels/${h.fake.channelId}/messages/${status.id}$`)).at(-1)!;
    expect(patch.body).toMatchObject({ allowed_mentions: { parse: [] } });
  });

  it('a mention without an image gets the help; a message that does not mention the bot, or the bot\'s own, gets nothing', async () => {
    const user = newUser();
    const bare = h.fake.postUserMessage({ content: 'hello?', author: user, mentionBot: true });
    const help = await h.fake.waitFor(() => repliesTo(bare)[0], 10_000, 'the help');
    expect(help.content).toBe(NO_IMAGE_HELP); // the bot has the Message Content intent here
    expect(h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.channelId}/messages$`)).find((r) => (r.body as { message_reference?: { message_id?: string } }).message_reference?.message_id === bare.id)?.body)
      .toMatchObject({ allowed_mentions: { parse: [], replied_user: false } });
    const chatter = h.fake.postUserMessage({ content: 'talking among ourselves', author: user, attachments: [attachment()] });
    const own = h.fake.postUserMessage({ content: 'the bot talks', author: h.fake.bot, mentionBot: true, attachments: [attachment()] });
    await sentinel(user);
    expect([...repliesTo(chatter), ...repliesTo(own)]).toEqual([]);
    expect(await request(jobIdFor('discord', chatter.id))).toBeUndefined();
    expect(await request(jobIdFor('discord', own.id))).toBeUndefined();
  });

  it('a follow-up more than 24 replies below its image is told the conversation is too long to follow, not to attach an image', async () => {
    const user = newUser();
    let above = h.fake.postUserMessage({ content: 'look', author: user, attachments: [attachment()], silent: true });
    for (let i = 0; i < 24; i++) above = h.fake.postUserMessage({ content: `chat ${i}`, author: user, replyTo: above.id, silent: true });
    const asked = h.fake.postUserMessage({ content: 'what is it?', author: user, mentionBot: true, replyTo: above.id });
    const help = await h.fake.waitFor(() => repliesTo(asked)[0], 10_000, 'the help');
    expect(help.content).toBe(LONG_CHAIN_HELP);
    expect(await request(jobIdFor('discord', asked.id))).toBeUndefined();
  });

  it('in a private channel the answer goes to the asker\'s DM; the job keeps the channel', async () => {
    const user = newUser();
    await h.core.settings.set('channel', { platform: 'discord', guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId }, { private: true });
    try {
      const m = h.fake.postUserMessage({ content: 'and this?', author: user, mentionBot: true, attachments: [attachment()] });
      const job = await queued(jobIdFor('discord', m.id));
      expect(job.destination).toMatchObject({ channelId: h.fake.channelId, dmChannelId: h.fake.dmChannel(user), private: true });
      const posted = h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.dmChannel(user)}/messages$`)).at(-1)!;
      expect(posted.body).toMatchObject({ content: '⏳ Looking at the image…', allowed_mentions: { parse: [] } });
      expect(job.destination).toMatchObject({ statusMessageId: h.fake.channelMessages(h.fake.dmChannel(user)).find((x) => x.author.id === h.fake.appId)!.id });
      expect(h.fake.channelMessages().some((x) => x.author.id === h.fake.appId && x.referenceId === m.id)).toBe(false);
    } finally {
      await h.core.settings.reset('channel', { platform: 'discord', guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId });
    }
  });

  it('where the channel\'s permissions forbid the reply (Send Messages, Read Message History denied): the asker learns why in a DM, nothing is queued, the operator reads a warning', async () => {
    const from = logged.length; // this test's lines: an earlier one mentions the bot in readOnly too
    for (const [channel, missing, code] of [[readOnly, 'Send Messages', 50013], [noHistory, 'Read Message History', 160002]] as const) {
      const user = newUser();
      const m = h.fake.postUserMessage({ content: 'what is this?', author: user, mentionBot: true, channelId: channel, attachments: [attachment()] });
      const bare = h.fake.postUserMessage({ content: 'hello?', author: user, mentionBot: true, channelId: channel }); // the help is a reply too
      const dms = () => h.fake.channelMessages(h.fake.dmChannel(user)).filter((x) => x.author.id === h.fake.appId);
      await h.fake.waitFor(() => dms().length === 2, 10_000, 'the DMs');
      const told = `I can't reply in <#${channel}>: I don't have the ${missing} permission there (a server admin can give it in the channel's settings → Permissions). Meanwhile \`/ask\` works there: its answers need no permission in the channel.`;
      expect(dms().map((x) => x.content)).toEqual([told, told]);
      expect(h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.dmChannel(user)}/messages$`)).map((r) => (r.body as { allowed_mentions?: unknown }).allowed_mentions)).toEqual([{ parse: [] }, { parse: [] }]);
      expect(await request(jobIdFor('discord', m.id))).toBeUndefined();
      expect(h.fake.channelMessages(channel).filter((x) => x.author.id === h.fake.appId)).toEqual([]);
      expect(loggedAs(`no permission to reply in a channel (${missing}): give the bot Send Messages, Read Message History and Attach Files there`, logged.slice(from)).filter((l) => l.channel === channel))
        .toEqual([expect.objectContaining({ level: 40, code }), expect.objectContaining({ level: 40, code })]);
      void bare;
    }
    expect(loggedAs('discord handler failed').filter((l) => [readOnly, noHistory].some((c) => String(l.err).includes(c)))).toEqual([]);
  });

  it('in a DM every message is addressed to the bot: a question with an image is queued, answered in the DM', async () => {
    const user = newUser();
    const dm = h.fake.dmChannel(user);
    const m = h.fake.postUserMessage({ content: 'what is in this?', author: user, channelId: dm, guildId: null, attachments: [attachment()] });
    const job = await queued(jobIdFor('discord', m.id));
    expect(job).toMatchObject({ kind: 'ask', question: 'what is in this?' });
    expect(job.destination).toMatchObject({ guildId: null, channelId: dm, userId: user.id, replyToMessageId: m.id });
    // private results change nothing in a DM: the answer is a reply there, not another DM
    await h.core.settings.set('user', { platform: 'discord', guildId: null, channelId: dm, userId: user.id, applicationId: h.fake.appId }, { private: true });
    const again = h.fake.postUserMessage({ content: 'and privately?', author: user, channelId: dm, guildId: null, attachments: [attachment()] });
    const second = (await queued(jobIdFor('discord', again.id))).destination;
    expect(second).toMatchObject({ channelId: dm, replyToMessageId: again.id });
    expect(second).not.toHaveProperty('dmChannelId');
  });

  it('a follow-up in a DM carries the earlier questions, which mention nobody there', async () => {
    const user = newUser();
    const dm = h.fake.dmChannel(user);
    const first = h.fake.postUserMessage({ content: 'what animal is this?', author: user, channelId: dm, guildId: null, attachments: [attachment()] });
    await queued(jobIdFor('discord', first.id));
    const answer = h.fake.postUserMessage({ content: 'A red fox.', author: h.fake.bot, channelId: dm, guildId: null, replyTo: first.id, silent: true }); // as the status message it edits
    const followUp = h.fake.postUserMessage({ content: 'and what colour is its tail?', author: user, channelId: dm, guildId: null, replyTo: answer.id });
    expect(await queued(jobIdFor('discord', followUp.id))).toMatchObject({
      kind: 'ask',
      question: 'and what colour is its tail?',
      history: [{ role: 'user', text: 'what animal is this?' }, { role: 'assistant', text: 'A red fox.' }],
    });
  });

  it('a mention replying to the answer of /ask or of the Ask form asks about the same image, with the first question and answer as history; a private answer carries no copy', async () => {
    const user = newUser();
    const photo = attachment();
    const answered = async (i: FakeInteraction, text: string): Promise<FakeMessage> => {
      const job = await queued(i);
      // delivered as the delivery consumer does, by the port: the PATCH of the answer keeps the copy of the image
      await h.adapter.port.deliver({ v: 1, jobId: jobIdFor('discord', i.id), kind: 'ask', destination: job.destination, status: 'succeeded', answer: { text, tokenCount: 3 }, timingsMs: {}, finishedAt: Date.now() }, undefined);
      return h.fake.waitFor(() => {
        const original = h.fake.original(i);
        return original?.content === text && original.attachments.length > 0 && original;
      }, 10_000, 'the answer with the copy of its image');
    };
    // questions asked nowhere else in this file: an identical request joins the earlier job (no job of its own)
    const ask = h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: 'which animal is it?' }], attachments: [photo] });
    const answer = await answered(ask, 'A red fox.');
    expect(answer.attachments).toMatchObject([{ filename: 'asked-about.jpg', content_type: 'image/jpeg', description: 'Image asked about: which animal is it?' }]);
    const followUp = h.fake.postUserMessage({ content: 'and what colour is it?', author: user, mentionBot: true, replyTo: answer.id });
    const job = await queued(jobIdFor('discord', followUp.id));
    expect(job).toMatchObject({ kind: 'ask', question: 'and what colour is it?', history: [{ role: 'user', text: 'which animal is it?' }, { role: 'assistant', text: 'A red fox.' }] });
    expect(repliesTo(followUp).map((m) => m.content)).not.toContain(NO_IMAGE_HELP);
    const copy = await h.core.blobs.get((job as Extract<JobRequest, { kind: 'ask' }>).imageKey);
    expect(await sharp(copy!).metadata()).toMatchObject({ format: 'jpeg', width: 24, height: 24 }); // never enlarged

    // the Ask form on someone's image: its answer carries the copy too
    const target = h.fake.postUserMessage({ content: 'my cat', attachments: [attachment()], silent: true });
    const menu = h.fake.contextMenu({ name: 'Ask about this image', target, user });
    await h.fake.waitFor(() => menu.callbacks.find((c) => c.type === 9), 10_000, 'the modal');
    const formAnswer = await answered(h.fake.submitModal(menu, { question: 'which breed?' }), 'A tabby.');
    const again = h.fake.postUserMessage({ content: 'how old?', author: user, mentionBot: true, replyTo: formAnswer.id });
    expect(await queued(jobIdFor('discord', again.id))).toMatchObject({ history: [{ role: 'user', text: 'which breed?' }, { role: 'assistant', text: 'A tabby.' }] });

    // a private answer (ephemeral) cannot be replied to: nothing is copied
    const loner = newUser();
    await h.core.settings.set('user', { platform: 'discord', guildId: h.fake.guildId, channelId: h.fake.channelId, userId: loner.id, applicationId: h.fake.appId }, { private: true });
    const hidden = h.fake.slashCommand({ name: 'ask', user: loner, options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: 'is it private?' }], attachments: [photo] });
    await queued(hidden);
    await h.fake.waitFor(() => h.fake.original(hidden)?.content.startsWith('⏳') || undefined, 10_000, 'the place in line');
    await settle();
    expect(h.fake.original(hidden)!.attachments).toEqual([]);
    expect(h.fake.requestsTo('PATCH', new RegExp(`/webhooks/${h.fake.appId}/${hidden.token}/messages/@original$`)).filter((r) => r.files.length > 0)).toEqual([]);

    // nor in a channel that keeps little (a retention TTL, no-log): a copy posted by the bot would outlive what it stores
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('channel', here, { retentionSeconds: 600 });
    try {
      const brief = h.fake.slashCommand({ name: 'ask', user, options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: 'is it kept?' }], attachments: [photo] });
      await queued(brief);
      await h.fake.waitFor(() => h.fake.original(brief)?.content.startsWith('⏳') || undefined, 10_000, 'the place in line');
      await settle();
      expect(h.fake.requestsTo('PATCH', new RegExp(`/webhooks/${h.fake.appId}/${brief.token}/messages/@original$`)).filter((r) => r.files.length > 0)).toEqual([]);
    } finally {
      await h.core.settings.reset('channel', here);
    }
  });

  it('a mention of the bot\'s managed role ("@blip3o" in the autocomplete, next to the bot) is a mention of the bot; another role\'s is not', async () => {
    const f = h.fake;
    const botRole = String(BigInt(f.guildId) + 7n);
    const otherRole = String(BigInt(f.guildId) + 8n);
    const role = (id: string, name: string, botId?: string) => ({ id, name, permissions: '0', position: 1, color: 0, hoist: false, managed: !!botId, mentionable: true, flags: 0, ...(botId ? { tags: { bot_id: botId } } : {}) });
    f.dispatch('GUILD_ROLE_CREATE', { guild_id: f.guildId, role: role(botRole, 'blip3o', f.appId) });
    f.dispatch('GUILD_ROLE_CREATE', { guild_id: f.guildId, role: role(otherRole, 'artists') });
    f.dispatch('GUILD_MEMBER_UPDATE', { guild_id: f.guildId, user: userJson(f.bot), roles: [botRole], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 });
    await settle();
    // The fake posts user mentions only: the role mention is the same message, dispatched by hand.
    const mentioningRole = (roleId: string, question: string, user: FakeUser) => {
      const m = f.postUserMessage({ content: `<@&${roleId}> ${question}`, author: user, attachments: [attachment()], silent: true });
      f.dispatch('MESSAGE_CREATE', { ...messageJson(m, f.messages), mention_roles: [roleId], member: { roles: [], joined_at: new Date().toISOString(), deaf: false, mute: false, flags: 0 } });
      return m;
    };
    const user = newUser();
    const asked = mentioningRole(botRole, 'what is in this picture?', user);
    expect(await queued(jobIdFor('discord', asked.id))).toMatchObject({ kind: 'ask', question: 'what is in this picture?' });
    const other = mentioningRole(otherRole, 'what do you think of this?', user);
    await sentinel(user);
    expect(repliesTo(other)).toEqual([]);
    expect(await request(jobIdFor('discord', other.id))).toBeUndefined();
  });

  it('an age-restricted channel marks its jobs (its relaxed checks apply): /imagine, a mention, a private mention in the DM, a Re-roll from the DM', async () => {
    const user = newUser();
    expect((await queued(imagine('a dark tale', user, [], adults))).destination).toMatchObject({ channelId: adults, nsfw: true });
    const m = h.fake.postUserMessage({ content: 'is this for adults?', author: user, mentionBot: true, channelId: adults, attachments: [attachment()] }); // a question of its own: an identical one would join the other's job
    expect((await queued(jobIdFor('discord', m.id))).destination).toMatchObject({ channelId: adults, nsfw: true });
    const there = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: adults, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('channel', there, { private: true });
    try {
      const quiet = h.fake.postUserMessage({ content: 'and privately, for adults?', author: user, mentionBot: true, channelId: adults, attachments: [attachment()] });
      expect((await queued(jobIdFor('discord', quiet.id))).destination).toMatchObject({ channelId: adults, dmChannelId: h.fake.dmChannel(user), private: true, nsfw: true });
      const first = imagine('a private dark tale', user, [], adults);
      await queued(first);
      const inDm = h.fake.postUserMessage({ content: 'a private dark tale', author: h.fake.bot, channelId: h.fake.dmChannel(user), guildId: null, attachments: [attachment()], silent: true });
      const reroll = h.fake.pressButton(inDm, buttonId('reroll', jobIdFor('discord', first.id)), user);
      expect((await queued(reroll)).destination).toMatchObject({ channelId: adults, private: true, nsfw: true });
    } finally {
      await h.core.settings.reset('channel', there);
    }
  });

  it('a message in a channel the bot is not enabled in is ignored', async () => {
    const user = newUser();
    const m = h.fake.postUserMessage({ content: 'hello there', author: user, mentionBot: true, channelId: closedChannel, attachments: [attachment()] });
    await sentinel(user);
    expect(repliesTo(m)).toEqual([]);
    expect(await request(jobIdFor('discord', m.id))).toBeUndefined();
  });

  it('in a private channel, a DM the bot cannot send for another reason is "Something went wrong" in the channel, not the DM help', async () => {
    const user = newUser();
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('channel', here, { private: true });
    h.fake.injectFault({ method: 'POST', path: new RegExp(`/channels/${h.fake.dmChannel(user)}/messages$`), status: 403, code: 50001, message: 'Missing Access' });
    try {
      const m = h.fake.postUserMessage({ content: 'and with no access?', author: user, mentionBot: true, attachments: [attachment()] });
      const told = await h.fake.waitFor(() => repliesTo(m)[0], 10_000, 'the answer');
      expect(told.content).toMatch(/^Something went wrong \(ref [0-9a-f]{8}\)\.$/);
      expect(await request(jobIdFor('discord', m.id))).toBeUndefined();
    } finally {
      await h.core.settings.reset('channel', here);
    }
  });

  it('in a private channel, a user who refuses DMs is told in the channel how to allow them; no job runs', async () => {
    const user = newUser();
    const here = { platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: user.id, applicationId: h.fake.appId };
    await h.core.settings.set('channel', here, { private: true });
    h.fake.closeDirectMessages(user);
    try {
      const m = h.fake.postUserMessage({ content: 'and now?', author: user, mentionBot: true, attachments: [attachment()] });
      const told = await h.fake.waitFor(() => repliesTo(m)[0], 10_000, 'the help');
      expect(told.content).toMatch(/^Answers in this channel are private, so they go to your direct messages, but you don't accept direct messages from me\./);
      expect(await request(jobIdFor('discord', m.id))).toBeUndefined();
    } finally {
      await h.core.settings.reset('channel', here);
    }
  });
});

describe('a bot the Developer Portal refuses the Message Content intent', () => {
  let blind: DiscordHarness;
  const captured = capturedLog('info');
  beforeAll(() => starting(async () => {
    blind = await startDiscordHarness({ worker: false, fake: { messageContentAllowed: false }, log: captured.log, identifyWindowMs: QUICK_IDENTIFY_MS });
  }), 60_000);
  afterAll(async () => blind?.stop(), 30_000);

  it('runs without it; a mention replying to an image it cannot see explains the intent, one with nothing to see gets the plain help', async () => {
    expect(blind.adapter.hasMessageContent).toBe(false);
    // asked for servers, their messages and DMs, with Message Content; then again without it
    const GUILDS = 1 << 0, GUILD_MESSAGES = 1 << 9, DIRECT_MESSAGES = 1 << 12, MESSAGE_CONTENT = 1 << 15;
    const identified = blind.fake.gatewayFrames.filter((f) => f.op === 2).map((f) => (f.d as { intents: number }).intents);
    expect(identified).toEqual([GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT, GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES]);
    expect(loggedAs('the Developer Portal does not allow the Message Content intent; continuing without it (mention-replies will explain /ask)', captured.lines)).toHaveLength(1);
    expect(loggedAs('discord ready', captured.lines)).toEqual([expect.objectContaining({ user: expect.any(String), messageContent: false })]);
    const user = blind.fake.user('blinduser');
    const photo = blind.fake.addAttachment({ bytes: png, filename: 'photo.png', contentType: 'image/png' });
    const image = blind.fake.postUserMessage({ content: 'look at this', author: blind.fake.user('other'), attachments: [photo], silent: true });
    const blanked = blind.fake.postUserMessage({ content: 'what is it?', author: user, mentionBot: true, replyTo: image.id });
    const bot = (m: FakeMessage) => [...blind.fake.messages.values()].find((x) => x.author.id === blind.fake.appId && x.referenceId === m.id);
    expect((await blind.fake.waitFor(() => bot(blanked), 10_000, 'the help')).content).toBe(
      "I can't see images in other messages: this bot runs without the Message Content intent. " +
      'Attach the image to the message that mentions me, use `/ask`, or right-click the image message → Apps → "Ask about this image". ' +
      '(Server admins: enable "Message Content Intent" under Bot → Privileged Gateway Intents in the Discord Developer Portal.)',
    );
    const bare = blind.fake.postUserMessage({ content: 'hello?', author: user, mentionBot: true });
    expect((await blind.fake.waitFor(() => bot(bare), 10_000, 'the help')).content).toBe(NO_IMAGE_HELP);
    const own = blind.fake.postUserMessage({ content: 'and this?', author: user, mentionBot: true, attachments: [blind.fake.addAttachment({ bytes: png, filename: 'own.png', contentType: 'image/png' })] });
    await until(async () => (await blind.core.queue.getJob(jobIdFor('discord', own.id)))?.data, 10_000, 'its own image asked about'); // a mention's own attachments are visible
  });
});

describe('a bot enabled in another server only, without direct messages', () => {
  let elsewhere: DiscordHarness;
  beforeAll(() => starting(async () => {
    elsewhere = await startDiscordHarness({ worker: false, config: { discord: { allowedGuildIds: ['1'], allowDirectMessages: false } } });
  }), 60_000);
  afterAll(async () => elsewhere?.stop(), 30_000);

  it('refuses commands here and in DMs with where it is not enabled; ignores mentions and DMs', async () => {
    const f = elsewhere.fake;
    const told = (i: FakeInteraction) => f.waitFor(() => (i.callbacks[0]?.type === 4 ? String(i.callbacks[0].data?.content) : undefined), 10_000, 'the refusal');
    const user = f.user('stranger');
    expect(await told(f.slashCommand({ name: 'imagine', user, options: [{ name: 'prompt', type: 3, value: 'x' }] }))).toBe("This bot isn't enabled in this server or channel.");
    expect(await told(f.slashCommand({ name: 'imagine', user, dm: true, options: [{ name: 'prompt', type: 3, value: 'x' }] }))).toBe("This bot isn't enabled in direct messages.");
    const mention = f.postUserMessage({ content: 'hi?', author: user, mentionBot: true, attachments: [f.addAttachment({ bytes: png, filename: 'p.png', contentType: 'image/png' })] });
    const dm = f.postUserMessage({ content: 'hi?', author: user, channelId: f.dmChannel(user), guildId: null, attachments: [f.addAttachment({ bytes: png, filename: 'q.png', contentType: 'image/png' })] });
    await settle();
    await settle();
    expect([...f.messages.values()].filter((x) => x.author.id === f.appId && (x.referenceId === mention.id || (x.channelId === dm.channelId && BigInt(x.id) > BigInt(dm.id))))).toEqual([]);
    expect(await elsewhere.jobCount()).toBe(0);
  });

  it('stop() closes the gateway connection', async () => {
    expect(elsewhere.fake.connected).toBe(true);
    await elsewhere.adapter.stop();
    await until(async () => (elsewhere.fake.connected ? undefined : true), 10_000, 'the gateway closed');
  });
});

describe('Discord closes the gateway for good (discord.js does not reconnect after these codes)', () => {
  let lost: DiscordHarness;
  const captured = capturedLog('info');
  const fatal: Error[] = [];
  beforeAll(() => starting(async () => {
    lost = await startDiscordHarness({ worker: false, log: captured.log, onFatal: (e) => void fatal.push(e), identifyWindowMs: QUICK_IDENTIFY_MS });
  }), 60_000);
  afterAll(async () => lost?.stop(), 30_000);
  const GUILDS = 1 << 0, GUILD_MESSAGES = 1 << 9, DIRECT_MESSAGES = 1 << 12, MESSAGE_CONTENT = 1 << 15;

  it('Message Content switched off in the portal (4014): the bot logs in again without it, and answers', async () => {
    expect(lost.adapter.hasMessageContent).toBe(true);
    expect(lost.adapter.connected()).toBe(true);
    lost.fake.setMessageContentAllowed(false);
    await until(async () => (loggedAs('discord ready', captured.lines).length === 2 ? true : undefined), 20_000, 'logged in again');
    await settle();
    expect(loggedAs('Discord closed the gateway for good (an intent the Developer Portal no longer allows (Message Content was switched off?)); logging in again', captured.lines))
      .toEqual([expect.objectContaining({ level: 50, code: 4014 })]);
    expect(loggedAs('discord ready', captured.lines).at(-1)).toMatchObject({ messageContent: false });
    expect(lost.adapter.hasMessageContent).toBe(false);
    expect(lost.adapter.connected()).toBe(true);
    const identified = lost.fake.gatewayFrames.filter((f) => f.op === 2).map((f) => (f.d as { intents: number }).intents);
    const all = GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES;
    expect(identified).toEqual([all | MESSAGE_CONTENT, all | MESSAGE_CONTENT, all | MESSAGE_CONTENT, all]); // at start, resumed as invalid, again, without
    const i = lost.fake.slashCommand({ name: 'imagine', user: lost.fake.user('after4014'), options: [{ name: 'prompt', type: 3, value: 'a fox' }] });
    await until(async () => (await lost.core.queue.getJob(jobIdFor('discord', i.id)))?.data, 10_000, 'the job');
    expect(fatal).toEqual([]);
  }, 30_000);

  it('the other codes discord.js gives up after (4010–4013): each logged with what it means, then logged in again', async () => {
    const meanings: Record<number, string> = {
      4010: 'an invalid shard: do the bot processes agree on the shard count in discord.shards (DISCORD_SHARDS)?',
      4011: 'a shard holds too many servers (Discord wants a shard per 2,500): set discord.shards (DISCORD_SHARDS) to auto, or raise its count',
      4012: 'an API version it no longer serves: update the bot',
      4013: 'invalid intents',
    };
    for (const [code, meaning] of Object.entries(meanings)) {
      const readies = loggedAs('discord ready', captured.lines).length;
      lost.fake.dropGateway(Number(code));
      await until(async () => (loggedAs('discord ready', captured.lines).length > readies ? true : undefined), 20_000, `logged in again after ${code}`);
      expect(loggedAs(`Discord closed the gateway for good (${meaning}); logging in again`, captured.lines)).toEqual([expect.objectContaining({ code: Number(code) })]);
    }
    expect(lost.adapter.connected()).toBe(true);
    expect(fatal).toEqual([]);
  }, 60_000);

  it('the token reset in the portal (4004): logging in again is refused, and onFatal hears what to do', async () => {
    lost.fake.resetToken();
    const [error] = await until(async () => (fatal.length > 0 ? fatal : undefined), 20_000, 'onFatal');
    expect(error!.message).toBe("Discord refused DISCORD_TOKEN (invalid token). Set DISCORD_TOKEN to the bot token from the Developer Portal's Bot page (see config/.env.example), or set discord.enabled: false.");
    expect(fatal).toHaveLength(1);
    expect(loggedAs('Discord closed the gateway for good (it refused the token: was it reset in the Developer Portal?); logging in again', captured.lines))
      .toEqual([expect.objectContaining({ level: 50, code: 4004 })]);
    expect(loggedAs('logging in to Discord again failed', captured.lines)).toEqual([expect.objectContaining({ level: 60, err: error!.message })]);
    expect(lost.adapter.connected()).toBe('the Discord gateway is not connected');
  }, 30_000);
});

describe('stopped (SIGTERM) while the gateway logs in again', () => {
  /** A harness whose adapter is stopped the moment it logs that Discord closed the gateway, before it logs in again. */
  async function stoppedOnClose(): Promise<{ h: DiscordHarness; lines: LogLine[]; fatal: Error[] }> {
    const lines: LogLine[] = [];
    const fatal: Error[] = [];
    let harness: DiscordHarness | undefined;
    const log = pino({ level: 'info' }, {
      write: (line: string) => {
        const parsed = JSON.parse(line) as LogLine;
        lines.push(parsed);
        if (String(parsed.msg).startsWith('Discord closed the gateway for good')) void harness?.adapter.stop();
      },
    });
    harness = await startDiscordHarness({ worker: false, log, onFatal: (e) => void fatal.push(e), identifyWindowMs: QUICK_IDENTIFY_MS });
    return { h: harness, lines, fatal };
  }

  it('a login that Discord refuses is not fatal: the process is stopping anyway', async () => {
    const { h: stopping, lines, fatal } = await stoppedOnClose();
    try {
      stopping.fake.resetToken();
      await until(async () => (lines.some((l) => String(l.msg).startsWith('Discord closed the gateway for good')) ? true : undefined), 20_000, 'the close');
      await settle();
      await settle();
      expect(fatal).toEqual([]);
      expect(loggedAs('logging in to Discord again failed', lines)).toEqual([]);
    } finally {
      await stopping.stop();
    }
  }, 30_000);

  it('a login that succeeds is closed again: no gateway connection outlives stop()', async () => {
    const { h: stopping, lines } = await stoppedOnClose();
    try {
      stopping.fake.setMessageContentAllowed(false);
      await until(async () => (loggedAs('discord ready', lines).length === 2 ? true : undefined), 20_000, 'logged in again');
      await until(async () => (stopping.fake.connected ? undefined : true), 10_000, 'the new connection closed');
      await settle();
      expect(stopping.fake.connected).toBe(false);
    } finally {
      await stopping.stop();
    }
  }, 30_000);
});

describe('a token Discord refuses', () => {
  it('start() fails with what to do, after one try (not again without the Message Content intent)', async () => {
    const adapter = new DiscordAdapter({ config: h.config, secrets: { REDIS_URL: '', DISCORD_TOKEN: 'not-the-token' } as never });
    const tries = () => h.fake.requestsTo('GET', /\/gateway\/bot$/).filter((r) => r.authorization === 'Bot not-the-token').length;
    const refused = await adapter.start(h.core).then(() => undefined, (e: unknown) => e as Error);
    expect(refused?.message).toBe("Discord refused DISCORD_TOKEN (invalid token). Set DISCORD_TOKEN to the bot token from the Developer Portal's Bot page (see config/.env.example), or set discord.enabled: false.");
    expect(refused?.cause).toMatchObject({ code: 'TokenInvalid' }); // discord.js's own error, for the log
    expect(tries()).toBe(1);
    await adapter.stop();
  });

  it('without a token the adapter is not made at all', () => {
    expect(() => new DiscordAdapter({ config: h.config, secrets: { REDIS_URL: '' } as never })).toThrow('DISCORD_TOKEN is not set (config/.env.example); set it, or set discord.enabled: false.');
  });
});
