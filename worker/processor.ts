// job → pipeline → result, and the one place the worker classifies errors (style §3):
//   - contract errors (malformed data, wrong version) and UserError (bad input): deliver a failure the user can
//     read, then UnrecoverableError so BullMQ fails the job at once;
//   - cancel and timeout: deliver "cancelled" / "took too long", then UnrecoverableError;
//   - anything else is transient: rethrown so BullMQ retries with backoff; on the last attempt a failure
//     ("failed, ref <jobId>") is delivered first so the user is never left waiting.
// A result is handed over by adding it to the destination's delivery queue under the job's own id, so a
// worker that dies after handing over and re-runs the job adds nothing new (BullMQ ignores a duplicate id). Its PNGs
// are stored in the same MULTI (src/jobs/queue.ts handOverTogether): a delivery job never names a blob not stored.
import { UnrecoverableError, WaitingError, type Job, type Processor } from 'bullmq';
import type { Redis } from '../src/redis.ts';
import type { BlobStore, PreparedBlob } from '../src/blobs/store.ts';
import type { Config } from '../src/config/schema.ts';
import { AppError, UserError, asAppError, isUserError, isWithheldCode } from '../src/errors.ts';
import { isCancelRequested } from '../src/jobs/cancel.ts';
import {
  CONTRACT_VERSION,
  ContractError,
  DESCRIBE_PROMPTS,
  Destination,
  MAX_DESCRIBED_PROMPT_CHARS,
  JobRequest,
  parseContract,
  retentionLeft,
  retentionOf,
  isNoLog,
  logPlaceOf,
  type ImageResult,
  type JobProgress,
  type JobResult,
} from '../src/jobs/contract.ts';
import { DeliveryLedger } from '../src/jobs/ledger.ts';
import { createDeliveryQueue, DELIVERY_JOB_NAME, deliveryQueueName, handOverTogether, type DeliveryQueue } from '../src/jobs/queue.ts';
import { coalesceProgress, progressWriteIntervalMs, type ProgressCoalescer } from '../src/jobs/progress.ts';
import { markFailureHandled } from '../src/jobs/retention.ts';
import type { Logger } from '../src/log.ts';
import { clipText } from '../src/text.ts';
import { CheckOverrides, sharingScope, type CheckPolicy } from '../src/checks/policy.ts';
import { enforceConfiguredLimits, enforceImageBytes } from './limits.ts';
import { addPngText } from './pipeline/png.ts';
import type { ProgressReport } from './pipeline/types.ts';
import { generateReviewed, moderateInput, withheldError } from './review.ts';
import { JobClock, timedHost, type ModelHost } from './job-clock.ts';
import { JobTimeLimit } from './job-time-limit.ts';
import { ServerClock } from '../src/server-clock.ts';
import type { RunOptions } from './thread-host.ts';

/** One prompt out of a model's answer: its first non-empty line, without numbering, quotes or a "Prompt:" label. */
export function cleanDescribedPrompt(text: string): string {
  const line = text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  const bare = line
    .replace(/^(\d+[.)]|[-*•])\s*/, '')
    .replace(/^prompt\s*:\s*/i, '')
    .replace(/^["“'`]+|["”'`]+$/g, '')
    .trim();
  return clipText(bare, MAX_DESCRIBED_PROMPT_CHARS); // between whole characters: half an emoji made Slack's client refuse the message
}

export interface ProcessorDeps {
  config: Readonly<Config>;
  redis: Redis;
  blobs: BlobStore;
  host: ModelHost;
  log: Logger;
  /**
   * Called after every result handed over for a parsed request (and again when a re-run finds it handed over
   * already): the result cache, single-flight followers and GPU-second accounting (worker/after-job.ts). A throw
   * makes BullMQ retry the job; the re-run calls it again, so it must be idempotent. `png`: the bytes stored under
   * result.image.blobKey when this run made them (then they need not be read back); undefined on a re-run.
   */
  /** `checksScope`: sharingScope of the check policy the run used (src/checks/policy.ts), where it ran. */
  afterHandOver?: (request: JobRequest, result: JobResult, ranMs: number, png?: Uint8Array, checksScope?: string) => Promise<void>;
  /**
   * Runs first for every job, a malformed one included: the fair scheduler's start hook (worker/main.ts). Its round
   * trips overlap the job's own checks (handed over, cancelled, check policy), and it is awaited before anything
   * else is decided: when it throws (DelayedError: the job's channel is paused and the job parked again), the job
   * goes no further.
   */
  start?: (job: Job<JobRequest>, token: string | undefined) => Promise<void>;
  /**
   * Milliseconds between two progress writes of a job to `destination` (coalesceProgress, src/jobs/progress.ts).
   * Default: progressWriteIntervalMs, half the destination's edit interval; 0 writes every report (the bench's "before").
   */
  progressWriteMs?: (destination: Destination) => number;
  /** Redis's clock (src/server-clock.ts), on which the bot stamped submittedAt: a retention channel's deadline. */
  clock?: ServerClock;
}

/** What the jobs queue records as the return value (the result itself lives in the delivery queue). */
export interface ProcessOutcome {
  status: JobResult['status'];
  /** True when the job had already been handed over by an earlier run and was not run again. */
  alreadyHandedOver?: boolean;
  /** Milliseconds per pipeline stage (for src/observability/hooks.ts: stage latency and GPU-seconds). */
  timingsMs?: Record<string, number>;
  /** The delivered image's prompt-match score and the images drawn for it (checks, issue 16). */
  matchScore?: number;
  tries?: number;
  /** Every try's match score, in order (the delivered one is the best). */
  matchScores?: (number | null)[];
}

export interface JobProcessor {
  process: Processor<JobRequest, ProcessOutcome>;
  /**
   * For a job BullMQ failed for good (the jobs worker's 'failed' listener, worker/main.ts): hand a failure to delivery
   * when our processor did not decide one (stalled too often), then run afterHandOver as process does, so the flight the
   * job led is closed, its followers told and its GPU-seconds settled. An afterHandOver error is logged, not thrown.
   */
  onFinallyFailed(job: Job, error: Error): Promise<void>;
  close(): Promise<void>;
}

/**
 * The abort reason with which a stopping worker ends the jobs still running after its grace (worker/main.ts,
 * worker.stopGraceMs): such a job is not cancelled but handed back, moved to the front of the wait list with its lock
 * released, for another worker to take; no result is delivered and no attempt or stall is counted. A worker busy
 * elsewhere takes it when a slot frees; an idle one within BullMQ's drain delay (5 s): BullMQ 6.7 moves a job with a
 * priority, as every fairly scheduled job has, back without the marker that wakes idle workers (measured 2026-12-08).
 */
export const HAND_BACK = 'the worker is stopping: handing the job back';

/**
 * The progress of a job of `count` images (`--n`), from each image's own reports: a stage's step is the sum of every
 * image's last step in it, its total the sum of their totals (an image not yet in the stage counts the reporting
 * image's). One after another, "Drawing: step 1/30 … 30/30" four times over reads "step 1/120 … 120/120" once, and
 * image 2 begins where image 1 ended; all at once (worker.maxBatch.diffusion > 1) it is the steps the images have
 * made together. The counts travel in step/total, not a new field: JobProgress is strict, so a bot of any version
 * parses it (an unknown key would make an older bot drop the report whole). A re-roll (review.ts) draws its image
 * again, and that image's steps count from 0 once more, after "Retrying with a new seed".
 */
export function severalImagesProgress(count: number, onProgress: (report: ProgressReport) => void): (image: number) => (report: ProgressReport) => void {
  // per image: stage → its last report in that stage
  const last = Array.from({ length: count }, () => new Map<ProgressReport['stage'], { step: number; total: number }>());
  return (image) => (report) => {
    last[image]!.set(report.stage, { step: report.step, total: report.total });
    let step = 0;
    let total = 0;
    for (const byStage of last) {
      const seen = byStage.get(report.stage);
      step += seen?.step ?? 0;
      total += seen?.total ?? report.total;
    }
    onProgress({ ...report, step, total });
  };
}

type Failure = { status: 'failed' | 'cancelled'; code: string; message: string; userFacing: boolean; private?: boolean };

/** What a failure's log line says of the job besides its id (the user's ref): its kind and where it was asked. */
const jobFields = (request: JobRequest) => ({ kind: request.kind, ...logPlaceOf(request.destination) });

export function createProcessor(deps: ProcessorDeps): JobProcessor {
  const { config, redis, blobs, log } = deps;
  const serverClock = deps.clock ?? ServerClock.forDeployment(redis, config.queue.prefix);
  const ledger = new DeliveryLedger(redis, config);
  const checkOverrides = new CheckOverrides(redis, config.queue.prefix);
  const queues = new Map<string, DeliveryQueue>();

  function deliveryQueue(destination: Destination): DeliveryQueue {
    const name = deliveryQueueName(destination);
    let q = queues.get(name);
    if (!q) {
      q = createDeliveryQueue(config, redis, name, destination.platform === 'cli'); // a CLI's queue is the CLI's
      queues.set(name, q);
    }
    return q;
  }

  /**
   * Jobs running here per CLI delivery queue (one queue per CLI run). The queue is closed when its last job here is
   * over, not kept: before 2026-12-07 every CLI run the worker served left its Queue, and BullMQ's three listeners on the
   * shared connection, until the worker stopped. Counted, because a run's jobs overlap here and share the Queue.
   */
  const cliJobsRunning = new Map<string, number>();
  async function whileRunning<T>(data: unknown, work: () => Promise<T>): Promise<T> {
    const destination = Destination.safeParse((data as { destination?: unknown } | undefined)?.destination);
    if (!destination.success || destination.data.platform !== 'cli') return work();
    const name = deliveryQueueName(destination.data);
    cliJobsRunning.set(name, (cliJobsRunning.get(name) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = cliJobsRunning.get(name)! - 1;
      if (left > 0) cliJobsRunning.set(name, left);
      else {
        cliJobsRunning.delete(name);
        const q = queues.get(name);
        queues.delete(name);
        await q?.close().catch(() => undefined); // on a shared connection a close only removes its listeners: nothing to retry
      }
    }
  }

  /** `blobs`: the result's PNGs, not stored yet (BlobStore.prepare): they land with the delivery job or not at all. */
  async function handOver(result: JobResult, blobs: readonly PreparedBlob[] = []): Promise<void> {
    const q = deliveryQueue(result.destination);
    // The queue's own keep options, a retention channel's too (src/jobs/retention.ts: its sweep deletes the result)
    const opts = { jobId: result.jobId };
    // A CLI's delivery queue (delivery-cli-<clientId>) has one reader, the CLI that made it, which deletes it on exit.
    // A CLI that was killed never does, so the hand-over gives the queue's keys (and the result's) the blobs' lifetime:
    // a queue nobody reads is gone when the result's image would be.
    const expireSeconds = result.destination.platform === 'cli' ? config.blobs.ttlSeconds : undefined;
    if (blobs.length === 0 && expireSeconds === undefined) await q.add(DELIVERY_JOB_NAME, result, opts);
    else await handOverTogether(redis, q, result, opts, { blobs, expireSeconds }); // one MULTI, one round trip
  }

  async function alreadyHandedOver(jobId: string, destination: Destination): Promise<boolean> {
    return ledger.isHandedOver(jobId, deliveryQueue(destination).toKey(jobId));
  }

  /** A failure's result for data that may be malformed: only possible when id and destination parse. */
  function failureResult(data: unknown, failure: Failure): JobResult | undefined {
    const d = (typeof data === 'object' && data !== null ? data : {}) as Record<string, unknown>;
    const destination = Destination.safeParse(d.destination);
    const jobId = typeof d.id === 'string' ? d.id : undefined;
    // A kind this worker does not know (a newer bot, a hand-written job) still gets its failure delivered: a failure's
    // rendering does not depend on the kind, which only shapes how a success is shown.
    const kind = d.kind === 'vary' || d.kind === 'ask' ? d.kind : 'imagine';
    if (!destination.success || !jobId) return undefined; // nowhere to say it; the job's failedReason records it
    return {
      v: CONTRACT_VERSION, jobId, kind, destination: destination.data, status: failure.status,
      error: { code: failure.code, message: failure.message, userFacing: failure.userFacing, ...(failure.private ? { private: true } : {}) }, timingsMs: {}, finishedAt: Date.now(),
    };
  }

  /**
   * The result of a job handed over already (a re-run, a final failure after the hand-over), for its flight's followers;
   * `gone` when it was delivered and has left its queue (a CLI's queue goes with the CLI): they are told that, rather
   * than waiting for a result nobody will hand them.
   */
  async function handedOverResult(request: JobRequest, gone: Failure): Promise<JobResult | undefined> {
    return (await deliveryQueue(request.destination).getJob(request.id))?.data ?? failureResult(request, gone);
  }

  /** Deliver a failure for data that may be malformed (failureResult); the result handed over, if any. */
  async function handOverFailure(data: unknown, failure: Failure): Promise<JobResult | undefined> {
    const result = failureResult(data, failure);
    if (result) await handOver(result);
    return result;
  }

  /**
   * `ranMs`: what a result or failure without stage timings is charged: the job clock's reading as its run ended (GPU
   * time: a wait for room in a thread counts nothing); without one (this attempt ran nothing: a re-run that found its
   * result handed over) the wall time since the attempt started (`job.processedOn`).
   * `ranUnder`: the check policy the run read, whose scope decides whom its result may be shared with.
   */
  async function after(job: Job, request: JobRequest, result: JobResult | undefined, png?: Uint8Array, ranUnder?: Promise<CheckPolicy>, ranMs?: number): Promise<void> {
    if (!result || !deps.afterHandOver) return;
    const checksScope = ranUnder ? await ranUnder.then((policy) => sharingScope(config.cache, request.destination, policy), () => undefined) : undefined;
    await deps.afterHandOver(request, result, Math.max(0, ranMs ?? Date.now() - (job.processedOn ?? Date.now())), png, checksScope);
  }

  /**
   * A job's result, and each try's match score (for the jobs queue's return value, not the delivery); `png`: the bytes
   * stored for result.image (afterHandOver caches them without reading them back).
   */
  async function run(request: JobRequest, signal: AbortSignal, checkPolicy: Promise<CheckPolicy>, progress: ProgressCoalescer, jobClock: JobClock): Promise<{ result: JobResult; matchScores?: (number | null)[]; png?: Uint8Array; blobs?: PreparedBlob[] }> {
    const timings: Record<string, number> = {};
    // Stage times on the job's GPU clock (worker/job-clock.ts): under batching (worker.maxBatch) the runs sharing a
    // model thread split its time (docs/batching.md), a run waiting for room counts nothing; alone it is the wall clock.
    const model = timedHost(deps.host, jobClock);
    const clock = () => jobClock.now();
    let stage = '';
    let stageAt = clock();
    const onProgress = (report: ProgressReport) => {
      // Stryker disable next-line ConditionalExpression: re-entering on the same stage adds its time so far and restarts its clock: the same total
      if (report.stage !== stage) {
        // The first stage counts from the start of the run (its first step ran before its first report).
        if (stage) {
          timings[stage] = (timings[stage] ?? 0) + clock() - stageAt;
          stageAt = clock();
        }
        stage = report.stage;
      }
      progress.push({ v: CONTRACT_VERSION, jobId: request.id, ...report });
    };
    // One time limit for all the job's runs, this attempt's (worker/job-time-limit.ts): a retry has a whole one again.
    const runOptions: RunOptions = { signal, timeLimit: new JobTimeLimit(config.queue.jobTimeoutMs), onProgress };
    const base = { v: CONTRACT_VERSION, jobId: request.id, kind: request.kind, destination: request.destination, status: 'succeeded' as const };
    const policy = await checkPolicy;
    /** Moderation of an image the user sent: a flagged one is deleted now, not kept until its TTL. */
    const moderated = async (key: string): Promise<Uint8Array> => {
      const bytes = await inputImage(key);
      const flagged = await moderateInput(model, bytes, policy, runOptions);
      if (flagged.length === 0) return bytes;
      await blobs.delete(key);
      log.info({ jobId: request.id, flagged }, 'input image withheld by the content checks');
      throw withheldError(flagged, true);
    };
    if (request.kind === 'ask' && request.mode === 'describe') {
      // /describe: the same question DESCRIBE_PROMPTS times, seeds s, s+1, …: one prompt each (sampling varies them).
      const image = await moderated(request.imageKey);
      const prompts: string[] = [];
      let tokens = 0;
      for (let i = 0; i < DESCRIBE_PROMPTS; i++) {
        const answer = await model.understand({ image, question: request.question, history: [], options: { ...request.options, seed: (request.options.seed + i) % 2 ** 32 } }, runOptions);
        tokens += answer.tokenIds.length;
        const prompt = cleanDescribedPrompt(answer.text);
        if (prompt) prompts.push(prompt);
      }
      if (stage) timings[stage] = (timings[stage] ?? 0) + clock() - stageAt;
      if (prompts.length === 0) throw new UserError('bad_image', "I couldn't turn that image into prompts this time; please try again, or with another image.");
      return { result: { ...base, answer: { text: prompts.map((p, i) => `${i + 1}. ${p}`).join('\n'), tokenCount: tokens, prompts }, timingsMs: timings, finishedAt: Date.now() } };
    }
    if (request.kind === 'ask') {
      const image = await moderated(request.imageKey);
      const answer = await model.understand({ image, question: request.question, history: request.history, options: request.options }, runOptions);
      if (stage) timings[stage] = (timings[stage] ?? 0) + clock() - stageAt;
      return { result: { ...base, answer: { text: answer.text, tokenCount: answer.tokenIds.length }, timingsMs: timings, finishedAt: Date.now() } };
    }
    const image = request.kind === 'vary' ? await moderated(request.imageKey) : undefined;
    // Several images: seeds s, s+1, …; each is exactly the image `count` 1 with its seed gives. One after another, or,
    // with worker.maxBatch.diffusion > 1, all at once so the model thread steps them together (docs/batching.md; the
    // bytes do not change); then the first failure cancels the others.
    const { count = 1, ...single } = request.options;
    const imageProgress = count > 1 ? severalImagesProgress(count, onProgress) : () => onProgress;
    const reviewOne = (i: number, options: RunOptions) =>
      generateReviewed(model, { prompt: request.prompt, options: { ...single, seed: single.seed + i }, ...(image ? { image } : {}) }, policy, { ...options, onProgress: imageProgress(i) });
    let reviewedAll: Awaited<ReturnType<typeof generateReviewed>>[] = [];
    try {
      if (count > 1 && config.worker.maxBatch.diffusion > 1) {
        const siblings = new AbortController();
        // Each image's runs on a meter of their own (timedHost): the job is charged its images' shares of the thread.
        // They share the job's time limit, which their runs at once spend once, at the wall clock's pace.
        const together = { ...runOptions, signal: AbortSignal.any([signal, siblings.signal]) };
        const each = Array.from({ length: count }, (_, i) =>
          reviewOne(i, together).catch((e: unknown) => {
            siblings.abort();
            throw e;
          }),
        );
        reviewedAll = await Promise.all(each);
      } else for (let i = 0; i < count; i++) reviewedAll.push(await reviewOne(i, runOptions));
    } catch (e) {
      // A withheld image never reaches the blob store; the log keeps only which questions flagged it.
      if (isUserError(e) && e.code === 'withheld') log.info({ jobId: request.id, flagged: e.context.flagged }, 'generated image withheld by the content checks');
      throw e;
    }
    if (stage) timings[stage] = (timings[stage] ?? 0) + clock() - stageAt;
    const images: ImageResult[] = [];
    let firstScores: (number | null)[] | undefined;
    const pngs = reviewedAll.map(({ best }) => (best.check?.caption ? addPngText(best.image.png, { Description: best.check.caption }) : best.image.png));
    // The PNGs are stored with the hand-over, in its round trip (BlobStore.prepare: a store on the worker's own
    // connection); a store elsewhere stores them first, all at once: one round trip before the hand-over.
    // A retention channel's: until its deadline, not its TTL from now; on the clock the bot stamped it with, not this host's
    const ttl = retentionOf(request.destination) === undefined ? undefined : retentionLeft(request, await serverClock.now());
    const prepared = pngs.map((png) => blobs.prepare?.(redis, png, 'output', ttl));
    const staged = prepared.every((p): p is PreparedBlob => p !== undefined) ? prepared : undefined;
    const blobKeys = staged ? staged.map((p) => p.key) : await Promise.all(pngs.map((png) => blobs.put(png, 'output', ttl)));
    for (const [i, { best, tries, scores }] of reviewedAll.entries()) {
      const caption = best.check?.caption || undefined;
      const blobKey = blobKeys[i]!;
      const plainAlt = request.prompt || 'A variation of your image';
      const altText = caption ?? (count > 1 ? `${plainAlt} (${i + 1} of ${count})` : plainAlt);
      const matchScore = best.check?.match;
      if (matchScore !== undefined) log.info({ jobId: request.id, image: i, matchScore, tries, scores }, 'prompt match');
      if (i === 0) firstScores = scores.map((x) => x ?? null); // passed on only next to a match score (process)
      images.push({
        blobKey, mime: 'image/png', width: best.image.width, height: best.image.height, altText, prompt: request.prompt, options: best.options,
        ...(caption ? { caption } : {}), ...(tries > 1 ? { tries } : {}),
        // Stryker disable next-line ConditionalExpression: an undefined matchScore is dropped when the result is stored as JSON
        ...(matchScore !== undefined ? { matchScore } : {}),
      });
    }
    const result: JobResult = { ...base, image: images[0]!, ...(images.length > 1 ? { images } : {}), timingsMs: timings, finishedAt: Date.now() };
    return { result, png: pngs[0], ...(staged ? { blobs: staged } : {}), ...(firstScores ? { matchScores: firstScores } : {}) };
  }

  async function inputImage(key: string): Promise<Uint8Array> {
    const bytes = await blobs.get(key);
    if (!bytes) throw new AppError('bad_image', 'The image for this request has expired; please send it again.');
    enforceImageBytes(config, bytes);
    return bytes;
  }

  /** A job stopped by HAND_BACK: back to wait, its lock released (moveToWait checks it is still ours). */
  async function handBack(job: Job, token: string | undefined): Promise<void> {
    try {
      await job.moveToWait(token);
      log.info({ jobId: job.id }, 'handed the job back to the queue');
    } catch (e) {
      // the lock lost meanwhile (Redis unreachable past lockDuration): the stall check gives the job back instead
      log.warn({ jobId: job.id, err: (e as Error).message }, 'could not hand the job back; it is requeued when its lock expires');
    }
  }

  function classify(e: unknown): Failure | undefined {
    if (e instanceof ContractError) return { status: 'failed', code: 'contract', message: e.message, userFacing: false };
    if (isUserError(e)) return { status: 'failed', code: e.code, message: e.message, userFacing: true, ...(isWithheldCode(e.code) ? { private: true } : {}) };
    if (e instanceof AppError && e.code === 'cancelled') return { status: 'cancelled', code: 'cancelled', message: 'Cancelled.', userFacing: true };
    if (e instanceof AppError && (e.code === 'timeout' || e.code === 'bad_image' || e.code === 'bad_request'))
      return { status: 'failed', code: e.code, message: e.message, userFacing: true };
    return undefined; // transient
  }

  const process: Processor<JobRequest, ProcessOutcome> = async (job, token, signal) => {
    const started = deps.start ? deps.start(job, token) : Promise.resolve();
    started.catch(() => undefined); // awaited below on every path that gets there; this only keeps a throw in between from leaving it unhandled
    let request: JobRequest;
    try {
      request = parseContract(JobRequest, job.data, `job ${job.id}`);
      if (request.id !== job.id) throw new ContractError(`job ${job.id} carries id ${request.id}`);
    } catch (e) {
      await started;
      // Stryker disable next-line StringLiteral,BooleanLiteral: unreachable, the parse and the id check throw only ContractError, which classify knows
      const failure = classify(e) ?? { status: 'failed' as const, code: 'contract', message: String(e), userFacing: false };
      await handOverFailure(job.data, failure);
      log.error({ jobId: job.id, err: failure.message }, 'rejected malformed job');
      throw new UnrecoverableError(failure.message);
    }
    // Both checks in one round trip, with the start hook's: handed over already (a rerun after a lost ack), and
    // cancelled meanwhile (read inside the try below, so that a failure to read it is an attempt's failure like any
    // other). The channel's check policy is read in the same round trip too.
    const cancelled = isCancelRequested(redis, config, request.id);
    const policy = checkOverrides.policyFor(config.checks, request.destination);
    const handedOver = alreadyHandedOver(request.id, request.destination);
    for (const p of [cancelled, policy, handedOver]) p.catch(() => undefined); // not awaited when the job is held or was handed over already
    await started;
    if (await handedOver) {
      log.info({ jobId: request.id }, 'result already handed over; not running again');
      const gone: Failure = { status: 'failed', code: 'internal', message: `Generation failed (ref ${job.id}): its result was delivered and is gone`, userFacing: false };
      const handed = await handedOverResult(request, gone);
      await after(job, request, handed);
      // The stage timings of the run that made it (no attempt before this one was counted: it failed, not for good, or
      // its worker died), so the metrics charge the job's GPU time once and not this re-run's wall clock.
      const timingsMs = handed && Object.keys(handed.timingsMs).length > 0 ? { timingsMs: handed.timingsMs } : {};
      return { status: 'succeeded', alreadyHandedOver: true, ...timingsMs };
    }
    let result: JobResult;
    let matchScores: (number | null)[] | undefined;
    let png: Uint8Array | undefined;
    let made: PreparedBlob[] | undefined;
    // The job's GPU time, read when its run ends: what a result or failure without stage timings is charged.
    const jobClock = new JobClock();
    let ranMs = 0;
    try {
      // Stryker disable next-line StringLiteral: classify hands over its own "Cancelled." whatever this message says
      if (await cancelled) throw new AppError('cancelled', 'Cancelled.');
      enforceConfiguredLimits(config, request);
      // Progress goes to Redis coalesced, and none once the run is over (its result or failure supersedes it).
      const writeMs = deps.progressWriteMs?.(request.destination) ?? progressWriteIntervalMs(config, request.destination);
      const progress = coalesceProgress(writeMs, (p: JobProgress) =>
        void job.updateProgress(p).catch((e: unknown) => log.warn({ jobId: request.id, err: (e as Error).message }, 'progress update failed')));
      ({ result, matchScores, png, blobs: made } = await run(request, signal ?? new AbortController().signal, policy, progress, jobClock).finally(() => progress.stop()));
      ranMs = jobClock.now();
      await handOver(result, made);
      log.info({ jobId: request.id, kind: request.kind, timingsMs: result.timingsMs }, 'job done');
    } catch (e) {
      ranMs = jobClock.now(); // a failed run is charged the GPU time it used, not its attempt's wall time
      if (signal?.reason === HAND_BACK && e instanceof AppError && e.code === 'cancelled') {
        await handBack(job, token);
        throw new WaitingError(); // BullMQ leaves the job where handBack put it: not failed, no retry counted
      }
      const failure = classify(e);
      if (failure) {
        await after(job, request, await handOverFailure(request, failure), undefined, policy, ranMs);
        // A user-facing text may quote the input: in a no-log channel it stays out of the log and out of what BullMQ
        // keeps (the job's failedReason and stacktrace, the events stream, which outlives the job): the user has it in
        // the result handed over.
        const told = isNoLog(config, request.destination) && failure.userFacing ? `${failure.code} (withheld: noLog)` : failure.message;
        // The time limit is the admin's to size (queue.jobTimeoutMs): a warning; the rest is the user's input or cancel.
        const level = failure.code === 'timeout' ? 'warn' : 'info';
        log[level]({ jobId: request.id, ...jobFields(request), code: failure.code, err: told }, 'job failed (not retried)');
        throw Object.assign(new UnrecoverableError(told), { code: failure.code }); // code: the metrics' failure reason
      }
      const attempts = job.opts.attempts ?? 1;
      // One line per attempt with its cause; the last one is the line the user's "failed (ref <jobId>)" points to.
      const attempt = { jobId: request.id, attempt: job.attemptsMade + 1, attempts, err: (e as Error).message, stack: (e as Error).stack };
      if (job.attemptsMade + 1 >= attempts) {
        log.error({ ...attempt, ...jobFields(request) }, 'job failed for good'); // first: the hand-over below may throw too
        await after(job, request, await handOverFailure(request, { status: 'failed', code: asAppError(e).code, message: `Generation failed (ref ${request.id}).`, userFacing: false }), undefined, undefined, ranMs);
      } else log.warn(attempt, 'job attempt failed');
      throw e;
    }
    // Outside the try: the result is handed over, so a throw here must not turn it into a failure; BullMQ retries
    // and the re-run (alreadyHandedOver) calls afterHandOver again with the handed-over result.
    await after(job, request, result, png, policy, ranMs);
    const { matchScore, tries } = result.image ?? {};
    return { status: 'succeeded', timingsMs: result.timingsMs, ...(matchScore !== undefined ? { matchScore, matchScores } : {}), ...(tries ? { tries } : {}) };
  };

  /** The jobs worker's 'failed' listener, for a job BullMQ failed for good (JobProcessor.onFinallyFailed). */
  async function finallyFailed(job: Job, error: Error): Promise<void> {
    // Covers failures decided outside `process`: a job whose worker died more than maxStalledCount times, or a throw
    // at its last attempt outside process's try (the start hook, the hand-over check) or in its afterHandOver.
    const failure: Failure = { status: 'failed', code: 'internal', message: `Generation failed (ref ${job.id}): ${error.message}`, userFacing: false };
    const parsed = JobRequest.safeParse(job.data);
    if (!parsed.success || parsed.data.id !== job.id) {
      await handOverFailure(job.data, failure); // a malformed job leads no flight and settles nothing
      return;
    }
    const request = parsed.data;
    const handedBefore = await alreadyHandedOver(request.id, request.destination);
    // Not handed over by `process`, which logged its own failure: this is the line the user's ref points to.
    if (!handedBefore) log.error({ jobId: request.id, ...jobFields(request), err: error.message, stack: error.stack }, 'job failed for good');
    // A job `process` handed over already (its own failure, or a result whose afterHandOver then threw) keeps that
    // result, and its followers get the same (this failure if it was delivered and has left its queue). Then the
    // after-hand-over step, as in process: afterHandOver is idempotent (the usage settle's marker, the flight's close
    // answering the same followers again, their deliveries under their own ids and the delivery ledger), so a
    // follower told already is not told twice.
    const result = handedBefore ? await handedOverResult(request, failure) : await handOverFailure(request, failure);
    // Logged, not thrown: the job's own result is handed over; a flight left open expires with its keep time.
    await after(job, request, result).catch((e: unknown) =>
      log.error({ jobId: request.id, err: (e as Error).message }, 'could not end the single flight of a failed job; its followers are not told'));
    // A retention channel's job may be purged now (src/jobs/retention.ts), not a minute after a sweep saw it failed.
    await markFailureHandled(redis, config.queue.prefix, request, await serverClock.now());
  }

  return {
    process: (job, token, signal) => whileRunning(job.data, () => process(job, token, signal)),
    onFinallyFailed: (job, error) => whileRunning(job.data, () => finallyFailed(job, error)),
    async close(): Promise<void> {
      await Promise.all([...queues.values()].map((q) => q.close()));
      queues.clear();
    },
  };
}
