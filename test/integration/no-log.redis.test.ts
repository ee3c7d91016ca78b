// No-log mode (issue 20): with `noLog: true` no log line of a job carries its prompt, even when the model's
// user-facing failure quotes it; without it the same failure is logged verbatim (so the grep can fail). Every log
// line the processor writes (level debug and up) is captured and grepped. The logger's redaction is checked too.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createBlobStore } from '../../src/blobs/index.ts';
import { UserError } from '../../src/errors.ts';
import { CONTRACT_VERSION, type CliDestination, type JobRequest } from '../../src/jobs/contract.ts';
import { createJobsQueue } from '../../src/jobs/queue.ts';
import { createLogger } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { createProcessor } from '../../worker/processor.ts';
import type { GenerateRequest } from '../../worker/pipeline/types.ts';
import { cleanup, makeHarness, REDIS_URL } from '../doubles/spine-harness.ts';

const redises: { redis: Redis; prefix: string }[] = [];
afterAll(async () => {
  for (const { redis, prefix } of redises) {
    await cleanup(redis, prefix);
    await closeRedis(redis);
  }
});

async function runAndCapture(noLog: boolean, prompt: string): Promise<string> {
  const h = makeHarness({ noLog });
  const redis = createRedis(REDIS_URL);
  redises.push({ redis, prefix: h.prefix });
  let out = '';
  const sink = new Writable({ write: (chunk, _enc, done) => void ((out += String(chunk)), done()) });
  const log = pino({ level: 'debug' }, sink);
  const host = {
    async generate(r: GenerateRequest): Promise<never> {
      throw new UserError('bad_request', `I cannot draw "${r.prompt}"`); // a model refusal that quotes the input
    },
    async understand(): Promise<never> {
      throw new Error('not used');
    },
    async check() {
      return { answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } };
    },
  };
  const processor = createProcessor({ config: h.config, redis, blobs: createBlobStore(h.config, redis), host, log });
  const queue = createJobsQueue(h.config, redis);
  try {
    const destination: CliDestination = { platform: 'cli', clientId: randomUUID(), channelId: 'local', userId: 'u' };
    const id = `j${randomUUID().replaceAll('-', '').slice(0, 20)}`;
    const request: JobRequest = { v: CONTRACT_VERSION, id, destination, submittedAt: Date.now(), kind: 'imagine', prompt, options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1', negative: `${prompt} negative` } };
    await queue.add('imagine', request, { jobId: id });
    await expect(processor.process((await queue.getJob(id))!, 'token', new AbortController().signal)).rejects.toThrow();
  } finally {
    await processor.close();
    await queue.close();
  }
  return out;
}

describe('no-log mode', () => {
  it('keeps the prompt out of every log line; without it the quoted prompt is logged', async () => {
    const secret = `zebra-${randomUUID().slice(0, 8)}`;
    const quiet = await runAndCapture(true, `a ${secret} on the moon`);
    expect(quiet.split('\n').filter(Boolean).length).toBeGreaterThan(0); // it did log (job failed …)
    expect(quiet).not.toContain(secret);
    const loud = await runAndCapture(false, `a ${secret} on the moon`);
    expect(loud).toContain(secret);
  }, 60_000);

  it('the shared logger never writes prompt, question, negative, answer or history fields', async () => {
    const { execFileSync } = await import('node:child_process');
    const script = `import { createLogger } from './src/log.ts'; const l = createLogger('t', 'info'); l.info({ prompt: 'S1', job: { question: 'S2', negative: 'S3' }, partialText: 'S4', history: ['S5'] }, 'x');`;
    const out = execFileSync('npx', ['tsx', '-e', script], { encoding: 'utf8' });
    expect(out).toContain('"msg":"x"');
    expect(out).not.toMatch(/S[1-5]/);
  }, 60_000);
});
