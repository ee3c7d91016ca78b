// Issue 20 through the fakes (Slack, Socket Mode): several images per prompt and negative prompts. Real @slack/bolt ↔
// fake Slack, real Redis, a real worker process with the test double pipeline.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { blockAction, messageShortcut, slashCommand } from '../fakes/slack/payloads.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import type { FakeMessage } from '../fakes/slack/store.ts';

const CHANNEL = 'C0GENERAL';
const USER = 'U0ALICE';
let h: SlackHarness;

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'socket', pipelineExtra: { stepDelayMs: 5, maxSteps: 2 } });
  h.fake.addUser(USER);
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const buttons = (m: FakeMessage | undefined): { text: { text: string }; action_id: string; value: string }[] =>
  (m?.blocks ?? []).flatMap((b) => ((b as { type: string }).type === 'actions' ? (b as { elements: { text: { text: string }; action_id: string; value: string }[] }).elements : []));
const statusMessages = () => h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status');

async function imagine(text: string): Promise<{ status: FakeMessage; jobId: string }> {
  const before = statusMessages().length;
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text, channel: CHANNEL, user: USER })));
  const status = await h.fake.waitFor(() => statusMessages()[before], 10_000, 'the status message');
  return { status, jobId: String(status.metadata!.event_payload.job_id) };
}

describe('Slack: several images and negative prompts', () => {
  it('/imagine … --n 4 → one message in the thread with 4 PNGs, seeds s…s+3, Vary 1–4 + Re-roll all; Vary 2 varies the second file', async () => {
    const { status, jobId } = await imagine('four owls at night --seed 40 --n 4 --no daylight, sun');
    const result = await h.fake.waitFor(() => h.fake.store.thread(CHANNEL, status.ts).find((m) => (m.files?.length ?? 0) > 0), 45_000, 'the gallery');
    expect(result.files!.map((f) => f.name)).toEqual([1, 2, 3, 4].map((n) => `blip3o-${jobId}-${n}.png`));
    expect(result.files!.every((f) => f.mimetype === 'image/png')).toBe(true);
    expect(new Set(result.files!.map((f) => Buffer.from(f.bytes).toString('base64'))).size).toBe(4);
    const blocks = JSON.stringify(result.blocks);
    expect(blocks).toContain('seeds 40, 41, 42, 43');
    expect(blocks).toContain('no: daylight, sun');
    expect(buttons(result).map((b) => b.text.text)).toEqual(['Vary 1', 'Vary 2', 'Vary 3', 'Vary 4', 'Re-roll all']);
    const job = await h.core.queue.getJob(jobId);
    expect(job?.data.kind === 'imagine' && job.data.options).toMatchObject({ seed: 40, count: 4, negative: 'daylight, sun' });

    const vary2 = buttons(result)[1]!;
    const downloadsBefore = h.fake.calls.filter((c) => c.kind === 'download').length;
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: USER, message: result, actionId: vary2.action_id, value: vary2.value })));
    const second = result.files![1]!;
    await h.fake.waitFor(() => h.fake.calls.slice(downloadsBefore).find((c) => c.kind === 'download' && c.method.includes(second.id)), 20_000, 'the download of image 2');
    const varied = await h.fake.waitFor(
      () => h.fake.store.thread(CHANNEL, status.ts).find((m) => m.ts !== result.ts && m.files?.some((f) => /^blip3o-j[0-9a-f]+\.png$/.test(f.name ?? ''))),
      45_000,
      'the variation',
    );
    expect(varied.files).toHaveLength(1);
    expect(h.fake.calls.slice(downloadsBefore).some((c) => c.kind === 'download' && c.method.includes(result.files![0]!.id))).toBe(false);
  }, 120_000);

  it('"Describe this image" shortcut → four prompts with "Imagine this"; pressing #2 starts /imagine with that prompt', async () => {
    const png = new Uint8Array(await sharp({ create: { width: 36, height: 20, channels: 3, background: '#a5c' } }).png().toBuffer());
    const file = h.fake.seedFile(png, 'violet.png', 'image/png');
    const message = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'what prompt made this?', files: [file] });
    const before = statusMessages().length;
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', messageShortcut(h.fake, { user: USER, message, callbackId: 'blip3o_describe_image' })));
    const status = await h.fake.waitFor(() => statusMessages()[before], 10_000, 'the status message');
    expect(status.thread_ts).toBe(message.ts);
    const answer = await h.fake.waitFor(() => {
      const m = h.fake.store.find(CHANNEL, status.ts);
      return m && m.metadata?.event_type === 'blip3o_answer' ? m : undefined;
    }, 45_000, 'the four prompts');
    const imagineButtons = (answer.blocks ?? []).map((b) => (b as { accessory?: { action_id: string; value: string } }).accessory).filter((a) => a !== undefined);
    expect(imagineButtons).toHaveLength(4);
    expect(imagineButtons.every((a) => a!.action_id === 'blip3o_imagine_this')).toBe(true);
    expect(new Set(imagineButtons.map((a) => a!.value)).size).toBe(4);
    expect(imagineButtons[0]!.value).toContain('36×20');

    const before2 = statusMessages().length;
    await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: USER, message: answer, actionId: 'blip3o_imagine_this', value: imagineButtons[1]!.value })));
    const status2 = await h.fake.waitFor(() => statusMessages()[before2], 10_000, 'the imagine status message');
    const jobId = String(status2.metadata!.event_payload.job_id);
    let job = await h.core.queue.getJob(jobId); // the status message is posted before the job is submitted
    for (let tries = 0; !job && tries < 100; tries++) job = await new Promise((r) => setTimeout(r, 100)).then(() => h.core.queue.getJob(jobId));
    expect(job?.data).toMatchObject({ kind: 'imagine', prompt: imagineButtons[1]!.value });
    await h.fake.waitFor(() => h.fake.store.thread(CHANNEL, status2.thread_ts ?? status2.ts).find((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`)), 45_000, 'the image');
  }, 120_000);
});
