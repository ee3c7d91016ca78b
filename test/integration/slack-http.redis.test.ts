// The "must show" list, HTTP mode: the fake signs requests to Bolt's HTTPReceiver exactly as Slack does;
// forged signatures, stale timestamps and url_private answered with an HTML sign-in page are refused with no job.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor } from '../../src/jobs/queue.ts';
import { SIGNING_SECRET, startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import { appMention, blockAction, eventCallback, slashCommand } from '../fakes/slack/payloads.ts';
import { postEvent, postInteractive, postSlashCommand } from '../fakes/slack/signed-sender.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';
import { capturedLog } from '../doubles/core-harness.ts';

const CHANNEL = 'C0HTTP';
const USER = 'U0BOB';
let h: SlackHarness;
let url: string;
const logged = capturedLog('warn');

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'http', log: logged.log });
  h.fake.addUser(USER);
  url = h.adapter.eventsUrl!;
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const statusMessages = (): FakeMessage[] => h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status');
const jobCount = async (): Promise<number> => Object.values(await h.core.queue.getJobCounts()).reduce((a, b) => a + b, 0);

describe('Slack in HTTP mode, end to end', () => {
  it('/imagine → 200 ack in time → progress → PNG in the thread with buttons', async () => {
    const res = await postSlashCommand(url, slashCommand(h.fake, { text: 'a lighthouse at dusk --seed 3', channel: CHANNEL, user: USER }), { signingSecret: SIGNING_SECRET });
    expect(res.timedOut).toBe(false); // answered within Slack's 3 s, as the fake's sender enforces
    expect(res.status).toBe(200);

    const status = await h.fake.waitFor(() => statusMessages()[0], 10_000, 'the status message');
    const jobId = String(status.metadata!.event_payload.job_id);
    const result = await h.fake.waitFor(() => h.fake.store.thread(CHANNEL, status.ts).find((m) => m.files?.[0]?.name === `blip3o-${jobId}.png`), 30_000, 'the image');
    expect((await sharp(result.files![0]!.bytes).metadata()).format).toBe('png');
    expect(JSON.stringify(result.blocks)).toContain('blip3o_reroll');
    expect(JSON.stringify(result.blocks)).toContain('blip3o_vary');
    await h.fake.waitFor(() => h.fake.store.find(CHANNEL, status.ts)?.text === 'Done: the image is in the thread', 10_000, 'the final status');
    const texts = h.fake.apiCalls('chat.update').filter((c) => c.args.ts === status.ts).map((c) => String(c.args.text));
    expect(texts.filter((t) => /\d+\/\d+$/.test(t)).length).toBeGreaterThanOrEqual(1);
    expect(texts.at(-1)).toBe('Done: the image is in the thread');
  }, 60_000);

  it('a signed Re-roll button press over HTTP makes a new image in the same thread', async () => {
    const status = statusMessages()[0]!;
    const jobId = String(status.metadata!.event_payload.job_id);
    const result = h.fake.store.thread(CHANNEL, status.ts).find((m) => m.files?.[0]?.name === `blip3o-${jobId}.png`)!;
    const payload = blockAction(h.fake, { user: USER, message: result, actionId: 'blip3o_reroll', value: jobId });
    const res = await postInteractive(url, payload, { signingSecret: SIGNING_SECRET });
    expect(res.status).toBe(200);
    const rerollId = jobIdFor('slack', `btn:${USER}:${(payload.actions as { action_ts: string }[])[0]!.action_ts}`);
    const again = await h.fake.waitFor(() => h.fake.store.thread(CHANNEL, status.ts).find((m) => m.files?.[0]?.name === `blip3o-${rerollId}.png`), 30_000, 'the re-rolled image');
    expect(Buffer.from(again.files![0]!.bytes).equals(Buffer.from(result.files![0]!.bytes))).toBe(false); // a new seed
  }, 40_000);

  it('refuses a forged signature and a stale timestamp: 401, no message, no job', async () => {
    const before = { jobs: await jobCount(), posts: h.fake.apiCalls('chat.postMessage').length };
    const forged = slashCommand(h.fake, { text: 'a forged fox', channel: CHANNEL, user: USER });
    expect((await postSlashCommand(url, forged, { signingSecret: 'not-the-secret' })).status).toBe(401);
    const stale = slashCommand(h.fake, { text: 'a stale fox', channel: CHANNEL, user: USER });
    expect((await postSlashCommand(url, stale, { signingSecret: SIGNING_SECRET, timestamp: Math.floor(Date.now() / 1000) - 6 * 60 })).status).toBe(401);
    const tampered = slashCommand(h.fake, { text: 'a tampered fox', channel: CHANNEL, user: USER });
    const signedForOtherBody = await import('../fakes/slack/signed-sender.ts').then((m) => m.sign(SIGNING_SECRET, Math.floor(Date.now() / 1000), 'text=something+else'));
    expect((await postSlashCommand(url, tampered, { signingSecret: SIGNING_SECRET, signature: signedForOtherBody })).status).toBe(401);

    await new Promise((r) => setTimeout(r, 300));
    for (const f of [forged, stale, tampered]) expect(await h.core.queue.getJob(jobIdFor('slack', `cmd:${f.trigger_id}`))).toBeUndefined();
    expect(await jobCount()).toBe(before.jobs);
    expect(h.fake.apiCalls('chat.postMessage').length).toBe(before.posts);
  });

  it('refuses url_private answered with an HTML sign-in page: the asker alone is told, no job', async () => {
    const png = new Uint8Array(await sharp({ create: { width: 16, height: 16, channels: 3, background: '#00f' } }).png().toBuffer());
    const file = h.fake.seedFile(png, 'photo.png', 'image/png', 'html-login');
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'my photo', files: [file] });
    const mention = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what is this?`, threadTs: parent.ts });
    const before = await jobCount();
    const res = await postEvent(url, eventCallback(h.fake, appMention(h.fake, mention)), { signingSecret: SIGNING_SECRET });
    expect(res.status).toBe(200);

    const ephemeral = await h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.thread_ts === parent.ts), 10_000, 'the private error');
    expect(ephemeral.args).toMatchObject({ channel: CHANNEL, user: USER });
    expect(String(ephemeral.args.text)).toMatch(/sign-in page instead of the image/);
    expect(h.fake.calls.some((c) => c.kind === 'download' && c.method.includes(file.id))).toBe(true);
    expect(await h.core.queue.getJob(jobIdFor('slack', `msg:${CHANNEL}:${mention.ts}`))).toBeUndefined();
    expect(await jobCount()).toBe(before);
    expect(h.fake.store.thread(CHANNEL, parent.ts).filter((m) => m.bot_id)).toEqual([]); // the public status message was taken back
  }, 30_000);

  // Before: "Something went wrong (ref …)", nothing the user could act on (Discord said to upload it again).
  it('a file deleted before the bot downloads it: the asker is told to upload it again, the operator reads why, no job', async () => {
    const png = new Uint8Array(await sharp({ create: { width: 16, height: 16, channels: 3, background: '#0f0' } }).png().toBuffer());
    const file = h.fake.seedFile(png, 'green.png', 'image/png');
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'my photo', files: [file] });
    h.fake.store.files.delete(file.id); // deleted with its message, say, after Slack sent the mention
    const mention = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what is this?`, threadTs: parent.ts });
    const before = await jobCount();
    expect((await postEvent(url, eventCallback(h.fake, appMention(h.fake, mention)), { signingSecret: SIGNING_SECRET })).status).toBe(200);

    const ephemeral = await h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => c.args.thread_ts === parent.ts), 10_000, 'the private error');
    expect(ephemeral.args).toMatchObject({ channel: CHANNEL, user: USER, text: '`green.png` is no longer on Slack (it may have been deleted); please upload it again.' });
    expect(logged.lines.find((l) => l.msg === 'a Slack file download failed')).toMatchObject({ err: 'HTTP 404', url: expect.stringContaining(file.id) });
    expect(await jobCount()).toBe(before);

    // a no-log channel's failure is logged without the file's address (its name is in it)
    const failures = () => logged.lines.filter((l) => l.msg === 'a Slack file download failed');
    const seen = failures().length;
    const destination = { platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId: USER, noLog: true } as const;
    await expect(h.adapter.coreOptions!.fetchImage!({ url: file.url_private, name: 'green.png' }, destination)).rejects.toThrow(/no longer on Slack/);
    expect(failures().slice(seen)).toEqual([expect.objectContaining({ err: 'HTTP 404' })]);
    expect(failures().at(-1)).not.toHaveProperty('url');
  }, 30_000);

  it('a retried event delivery (X-Slack-Retry-Num) makes no second job or message', async () => {
    const png = new Uint8Array(await sharp({ create: { width: 16, height: 16, channels: 3, background: '#f0f' } }).png().toBuffer());
    const file = h.fake.seedFile(png, 'pink.png', 'image/png');
    const m = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what colour is this?`, files: [file] });
    const body = eventCallback(h.fake, appMention(h.fake, m));
    await postEvent(url, body, { signingSecret: SIGNING_SECRET });
    await postEvent(url, body, { signingSecret: SIGNING_SECRET, retryNum: 1 });
    const answer = await h.fake.waitFor(() => h.fake.store.thread(CHANNEL, m.ts).find((x) => x.metadata?.event_type === 'blip3o_answer'), 30_000, 'the answer');
    expect(answer.thread_ts).toBe(m.ts);
    await new Promise((r) => setTimeout(r, 300));
    const mine = h.fake.store.thread(CHANNEL, m.ts).filter((x) => x.bot_id);
    expect(mine).toHaveLength(1);
  }, 40_000);
});
