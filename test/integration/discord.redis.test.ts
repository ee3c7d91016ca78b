// Issue 6's "must show" list: real discord.js ↔ fake Discord (REST + gateway on loopback), real Redis, a real
// worker process with the test double pipeline.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseButtonId } from '../../bots/discord/custom-ids.ts';
import { jobIdFor } from '../../src/jobs/queue.ts';
import { samplePng } from '../conformance/platform-adapter.case.ts';
import { startDiscordHarness, type DiscordHarness } from '../fakes/discord/bot-harness.ts';
import type { FakeInteraction, FakeMessage, RecordedRequest } from '../fakes/discord/server.ts';

let h: DiscordHarness;
let png: Uint8Array;

beforeAll(async () => {
  h = await startDiscordHarness({ pipelineExtra: { stepDelayMs: 40, maxSteps: 4, failures: { 'please refuse': 'user' } } });
  png = await samplePng(48);
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

/** Discord's SUPPRESS_EMBEDS message flag: the bot's mark of a message that is not the model's words. */
const SUPPRESS_EMBEDS = 1 << 2;
const isPng = (b: Uint8Array) => b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
const buttons = (m: FakeMessage | undefined) =>
  (m?.components ?? []).flatMap((r) => ((r as { components?: { label: string; custom_id: string }[] }).components ?? []));
const edits = (i: FakeInteraction): RecordedRequest[] => h.fake.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${i.token}/messages/@original$`));
const finalEdits = (i: FakeInteraction) => edits(i).filter((r) => r.files.length > 0 && r.status === 200);

async function imageOf(m: FakeMessage): Promise<Uint8Array> {
  const res = await fetch(m.attachments[0]!.url);
  return new Uint8Array(await res.arrayBuffer());
}

async function waitForImage(i: FakeInteraction, timeoutMs = 30_000): Promise<FakeMessage> {
  return h.fake.waitFor(() => {
    const m = h.fake.original(i);
    return m && m.attachments.length > 0 ? m : undefined;
  }, timeoutMs, 'the final image');
}

function imagine(prompt: string, extra: Record<string, unknown>[] = []): FakeInteraction {
  return h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: prompt }, ...extra] });
}


/** The bot's finished reply to message `id` (not its "⏳" status). */
function answerTo(id: string) {
  return h.fake.waitFor(() => {
    const m = h.fake.channelMessages().find((x) => x.author.id === h.fake.appId && x.referenceId === id);
    return m && !m.content.startsWith('⏳') ? m : undefined;
  }, 30_000, 'the follow-up answer');
}
describe('Discord end to end', () => {
  it('/imagine → deferred → progress edits → one final edit with the PNG and buttons; Re-roll and Vary each make a new image message', async () => {
    const i = imagine('a red fox in snow', [{ name: 'seed', type: 4, value: 7 }, { name: 'aspect', type: 3, value: '16:9' }]);
    const final = await waitForImage(i);
    expect(i.callbacks[0]!.type).toBe(5); // deferred
    const progress = edits(i).filter((r) => r.files.length === 0);
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress.some((r) => /Queued|Drawing|Decoding|Reading|Loading/.test(String((r.body as { content?: string }).content)))).toBe(true);
    expect(finalEdits(i)).toHaveLength(1);
    const body = finalEdits(i)[0]!.body as { attachments: { description: string }[] };
    expect(body.attachments[0]!.description).toContain('a red fox in snow'); // alt text
    expect(finalEdits(i)[0]!.files[0]!.contentType).toBe('image/png');
    expect(final.content).toContain('seed 7');
    expect(buttons(final).map((b) => b.label)).toEqual(['Re-roll', 'Vary']);
    const bytes = await imageOf(final);
    const meta = await sharp(bytes).metadata();
    expect(meta.width! / meta.height!).toBeCloseTo(16 / 9, 1);

    const reroll = h.fake.pressButton(final, buttons(final)[0]!.custom_id);
    const rerolled = await waitForImage(reroll);
    expect(rerolled.id).not.toBe(final.id);
    expect(rerolled.content).toContain('a red fox in snow');
    expect(rerolled.content).not.toContain('seed 7 ');
    expect(Buffer.from(await imageOf(rerolled)).equals(Buffer.from(bytes))).toBe(false);

    const vary = h.fake.pressButton(final, buttons(final)[1]!.custom_id);
    const varied = await waitForImage(vary);
    expect(varied.id).not.toBe(final.id);
    expect(isPng(await imageOf(varied))).toBe(true);
    expect(new Set([final.id, rerolled.id, varied.id]).size).toBe(3);
    expect(h.fake.cdnAuthLeaks).toEqual([]);
  }, 90_000);

  it('a reply mentioning the bot on an image message → a text answer in a reply; a follow-up keeps the conversation', async () => {
    const image = h.fake.postUserMessage({ content: 'look at this', attachments: [h.fake.addAttachment({ bytes: png, filename: 'garden.png', contentType: 'image/png' })] });
    const question = h.fake.postUserMessage({ content: 'what is in this picture?', mentionBot: true, replyTo: image.id });
    const answer = await h.fake.waitFor(() => {
      const m = h.fake.channelMessages().find((x) => x.author.id === h.fake.appId && x.referenceId === question.id);
      return m && !m.content.startsWith('⏳') ? m : undefined;
    }, 30_000, 'the answer');
    expect(answer.type).toBe(19);
    expect(answer.content.length).toBeGreaterThan(0);
    expect(answer.flags & SUPPRESS_EMBEDS).toBe(0); // an answer carries no mark of a notice

    const followUp = h.fake.postUserMessage({ content: 'and what colour is it?', mentionBot: true, replyTo: answer.id });
    const second = await answerTo(followUp.id);
    expect(second.content.length).toBeGreaterThan(0);
    // The follow-up found the image two replies up (downloaded again, from the fake CDN) and carried the turns so far.
    expect(h.fake.requestsTo('GET', /\/attachments\/.*garden\.png$/)).toHaveLength(2);
    const job = await h.core.queue.getJob(jobIdFor('discord', followUp.id));
    expect(job?.data.kind === 'ask' && job.data.history).toEqual([
      { role: 'user', text: 'what is in this picture?' },
      { role: 'assistant', text: answer.content },
    ]);
    expect(job?.data.kind === 'ask' && job.data.question).toBe('and what colour is it?');
  }, 60_000);

  it("a refusal on the reply chain is no turn of the model's: the status message edited into a failure, a refusal reply, a failed /ask answer", async () => {
    const historyOf = async (m: FakeMessage) => {
      const job = await h.core.queue.getJob(jobIdFor('discord', m.id));
      return job?.data.kind === 'ask' ? job.data.history : undefined;
    };
    const image = h.fake.postUserMessage({ content: 'the pond', attachments: [h.fake.addAttachment({ bytes: png, filename: 'pond.png', contentType: 'image/png' })] });

    // the worker refuses the question (a UserError): the status message becomes the refusal, in its own words
    const refused = h.fake.postUserMessage({ content: 'please refuse: what is in the pond?', mentionBot: true, replyTo: image.id });
    const failure = await answerTo(refused.id);
    expect(failure.content).toMatch(/refuses this input/);
    expect(failure.flags & SUPPRESS_EMBEDS).toBe(SUPPRESS_EMBEDS); // the mark of a notice (render.ts NOTICE_FLAGS)
    const afterFailure = h.fake.postUserMessage({ content: 'and the ducks?', mentionBot: true, replyTo: failure.id });
    await answerTo(afterFailure.id);
    expect(await historyOf(afterFailure)).toEqual([{ role: 'user', text: 'please refuse: what is in the pond?' }]);

    // the core refuses before any job (a question over understanding.maxQuestionChars): the status message says why
    const tooLong = h.fake.postUserMessage({ content: `why ${'so '.repeat(h.config.understanding.maxQuestionChars)}?`, mentionBot: true, replyTo: image.id });
    const refusal = await answerTo(tooLong.id);
    expect(refusal.flags & SUPPRESS_EMBEDS).toBe(SUPPRESS_EMBEDS);
    const afterRefusal = h.fake.postUserMessage({ content: 'and the frogs?', mentionBot: true, replyTo: refusal.id });
    await answerTo(afterRefusal.id);
    expect((await historyOf(afterRefusal))?.map((t) => t.role)).toEqual(['user']);

    // the adapter refuses a mention without a question: a reply in the UserError's words
    const bare = h.fake.postUserMessage({ content: '', mentionBot: true, replyTo: image.id });
    const told = await answerTo(bare.id);
    expect(told.content).toMatch(/What would you like to know/);
    expect(told.flags & SUPPRESS_EMBEDS).toBe(SUPPRESS_EMBEDS);
    const afterTold = h.fake.postUserMessage({ content: 'how deep is the pond?', mentionBot: true, replyTo: told.id });
    await answerTo(afterTold.id);
    expect(await historyOf(afterTold)).toEqual([]);

    // /ask refused by the worker: its answer carries the copy of the image, and the refusal
    const photo = h.fake.addAttachment({ bytes: png, filename: 'reed.png', contentType: 'image/png' });
    const ask = h.fake.slashCommand({ name: 'ask', options: [{ name: 'image', type: 11, value: photo.id }, { name: 'question', type: 3, value: 'please refuse: which bird?' }], attachments: [photo] });
    const failedAsk = await h.fake.waitFor(() => {
      const m = h.fake.original(ask);
      return m && /refuses this input/.test(m.content) && m.attachments.length > 0 ? m : undefined;
    }, 30_000, 'the refused /ask with its copy of the image');
    const afterAsk = h.fake.postUserMessage({ content: 'and its beak?', mentionBot: true, replyTo: failedAsk.id });
    await answerTo(afterAsk.id);
    expect(await historyOf(afterAsk)).toEqual([{ role: 'user', text: 'please refuse: which bird?' }]);
  }, 90_000);

  it('the "Ask about this image" context menu → modal → answer', async () => {
    const image = h.fake.postUserMessage({ content: '', attachments: [h.fake.addAttachment({ bytes: png, filename: 'cat.png', contentType: 'image/png' })] });
    const menu = h.fake.contextMenu({ name: 'Ask about this image', target: image });
    await h.fake.waitFor(() => menu.callbacks.find((c) => c.type === 9), 10_000, 'the modal');
    const submit = h.fake.submitModal(menu, { question: 'what animal is this?' });
    const answer = await h.fake.waitFor(() => {
      const m = h.fake.original(submit);
      // the answer's edit sets its text (the copy of the image comes in an edit of the attachments only)
      return m && edits(submit).some((r) => r.status === 200 && typeof (r.body as { content?: unknown }).content === 'string' && !String((r.body as { content: string }).content).startsWith('⏳')) ? m : undefined;
    }, 30_000, 'the answer');
    expect(answer.content.length).toBeGreaterThan(0);
    expect(answer.content.startsWith('⏳')).toBe(false);

    // A mention-reply to the answer continues about the same image: the answer carries a copy of it (an interaction's
    // answer replies to no message), its question as the copy's alt text.
    const withCopy = await h.fake.waitFor(() => (answer.attachments.length > 0 ? answer : undefined), 10_000, 'the copy of the image');
    expect(withCopy.attachments[0]).toMatchObject({ filename: 'asked-about.jpg', description: 'Image asked about: what animal is this?' });
    const followUp = h.fake.postUserMessage({ content: 'and what colour is it?', mentionBot: true, replyTo: answer.id });
    const second = await answerTo(followUp.id);
    expect(second.content.length).toBeGreaterThan(0);
    const job = await h.core.queue.getJob(jobIdFor('discord', followUp.id));
    expect(job?.data.kind === 'ask' && job.data.history).toEqual([
      { role: 'user', text: 'what animal is this?' },
      { role: 'assistant', text: answer.content },
    ]);
  }, 60_000);

  it('a 429 on the final edit is waited out: exactly one final result', async () => {
    h.fake.injectFault({ method: 'PATCH', path: /\/messages\/@original$/, status: 429, retryAfterS: 0.3, when: (r) => r.files.length > 0 });
    const i = imagine('a castle under rate limits');
    await waitForImage(i);
    const attempts = edits(i).filter((r) => r.files.length > 0);
    expect(attempts.map((r) => r.status)).toEqual([429, 200]);
    expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(250);
    await new Promise((r) => setTimeout(r, 500));
    expect(finalEdits(i)).toHaveLength(1);
    expect(h.fake.channelMessages().filter((m) => buttons(m).some((b) => parseButtonId(b.custom_id)?.jobId && m.attachments.length && m.content.includes('castle under rate limits')))).toHaveLength(1);
  }, 60_000);

  it('an expired interaction token: the result still arrives, once, as a channel message mentioning the user', async () => {
    const i = imagine('a lighthouse after fifteen minutes');
    await h.fake.waitFor(() => i.callbacks.length > 0, 10_000, 'the deferral');
    h.fake.expireToken(i.token); // right after deferring, so the job cannot finish first

    const posted = await h.fake.waitFor(
      () => h.fake.channelMessages().find((m) => m.author.id === h.fake.appId && m.attachments.length > 0 && m.content.includes('a lighthouse after fifteen minutes')),
      30_000,
      'the channel message',
    ).catch((e: Error) => {
      console.log(h.fake.requests.filter((r) => r.at > i.createdAt).map((r) => `${r.method} ${r.path} ${r.status} files=${r.files.length}`).join('\n'));
      throw e;
    });
    expect(posted.content).toContain(`<@${h.fake.alice.id}>`);
    expect(posted.interactionId).toBeUndefined();
    expect(edits(i).some((r) => r.status === 401)).toBe(true);
    const post = h.fake.requestsTo('POST', new RegExp(`/channels/${h.fake.channelId}/messages$`)).find((r) => r.files.length > 0 && (r.body as { enforce_nonce?: boolean }).enforce_nonce);
    expect(post).toBeDefined();

    // Delivering the same result again (as after a crash before the ledger mark) posts nothing new.
    const jobId = parseButtonId(buttons(posted)[0]!.custom_id)!.jobId;
    const request = (await h.core.queue.getJob(jobId))!.data;
    if (request.kind !== 'imagine') throw new Error('expected the imagine request');
    const before = h.fake.channelMessages().length;
    await h.adapter.port.deliver(
      { v: 1, jobId, kind: 'imagine', destination: request.destination, status: 'succeeded', timingsMs: {}, finishedAt: Date.now(),
        image: { blobKey: 'x', mime: 'image/png', width: 1, height: 1, altText: 'again', prompt: request.prompt, options: request.options } },
      png,
    );
    expect(h.fake.channelMessages().length).toBe(before);
  }, 60_000);

  it('oversized, non-image and disallowed-host attachments each get their own clear message; nothing is enqueued', async () => {
    const jobsBefore = await h.jobCount();
    const cases = [
      { att: h.fake.addAttachment({ bytes: png, filename: 'huge.png', contentType: 'image/png', size: 50 * 2 ** 20 }), expect: /huge\.png is 50 MiB; the limit is 20 MiB/ },
      { att: h.fake.addAttachment({ bytes: new TextEncoder().encode('hello'), filename: 'notes.txt', contentType: 'text/plain' }), expect: /notes\.txt isn't an image \(text\/plain\)/ },
      {
        att: h.fake.addAttachment({ bytes: png, filename: 'elsewhere.png', contentType: 'image/png', origin: h.fake.origin.replace('127.0.0.1', 'localhost') }),
        expect: /only read images uploaded to Discord; elsewhere\.png is hosted on localhost/,
      },
    ];
    for (const c of cases) {
      const i = h.fake.slashCommand({
        name: 'ask',
        options: [{ name: 'image', type: 11, value: c.att.id }, { name: 'question', type: 3, value: 'what is this?' }],
        attachments: [c.att],
      });
      await h.fake.waitFor(() => i.callbacks.length > 0, 10_000, 'the reply');
      expect(i.callbacks[0]!.type).toBe(4); // answered at once, privately: never deferred
      expect(Number(i.callbacks[0]!.data!.flags) & 64).toBe(64);
      expect(String(i.callbacks[0]!.data!.content)).toMatch(c.expect);
    }
    // The same checks on the mention path, where the answer is a reply.
    const mention = h.fake.postUserMessage({ content: 'what is this?', mentionBot: true, attachments: [cases[1]!.att] });
    const refusal = await h.fake.waitFor(() => h.fake.channelMessages().find((m) => m.referenceId === mention.id), 10_000, 'the refusal');
    expect(refusal.content).toMatch(cases[1]!.expect);
    expect(await h.jobCount()).toBe(jobsBefore);
    expect(h.fake.requestsTo('GET', /\/attachments\/.*(huge\.png|notes\.txt|elsewhere\.png)$/)).toHaveLength(0);
  }, 60_000);

  it('a failure the model reports for the user replaces the progress with its message, once', async () => {
    const i = imagine('please refuse this prompt');
    const failed = await h.fake.waitFor(() => {
      const m = h.fake.original(i);
      return m && !m.content.startsWith('⏳') && m.editedAt ? m : undefined;
    }, 30_000, 'the failure');
    expect(failed.content).toMatch(/refuses this input/);
    expect(failed.attachments).toHaveLength(0);
    expect(buttons(failed)).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(edits(i).filter((r) => r.status === 200 && !String((r.body as { content?: string }).content).startsWith('⏳'))).toHaveLength(1);
  }, 60_000);

  it('bad options are refused privately and plainly; a gateway drop loses and repeats nothing', async () => {
    const bad = imagine('a cat', [{ name: 'aspect', type: 3, value: '7:5' }]);
    await h.fake.waitFor(() => bad.callbacks.length > 0, 10_000, 'the reply');
    expect(bad.callbacks[0]).toMatchObject({ type: 4, data: { flags: 64 } });
    expect(String(bad.callbacks[0]!.data!.content)).toMatch(/Unknown aspect ratio "7:5"/);

    h.fake.dropGateway(4000);
    const during = imagine('a boat sent while the gateway was down');
    await waitForImage(during);
    expect(finalEdits(during)).toHaveLength(1);
    expect(during.callbacks).toHaveLength(1);
    expect(h.fake.gatewayFrames.filter((f) => f.op === 6).length).toBeGreaterThanOrEqual(1);

    // The same dispatch arriving again (a faulty replay) is handled once: no second callback, job or result.
    const jobs = await h.jobCount();
    h.fake.dispatch('INTERACTION_CREATE', during.payload);
    await new Promise((r) => setTimeout(r, 700));
    expect(during.callbacks).toHaveLength(1);
    expect(finalEdits(during)).toHaveLength(1);
    expect(await h.jobCount()).toBe(jobs);
  }, 60_000);
});
