// job → pipeline → result, and the one place the worker classifies errors (style §3):
//   - contract errors (malformed data, wrong version) and UserError (bad input): deliver a failure the user can
//     read, then UnrecoverableError so BullMQ fails the job at once;
//   - cancel and timeout: deliver "cancelled" / "took too long", then UnrecoverableError;
//   - anything else is transient: rethrown so BullMQ retries with backoff; on the last attempt a failure
//     ("failed, ref <jobId>") is delivered first so the user is never left waiting.
// A result is handed over by adding it to the destination's delivery queue under the job's own id, so a
// worker that dies after handing over and re-runs the job adds nothing new (BullMQ ignores a duplicate id).
import { UnrecoverableError, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import type { BlobStore } from '../src/blobs/store.ts';
import type { Config } from '../src/config/schema.ts';
import { AppError, UserError, asAppError, isUserError } from '../src/errors.ts';
import { isCancelRequested } from '../src/jobs/cancel.ts';
import {
  CONTRACT_VERSION,
  ContractError,
  DESCRIBE_PROMPTS,
  Destination,
  MAX_DESCRIBED_PROMPT_CHARS,
  JobRequest,
  parseContract,
  type ImageResult,
  type JobProgress,
  type JobResult,
} from '../src/jobs/contract.ts';
import { DeliveryLedger } from '../src/jobs/ledger.ts';
import { createDeliveryQueue, deliveryQueueName, type DeliveryQueue } from '../src/jobs/queue.ts';
import type { Logger } from '../src/log.ts';
import { enforceConfiguredLimits, enforceImageBytes } from './limits.ts';
import type { ProgressReport } from './pipeline/types.ts';
import type { ThreadHost } from './thread-host.ts';

/** One prompt out of a model's answer: its first non-empty line, without numbering, quotes or a "Prompt:" label. */
export function cleanDescribedPrompt(text: string): string {
  const line = text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  const bare = line
    .replace(/^(\d+[.)]|[-*•])\s*/, '')
    .replace(/^prompt\s*:\s*/i, '')
    .replace(/^["“'`]+|["”'`]+$/g, '')
    .trim();
  return bare.length <= MAX_DESCRIBED_PROMPT_CHARS ? bare : `${bare.slice(0, MAX_DESCRIBED_PROMPT_CHARS - 1)}…`;
}

export interface ProcessorDeps {
  config: Readonly<Config>;
  redis: Redis;
  blobs: BlobStore;
  host: Pick<ThreadHost, 'generate' | 'understand'>;
  log: Logger;
  /**
   * Called after every result handed over for a parsed request (and again when a re-run finds it handed over
   * already): the result cache, single-flight followers and GPU-second accounting (worker/after-job.ts). A throw
   * makes BullMQ retry the job; the re-run calls it again, so it must be idempotent.
   */
  afterHandOver?: (request: JobRequest, result: JobResult) => Promise<void>;
}

/** What the jobs queue records as the return value (the result itself lives in the delivery queue). */
export interface ProcessOutcome {
  status: JobResult['status'];
  /** True when the job had already been handed over by an earlier run and was not run again. */
  alreadyHandedOver?: boolean;
  /** Milliseconds per pipeline stage (for src/observability/hooks.ts: stage latency and GPU-seconds). */
  timingsMs?: Record<string, number>;
}

export interface JobProcessor {
  process: Processor<JobRequest, ProcessOutcome>;
  /** Hand a failure to delivery for a job BullMQ failed without our processor deciding (stalled too often). */
  onFinallyFailed(job: Job, error: Error): Promise<void>;
  close(): Promise<void>;
}

type Failure = { status: 'failed' | 'cancelled'; code: string; message: string; userFacing: boolean };

export function createProcessor(deps: ProcessorDeps): JobProcessor {
  const { config, redis, blobs, host, log } = deps;
  const ledger = new DeliveryLedger(redis, config);
  const queues = new Map<string, DeliveryQueue>();

  function deliveryQueue(destination: Destination): DeliveryQueue {
    const name = deliveryQueueName(destination);
    let q = queues.get(name);
    if (!q) {
      q = createDeliveryQueue(config, redis, name);
      queues.set(name, q);
    }
    return q;
  }

  async function handOver(result: JobResult): Promise<void> {
    await deliveryQueue(result.destination).add('result', result, { jobId: result.jobId });
  }

  async function alreadyHandedOver(jobId: string, destination: Destination): Promise<boolean> {
    if (await ledger.isDelivered(jobId)) return true;
    return (await deliveryQueue(destination).getJob(jobId)) !== undefined;
  }

  /** Deliver a failure for data that may be malformed: only possible when id and destination parse. */
  async function handOverFailure(data: unknown, failure: Failure): Promise<JobResult | undefined> {
    const d = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
    const destination = Destination.safeParse(d.destination);
    const jobId = typeof d.id === 'string' ? d.id : undefined;
    // A kind this worker does not know (a newer bot, a hand-written job) still gets its failure delivered: a failure's
    // rendering does not depend on the kind, which only shapes how a success is shown.
    const kind = d.kind === 'imagine' || d.kind === 'vary' || d.kind === 'ask' ? d.kind : 'imagine';
    if (!destination.success || !jobId) return undefined; // nowhere to say it; the job's failedReason records it
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId, kind, destination: destination.data, status: failure.status,
      error: { code: failure.code, message: failure.message, userFacing: failure.userFacing }, timingsMs: {}, finishedAt: Date.now(),
    };
    await handOver(result);
    return result;
  }

  async function after(request: JobRequest, result: JobResult | undefined): Promise<void> {
    if (result && deps.afterHandOver) await deps.afterHandOver(request, result);
  }

  async function run(job: Job<JobRequest>, request: JobRequest, signal: AbortSignal): Promise<JobResult> {
    const timings: Record<string, number> = {};
    let stage = '';
    let stageAt = Date.now();
    const onProgress = (report: ProgressReport) => {
      if (report.stage !== stage) {
        // The first stage counts from the start of the run (its first step ran before its first report).
        if (stage) {
          timings[stage] = (timings[stage] ?? 0) + Date.now() - stageAt;
          stageAt = Date.now();
        }
        stage = report.stage;
      }
      const progress: JobProgress = { v: CONTRACT_VERSION, jobId: request.id, ...report };
      job.updateProgress(progress).catch((e: unknown) => log.warn({ jobId: request.id, err: (e as Error).message }, 'progress update failed'));
    };
    const runOptions = { signal, timeoutMs: config.queue.jobTimeoutMs, onProgress };
    const base = { v: CONTRACT_VERSION, jobId: request.id, kind: request.kind, destination: request.destination, status: 'succeeded' as const };
    if (request.kind === 'ask' && request.mode === 'describe') {
      // /describe: the same question DESCRIBE_PROMPTS times, seeds s, s+1, …: one prompt each (sampling varies them).
      const image = await inputImage(request.imageKey);
      const prompts: string[] = [];
      let tokens = 0;
      for (let i = 0; i < DESCRIBE_PROMPTS; i++) {
        const answer = await host.understand({ image, question: request.question, history: [], options: { ...request.options, seed: (request.options.seed + i) % 2 ** 32 } }, runOptions);
        tokens += answer.tokenIds.length;
        const prompt = cleanDescribedPrompt(answer.text);
        if (prompt) prompts.push(prompt);
      }
      if (stage) timings[stage] = (timings[stage] ?? 0) + Date.now() - stageAt;
      if (prompts.length === 0) throw new UserError('bad_image', 'I could not describe that image; please try another one.');
      return { ...base, answer: { text: prompts.map((p, i) => `${i + 1}. ${p}`).join('\n'), tokenCount: tokens, prompts }, timingsMs: timings, finishedAt: Date.now() };
    }
    if (request.kind === 'ask') {
      const image = await inputImage(request.imageKey);
      const answer = await host.understand({ image, question: request.question, history: request.history, options: request.options }, runOptions);
      if (stage) timings[stage] = (timings[stage] ?? 0) + Date.now() - stageAt;
      return { ...base, answer: { text: answer.text, tokenCount: answer.tokenIds.length }, timingsMs: timings, finishedAt: Date.now() };
    }
    const image = request.kind === 'vary' ? await inputImage(request.imageKey) : undefined;
    // Several images: one after another with seeds s, s+1, …; each is exactly the image `count` 1 with its seed gives.
    const { count = 1, ...single } = request.options;
    const altText = request.prompt || 'A variation of your image';
    const images: ImageResult[] = [];
    for (let i = 0; i < count; i++) {
      const options = { ...single, seed: single.seed + i };
      const out = await host.generate({ prompt: request.prompt, options, ...(image ? { image } : {}) }, runOptions);
      const blobKey = await blobs.put(out.png, 'output');
      images.push({ blobKey, mime: 'image/png', width: out.width, height: out.height, altText: count > 1 ? `${altText} (${i + 1} of ${count})` : altText, prompt: request.prompt, options });
    }
    if (stage) timings[stage] = (timings[stage] ?? 0) + Date.now() - stageAt;
    return { ...base, image: images[0]!, ...(images.length > 1 ? { images } : {}), timingsMs: timings, finishedAt: Date.now() };
  }

  async function inputImage(key: string): Promise<Uint8Array> {
    const bytes = await blobs.get(key);
    if (!bytes) throw new AppError('bad_image', 'The image for this request has expired; please send it again.');
    enforceImageBytes(config, bytes);
    return bytes;
  }

  function classify(e: unknown): Failure | undefined {
    if (e instanceof ContractError) return { status: 'failed', code: 'contract', message: e.message, userFacing: false };
    if (isUserError(e)) return { status: 'failed', code: e.code, message: e.message, userFacing: true };
    if (e instanceof AppError && e.code === 'cancelled') return { status: 'cancelled', code: 'cancelled', message: 'Cancelled.', userFacing: true };
    if (e instanceof AppError && (e.code === 'timeout' || e.code === 'bad_image' || e.code === 'bad_request'))
      return { status: 'failed', code: e.code, message: e.message, userFacing: true };
    return undefined; // transient
  }

  const process: Processor<JobRequest, ProcessOutcome> = async (job, _token, signal) => {
    let request: JobRequest;
    try {
      request = parseContract(JobRequest, job.data, `job ${job.id}`);
      if (request.id !== job.id) throw new ContractError(`job ${job.id} carries id ${request.id}`);
    } catch (e) {
      const failure = classify(e) ?? { status: 'failed' as const, code: 'contract', message: String(e), userFacing: false };
      await handOverFailure(job.data, failure);
      log.error({ jobId: job.id, err: failure.message }, 'rejected malformed job');
      throw new UnrecoverableError(failure.message);
    }
    if (await alreadyHandedOver(request.id, request.destination)) {
      log.info({ jobId: request.id }, 'result already handed over; not running again');
      const handed = await deliveryQueue(request.destination).getJob(request.id);
      await after(request, handed?.data);
      return { status: 'succeeded', alreadyHandedOver: true };
    }
    let result: JobResult;
    try {
      if (await isCancelRequested(redis, config, request.id)) throw new AppError('cancelled', 'Cancelled.');
      enforceConfiguredLimits(config, request);
      result = await run(job, request, signal ?? new AbortController().signal);
      await handOver(result);
      log.info({ jobId: request.id, kind: request.kind, timingsMs: result.timingsMs }, 'job done');
    } catch (e) {
      const failure = classify(e);
      if (failure) {
        await after(request, await handOverFailure(request, failure));
        // A user-facing message may quote the prompt or question: withheld in no-log mode (the code says what failed).
        log.info({ jobId: request.id, code: failure.code, err: config.noLog && failure.userFacing ? '(withheld: noLog)' : failure.message }, 'job failed (not retried)');
        throw Object.assign(new UnrecoverableError(failure.message), { code: failure.code }); // code: the metrics' failure reason
      }
      const attempts = job.opts.attempts ?? 1;
      if (job.attemptsMade + 1 >= attempts) {
        await after(request, await handOverFailure(request, { status: 'failed', code: asAppError(e).code, message: `Generation failed (ref ${request.id}).`, userFacing: false }));
      }
      log.warn({ jobId: request.id, attempt: job.attemptsMade + 1, attempts, err: (e as Error).message }, 'job attempt failed');
      throw e;
    }
    // Outside the try: the result is handed over, so a throw here must not turn it into a failure; BullMQ retries
    // and the re-run (alreadyHandedOver) calls afterHandOver again with the handed-over result.
    await after(request, result);
    return { status: 'succeeded', timingsMs: result.timingsMs };
  };

  return {
    process,
    async onFinallyFailed(job: Job, error: Error): Promise<void> {
      // Covers failures decided outside `process` (a job whose worker died more than maxStalledCount times).
      // For failures `process` decided, the hand-over already exists and this add is ignored (same id).
      await handOverFailure(job.data, { status: 'failed', code: 'internal', message: `Generation failed (ref ${job.id}): ${error.message}`, userFacing: false });
    },
    async close(): Promise<void> {
      await Promise.all([...queues.values()].map((q) => q.close()));
      queues.clear();
    },
  };
}
