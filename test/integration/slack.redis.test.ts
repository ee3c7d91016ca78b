// The "must show" list, Socket Mode: real @slack/bolt ↔ fake Slack, real Redis, real worker process
// with the test double pipeline.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appMention, eventCallback, slashCommand } from '../fakes/slack/payloads.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';

const CHANNEL = 'C0GENERAL';
const USER = 'U0ALICE';
let h: SlackHarness;
let png: Uint8Array;

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'socket' });
  h.fake.addUser(USER);
  png = new Uint8Array(await sharp({ create: { width: 32, height: 24, channels: 3, background: '#3a7' } }).png().toBuffer());
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const buttonLabels = (m: FakeMessage | undefined): string[] =>
  (m?.blocks ?? []).flatMap((b) => ((b as { type: string }).type === 'actions' ? ((b as { elements: { text: { text: string } }[] }).elements.map((e) => e.text.text)) : []));

/** The status message the bot posted for a conversation started at `afterTs` (the first bot post after it). */
function statusMessages(): FakeMessage[] {
  return h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status');
}

describe('Slack in Socket Mode, end to end', () => {
  it('/imagine → ack in time → queue position and progress in one status message → PNG in its thread with Re-roll and Vary', async () => {
    const before = statusMessages().length;
    const env = h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text: 'a red fox in snow --seed 7 --ar 16:9', channel: CHANNEL, user: USER }));
    await h.fake.link.ack(env); // rejects if the ack misses the fake's 3 s window, as Slack would
    expect(env.late).toBe(false);

    const status = await h.fake.waitFor(() => statusMessages()[before], 10_000, 'the status message');
    const jobId = String(status.metadata!.event_payload.job_id);
    const result = await h.fake.waitFor(
      () => h.fake.store.thread(CHANNEL, status.ts).find((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`)),
      30_000,
      'the uploaded image',
    );
    const file = result.files![0]!;
    expect(file.mimetype).toBe('image/png');
    expect(file.altText).toContain('a red fox in snow');
    const meta = await sharp(file.bytes).metadata();
    expect(meta.width! / meta.height!).toBeCloseTo(16 / 9, 1);
    expect(result.thread_ts).toBe(status.ts);
    expect(buttonLabels(result)).toEqual(['Re-roll', 'Vary']);
    expect(JSON.stringify(result.blocks)).toContain('seed 7');

    await h.fake.waitFor(() => h.fake.store.find(CHANNEL, status.ts)?.text === 'Done: the image is in the thread', 10_000, 'the final status');
    const updates = h.fake.apiCalls('chat.update').filter((c) => c.args.ts === status.ts).map((c) => String(c.args.text));
    expect(updates.some((t) => /^(Drawing|Decoding pixels|Reading the prompt|Loading the model) \d+\/\d+$|^Queued/.test(t))).toBe(true);
    expect(updates.at(-1)).toBe('Done: the image is in the thread');
    for (const c of h.fake.apiCalls('chat.update').filter((x) => x.args.ts === status.ts)) expect(JSON.stringify(c.args.blocks)).toContain(':art: a red fox in snow');
    expect(h.fake.store.find(CHANNEL, status.ts)?.text).toBe('Done: the image is in the thread');
    // Cancel was offered while it ran, and is gone now.
    expect(h.fake.apiCalls('chat.update').some((c) => c.args.ts === status.ts && JSON.stringify(c.args.blocks).includes('blip3o_cancel'))).toBe(true);
    expect(buttonLabels(h.fake.store.find(CHANNEL, status.ts))).toEqual([]);
  }, 60_000);

  it('a mention in a thread whose parent has an image → the answer in that thread', async () => {
    const image = h.fake.seedFile(png, 'garden.png', 'image/png');
    const parent = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'look at this', files: [image] });
    const mention = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> what is in this picture?`, threadTs: parent.ts });
    const env = h.fake.sendEnvelope('events_api', eventCallback(h.fake, appMention(h.fake, mention)));
    await h.fake.link.ack(env);

    const answer = await h.fake.waitFor(
      () => h.fake.store.thread(CHANNEL, parent.ts).find((m) => m.metadata?.event_type === 'blip3o_answer'),
      30_000,
      'the answer',
    );
    expect(answer.thread_ts).toBe(parent.ts);
    expect(answer.text.length).toBeGreaterThan(0);
    expect(h.fake.calls.some((c) => c.kind === 'download' && c.method.includes(image.id) && c.token === h.fake.botToken && c.status === 200)).toBe(true);
  }, 60_000);
});
