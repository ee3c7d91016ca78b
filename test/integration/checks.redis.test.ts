// Issue 16 end to end on the tiny checkpoint: real discord.js / @slack/bolt ↔ the fakes, real Redis, a real worker
// process running the real pipeline (worker/pipeline/blip3o.ts) on make-tiny → convert. The model's own caption is
// the alt text; the prompt-match threshold forced above every score gives exactly maxRerolls re-rolls and one
// delivery of the best image; a moderation question forced over its threshold (an admin's runtime override)
// withholds the image: a private message, nothing public, nothing in the blob store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckOverrides } from '../../src/checks/policy.ts';
import type { Config, DeepPartial } from '../../src/config/load.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';
import { convertSnapshot } from '../../worker/builder/convert.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import type { ProcessOutcome } from '../../worker/processor.ts';
import { REDIS_URL } from '../doubles/spine-harness.ts';
import { startDiscordHarness, type DiscordHarness } from '../fakes/discord/bot-harness.ts';
import type { FakeInteraction } from '../fakes/discord/server.ts';
import { slashCommand } from '../fakes/slack/payloads.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'checks-e2e-'));
const EPHEMERAL = 64;
const MAX_REROLLS = 2;

/** The real pipeline on the tiny checkpoint, few steps; checks as each test sets them. */
function tinyModel(checks: DeepPartial<Config['checks']>): DeepPartial<Config> {
  return {
    worker: { pipelineModule: 'worker/pipeline/blip3o.ts', pipelineExtra: {} },
    model: { hubId: '', snapshotDir: join(dir, 'snapshot'), onnxDir: join(dir, 'onnx'), dtype: 'fp32', executionProvider: 'cpu', convertOnStart: false, intraOpThreads: 1 },
    generation: { defaultDitSteps: 3, defaultDecoderSteps: 3 },
    queue: { jobTimeoutMs: 240_000 },
    checks: { captionMaxTokens: 12, ...checks },
  };
}

beforeAll(async () => {
  makeTiny(join(dir, 'snapshot'));
  await convertSnapshot(join(dir, 'snapshot'), join(dir, 'onnx'), { dtype: 'fp32' });
}, 240_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function blobCount(prefix: string): Promise<number> {
  const redis = createRedis(REDIS_URL, 'test-blobs');
  try {
    return (await redis.keys(`${prefix}:blob:output:*`)).length;
  } finally {
    await closeRedis(redis);
  }
}

async function overrideChecks(prefix: string, channel: string, change: Parameters<CheckOverrides['set']>[1]): Promise<void> {
  const redis = createRedis(REDIS_URL, 'test-admin');
  try {
    await new CheckOverrides(redis, prefix).set(channel, change);
  } finally {
    await closeRedis(redis);
  }
}

describe('Discord, real pipeline on the tiny checkpoint', () => {
  let h: DiscordHarness;
  beforeAll(async () => {
    h = await startDiscordHarness({ config: tinyModel({ altText: true, match: { enabled: true, threshold: 1, maxRerolls: MAX_REROLLS } }) });
  }, 240_000);
  afterAll(async () => h?.stop(), 60_000);

  const imagine = (prompt: string, seed: number): FakeInteraction =>
    h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: prompt }, { name: 'seed', type: 4, value: seed }] });

  it('threshold above every score → exactly N re-rolls, the best image delivered once, its caption as alt text and in the PNG', async () => {
    const i = imagine('a red fox in snow', 7);
    const final = await h.fake.waitFor(() => {
      const m = h.fake.original(i);
      return m && m.attachments.length > 0 ? m : undefined;
    }, 200_000, 'the final image');
    const finals = h.fake.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${i.token}/messages/@original$`)).filter((r) => r.files.length > 0 && r.status === 200);
    expect(finals).toHaveLength(1);
    expect(h.fake.channelMessages().filter((m) => m.attachments.length > 0)).toHaveLength(1);

    const job = (await h.core.queue.getJobs(['completed'])).find((j) => j.data.kind === 'imagine')!;
    const outcome = job.returnvalue as ProcessOutcome;
    expect(outcome.tries).toBe(1 + MAX_REROLLS);
    const scores = outcome.matchScores as number[];
    expect(scores).toHaveLength(1 + MAX_REROLLS);
    for (const s of scores) expect(s).toBeGreaterThan(0), expect(s).toBeLessThan(1);
    const best = Math.max(...scores);
    expect(outcome.matchScore).toBe(best);
    expect(final.content).toContain(`seed ${7 + scores.indexOf(best)}`); // the best try's seed
    expect(final.content).toContain(`matches the prompt: ${best.toFixed(2)}`);
    expect(final.content).toContain(`best of ${1 + MAX_REROLLS} tries`);
    expect(final.content).toContain('a red fox in snow'); // the prompt stays visible as the prompt

    const alt = (finals[0]!.body as { attachments: { description: string }[] }).attachments[0]!.description;
    expect(alt.length).toBeGreaterThan(0);
    expect(alt).not.toBe('a red fox in snow');
    const png = new Uint8Array(await (await fetch(final.attachments[0]!.url)).arrayBuffer());
    const meta = await sharp(png).metadata();
    expect(meta.comments?.find((c) => c.keyword === 'Description')?.text).toBe(alt);
    expect(meta.comments?.find((c) => c.keyword === 'prompt')?.text).toBe('a red fox in snow');
  }, 240_000);

  it('a moderation question forced over its threshold → the image is withheld: a private note, nothing public, no stored image', async () => {
    await overrideChecks(h.prefix, `discord:${h.fake.guildId}:${h.fake.channelId}`, { match: false, moderation: true, thresholds: { nudity: 0 } });
    const blobsBefore = await blobCount(h.prefix);
    const publicBefore = h.fake.channelMessages().filter((m) => !(m.flags & EPHEMERAL)).length;
    const i = imagine('a quiet lake', 3);
    const note = await h.fake.waitFor(
      () => [...h.fake.messages.values()].find((m) => m.interactionId === i.id && m.flags & EPHEMERAL && m.id !== i.originalId),
      200_000,
      'the private note',
    );
    expect(note.content).toMatch(/did not post.*content checks flagged it \(nudity\)/);
    expect(note.attachments).toHaveLength(0);
    expect(h.fake.original(i)).toBeUndefined(); // the public progress message is gone
    expect([...h.fake.messages.values()].filter((m) => m.interactionId === i.id && m.attachments.length > 0)).toHaveLength(0);
    expect(h.fake.channelMessages().filter((m) => !(m.flags & EPHEMERAL)).length).toBe(publicBefore);
    expect(await blobCount(h.prefix)).toBe(blobsBefore);
  }, 240_000);
});

describe('Slack, real pipeline on the tiny checkpoint', () => {
  const CHANNEL = 'C0GENERAL';
  const USER = 'U0ALICE';
  let h: SlackHarness;
  beforeAll(async () => {
    h = await startSlackHarness({ mode: 'socket', config: tinyModel({ altText: true, match: { enabled: true, threshold: 0, maxRerolls: 0 } }) });
    h.fake.addUser(USER);
  }, 240_000);
  afterAll(async () => h?.stop(), 60_000);

  const statusOf = async (before: number) =>
    h.fake.waitFor(() => h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status')[before], 20_000, 'the status message');

  it('the caption becomes the uploaded file’s alt text; the score is shown with the result', async () => {
    const before = h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status').length;
    const env = h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text: 'a red fox in snow --seed 7', channel: CHANNEL, user: USER }));
    await h.fake.link.ack(env);
    const status = await statusOf(before);
    const jobId = String(status.metadata!.event_payload.job_id);
    const result = await h.fake.waitFor(
      () => h.fake.store.thread(CHANNEL, status.ts).find((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`)),
      200_000,
      'the uploaded image',
    );
    const file = result.files![0]!;
    const meta = await sharp(file.bytes).metadata();
    const caption = meta.comments?.find((c) => c.keyword === 'Description')?.text;
    expect(caption && caption.length).toBeGreaterThan(0);
    expect(file.altText).toBe(caption);
    expect(file.altText).not.toContain('a red fox in snow');
    expect(JSON.stringify(result.blocks)).toMatch(/matches the prompt: 0\.\d\d/);
    expect(JSON.stringify(result.blocks)).not.toContain('tries');
  }, 240_000);

  it('a moderation question forced over its threshold → an ephemeral note, the status message deleted, nothing uploaded', async () => {
    await overrideChecks(h.prefix, `slack:${h.fake.teamId}:${CHANNEL}`, { moderation: true, thresholds: { violence: 0 } });
    const blobsBefore = await blobCount(h.prefix);
    const before = h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status').length;
    const env = h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { text: 'a quiet lake', channel: CHANNEL, user: USER }));
    await h.fake.link.ack(env);
    const status = await statusOf(before);
    const jobId = String(status.metadata!.event_payload.job_id);
    const told = await h.fake.waitFor(() => h.fake.apiCalls('chat.postEphemeral').find((c) => /did not post/.test(String(c.args.text))), 200_000, 'the private note');
    expect(told.args).toMatchObject({ channel: CHANNEL, user: USER });
    expect(String(told.args.text)).toContain('(violence)');
    await h.fake.waitFor(() => (h.fake.store.find(CHANNEL, status.ts) ? undefined : true), 10_000, 'the status message deleted');
    expect(h.fake.store.thread(CHANNEL, status.ts).some((m) => m.files?.some((f) => f.name === `blip3o-${jobId}.png`))).toBe(false);
    // the status message (now deleted) was the only public message about it
    const publicPosts = h.fake.apiCalls('chat.postMessage').filter((c) => /quiet lake/.test(JSON.stringify(c.args)));
    expect(publicPosts.map((c) => (c.args.metadata as { event_type?: string } | undefined)?.event_type)).toEqual(['blip3o_status']);
    expect(await blobCount(h.prefix)).toBe(blobsBefore);
  }, 240_000);
});
