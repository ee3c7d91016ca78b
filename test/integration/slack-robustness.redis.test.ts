// Robustness and the rest of the Slack experience: socket reconnects without losing or repeating work,
// rate-limit answers honoured, repeated delivery posting once, follow-ups keeping the conversation, the
// "Ask about this image" shortcut, Cancel, admin gating, and a bot not yet invited to the channel.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTRACT_VERSION, type JobResult } from '../../src/jobs/contract.ts';
import { jobIdFor } from '../../src/jobs/queue.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { appMention, blockAction, eventCallback, messageShortcut, slashCommand, viewSubmission } from '../fakes/slack/payloads.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';

const CHANNEL = 'C0ROBUST';
const USER = 'U0CAROL';
const ADMIN = 'U0ADMIN';
let h: SlackHarness;
let png: Uint8Array;

beforeAll(async () => {
  // Ack timing is checked in slack.redis.test.ts; here a wide window keeps a loaded CI machine from failing these.
  h = await startSlackHarness({ mode: 'socket', ackWindowMs: 10_000, pipelineExtra: { stepDelayMs: 60, maxSteps: 4, slowStepMs: 500, failures: { REFUSEME: 'user', BREAKME: 'transient', SLOWLY: 'slow' } } });
  h.fake.addUser(USER);
  h.fake.addUser(ADMIN, { isAdmin: true });
  png = new Uint8Array(await sharp({ create: { width: 20, height: 10, channels: 3, background: '#888' } }).png().toBuffer());
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const answersIn = (threadTs: string): FakeMessage[] => h.fake.store.thread(CHANNEL, threadTs).filter((m) => m.metadata?.event_type === 'blip3o_answer');
const imagesOf = (jobId: string): FakeMessage[] => h.fake.store.allMessages().filter((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`));
const statusOf = (jobId: string) => h.fake.botMessages(CHANNEL).find((m) => m.metadata?.event_payload.job_id === jobId);
const settle = () => new Promise((r) => setTimeout(r, 400));

async function imagine(text: string, user = USER): Promise<string> {
  const payload = slashCommand(h.fake, { text, channel: CHANNEL, user });
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
  return jobIdFor('slack', `cmd:${payload.trigger_id}`);
}

describe('Slack robustness', () => {
  it('an event sent while the socket is down arrives after the reconnect, once; a duplicate delivery makes no second job', async () => {
    const connections = h.fake.link.connections;
    h.fake.link.drop();
    const file = h.fake.seedFile(png, 'grey.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what is this?`, files: [file] });
    const body = eventCallback(h.fake, appMention(h.fake, m));
    const env = h.fake.sendEnvelope('events_api', body);
    await h.fake.link.waitForConnections(connections + 1);
    await h.fake.link.ack(env);
    expect(env.retryAttempt).toBe(1);
    const duplicate = h.fake.sendEnvelope('events_api', body); // Slack's retry of the same event
    await h.fake.link.ack(duplicate);

    await h.fake.waitFor(() => answersIn(m.ts)[0], 20_000, 'the answer');
    await settle();
    expect(answersIn(m.ts)).toHaveLength(1);
    expect(h.fake.link.envelopes.every((e) => e.extraAcks === 0)).toBe(true); // every envelope acked exactly once
  }, 40_000);

  it('a duplicate of a request served from the cache (it has no job) posts no second status message', async () => {
    const first = await imagine('a cached otter --seed 21');
    await h.fake.waitFor(() => imagesOf(first)[0], 20_000, 'the first image');
    const payload = slashCommand(h.fake, { text: 'a cached otter --seed 21', channel: CHANNEL, user: USER });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const again = jobIdFor('slack', `cmd:${payload.trigger_id}`);
    await h.fake.waitFor(() => imagesOf(again)[0], 20_000, 'the cached image');
    expect(await h.core.queue.getJob(again)).toBeUndefined(); // served without a job
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload)); // Slack's retry of the same command
    await settle();
    expect(h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_payload.job_id === again)).toHaveLength(1);
    expect(imagesOf(again)).toHaveLength(1);
  }, 40_000);

  it('a disconnect request mid-job loses nothing: progress continues and the image arrives once', async () => {
    const jobId = await imagine('a slow boat --seed 5');
    await h.fake.waitFor(() => statusOf(jobId), 10_000, 'the status message');
    const connections = h.fake.link.connections;
    h.fake.link.disconnect('refresh_requested');
    await h.fake.link.waitForConnections(connections + 1);
    await h.fake.waitFor(() => imagesOf(jobId)[0], 20_000, 'the image');
    await settle();
    expect(imagesOf(jobId)).toHaveLength(1);
  }, 40_000);

  it('honours 429 Retry-After from the Web API and still delivers once', async () => {
    h.fake.inject({ method: 'files.getUploadURLExternal', retryAfterSec: 1 });
    const jobId = await imagine('a patient heron --seed 9');
    await h.fake.waitFor(() => imagesOf(jobId)[0], 20_000, 'the image');
    const calls = h.fake.apiCalls('files.getUploadURLExternal').slice(-2);
    expect(calls.map((c) => c.status)).toEqual([429, 200]);
    expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(950);
    await settle();
    expect(imagesOf(jobId)).toHaveLength(1);
  }, 40_000);

  it('deliver() called again for the same job (crash before the ledger) posts nothing new', async () => {
    const jobId = await imagine('a twice-told tale --seed 1');
    const [first] = await h.fake.waitFor(() => (imagesOf(jobId).length ? imagesOf(jobId) : undefined), 20_000, 'the image');
    const status = statusOf(jobId)!;
    const result: JobResult = {
      v: CONTRACT_VERSION,
      jobId,
      kind: 'imagine',
      destination: { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: USER, threadTs: status.ts, statusMessageTs: status.ts },
      status: 'succeeded',
      image: { blobKey: 'k', mime: 'image/png', width: 20, height: 10, altText: 'a twice-told tale', prompt: 'a twice-told tale', options: { seed: 1, ditSteps: 4, decoderSteps: 4, guidance: 3, aspect: '1:1' } },
      timingsMs: {},
      finishedAt: Date.now(),
    };
    const lookups = () => h.fake.apiCalls('conversations.replies').filter((c) => c.args.ts === status.ts).length;
    expect(lookups()).toBe(0); // the first delivery uploads without looking
    await h.adapter.port.deliver(result, png);
    expect(lookups()).toBe(1); // a repeat looks, finds the file, and uploads nothing
    expect(imagesOf(jobId)).toEqual([first]);

    const answerResult: JobResult = { ...result, jobId: 'jANSWERTWICE', kind: 'ask', image: undefined, answer: { text: 'It is grey.', tokenCount: 3 }, destination: { ...result.destination, statusMessageTs: undefined } as JobResult['destination'] };
    await h.adapter.port.deliver(answerResult, undefined);
    await h.adapter.port.deliver(answerResult, undefined);
    expect(answersIn(status.ts).filter((m) => m.metadata?.event_payload.job_id === 'jANSWERTWICE')).toHaveLength(1);
  }, 40_000);

  it('a follow-up mention in the thread carries the earlier question and answer', async () => {
    const file = h.fake.seedFile(png, 'grey.png', 'image/png');
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'this one', files: [file] });
    const q1 = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what is it?`, threadTs: parent.ts });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, q1))));
    const a1 = await h.fake.waitFor(() => answersIn(parent.ts)[0], 20_000, 'the first answer');
    const q2 = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> and what colour?`, threadTs: parent.ts });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, q2))));
    await h.fake.waitFor(() => answersIn(parent.ts)[1], 20_000, 'the follow-up answer');
    const job = await h.core.queue.getJob(jobIdFor('slack', `msg:${CHANNEL}:${q2.ts}`));
    expect(job?.data).toMatchObject({ kind: 'ask', question: 'and what colour?', history: [{ role: 'user', text: 'what is it?' }, { role: 'assistant', text: a1.text }] });
  }, 40_000);

  it("a failure in the thread is no turn of the model's: only messages with the answer's metadata are", async () => {
    // a channel and user of its own: the file's other tests use up most of USER's and CHANNEL's requests per minute
    const [channel, user] = ['C0TURNS', 'U0DAVE'];
    h.fake.addUser(user);
    const file = h.fake.seedFile(png, 'grey.png', 'image/png');
    const parent = h.fake.postUserMessage({ channel, user, text: 'that one', files: [file] });
    const q1 = h.fake.postUserMessage({ channel, user, text: `<@${h.fake.botUserId}> BREAKME what is it?`, threadTs: parent.ts });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, q1))));
    const failed = await h.fake.waitFor(() => h.fake.store.thread(channel, parent.ts).find((m) => m.bot_id && /^Something went wrong on our side/.test(m.text ?? '')), 20_000, 'the failure');
    expect(failed.metadata?.event_type).toBe('blip3o_status'); // the status message's, kept by the edit into the failure
    const q2 = h.fake.postUserMessage({ channel, user, text: `<@${h.fake.botUserId}> and what colour?`, threadTs: parent.ts });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, q2))));
    await h.fake.waitFor(() => h.fake.store.thread(channel, parent.ts).find((m) => m.metadata?.event_type === 'blip3o_answer'), 20_000, 'the follow-up answer');
    const job = await h.core.queue.getJob(jobIdFor('slack', `msg:${channel}:${q2.ts}`));
    expect(job?.data).toMatchObject({ kind: 'ask', history: [{ role: 'user', text: 'BREAKME what is it?' }] });
  }, 40_000);

  it('the "Ask about this image" shortcut opens a modal; submitting it answers in the thread', async () => {
    const file = h.fake.seedFile(png, 'grey.png', 'image/png');
    const message = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'a picture', files: [file] });
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', messageShortcut(h.fake, { user: USER, message, callbackId: 'blip3o_ask_about_image' })));
    const opened = await h.fake.waitFor(() => h.fake.apiCalls('views.open').at(-1), 10_000, 'views.open');
    const view = opened.args.view as Record<string, unknown>;
    expect(view).toMatchObject({ type: 'modal', callback_id: 'blip3o_ask_view' });
    await h.fake.link.ack(
      h.fake.sendEnvelope('interactive', viewSubmission(h.fake, { user: USER, view, values: { question: { value: { type: 'plain_text_input', value: 'is it sunny?' } } } })),
    );
    const answer = await h.fake.waitFor(() => answersIn(message.ts)[0], 20_000, 'the answer');
    expect(answer.text).toContain('is it sunny?');
  }, 40_000);

  it('Cancel on the status message stops the job: no image, the status says so', async () => {
    const jobId = await imagine('a SLOWLY drawn job --steps 4', USER);
    const status = await h.fake.waitFor(() => statusOf(jobId), 10_000, 'the status message');
    // the status message is posted before the core enqueues (cache lookup, budget, limits): click once the job exists
    for (const until = Date.now() + 10_000; !(await h.core.queue.getJob(jobId)) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: USER, message: status, actionId: 'blip3o_cancel', value: jobId })));
    await h.fake.waitFor(() => h.fake.store.find(CHANNEL, status.ts)?.text === 'Cancelled', 20_000, 'the cancelled status');
    await settle();
    expect(imagesOf(jobId)).toHaveLength(0);
  }, 40_000);

  it('a failure the user can fix is told to them alone; any other failure shows a reference, not the cause', async () => {
    // The refusal can come back before a poll of the store would see the status message, so the status message is
    // identified from the private error (threaded under it) and its deletion from the recorded chat.delete.
    const refused = await imagine('REFUSEME please --seed 2');
    const told = await h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => /refuses this input/.test(String(c.args.text))), 20_000, 'the private error');
    expect(told.args).toMatchObject({ channel: CHANNEL, user: USER, thread_ts: expect.any(String) });
    const statusTs = told.args.thread_ts as string;
    await h.fake.waitFor(() => h.fake.apiCalls('chat.delete').some((c) => c.args.ts === statusTs), 5_000, 'the status message to be taken back');
    expect(h.fake.store.find(CHANNEL, statusTs)).toBeFalsy();

    const broken = await imagine('BREAKME please --seed 2');
    const brokenStatus = await h.fake.waitFor(() => statusOf(broken), 10_000, 'the status message');
    await h.fake.waitFor(() => /^Something went wrong on our side \(ref j[0-9a-f]+\)\.$/.test(h.fake.store.find(CHANNEL, brokenStatus.ts)?.text ?? ''), 20_000, 'the reference');
    expect(JSON.stringify(h.fake.store.find(CHANNEL, brokenStatus.ts)?.blocks)).not.toContain('injected');
    expect(imagesOf(refused).length + imagesOf(broken).length).toBe(0);
  }, 40_000);

  it('a mention carrying only a file stub (check_file_info) is resolved with files.info and answered', async () => {
    const file = h.fake.seedFile(png, 'stub.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what is this?`, files: [file] });
    const event = { ...appMention(h.fake, m), files: [{ id: file.id, file_access: 'check_file_info' }] };
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, event)));
    await h.fake.waitFor(() => answersIn(m.ts)[0], 20_000, 'the answer');
    expect(h.fake.apiCalls('files.info').some((c) => c.args.file === file.id)).toBe(true);
  }, 30_000);

  it('a question about a PDF is refused privately before anything is posted or downloaded', async () => {
    const pdf = h.fake.seedFile(new TextEncoder().encode('%PDF-1.7'), 'report.pdf', 'application/pdf');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> summarise this`, files: [pdf] });
    await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, m))));
    const told = await h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.thread_ts === m.ts), 10_000, 'the private refusal');
    expect(String(told.args.text)).toBe('`report.pdf` is a PDF, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(h.fake.store.thread(CHANNEL, m.ts).filter((x) => x.bot_id)).toEqual([]);
    expect(h.fake.calls.some((c) => c.kind === 'download' && c.method.includes(pdf.id))).toBe(false);
  }, 20_000);

  it('/blip3o-admin answers workspace admins and refuses everyone else, privately', async () => {
    const asUser = slashCommand(h.fake, { command: '/blip3o-admin', text: 'queue', channel: CHANNEL, user: USER });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', asUser));
    const refusal = await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && asUser.response_url.endsWith(c.method)), 10_000, 'the refusal');
    expect(refusal.args).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/Only admins/) });

    const asAdmin = slashCommand(h.fake, { command: '/blip3o-admin', text: 'queue', channel: CHANNEL, user: ADMIN });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', asAdmin));
    const status = await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && asAdmin.response_url.endsWith(c.method)), 10_000, 'the queue status');
    expect(status.args).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/^Queue: \d+ running/) });

    const bad = slashCommand(h.fake, { command: '/blip3o-admin', text: 'reboot', channel: CHANNEL, user: ADMIN });
    const env = h.fake.sendEnvelope('slash_commands', bad);
    expect(await h.fake.link.ack(env)).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/^Usage:/) });
  }, 30_000);

  it('/blip3o-admin usage: the table privately, the chart as a PNG in the admin\'s direct messages with the bot', async () => {
    const asAdmin = slashCommand(h.fake, { command: '/blip3o-admin', text: 'usage 3', channel: CHANNEL, user: ADMIN });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', asAdmin));
    const told = await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && asAdmin.response_url.endsWith(c.method)), 20_000, 'the report');
    expect(told.args).toMatchObject({ response_type: 'ephemeral', text: expect.stringMatching(/^GPU usage in this workspace over the last 3 days[\s\S]*Top channels[\s\S]*chart is in your direct messages/) });
    const dm = h.fake.store.messages.get(`D${ADMIN}`) ?? [];
    expect(dm).toHaveLength(1);
    expect(dm[0]!.files?.[0]?.mimetype).toBe('image/png');
    expect(h.fake.store.messages.get(CHANNEL)?.some((m) => m.files?.some((f) => f.name?.startsWith('usage-')))).not.toBe(true); // nothing public
  }, 30_000);

  it('when the bot is not in the channel, the user alone is told to invite it, and no job is made', async () => {
    h.fake.inject({ method: 'chat.postMessage', error: 'not_in_channel' });
    const payload = slashCommand(h.fake, { text: 'a fox', channel: 'C0ELSEWHERE', user: USER });
    await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
    const told = await h.fake.waitFor(() => h.fake.calls.find((c) => c.kind === 'response_url' && payload.response_url.endsWith(c.method)), 10_000, 'the hint');
    expect(String(told.args.text)).toMatch(/invite me/);
    expect(await h.core.queue.getJob(jobIdFor('slack', `cmd:${payload.trigger_id}`))).toBeUndefined();
  }, 30_000);
});
