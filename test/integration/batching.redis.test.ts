// worker.maxBatch through a real worker process (node --import tsx worker/main.ts, test double pipeline in its one
// model thread): with maxBatch.decode 3 the thread runs three asks at once, so a quick ask is answered while a slow
// one is still running in the same thread (with maxBatch 1 it would wait behind it); a poisoned ask fails alone;
// cancelling the slow one removes only it.
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCore, type Core } from '../../bots/core/submit.ts';
import type { Invocation } from '../../bots/core/port.ts';
import { loadSecrets } from '../../src/config/load.ts';
import { requestCancel } from '../../src/jobs/cancel.ts';
import type { CliDestination } from '../../src/jobs/contract.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, runs, startWorker, until, type Proc } from '../doubles/spine-harness.ts';

const h = makeHarness({
  queue: { attempts: 2, backoffMs: 100, jobTimeoutMs: 120_000 },
  worker: { concurrency: 1, maxBatch: { decode: 3, diffusion: 1 }, abortGraceMs: 5_000, pipelineExtra: { stepDelayMs: 20, slowStepMs: 2_000, failures: { '[slow]': 'slow', '[user]': 'user' } } },
});
const secrets = loadSecrets({ REDIS_URL });

let redis: Redis;
let worker: Proc;
let core: Core;
const port = new RecordingPort('cli');
const destination: CliDestination = { platform: 'cli', clientId: randomUUID(), channelId: 'local', userId: 'tester' };
let png: Buffer;

const ask = (question: string): Invocation => ({ input: { command: 'ask', question, image: { bytes: png } }, destination, dedupeKey: randomUUID(), isAdmin: false });
async function submit(question: string): Promise<string> {
  const reply = await core.handle(ask(question));
  if (reply.kind !== 'queued') throw new Error(`not queued: ${JSON.stringify(reply)}`);
  return reply.jobId;
}

beforeAll(async () => {
  png = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#884422' } }).png().toBuffer();
  redis = createRedis(REDIS_URL);
  core = createCore({ config: h.config, secrets, ports: [port], cliClientId: destination.clientId });
  await core.start();
  worker = await startWorker(h);
}, 60_000);

afterAll(async () => {
  await worker?.kill('SIGTERM');
  await core?.stop();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('batching across jobs in a worker process (worker.maxBatch.decode 3, one thread)', () => {
  it('answers asks next to a slow one in the same thread; a poisoned ask fails alone; cancelling the slow one removes only it', async () => {
    const slow = await submit('[slow] take your time');
    await until(() => runs(h).some((r) => r.question?.startsWith('[slow]')), 30_000, 'the slow ask to start');
    const quick = await submit('what colour is it?');
    const poisoned = await submit('[user] refuse me');
    const quickResult = await port.waitFor(quick, 60_000);
    expect(quickResult.answer?.text).toBe('I see a 40×30 png image. You asked: what colour is it?');
    const poisonedResult = await port.waitFor(poisoned, 60_000);
    expect(poisonedResult.status).toBe('failed');
    expect(port.count(slow)).toBe(0); // still running in the same thread while the others came and went
    expect(new Set(runs(h).map((r) => r.pid)).size).toBe(1);
    await requestCancel(redis, h.config, slow);
    const slowResult = await port.waitFor(slow, 60_000);
    expect(slowResult.status).toBe('cancelled');
  }, 120_000);
});
