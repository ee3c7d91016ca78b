// SlackPort (the PlatformPort of bots/slack/port.ts) against the fake Slack with @slack/web-api's real client and a
// real Redis: progress into the job's status message, and every kind of result delivered once on every path, also
// when deliver() runs again after a crash (the core's ledger had not recorded the first run) and when the status
// message was deleted. What the channel ends up holding is read back from the fake's store.
import { randomUUID } from 'node:crypto';
import { LogLevel, retryPolicies, WebClient } from '@slack/web-api';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { statusMessage } from '../../../../bots/slack/blocks.ts';
import { META_ANSWER, META_STATUS, postedAtMostOnce, resultFileName, SlackPort, type JobTitle } from '../../../../bots/slack/port.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { JobProgress, JobResult, SlackDestination } from '../../../../src/jobs/contract.ts';
import { CONTRACT_VERSION } from '../../../../src/jobs/contract.ts';
import { createLogger } from '../../../../src/log.ts';
import { closeRedis, createRedis, deleteKeys } from '../../../../src/redis.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { capturedLog } from '../../../doubles/core-harness.ts';
import { isWellFormed } from '../../../doubles/world-text.ts';
import { FakeSlack } from '../../../fakes/slack/server.ts';
import type { FakeMessage } from '../../../fakes/slack/store.ts';

const prefix = `t-slackport-${randomUUID().slice(0, 8)}`;
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-slack-port');
const config = loadConfig({ env: {}, overrides: { queue: { prefix, keepCompletedSeconds: 600, keepFailedSeconds: 900 } } });
const log = createLogger('test', 'silent');
const CHANNEL = 'C0PORT';
const USER = 'U0ALICE';

let fake: FakeSlack;
let client: WebClient;
let png: Uint8Array;
const titles = new Map<string, JobTitle>();

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  client = new WebClient(fake.botToken, { slackApiUrl: fake.apiUrl, retryConfig: { retries: 0 }, logLevel: LogLevel.ERROR });
  png = await samplePng(8);
});
afterAll(async () => {
  await fake.stop();
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});
beforeEach(() => titles.clear());

/** A port as a bot has it once the core started (Redis, titles), or before (no context). */
function port(attached = true): SlackPort {
  const p = new SlackPort(client, config, log);
  if (attached) p.attach({ redis, titleOf: async (jobId) => titles.get(jobId) });
  return p;
}

/** What startJob does first: the status message (in the channel, a thread, or the asker's DM), and the destination. */
async function started(jobId: string, where: { dm?: boolean; thread?: string } = {}, title: JobTitle = { kind: 'imagine', text: 'a red fox' }): Promise<SlackDestination> {
  titles.set(jobId, title);
  const channel = where.dm ? `D${USER}` : CHANNEL;
  const posted = await client.chat.postMessage({ channel, text: 'Queued', ...(where.thread ? { thread_ts: where.thread } : {}) });
  const ts = String(posted.ts);
  return {
    platform: 'slack', teamId: fake.teamId, channelId: CHANNEL, userId: USER, threadTs: where.thread ?? ts, statusMessageTs: ts,
    ...(where.dm ? { private: true, dmChannelId: channel } : {}),
  };
}

const options = { seed: 7, ditSteps: 20, decoderSteps: 30, guidance: 3.5, aspect: '1:1' as const };
const imageOf = (prompt: string, seed = 7) => ({ blobKey: `${prefix}:blob:${seed}`, mime: 'image/png' as const, width: 8, height: 8, altText: `alt of ${prompt}`, prompt, options: { ...options, seed } });
const base = (jobId: string, destination: SlackDestination) => ({ v: CONTRACT_VERSION, jobId, destination, timingsMs: {}, finishedAt: 1 });
const imageResult = (jobId: string, d: SlackDestination, prompt = 'a red fox'): JobResult => ({ ...base(jobId, d), kind: 'imagine', status: 'succeeded', image: imageOf(prompt) });
const answerResult = (jobId: string, d: SlackDestination, text = 'It is a fox.'): JobResult => ({ ...base(jobId, d), kind: 'ask', status: 'succeeded', answer: { text, tokenCount: 4 } });
const failed = (jobId: string, d: SlackDestination, userFacing: boolean): JobResult => ({
  ...base(jobId, d), kind: 'imagine', status: 'failed', error: { code: userFacing ? 'bad_request' : 'internal', message: userFacing ? 'Your prompt is too long.' : 'onnx exploded', userFacing },
});
const progress = (jobId: string, step: number): JobProgress => ({ v: CONTRACT_VERSION, jobId, stage: 'features', step, total: 10 });

const messagesIn = (channel: string): FakeMessage[] => fake.store.messages.get(channel) ?? [];
const statusOf = (d: SlackDestination): FakeMessage | undefined => fake.store.find(d.dmChannelId ?? d.channelId, d.statusMessageTs!);
const sectionText = (m: FakeMessage | undefined, i = 0): string => ((m?.blocks?.[i] as { text?: { text?: string } } | undefined)?.text?.text ?? '');
const callsSince = (n: number, method: string) => fake.apiCalls(method).slice(n);
const count = (method: string) => fake.apiCalls(method).length;

describe('SlackPort under Slack\'s rate limits (its clients as the adapter makes them: the library\'s retry policy for results; none for progress)', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** A bot instance's port: results through a client that waits out 429s and retries, progress through one that does neither. */
  function adapterPort(): SlackPort {
    const results = new WebClient(fake.botToken, { slackApiUrl: fake.apiUrl, logLevel: LogLevel.ERROR });
    const progress = new WebClient(fake.botToken, { slackApiUrl: fake.apiUrl, logLevel: LogLevel.ERROR, rejectRateLimitedCalls: true, retryConfig: { retries: 0 } });
    const p = new SlackPort(results, config, log, progress);
    p.attach({ redis, titleOf: async (jobId) => titles.get(jobId) });
    return p;
  }

  it('a progress edit answered 429 is dropped, not retried after the result: the final status stays', async () => {
    const p = adapterPort();
    const d = await started('r-late');
    fake.inject({ method: 'chat.update', retryAfterSec: 3 });
    const edit = p.showProgress(d, progress('r-late', 9)); // the delivery waits for an edit in flight only so long (the ledger)
    await sleep(200);
    await p.deliver(imageResult('r-late', d), png);
    await edit; // before: it waited the 3 s out, then landed on top of the final status
    expect(statusOf(d)!.text).toBe('Done: the image is in the thread');
  }, 15_000);

  it('a 429 on one job\'s progress edit holds back no other job\'s result', async () => {
    const p = adapterPort();
    const [x, y] = [await started('r-x'), await started('r-y')];
    fake.inject({ method: 'chat.update', retryAfterSec: 4 });
    const edit = p.showProgress(x, progress('r-x', 3));
    const t0 = Date.now();
    await p.deliver(imageResult('r-y', y), png);
    expect(Date.now() - t0).toBeLessThan(1_500); // before: ≈ 4 s, the one client's queue paused for the Retry-After
    await edit;
  }, 15_000);
});

describe('SlackPort when Slack\'s reply to a post is lost (its clients as the adapter makes them: posts through one that sends nothing twice)', () => {
  /** A bot instance's port: a results client with the library's retry policy, and posts through postedAtMostOnce of it. */
  function adapterPort(): SlackPort {
    const results = new WebClient(fake.botToken, { slackApiUrl: fake.apiUrl, logLevel: LogLevel.ERROR });
    const posts = new WebClient(fake.botToken, { slackApiUrl: fake.apiUrl, logLevel: LogLevel.ERROR, retryConfig: postedAtMostOnce(retryPolicies.tenRetriesInAboutThirtyMinutes) });
    const p = new SlackPort(results, config, log, results, posts);
    p.attach({ redis, titleOf: async (jobId) => titles.get(jobId) });
    return p;
  }
  const imagesOf = (jobId: string) => messagesIn(CHANNEL).filter((m) => m.files?.some((f) => f.name === resultFileName(jobId)));

  it('the image shared but the reply to files.completeUploadExternal lost: the delivery fails, and its retry finds the image; posted once', async () => {
    const d = await started('l-image');
    fake.inject({ method: 'files.completeUploadExternal', lostReply: true });
    const failed = await adapterPort().deliver(imageResult('l-image', d), png).then(() => undefined, (e: unknown) => e);
    // before: the client sent the completion again, Slack shared the file again, and this delivery "succeeded" with two
    expect(imagesOf('l-image')).toHaveLength(1);
    expect(failed).toMatchObject({ code: 'slack_webapi_request_error' });
    await adapterPort().deliver(imageResult('l-image', d), png); // the core's retry of the delivery
    expect(imagesOf('l-image')).toHaveLength(1);
    expect(statusOf(d)!.text).toBe('Done: the image is in the thread');
  }, 15_000);

  it('an answer posted but the reply to chat.postMessage lost: the delivery fails, and its retry finds the answer; posted once', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'a photo' });
    const d = await started('l-answer', { thread: String(parent.ts) });
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! }); // the answer is posted, not edited in
    fake.inject({ method: 'chat.postMessage', lostReply: true });
    const answers = () => messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts && m.metadata?.event_payload.job_id === 'l-answer');
    const failed = await adapterPort().deliver(answerResult('l-answer', d), undefined).then(() => undefined, (e: unknown) => e);
    expect(answers()).toHaveLength(1); // before: 2, the client had posted it again
    expect(failed).toMatchObject({ code: 'slack_webapi_request_error' });
    await adapterPort().deliver(answerResult('l-answer', d), undefined);
    expect(answers()).toHaveLength(1);
  }, 15_000);

  it('posts still wait out a 429, and a connection that was never made is still tried again', async () => {
    const d = await started('l-429');
    fake.inject({ method: 'files.completeUploadExternal', retryAfterSec: 1 });
    await adapterPort().deliver(imageResult('l-429', d), png);
    expect(imagesOf('l-429')).toHaveLength(1);
    const { onFailedAttempt } = postedAtMostOnce({ retries: 3 }) as { onFailedAttempt(e: unknown): Promise<void> };
    const requestError = (code: string) => Object.assign(new Error('fetch failed'), { code: 'slack_webapi_request_error', original: Object.assign(new TypeError('fetch failed'), { cause: { code } }) });
    await expect(onFailedAttempt(requestError('ECONNREFUSED'))).resolves.toBeUndefined();
    await expect(onFailedAttempt(requestError('UND_ERR_SOCKET'))).rejects.toThrow('fetch failed');
    await expect(onFailedAttempt(Object.assign(new Error('An HTTP protocol error occurred: statusCode = 503'), { code: 'slack_webapi_http_error' }))).rejects.toThrow(/503/);
  }, 15_000);
});

describe('SlackPort.showProgress', () => {
  it('edits the status message with the title and the stage, until the job is being delivered', async () => {
    const d = await started('p-edit');
    await port().showProgress(d, progress('p-edit', 3));
    expect(sectionText(statusOf(d))).toContain('a red fox');
    expect(statusOf(d)!.text).toMatch(/3\s*\/\s*10|30 ?%/);
    const edited = statusOf(d)!.text;
    const before = count('chat.update');
    await port().deliver(imageResult('p-edit', d), png);
    const final = statusOf(d)!.text;
    expect(final).toBe('Done: the image is in the thread');
    await port().showProgress(d, progress('p-edit', 9)); // a late report: the final state stays
    expect(statusOf(d)!.text).toBe(final);
    expect(callsSince(before, 'chat.update')).toHaveLength(1);
    expect(edited).not.toBe(final);
  });

  it('a job whose title no instance knows (gone from Redis) shows its progress without one', async () => {
    const d = await started('p-untitled');
    titles.delete('p-untitled');
    await port().showProgress(d, progress('p-untitled', 2));
    expect(statusOf(d)!.blocks).toEqual(statusMessage('p-untitled', '', progress('p-untitled', 2)).blocks);
  });

  it('edits the status message in the asker\'s DM for a private job', async () => {
    const d = await started('p-dm', { dm: true });
    await port().showProgress(d, progress('p-dm', 5));
    expect(callsSince(count('chat.update') - 1, 'chat.update')[0]!.args).toMatchObject({ channel: `D${USER}`, ts: d.statusMessageTs });
  });

  it('does nothing for another platform, without a status message, or before the core has started', async () => {
    const d = await started('p-none');
    const before = count('chat.update');
    await port().showProgress({ platform: 'cli', clientId: 'c', channelId: 'x', userId: 'u' }, progress('p-none', 1));
    await port().showProgress({ ...d, statusMessageTs: undefined }, progress('p-none', 1));
    await port(false).showProgress(d, progress('p-none', 1));
    expect(count('chat.update')).toBe(before);
  });
});

describe('SlackPort.deliver: an image', () => {
  it('uploads it once into the status message\'s thread, named by the job, with its prompt and alt text', async () => {
    const d = await started('i-one');
    await port().deliver(imageResult('i-one', d), png);
    const replies = messagesIn(CHANNEL).filter((m) => m.thread_ts === d.statusMessageTs && m.files?.length);
    expect(replies).toHaveLength(1);
    const [file] = replies[0]!.files!;
    expect([file!.name, file!.title, file!.altText, file!.mimetype]).toEqual([resultFileName('i-one'), 'a red fox', 'alt of a red fox', 'image/png']);
    expect(Buffer.from(file!.bytes).equals(Buffer.from(png))).toBe(true);
    expect(JSON.stringify(replies[0]!.blocks)).toContain('blip3o_reroll'); // the buttons go with the image
    expect(statusOf(d)!.text).toBe('Done: the image is in the thread');
    expect(sectionText(statusOf(d))).toContain('a red fox');
  });

  it('a repeated delivery finds its file in the thread and uploads nothing more', async () => {
    const d = await started('i-twice');
    await port().deliver(imageResult('i-twice', d), png);
    const uploads = count('files.completeUploadExternal');
    const lookups = count('conversations.replies');
    await port().deliver(imageResult('i-twice', d), png);
    expect(count('files.completeUploadExternal')).toBe(uploads);
    expect(count('conversations.replies')).toBe(lookups + 1);
    expect(messagesIn(CHANNEL).filter((m) => m.thread_ts === d.statusMessageTs && m.files?.length)).toHaveLength(1);
  });

  it('the first delivery pays no thread look-up (Slack allows it once a minute)', async () => {
    const d = await started('i-first');
    const lookups = count('conversations.replies');
    await port().deliver(imageResult('i-first', d), png);
    expect(count('conversations.replies')).toBe(lookups);
  });

  it('a repeat whose first run died before the upload uploads it then', async () => {
    const d = await started('i-died');
    await redis.set(`${prefix}:slack:finished:i-died`, '1'); // the first run got this far only
    await port().deliver(imageResult('i-died', d), png);
    expect(messagesIn(CHANNEL).filter((m) => m.thread_ts === d.statusMessageTs && m.files?.[0]?.name === resultFileName('i-died'))).toHaveLength(1);
  });

  it('the key that marks a started delivery lives as long as the longest kept job', async () => {
    const d = await started('i-ttl');
    await port().deliver(imageResult('i-ttl', d), png);
    const ttl = await redis.ttl(`${prefix}:slack:finished:i-ttl`);
    expect(ttl).toBeGreaterThan(890);
    expect(ttl).toBeLessThanOrEqual(900);
  });

  it('goes into the thread the job was asked in, and into the asker\'s DM for a private job', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'look at this' });
    const inThread = await started('i-thread', { thread: String(parent.ts) });
    await port().deliver(imageResult('i-thread', inThread), png);
    expect(messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts && m.files?.[0]?.name === resultFileName('i-thread'))).toHaveLength(1);

    const dm = await started('i-dm', { dm: true });
    await port().deliver(imageResult('i-dm', dm), png);
    expect(messagesIn(`D${USER}`).filter((m) => m.files?.[0]?.name === resultFileName('i-dm'))).toHaveLength(1);
    expect(messagesIn(CHANNEL).some((m) => m.files?.some((f) => f.name.startsWith('blip3o-i-dm')))).toBe(false);
    expect(statusOf(dm)!.text).toBe('Done: the image is in the thread');
  });

  it('several images go in one message, each named by its place, and a repeat adds none', async () => {
    const d = await started('i-many');
    const images = [imageOf('a red fox', 7), imageOf('a red fox', 8), imageOf('a red fox', 9)];
    const result: JobResult = { ...imageResult('i-many', d), image: images[0], images };
    const gallery = [png, png, png];
    await port().deliver(result, png, gallery);
    await port().deliver(result, png, gallery);
    const posted = messagesIn(CHANNEL).filter((m) => m.thread_ts === d.statusMessageTs && m.files?.length);
    expect(posted).toHaveLength(1);
    expect(posted[0]!.files!.map((f) => [f.name, f.title, f.altText])).toEqual([
      ['blip3o-i-many-1.png', 'a red fox (1/3, seed 7)', 'alt of a red fox'],
      ['blip3o-i-many-2.png', 'a red fox (2/3, seed 8)', 'alt of a red fox'],
      ['blip3o-i-many-3.png', 'a red fox (3/3, seed 9)', 'alt of a red fox'],
    ]);
    expect(JSON.stringify(posted[0]!.blocks)).toContain('Vary 3');
  });

  it('a gallery that does not match the result\'s images is not posted as one: the shown image alone is', async () => {
    const d = await started('i-mismatch');
    const images = [imageOf('x', 7), imageOf('x', 8)];
    await port().deliver({ ...imageResult('i-mismatch', d, 'x'), image: images[0], images }, png, [png]);
    const posted = messagesIn(CHANNEL).filter((m) => m.thread_ts === d.statusMessageTs && m.files?.length);
    expect(posted.map((m) => m.files!.map((f) => f.name))).toEqual([['blip3o-i-mismatch.png']]);
  });

  it('a repeat uploads its image when the thread holds only other files (the user\'s own picture)', async () => {
    const photo = fake.seedFile(png, 'holiday.png', 'image/png');
    const parent = fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'like this', files: [photo] });
    const d = await started('i-other-file', { thread: parent.ts });
    await redis.set(`${prefix}:slack:finished:i-other-file`, '1'); // a repeat whose first run died before the upload
    await port().deliver(imageResult('i-other-file', d), png);
    expect(messagesIn(CHANNEL).filter((m) => m.files?.some((f) => f.name === resultFileName('i-other-file')))).toHaveLength(1);
  });

  it('without a thread or a status message, the image goes to the channel itself', async () => {
    const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: CHANNEL, userId: USER };
    await port().deliver(imageResult('i-top', d), png);
    const posted = messagesIn(CHANNEL).find((m) => m.files?.some((f) => f.name === resultFileName('i-top')));
    expect(posted).toBeDefined(); // shared into the channel (an upload without channel_id stays private to the bot)
    expect(posted!.thread_ts).toBeUndefined();
    // a repeat has no thread to look in, and a channel's top level is not searched: it posts (the core's ledger makes a repeat rare)
    const history = count('conversations.history');
    await port().deliver(imageResult('i-top', d), png);
    expect(messagesIn(CHANNEL).filter((m) => m.files?.some((f) => f.name === resultFileName('i-top')))).toHaveLength(2);
    expect(count('conversations.history')).toBe(history);
  });

  it('clips titles (230 characters of each several-image prompt, 250 of one) and alt texts (1000 characters)', async () => {
    const long = 'q'.repeat(300);
    const d = await started('i-clip');
    const images = [{ ...imageOf(long, 7), altText: 'a'.repeat(1200) }, { ...imageOf(long, 8), altText: 'b'.repeat(1200) }];
    await port().deliver({ ...imageResult('i-clip', d, long), image: images[0], images }, png, [png, png]);
    const files = messagesIn(CHANNEL).flatMap((m) => m.files ?? []).filter((f) => f.name.startsWith('blip3o-i-clip-'));
    expect(files.map((f) => [f.title, f.altText])).toEqual([
      [`${'q'.repeat(230)} (1/2, seed 7)`, 'a'.repeat(1000)],
      [`${'q'.repeat(230)} (2/2, seed 8)`, 'b'.repeat(1000)],
    ]);
    const one = await started('i-clip-one');
    await port().deliver({ ...imageResult('i-clip-one', one, long), image: { ...imageOf(long), altText: 'c'.repeat(1200) } }, png);
    const file = messagesIn(CHANNEL).flatMap((m) => m.files ?? []).find((f) => f.name === resultFileName('i-clip-one'))!;
    expect([file.title, file.altText]).toEqual(['q'.repeat(250), 'c'.repeat(1000)]);
  });

  it('clips the file title to 250 characters and names an untitled upload by its file', async () => {
    const long = await started('i-long');
    await port().deliver(imageResult('i-long', long, 'p'.repeat(300)), png);
    const blank = await started('i-blank');
    await port().deliver(imageResult('i-blank', blank, ''), png);
    const fileOf = (jobId: string) => messagesIn(CHANNEL).flatMap((m) => m.files ?? []).find((f) => f.name === resultFileName(jobId))!;
    expect(fileOf('i-long').title).toBe('p'.repeat(250));
    expect(fileOf('i-blank').title).toBe(resultFileName('i-blank'));
  });

  it('a prompt in any script: titles and alt texts without control characters (a U+202E reversed the title\'s end), cut between whole characters', async () => {
    const spoof = 'invoice \u202Egnp.exe'; // shown as "invoice exe.png" when the override reaches Slack
    const d = await started('i-world');
    await port().deliver({ ...imageResult('i-world', d, spoof), image: { ...imageOf(spoof), altText: `\u202E${'👨‍👩‍👧'.repeat(200)}` } }, png);
    const one = messagesIn(CHANNEL).flatMap((m) => m.files ?? []).find((f) => f.name === resultFileName('i-world'))!;
    expect(one.title).toBe('invoice gnp.exe');
    expect(one.altText).toBe('👨‍👩‍👧'.repeat(125)); // 1,000 code units hold 125 whole families, not 125 and a man and a woman
    const emoji = 'x' + '🦊'.repeat(200);
    const g = await started('i-world-g');
    const images = [imageOf(emoji, 7), imageOf(emoji, 8)];
    await port().deliver({ ...imageResult('i-world-g', g, emoji), image: images[0], images }, png, [png, png]);
    const titlesShown = messagesIn(CHANNEL).flatMap((m) => m.files ?? []).filter((f) => f.name.startsWith('blip3o-i-world-g-')).map((f) => f.title);
    expect(titlesShown).toEqual([`x${'🦊'.repeat(114)} (1/2, seed 7)`, `x${'🦊'.repeat(114)} (2/2, seed 8)`]);
    expect(titlesShown.every((t) => isWellFormed(t))).toBe(true);
  });

  it('a deleted status message with nothing under it: Slack posts the image and the final status at the top level; a repeat posts neither again', async () => {
    const d = await started('i-gone');
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await port().deliver(imageResult('i-gone', d), png);
    await port().deliver(imageResult('i-gone', d), png);
    const ours = messagesIn(CHANNEL).filter((m) => m.files?.some((f) => f.name === resultFileName('i-gone')) || m.metadata?.event_payload.job_id === 'i-gone');
    expect(ours.map((m) => [m.thread_ts, m.files?.length ?? 0, m.text])).toEqual([[undefined, 1, ''], [undefined, 0, 'Done: the image is in the thread']]);
  });
});

describe('SlackPort.deliver: a status message an admin deleted', () => {
  it('a job asked in a thread: a repeat finds the image and the final status it posted there, and posts neither again', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'draw this' });
    const d = await started('g-thread', { thread: String(parent.ts) });
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await port().deliver(imageResult('g-thread', d), png);
    await port().deliver(imageResult('g-thread', d), png);
    const inThread = messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts);
    expect(inThread.filter((m) => m.files?.length).map((m) => m.files![0]!.name)).toEqual([resultFileName('g-thread')]);
    const done = inThread.filter((m) => m.text === 'Done: the image is in the thread');
    expect(done).toHaveLength(1);
    expect(done[0]!.metadata).toEqual({ event_type: 'blip3o_status', event_payload: { job_id: 'g-thread' } });
  });

  it('a repeat does not take another job\'s final status in the thread for its own', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'draw this' });
    const other = await started('g-other', { thread: String(parent.ts) });
    await client.chat.delete({ channel: CHANNEL, ts: other.statusMessageTs! });
    await port().deliver({ ...base('g-other', other), kind: 'imagine', status: 'cancelled' }, undefined);
    const d = await started('g-mine', { thread: String(parent.ts) });
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await redis.set(`${prefix}:slack:finished:g-mine`, '1'); // a repeat whose first run died before posting
    await port().deliver({ ...base('g-mine', d), kind: 'imagine', status: 'cancelled' }, undefined);
    const cancelled = messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts && m.text === 'Cancelled');
    expect(cancelled.map((m) => m.metadata?.event_payload.job_id)).toEqual(['g-other', 'g-mine']);
  });

  it('deleted once the image was under it (Slack leaves a tombstone): a repeat uploads nothing and says it is done once', async () => {
    const d = await started('g-tomb');
    await port().deliver(imageResult('g-tomb', d), png);
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    expect(statusOf(d)!.subtype).toBe('tombstone');
    await port().deliver(imageResult('g-tomb', d), png); // Slack refuses to edit the tombstone: no error for us
    await port().deliver(imageResult('g-tomb', d), png);
    const inThread = messagesIn(CHANNEL).filter((m) => m.thread_ts === d.threadTs && m.ts !== d.threadTs);
    expect(inThread.filter((m) => m.files?.length)).toHaveLength(1);
    expect(inThread.filter((m) => m.text === 'Done: the image is in the thread')).toHaveLength(1);
  });

  it('deleted with nothing under it: a repeat\'s look-up finds no thread, which is no error', async () => {
    const d = await started('g-bare');
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await redis.set(`${prefix}:slack:finished:g-bare`, '1');
    await expect(port().thread(CHANNEL, d.threadTs!)).resolves.toEqual([]);
    await expect(port().deliver(answerResult('g-bare', d), undefined)).resolves.toBeUndefined();
  });

  it('a look-up that fails otherwise is thrown', async () => {
    fake.inject({ method: 'conversations.replies', error: 'ratelimited' });
    await expect(port().thread(CHANNEL, '1.2')).rejects.toMatchObject({ data: { error: 'ratelimited' } });
  });
});

describe('SlackPort.deliver: an answer', () => {
  it('an answer quoting <!channel> or a link is escaped in the notification text as in the blocks (no @channel from a model\'s answer)', async () => {
    const d = await started('a-escaped', {}, { kind: 'ask', text: 'what does the sign say?' });
    await port().deliver(answerResult('a-escaped', d, 'The sign says: <!channel> free pizza <https://evil.example|click here> & more'), undefined);
    const m = statusOf(d)!;
    expect(m.text).toBe('The sign says: &lt;!channel&gt; free pizza &lt;https://evil.example|click here&gt; &amp; more'); // before: the raw text
    expect(sectionText(m)).toBe(m.text);
  });

  it('turns the status message into the answer, with the job id in its metadata', async () => {
    const d = await started('a-one', {}, { kind: 'ask', text: 'what is it?' });
    await port().deliver(answerResult('a-one', d), undefined);
    const m = statusOf(d)!;
    expect(m.text).toBe('It is a fox.');
    expect(m.metadata).toEqual({ event_type: META_ANSWER, event_payload: { job_id: 'a-one' } });
    expect(messagesIn(CHANNEL).filter((x) => x.thread_ts === d.threadTs && x.ts !== d.threadTs)).toHaveLength(0);
  });

  it('says where it came from when no model ran for it', async () => {
    const d = await started('a-cache');
    await port().deliver({ ...answerResult('a-cache', d), servedFrom: 'cache' }, undefined);
    expect(statusOf(d)!.text).toBe('It is a fox.\n_from the cache, no GPU time used_');
  });

  it('a /describe answer lists its prompts, each with "Imagine this"', async () => {
    const d = await started('a-describe');
    await port().deliver({ ...answerResult('a-describe', d, ''), answer: { text: '', tokenCount: 9, prompts: ['a fox', 'a red fox'] } }, undefined);
    expect(statusOf(d)!.text).toBe('1. a fox\n2. a red fox');
    expect(JSON.stringify(statusOf(d)!.blocks)).toContain('blip3o_imagine_this');
  });

  it('a deleted status message: the answer is posted in the thread, once however often it is delivered', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'a photo' });
    const d = await started('a-gone', { thread: String(parent.ts) });
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await port().deliver(answerResult('a-gone', d), undefined);
    await port().deliver(answerResult('a-gone', d), undefined);
    const answers = messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts && m.text === 'It is a fox.');
    expect(answers).toHaveLength(1);
    expect(answers[0]!.metadata).toEqual({ event_type: META_ANSWER, event_payload: { job_id: 'a-gone' } });
  });

  it('a repeat finds only this job\'s answer: another job\'s answer in the thread does not count', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'a photo' });
    await client.chat.postMessage({ channel: CHANNEL, thread_ts: String(parent.ts), text: 'older answer', metadata: { event_type: META_ANSWER, event_payload: { job_id: 'someone-else' } } });
    await client.chat.postMessage({ channel: CHANNEL, thread_ts: String(parent.ts), text: 'a status', metadata: { event_type: 'blip3o_status', event_payload: { job_id: 'a-other' } } });
    const d = await started('a-other', { thread: String(parent.ts) });
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await redis.set(`${prefix}:slack:finished:a-other`, '1'); // a repeat
    await port().deliver(answerResult('a-other', d), undefined);
    expect(messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts && m.text === 'It is a fox.')).toHaveLength(1);
  });
});

describe('SlackPort.deliver: failures', () => {
  it('something the user can fix: told only to them, in the thread, and the public status message goes', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'a photo' });
    const d = await started('f-user', { thread: String(parent.ts) });
    const before = count('chat.postEphemeral');
    await port().deliver(failed('f-user', d, true), undefined);
    expect(callsSince(before, 'chat.postEphemeral').map((c) => c.args)).toEqual([
      expect.objectContaining({ channel: CHANNEL, user: USER, text: 'Your prompt is too long.', thread_ts: String(parent.ts) }),
    ]);
    expect(statusOf(d)).toBeUndefined();
    // a repeat: the status message is already gone, which is no error
    await port().deliver(failed('f-user', d, true), undefined);
  });

  it('something the user can fix in a private job: the DM\'s status message says it, nothing else is posted', async () => {
    const d = await started('f-dm', { dm: true });
    const ephemeral = count('chat.postEphemeral');
    await port().deliver(failed('f-dm', d, true), undefined);
    expect(statusOf(d)!.text).toBe('Your prompt is too long.');
    expect(statusOf(d)!.blocks).toEqual([]);
    expect(count('chat.postEphemeral')).toBe(ephemeral);
  });

  it('our own failure: the status message says so with a reference, never the internal message', async () => {
    const d = await started('f-ours');
    await port().deliver(failed('f-ours', d, false), undefined);
    expect(statusOf(d)!.text).toBe('Something went wrong on our side (ref f-ours).');
    expect(sectionText(statusOf(d))).toContain('a red fox');
    expect(JSON.stringify(fake.store.allMessages())).not.toContain('onnx exploded');
  });

  it('a cancelled job (as the core reports it): the status message says so, and nothing is said privately', async () => {
    const d = await started('f-cancel');
    const ephemeral = count('chat.postEphemeral');
    await port().deliver({ ...base('f-cancel', d), kind: 'imagine', status: 'cancelled', error: { code: 'cancelled', message: 'Cancelled.', userFacing: true } }, undefined);
    expect(statusOf(d)!.text).toBe('Cancelled');
    expect(count('chat.postEphemeral')).toBe(ephemeral);
  });

  it('without a status message: a user-facing failure deletes nothing, an answer edits nothing', async () => {
    const parent = await client.chat.postMessage({ channel: CHANNEL, text: 'a photo' });
    const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: CHANNEL, userId: USER, threadTs: String(parent.ts) };
    const [deletes, updates] = [count('chat.delete'), count('chat.update')];
    await port().deliver(failed('f-nostatus', d, true), undefined);
    await port().deliver(answerResult('a-nostatus', d), undefined);
    expect([count('chat.delete'), count('chat.update')]).toEqual([deletes, updates]);
    expect(messagesIn(CHANNEL).filter((m) => m.thread_ts === parent.ts && m.text === 'It is a fox.')).toHaveLength(1);
  });

  it('a failure in a private job\'s DM whose status message is gone is posted there once, however often delivered', async () => {
    const d = await started('f-dm-gone', { dm: true });
    await client.chat.delete({ channel: d.dmChannelId!, ts: d.statusMessageTs! });
    await port().deliver(failed('f-dm-gone', d, true), undefined);
    await port().deliver(failed('f-dm-gone', d, true), undefined);
    const told = messagesIn(d.dmChannelId!).filter((m) => m.text === 'Your prompt is too long.' && m.metadata?.event_payload.job_id === 'f-dm-gone');
    expect(told).toHaveLength(1);
  });

  it('a failure whose status message is gone is posted in the thread, once however often delivered', async () => {
    const d = await started('f-gone');
    await client.chat.delete({ channel: CHANNEL, ts: d.statusMessageTs! });
    await port().deliver(failed('f-gone', d, false), undefined);
    await port().deliver(failed('f-gone', d, false), undefined);
    // the thread's parent is gone, so Slack posts it at the top level; the repeat finds it there
    expect(messagesIn(CHANNEL).filter((m) => m.text === 'Something went wrong on our side (ref f-gone).').map((m) => m.thread_ts)).toEqual([undefined]);
  });
});

describe('SlackPort.deliver: what reaches the core\'s retry', () => {
  it('a refusal other than "message not found" or a channel lost is thrown, so the delivery is retried', async () => {
    const d = await started('e-refused');
    fake.inject({ method: 'chat.update', error: 'fatal_error' });
    await expect(port().deliver({ ...base('e-refused', d), kind: 'imagine', status: 'cancelled' }, undefined)).rejects.toMatchObject({ data: { error: 'fatal_error' } });
  });

  it("a channel that takes none of the bot's posts any more (bot removed): the image goes to the requester's DM in one message saying why, once however often delivered", async () => {
    const dm = `D${USER}`;
    const channel = 'C0LEFT';
    titles.set('e-left', { kind: 'imagine', text: 'a fox for elsewhere' });
    const status = String((await client.chat.postMessage({ channel, text: 'Queued' })).ts);
    const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: channel, userId: USER, threadTs: status, statusMessageTs: status };
    fake.loseChannel(channel, 'removed');
    const earlier = messagesIn(dm).length;
    const updates = count('chat.update');
    const { log: watched, lines } = capturedLog('warn');
    const logging = new SlackPort(client, config, watched);
    logging.attach({ redis, titleOf: async (jobId) => titles.get(jobId) });
    await logging.deliver(imageResult('e-left', d, 'a fox for elsewhere'), png); // until 2026-12-07: thrown, retried until dropped
    await logging.deliver(imageResult('e-left', d, 'a fox for elsewhere'), png); // again, as after a crash before the ledger recorded it
    expect(lines).toEqual([0, 1].map(() => expect.objectContaining({ jobId: 'e-left', why: "I'm no longer a member of it", msg: 'the result cannot be posted in its channel: sending it to the requester directly' })));
    const lead = `I couldn't post your result in <#${channel}>: I'm no longer a member of it. Here it is.`;
    const posted = messagesIn(dm).filter((m) => m.files?.some((f) => f.name === resultFileName('e-left'))); // before: posted twice, under a note of its own each time
    expect(posted).toHaveLength(1);
    expect(sectionText(posted[0])).toBe(lead);
    expect(messagesIn(dm).slice(earlier)).toEqual(posted); // no note apart from it, nor a status line without a status message
    expect(callsSince(updates, 'chat.update').filter((c) => c.args.channel === dm)).toEqual([]); // nor an edit of a status message it has not
  });

  it("answers and failures whose channel was deleted or archived go to the DM once; a cancelled job's is only logged", async () => {
    const dm = `D${USER}`;
    for (const [how, why] of [['deleted', 'I can no longer see it'], ['archived', 'it was archived']] as const) {
      const channel = `C0${how.toUpperCase()}`;
      const inChannel = async (jobId: string): Promise<SlackDestination> => {
        titles.set(jobId, { kind: 'ask', text: `a question in a channel ${how}` });
        const r = await client.chat.postMessage({ channel, text: 'Queued' });
        return { platform: 'slack', teamId: fake.teamId, channelId: channel, userId: USER, threadTs: String(r.ts), statusMessageTs: String(r.ts) };
      };
      const [a, f, u, c] = [await inChannel(`a-${how}`), await inChannel(`f-${how}`), await inChannel(`u-${how}`), await inChannel(`c-${how}`)];
      fake.loseChannel(channel, how);
      for (let i = 0; i < 2; i++) {
        await port().deliver(answerResult(`a-${how}`, a, `An answer despite a channel ${how}.`), undefined);
        await port().deliver(failed(`f-${how}`, f, false), undefined);
        await port().deliver(failed(`u-${how}`, u, true), undefined);
      }
      const answers = messagesIn(dm).filter((m) => m.metadata?.event_type === META_ANSWER && m.metadata.event_payload.job_id === `a-${how}`);
      expect(answers.map((m) => [m.text, sectionText(m, 0), sectionText(m, 1)])).toEqual([[
        `I couldn't post your result in <#${channel}>: ${why}. Here it is.\nAn answer despite a channel ${how}.`,
        `I couldn't post your result in <#${channel}>: ${why}. Here it is.`,
        `An answer despite a channel ${how}.`,
      ]]);
      const failures = (jobId: string) => messagesIn(dm).filter((m) => m.metadata?.event_type === META_STATUS && m.metadata.event_payload.job_id === jobId);
      const told = `I couldn't tell you in <#${channel}> (${why}): your request did not finish.`;
      expect(failures(`f-${how}`).map((m) => [sectionText(m, 0), sectionText(m, 1)])).toEqual([[told, `:speech_balloon: a question in a channel ${how}\n*Something went wrong on our side (ref f-${how}).*`]]);
      expect(failures(`u-${how}`).map((m) => [sectionText(m, 0), sectionText(m, 1)])).toEqual([[told, `:speech_balloon: a question in a channel ${how}\n*Your prompt is too long.*`]]);
      const { log: watched, lines } = capturedLog('info');
      const quiet = new SlackPort(client, config, watched);
      quiet.attach({ redis, titleOf: async (jobId) => titles.get(jobId) });
      const before = messagesIn(dm).length;
      await quiet.deliver({ ...base(`c-${how}`, c), kind: 'imagine', status: 'cancelled' }, undefined); // before: thrown, retried until dropped
      expect(messagesIn(dm)).toHaveLength(before);
      expect(lines).toContainEqual(expect.objectContaining({ jobId: `c-${how}`, why, msg: "a cancelled job's channel takes no posts any more: nothing to tell" }));
    }
  });

  it("a channel whose workspace settings refuse the bot's posts (restricted, read-only, a locked thread, EKM revoked): the result goes to the DM, saying why, once", async () => {
    const dm = `D${USER}`;
    const cases = [
      ['restricted', 'a workspace setting keeps me from posting there'],
      ['read-only', 'it is read-only'],
      ['thread-locked', 'its thread was locked'],
      ['ekm', 'its administrators suspended posting there'],
    ] as const;
    for (const [how, why] of cases) {
      const channel = `C0R${how.replace('-', '').toUpperCase()}`;
      const jobId = `r-${how}`;
      titles.set(jobId, { kind: 'imagine', text: `a fox where ${how}` });
      const status = String((await client.chat.postMessage({ channel, text: 'Queued' })).ts);
      const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: channel, userId: USER, threadTs: status, statusMessageTs: status };
      fake.loseChannel(channel, how);
      expect(await port().deliver(imageResult(jobId, d, `a fox where ${how}`), png)).toBe('elsewhere'); // before: thrown, retried for the whole delivery backoff
      await port().deliver(imageResult(jobId, d, `a fox where ${how}`), png); // a repeat
      const posted = messagesIn(dm).filter((m) => m.files?.some((f) => f.name === resultFileName(jobId)));
      expect(posted.map((m) => sectionText(m))).toEqual([`I couldn't post your result in <#${channel}>: ${why}. Here it is.`]);
    }
  });

  it('a channel that takes posts only in threads, the thread gone (a status message deleted with nothing under it): the result goes to the DM, saying why, once', async () => {
    const dm = `D${USER}`;
    const channel = 'C0THREADSONLY';
    const jobId = 'r-threads-only';
    titles.set(jobId, { kind: 'imagine', text: 'a fox where posts go in threads' });
    const status = String((await client.chat.postMessage({ channel, text: 'Queued' })).ts);
    const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: channel, userId: USER, threadTs: status, statusMessageTs: status };
    fake.threadsOnly(channel);
    await client.chat.delete({ channel, ts: status }); // Slack would post a reply to it at the top level, which the channel refuses
    expect(await port().deliver(imageResult(jobId, d, 'a fox where posts go in threads'), png)).toBe('elsewhere');
    await port().deliver(imageResult(jobId, d, 'a fox where posts go in threads'), png); // a repeat
    const posted = messagesIn(dm).filter((m) => m.files?.some((f) => f.name === resultFileName(jobId)));
    expect(posted.map((m) => sectionText(m))).toEqual([`I couldn't post your result in <#${channel}>: it takes posts only in threads, and the thread of your request is gone. Here it is.`]);
    expect(messagesIn(channel)).toEqual([]);
  });

  it("nowhere to post (a private job's DM refused, or the requester's DM after the channel: deactivated, EKM): one log line, not retried", async () => {
    const { log: watched, lines } = capturedLog('warn');
    const quiet = new SlackPort(client, config, watched);
    quiet.attach({ redis, titleOf: async (jobId) => titles.get(jobId) });
    // A private job whose DM takes no posts (before: thrown, retried for the whole delivery backoff, then dropped)
    const p = await started('e-left-private', { dm: true });
    fake.inject({ method: 'chat.update', error: 'channel_not_found' });
    expect(await quiet.deliver(answerResult('e-left-private', p), undefined)).toBe('nowhere');
    // The channel lost, and the requester deactivated since (conversations.open: user_disabled)
    const channel = 'C0NOWHERE';
    titles.set('e-nowhere', { kind: 'imagine', text: 'a fox for a departed user' });
    const status = String((await client.chat.postMessage({ channel, text: 'Queued' })).ts);
    const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: channel, userId: USER, threadTs: status, statusMessageTs: status };
    fake.loseChannel(channel, 'removed');
    fake.inject({ method: 'conversations.open', error: 'user_disabled' });
    expect(await quiet.deliver(imageResult('e-nowhere', d, 'a fox for a departed user'), png)).toBe('nowhere');
    // The channel lost, and the DM refused too
    fake.loseChannel(`D${USER}`, 'ekm');
    await quiet.deliver(failed('e-nowhere-2', { ...d }, false), undefined);
    fake.restoreChannel(`D${USER}`);
    const dropped = 'the result could not be posted anywhere: dropped';
    expect(lines).toContainEqual(expect.objectContaining({ jobId: 'e-left-private', error: 'channel_not_found', msg: dropped }));
    expect(lines).toContainEqual(expect.objectContaining({ jobId: 'e-nowhere', error: 'user_disabled', msg: dropped }));
    expect(lines).toContainEqual(expect.objectContaining({ jobId: 'e-nowhere-2', error: 'ekm_access_denied', msg: dropped }));
    // Any other failure of the DM still reaches the core, which retries
    fake.inject({ method: 'conversations.open', error: 'fatal_error' });
    await expect(port().deliver(imageResult('e-nowhere-3', d), png)).rejects.toMatchObject({ data: { error: 'fatal_error' } });
  });

  it('an image posted before its channel refused the status edit is not sent again to the DM', async () => {
    const d = await started('e-late-left');
    const before = messagesIn(`D${USER}`).length;
    fake.inject({ method: 'chat.update', error: 'not_in_channel' });
    await port().deliver(imageResult('e-late-left', d), png);
    expect(messagesIn(CHANNEL).filter((m) => m.files?.some((f) => f.name === resultFileName('e-late-left')))).toHaveLength(1);
    expect(messagesIn(`D${USER}`)).toHaveLength(before);
    fake.inject({ method: 'chat.update', error: 'fatal_error' });
    await expect(port().deliver(imageResult('e-late-other', await started('e-late-other')), png)).rejects.toMatchObject({ data: { error: 'fatal_error' } });
  });

  it('an upload that fails is thrown, and the retry uploads the image once', async () => {
    const d = await started('e-upload');
    fake.inject({ method: 'files.completeUploadExternal', httpStatus: 500 });
    await expect(port().deliver(imageResult('e-upload', d), png)).rejects.toThrow();
    await port().deliver(imageResult('e-upload', d), png);
    expect(messagesIn(CHANNEL).filter((m) => m.files?.some((f) => f.name === resultFileName('e-upload')))).toHaveLength(1);
  });

  it('another platform\'s result is not this port\'s', async () => {
    const before = fake.calls.length;
    await port().deliver({ ...base('e-other', { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' }), destination: { platform: 'cli', clientId: 'c', channelId: 'x', userId: 'u' }, kind: 'imagine', status: 'cancelled' }, undefined);
    expect(fake.calls.length).toBe(before);
  });
});

describe('SlackPort.displayNames', () => {
  it("names channels and users for the usage report: the display name, else the full name, else the handle; nothing for what Slack does not name", async () => {
    fake.addUser('U0NAMED', { displayName: 'Ali', realName: 'Alice Liddell' });
    fake.addUser('U0FULL', { realName: 'Bob Builder' });
    fake.addUser('U0HANDLE');
    fake.nameChannel('C0GENERAL', 'general');
    const d: SlackDestination = { platform: 'slack', teamId: fake.teamId, channelId: 'C0GENERAL', userId: 'U0NAMED' };
    const names = await port().displayNames(d, { channels: ['C0GENERAL', 'C0GONE', 'DU0NAMED'], users: ['U0NAMED', 'U0FULL', 'U0HANDLE', 'U0NOBODY'] });
    expect(names.channels).toEqual(new Map([['C0GENERAL', 'general']]));
    expect(names.users).toEqual(new Map([['U0NAMED', 'Ali'], ['U0FULL', 'Bob Builder'], ['U0HANDLE', 'u0handle']]));
  });

  it("leaves a private channel unnamed: the admin asking may not be in it (before: its name, from the bot's own access)", async () => {
    fake.nameChannel('C0OPEN', 'open');
    fake.nameChannel('G0SECRET', 'layoffs-planning', { private: true });
    const names = await port().displayNames({ platform: 'slack', teamId: fake.teamId, channelId: 'C0OPEN', userId: 'U0X' }, { channels: ['C0OPEN', 'G0SECRET'], users: [] });
    expect(names.channels).toEqual(new Map([['C0OPEN', 'open']]));
  });

  it('an install without the channels:read scope still names its users', async () => {
    fake.addUser('U0SCOPE', { displayName: 'Scoped' });
    fake.nameChannel('C0SCOPE', 'scoped');
    fake.inject({ method: 'conversations.info', error: 'missing_scope' });
    const names = await port().displayNames({ platform: 'slack', teamId: fake.teamId, channelId: 'C0SCOPE', userId: 'U0SCOPE' }, { channels: ['C0SCOPE'], users: ['U0SCOPE'] });
    expect(names.channels.size).toBe(0);
    expect(names.users).toEqual(new Map([['U0SCOPE', 'Scoped']]));
  });
});

describe("the listeners' own posts, made once (postStatus, postEphemeral, uploadOnce)", () => {
  /** A port whose log the test reads, with the file's client (no retries: a lost reply or a 5xx is the call's error). */
  function watchedPort() {
    const { log: watched, lines } = capturedLog('info');
    return { p: new SlackPort(client, config, watched), lines };
  }
  const statusPosts = (channel: string, jobId: string) => messagesIn(channel).filter((m) => m.metadata?.event_type === META_STATUS && m.metadata.event_payload.job_id === jobId);
  const first = { text: 'Queued', blocks: [] };

  it('a status message posted but its reply lost is found, not posted again; one Slack did not post (a 5xx) is posted again; both logged', async () => {
    const { p, lines } = watchedPort();
    fake.inject({ method: 'chat.postMessage', lostReply: true });
    const ts = await p.postStatus(CHANNEL, undefined, 's-lost', first);
    expect(statusPosts(CHANNEL, 's-lost').map((m) => m.ts)).toEqual([ts]);
    fake.inject({ method: 'chat.postMessage', httpStatus: 500 });
    const again = await p.postStatus(CHANNEL, undefined, 's-5xx', first);
    expect(statusPosts(CHANNEL, 's-5xx').map((m) => m.ts)).toEqual([again]);
    const msg = 'the reply to a status message was lost: looked for it before posting again';
    expect(lines.filter((l) => l.msg === msg)).toEqual([
      expect.objectContaining({ jobId: 's-lost', found: true }),
      expect.objectContaining({ jobId: 's-5xx', found: false }),
    ]);
  });

  it('a status message Slack refuses is thrown, neither looked for nor posted again', async () => {
    const { p } = watchedPort();
    const [history, replies, posts] = [count('conversations.history'), count('conversations.replies'), count('chat.postMessage')];
    fake.inject({ method: 'chat.postMessage', error: 'msg_too_long' });
    await expect(p.postStatus(CHANNEL, undefined, 's-refused', first)).rejects.toMatchObject({ data: { error: 'msg_too_long' } });
    expect([count('conversations.history'), count('conversations.replies'), count('chat.postMessage') - posts]).toEqual([history, replies, 1]);
    expect(statusPosts(CHANNEL, 's-refused')).toEqual([]);
  });

  it('a private message whose reply was lost counts as shown (a warning); one Slack refuses is thrown', async () => {
    const { p, lines } = watchedPort();
    const before = count('chat.postEphemeral');
    fake.inject({ method: 'chat.postEphemeral', lostReply: true });
    await p.postEphemeral(CHANNEL, USER, 'Ask me about an image.');
    expect(callsSince(before, 'chat.postEphemeral').map((c) => c.args.text)).toEqual(['Ask me about an image.']);
    expect(lines.filter((l) => l.msg === 'the reply to a private message was lost: taken as shown, not sent again')).toEqual([
      expect.objectContaining({ level: 40, channel: CHANNEL, user: USER, err: expect.any(String) }),
    ]);
    fake.inject({ method: 'chat.postEphemeral', error: 'user_not_in_channel' });
    await expect(p.postEphemeral(CHANNEL, USER, 'Ask me about an image.')).rejects.toMatchObject({ data: { error: 'user_not_in_channel' } });
  });

  it('a file whose sharing reply was lost counts as shared (a warning, one file); one Slack refuses is thrown', async () => {
    const { p, lines } = watchedPort();
    const dm = `D${USER}`;
    const charts = () => messagesIn(dm).filter((m) => m.files?.some((f) => f.name === 'usage-once.png'));
    fake.inject({ method: 'files.completeUploadExternal', lostReply: true });
    await p.uploadOnce(dm, { png, name: 'usage-once.png', altText: 'usage' });
    expect(charts()).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'the reply to a file upload was lost: taken as shared, not sent again')).toEqual([
      expect.objectContaining({ level: 40, channel: dm, file: 'usage-once.png', err: expect.any(String) }),
    ]);
    fake.inject({ method: 'files.completeUploadExternal', error: 'not_in_channel' });
    await expect(p.uploadOnce(dm, { png, name: 'usage-refused.png', altText: 'usage' })).rejects.toMatchObject({ data: { error: 'not_in_channel' } });
  });
});
