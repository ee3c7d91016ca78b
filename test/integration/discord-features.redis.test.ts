// Issue 20 through the fakes (Discord): several images per prompt, negative prompts. Real discord.js ↔ fake Discord,
// real Redis, a real worker process with the test double pipeline (whose pixels depend on prompt + seed + aspect).
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseButtonId } from '../../bots/discord/custom-ids.ts';
import { jobIdFor } from '../../src/jobs/queue.ts';
import { samplePng } from '../conformance/platform-adapter.case.ts';
import { startDiscordHarness, type DiscordHarness } from '../fakes/discord/bot-harness.ts';
import type { FakeInteraction, FakeMessage } from '../fakes/discord/server.ts';

let h: DiscordHarness;

beforeAll(async () => {
  h = await startDiscordHarness({ pipelineExtra: { stepDelayMs: 5, maxSteps: 2 }, config: { queue: { retentionSweepMs: 250 } } });
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const buttons = (m: FakeMessage | undefined) =>
  (m?.components ?? []).flatMap((r) => ((r as { components?: { label: string; custom_id: string }[] }).components ?? []));
const finalEdits = (i: FakeInteraction) =>
  h.fake.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${i.token}/messages/@original$`)).filter((r) => r.files.length > 0 && r.status === 200);
const fetchBytes = async (url: string) => new Uint8Array(await (await fetch(url)).arrayBuffer());
const isPng = (b: Uint8Array) => b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;

/** A job's request once the bot has queued it (polled: the press is handled asynchronously). */
async function jobData(jobId: string, timeoutMs = 15_000) {
  for (const end = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 100))) {
    const job = await h.core.queue.getJob(jobId);
    if (job) return job.data;
    if (Date.now() > end) throw new Error(`timed out waiting for job ${jobId}`);
  }
}

function imagine(prompt: string, extra: Record<string, unknown>[] = []): FakeInteraction {
  return h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: prompt }, ...extra] });
}

async function waitForImages(i: FakeInteraction, n = 1, timeoutMs = 45_000): Promise<FakeMessage> {
  return h.fake.waitFor(() => {
    const m = h.fake.original(i);
    return m && m.attachments.length >= n ? m : undefined;
  }, timeoutMs, `${n} image(s)`);
}

describe('Discord: several images per prompt', () => {
  it('/imagine images:4 → one message with 4 PNGs (seeds s…s+3), Vary 1–4 and Re-roll all; each image is its seed alone; Vary 3 varies the third', async () => {
    const i = imagine('four foxes in snow', [{ name: 'seed', type: 4, value: 100 }, { name: 'images', type: 4, value: 4 }]);
    const final = await waitForImages(i, 4);
    expect(finalEdits(i)).toHaveLength(1); // one message, one edit
    expect(final.attachments).toHaveLength(4);
    const pngs = await Promise.all(final.attachments.map((a) => fetchBytes(a.url)));
    expect(pngs.every(isPng)).toBe(true);
    expect(new Set(pngs.map((p) => Buffer.from(p).toString('base64'))).size).toBe(4); // four different pictures
    expect(final.content).toContain('seeds 100, 101, 102, 103');
    expect(final.attachments.map((a) => a.filename)).toEqual(['blip3o-100.png', 'blip3o-101.png', 'blip3o-102.png', 'blip3o-103.png']);
    expect(buttons(final).map((b) => b.label)).toEqual(['Vary 1', 'Vary 2', 'Vary 3', 'Vary 4', 'Re-roll all']);

    // Image 3 alone, from its seed: the same bytes as the third picture of the gallery.
    const alone = imagine('four foxes in snow', [{ name: 'seed', type: 4, value: 102 }]);
    const single = await waitForImages(alone, 1);
    expect(single.attachments).toHaveLength(1);
    expect(Buffer.from(await fetchBytes(single.attachments[0]!.url)).equals(Buffer.from(pngs[2]!))).toBe(true);

    // Vary 3 sends the third attachment (not the first) to the worker.
    const vary3 = buttons(final).find((b) => b.label === 'Vary 3')!;
    expect(parseButtonId(vary3.custom_id)).toMatchObject({ action: 'vary', index: 2 });
    const press = h.fake.pressButton(final, vary3.custom_id);
    const varied = await waitForImages(press, 1);
    expect(isPng(await fetchBytes(varied.attachments[0]!.url))).toBe(true);
    expect(h.fake.requestsTo('GET', /\/attachments\/.*blip3o-102\.png$/).length).toBeGreaterThanOrEqual(1);
    expect(h.fake.requestsTo('GET', /\/attachments\/.*blip3o-100\.png$/).filter((r) => r.at > press.createdAt)).toHaveLength(0);
    const varyJob = await h.core.queue.getJob(parseButtonId(buttons(varied)[0]!.custom_id)!.jobId);
    expect(varyJob?.data.kind).toBe('vary');

    // Re-roll all: four new pictures with new seeds, in one message.
    const reroll = h.fake.pressButton(final, buttons(final).find((b) => b.label === 'Re-roll all')!.custom_id);
    const rerolled = await waitForImages(reroll, 4);
    expect(rerolled.id).not.toBe(final.id);
    expect(rerolled.content).not.toContain('seeds 100, 101');
    expect(buttons(rerolled).map((b) => b.label)).toEqual(['Vary 1', 'Vary 2', 'Vary 3', 'Vary 4', 'Re-roll all']);
  }, 120_000);

  it('the limits count a 4-image request as 4 requests', async () => {
    const spec = { requestsPerWindow: 5, windowSeconds: 3600, burst: 5, maxConcurrent: 0 };
    await h.core.gate.limiter.setChannelLimit(`discord:${h.fake.guildId}:${h.fake.channelId}`, spec);
    try {
      const first = imagine('a quota of cats', [{ name: 'images', type: 4, value: 4 }]);
      await waitForImages(first, 4);
      const second = imagine('one more batch of cats', [{ name: 'images', type: 4, value: 4 }]);
      const refused = await h.fake.waitFor(
        () => second.followupIds.map((id) => h.fake.messages.get(id)).find((m) => m && m.flags & 64),
        20_000,
        'the refusal',
      );
      expect(refused.content).toMatch(/limit|try again|wait|requests/i);
      const single = imagine('a single cat fits', []);
      expect((await waitForImages(single, 1)).attachments).toHaveLength(1); // 5 − 4 = 1 left
    } finally {
      await h.core.gate.limiter.resetChannelLimit(`discord:${h.fake.guildId}:${h.fake.channelId}`);
    }
  }, 90_000);
});

describe('Discord: negative prompts', () => {
  it('`--no` in the prompt and the `negative` option reach the job, are shown, and change nothing else', async () => {
    const i = imagine('a castle at dusk --no people, cars', [{ name: 'seed', type: 4, value: 5 }, { name: 'negative', type: 3, value: 'fog' }]);
    const final = await waitForImages(i, 1);
    const jobId = parseButtonId(buttons(final)[0]!.custom_id)!.jobId;
    const job = await h.core.queue.getJob(jobId);
    expect(job?.data.kind === 'imagine' && job.data.prompt).toBe('a castle at dusk');
    expect(job?.data.kind === 'imagine' && job.data.options.negative).toBe('fog, people, cars');
    expect(final.content).toContain('no: fog, people, cars');
    const meta = await sharp(await fetchBytes(final.attachments[0]!.url)).metadata();
    expect(meta.width).toBeGreaterThan(0);
  }, 60_000);
});

describe('Discord: /describe', () => {
  it('/describe image → four prompts, each with "Imagine this"; pressing #3 imagines exactly that prompt', async () => {
    const png = new Uint8Array(await sharp({ create: { width: 40, height: 30, channels: 3, background: '#36c' } }).png().toBuffer());
    const att = h.fake.addAttachment({ bytes: png, filename: 'sky.png', contentType: 'image/png' });
    const i = h.fake.slashCommand({ name: 'describe', options: [{ name: 'image', type: 11, value: att.id }], attachments: [att] });
    const answer = await h.fake.waitFor(() => {
      const m = h.fake.original(i);
      return m && buttons(m).some((b) => b.label.startsWith('Imagine')) ? m : undefined;
    }, 45_000, 'the four prompts');
    const lines = answer.content.split('\n');
    expect(lines).toHaveLength(4);
    lines.forEach((l, k) => expect(l).toMatch(new RegExp(`^${k + 1}\\. \\S`)));
    expect(new Set(lines.map((l) => l.slice(3))).size).toBe(4); // sampled with four seeds: four different prompts
    expect(answer.content).toContain('40×30'); // the double looked at the image it was given
    expect(buttons(answer).map((b) => b.label)).toEqual(['Imagine this #1', 'Imagine this #2', 'Imagine this #3', 'Imagine this #4']);
    const describeJob = await h.core.queue.getJob(parseButtonId(buttons(answer)[0]!.custom_id)!.jobId);
    expect(describeJob?.data).toMatchObject({ kind: 'ask', mode: 'describe' });

    const press = h.fake.pressButton(answer, buttons(answer)[2]!.custom_id);
    const image = await waitForImages(press, 1);
    const imagineJob = await h.core.queue.getJob(parseButtonId(buttons(image)[0]!.custom_id)!.jobId);
    expect(imagineJob?.data.kind === 'imagine' && imagineJob.data.prompt).toBe(lines[2]!.slice(3));
    expect(isPng(await fetchBytes(image.attachments[0]!.url))).toBe(true);
  }, 90_000);

  it('the "Describe this image" context menu works on an image message', async () => {
    const png = new Uint8Array(await sharp({ create: { width: 24, height: 24, channels: 3, background: '#c63' } }).png().toBuffer());
    const message = h.fake.postUserMessage({ content: '', attachments: [h.fake.addAttachment({ bytes: png, filename: 'red.png', contentType: 'image/png' })] });
    const menu = h.fake.contextMenu({ name: 'Describe this image', target: message });
    const answer = await h.fake.waitFor(() => {
      const m = h.fake.original(menu);
      return m && buttons(m).filter((b) => b.label.startsWith('Imagine')).length === 4 ? m : undefined;
    }, 45_000, 'the four prompts');
    expect(answer.content).toContain('24×24');
  }, 60_000);
});

describe('Discord: /settings and private results', () => {
  const here = () => ({ platform: 'discord' as const, guildId: h.fake.guildId, channelId: h.fake.channelId, userId: h.fake.alice.id, applicationId: h.fake.appId });
  const settings = (options: Record<string, unknown>[]) => h.fake.slashCommand({ name: 'settings', options });
  const ephemeralAnswer = (i: FakeInteraction) =>
    h.fake.waitFor(() => {
      const m = h.fake.original(i);
      return m && !(m.flags & 128) && m.content ? m : undefined; // 128: still "thinking…"
    }, 15_000, 'the settings answer');

  it('saved defaults are applied to /imagine and the request’s own options win', async () => {
    const saved = settings([{ name: 'aspect', type: 3, value: '16:9' }, { name: 'steps', type: 4, value: 7 }, { name: 'negative', type: 3, value: 'watermark' }]);
    const answer = await ephemeralAnswer(saved);
    expect(answer.flags & 64).toBe(64); // only the user sees their settings
    expect(answer.content).toContain('aspect 16:9 · 7 steps · no: watermark');
    expect(buttons(answer).map((b) => b.label)).toEqual(['Make results private', 'Reset']);

    const withDefaults = imagine('a harbour with saved defaults');
    const a = await waitForImages(withDefaults, 1);
    const jobA = await h.core.queue.getJob(parseButtonId(buttons(a)[0]!.custom_id)!.jobId);
    expect(jobA?.data.kind === 'imagine' && jobA.data.options).toMatchObject({ aspect: '16:9', ditSteps: 7, negative: 'watermark' });

    const overridden = imagine('a harbour with my own options', [{ name: 'aspect', type: 3, value: '1:1' }, { name: 'negative', type: 3, value: 'boats' }]);
    const b = await waitForImages(overridden, 1);
    const jobB = await h.core.queue.getJob(parseButtonId(buttons(b)[0]!.custom_id)!.jobId);
    expect(jobB?.data.kind === 'imagine' && jobB.data.options).toMatchObject({ aspect: '1:1', ditSteps: 7, negative: 'boats' });

    // The Reset button under the answer clears them.
    const reset = h.fake.pressButton(answer, buttons(answer).find((x) => x.label === 'Reset')!.custom_id);
    expect((await ephemeralAnswer(reset)).content).toContain('cleared');
    expect(await h.core.settings.get('user', here())).toEqual({});
  }, 90_000);

  it('retention and no-log are channel settings (refused for yourself and for non-admins); a channel TTL travels with the job, which is gone after it', async () => {
    expect((await ephemeralAnswer(settings([{ name: 'retention', type: 3, value: '1h' }]))).content).toMatch(/channel settings/);
    expect((await ephemeralAnswer(settings([{ name: 'no-log', type: 5, value: true }]))).content).toMatch(/channel settings/);
    expect((await ephemeralAnswer(settings([{ name: 'for', type: 3, value: 'channel' }, { name: 'retention', type: 3, value: 'soon' }]))).content).toMatch(/not a duration/);
    expect((await ephemeralAnswer(settings([{ name: 'for', type: 3, value: 'channel' }, { name: 'retention', type: 3, value: '2h' }]))).content).toMatch(/Only admins/);
    await h.core.settings.set('channel', here(), { retentionSeconds: 3, noLog: true }); // what an admin's for:channel retention:3s no-log:true saves
    try {
      const final = await waitForImages(imagine('a short-lived kite'), 1);
      const jobId = parseButtonId(buttons(final)[0]!.custom_id)!.jobId;
      expect((await h.core.queue.getJob(jobId))?.data.destination).toMatchObject({ retentionSeconds: 3, noLog: true });
      const end = Date.now() + 30_000;
      while ((await h.core.queue.getJob(jobId)) && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
      expect(await h.core.queue.getJob(jobId)).toBeUndefined();
      expect(await h.core.redis.exists(`${h.prefix}:delivery-discord:${jobId}`)).toBe(0);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 90_000);

  it('a private channel (admin setting): the result is ephemeral and never posted publicly, even after the token expired', async () => {
    const notAdmin = settings([{ name: 'for', type: 3, value: 'channel' }, { name: 'private', type: 5, value: true }]);
    expect((await ephemeralAnswer(notAdmin)).content).toMatch(/Only admins/); // alice lacks Manage Server here
    await h.core.settings.set('channel', here(), { private: true }); // what an admin's /settings for:channel private:true saves
    try {
      const i = imagine('a secret garden');
      const final = await waitForImages(i, 1);
      expect(i.callbacks[0]).toMatchObject({ type: 5, data: { flags: 64 } }); // deferred ephemerally
      expect(final.flags & 64).toBe(64);

      const late = imagine('a secret lighthouse');
      await h.fake.waitFor(() => late.callbacks.length > 0, 10_000, 'the deferral');
      h.fake.expireToken(late.token);
      const dm = await h.fake.waitFor(
        () => [...h.fake.messages.values()].find((m) => m.channelId !== h.fake.channelId && m.attachments.length > 0 && m.content.includes('a secret lighthouse')),
        30_000,
        'the DM',
      );
      expect(dm.channelId).not.toBe(h.fake.channelId);
      // Nothing about either job ever reached the channel where others can see it.
      const publicMessages = h.fake.channelMessages().filter((m) => !(m.flags & 64));
      expect(publicMessages.some((m) => /secret garden|secret lighthouse/.test(m.content))).toBe(false);
      expect(h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.channelId}/messages$`)).some((r) => JSON.stringify(r.body).includes('secret'))).toBe(false);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 90_000);

  it('a Re-roll pressed in the DM on a private channel\'s result (sent there once its token expired) is that channel\'s job, and stays private', async () => {
    await h.core.settings.set('channel', here(), { private: true, noLog: true });
    try {
      const late = imagine('a secret attic');
      await h.fake.waitFor(() => late.callbacks.length > 0, 10_000, 'the deferral');
      h.fake.expireToken(late.token);
      const dm = await h.fake.waitFor(() => [...h.fake.messages.values()].find((m) => m.guildId === null && m.attachments.length > 0 && m.content.includes('a secret attic')), 30_000, 'the DM');
      const press = h.fake.pressButton(dm, buttons(dm).find((b) => b.label === 'Re-roll')!.custom_id);
      const job = await jobData(jobIdFor('discord', press.id));
      expect(job.destination).toMatchObject({ guildId: h.fake.guildId, channelId: h.fake.channelId, private: true, noLog: true });
      await waitForImages(press, 1); // its result answers the press, in the DM
      expect(h.fake.channelMessages().some((m) => m.content.includes('secret attic'))).toBe(false);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 90_000);

  it('a mention in a private channel: the answer is in the asker\'s DM, and the job keeps the channel\'s no-log and retention', async () => {
    await h.core.settings.set('channel', here(), { private: true, noLog: true, retentionSeconds: 120 });
    try {
      const png = await samplePng(32);
      const question = h.fake.postUserMessage({ content: 'what is in this private photo?', mentionBot: true, attachments: [h.fake.addAttachment({ bytes: png, filename: 'p.png', contentType: 'image/png' })] });
      const dm = h.fake.dmChannel(h.fake.alice);
      const answer = await h.fake.waitFor(() => [...h.fake.messages.values()].find((m) => m.channelId === dm && m.content.includes('You asked: what is in this private photo?')), 30_000, 'the answer in the DM');
      expect(answer.content).not.toContain('Looking at the image');
      const job = await h.core.queue.getJob(jobIdFor('discord', question.id));
      // the channel asked in (its settings, limits and checks), the DM where the answer is
      expect(job?.data.destination).toMatchObject({ channelId: h.fake.channelId, dmChannelId: dm, private: true, noLog: true, retentionSeconds: 120 });
      expect(h.fake.channelMessages().some((m) => m.content.includes('private photo') && m.author.id !== h.fake.alice.id)).toBe(false);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 90_000);

  it('a private channel and a user who refuses direct messages: told so (once, in the channel, nothing of the request), never a lost result', async () => {
    const bob = h.fake.user('bob');
    h.fake.closeDirectMessages(bob);
    await h.core.settings.set('channel', here(), { private: true });
    try {
      // /imagine whose result comes after the interaction token expired: the DM is refused, a notice names bob.
      const late = h.fake.slashCommand({ name: 'imagine', user: bob, options: [{ name: 'prompt', type: 3, value: 'a hidden waterfall' }] });
      await h.fake.waitFor(() => late.callbacks.length > 0, 10_000, 'the deferral');
      h.fake.expireToken(late.token);
      const notice = await h.fake.waitFor(() => h.fake.channelMessages().find((m) => m.content.startsWith(`<@${bob.id}> I couldn't send you your private result`)), 30_000, 'the notice');
      expect(notice.content).toContain("you don't accept direct messages from me");
      expect(notice.attachments).toHaveLength(0);
      const dmPosts = h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.dmChannel(bob)}/messages$`));
      expect(dmPosts.length).toBeGreaterThanOrEqual(1);
      expect(dmPosts.every((r) => r.status === 403)).toBe(true);
      // Delivered once: no retry posts the notice again.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(h.fake.channelMessages().filter((m) => m.content.includes("couldn't send you your private result"))).toHaveLength(1);
      expect(h.fake.channelMessages().some((m) => m.content.includes('hidden waterfall'))).toBe(false);

      // A mention with an image: the answer would go to bob's DMs, which he refuses: he is told how, and no job runs.
      const png = await samplePng(32);
      const jobsBefore = (await h.core.queue.getJobCounts('completed', 'active', 'waiting', 'delayed', 'prioritized'));
      const question = h.fake.postUserMessage({ author: bob, content: 'what is in this secret photo?', mentionBot: true, attachments: [h.fake.addAttachment({ bytes: png, filename: 's.png', contentType: 'image/png' })] });
      const reply = await h.fake.waitFor(() => h.fake.channelMessages().find((m) => m.referenceId === question.id), 15_000, 'the reply');
      expect(reply.content).toBe(
        "Answers in this channel are private, so they go to your direct messages, but you don't accept direct messages from me. Allow them for this server (click its name → Privacy Settings → Direct Messages), then ask again. Or use `/ask`: its answer is shown only to you.",
      );
      expect(await h.core.queue.getJobCounts('completed', 'active', 'waiting', 'delayed', 'prioritized')).toEqual(jobsBefore);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 90_000);
});
