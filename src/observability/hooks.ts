// Feeds Metrics from BullMQ's local Worker events, so neither the processor nor the delivery code carries
// metric calls. Local events (not QueueEvents) on purpose: each job is counted once, by the process that ran it,
// so Prometheus can sum across any number of workers and bots. Stage timings come from the processor's return
// value (ProcessOutcome.timingsMs); failure reasons from the error's `code` (AppError, or the UnrecoverableError
// worker/processor.ts tags with the classified code).
//
//   worker/main.ts:  observeJobWorker(metrics, worker, () => provider); trackQueue(metrics, jobsQueue)
//   bots/main.ts:    observeDeliveryWorker(metrics, deliveryWorker);    trackQueue(metrics, deliveryQueue)
import type { Job, Queue, Worker } from 'bullmq';
import { z } from 'zod';
import { Destination, JobRequest, type Stage } from '../jobs/contract.ts';
import type { Metrics } from './metrics.ts';

/** Stages that run on the accelerator (everything but waiting in the queue). */
const COMPUTE_STAGES: ReadonlySet<string> = new Set<Exclude<Stage, 'queued'>>(['loading', 'conditioning', 'features', 'decoding', 'encoding', 'answering', 'checking']);

const STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'failed', 'completed'] as const;

export function trackQueue(metrics: Metrics, queue: Queue): void {
  metrics.trackQueue(queue.name, () => queue.getJobCounts(...STATES));
}

/** BullMQ's reason for a job whose worker died too often (moveStalledJobsToWait), failed by the next worker to take it. */
const STALLED_TOO_OFTEN = 'job stalled more than allowable limit';

/** The ErrorCode of an AppError, 'stalled', else the error's name (UnrecoverableError, Error…), as a bounded label. */
export function failureReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^[a-z_]{1,32}$/.test(code)) return code;
  if (err instanceof Error && err.message === STALLED_TOO_OFTEN) return 'stalled';
  const name = err instanceof Error ? err.name : 'unknown';
  return /^\w{1,40}$/.test(name) ? name : 'unknown';
}

/** Whether BullMQ will not try this job again. */
function isFinalFailure(job: Job, err: unknown): boolean {
  return (err instanceof Error && err.name === 'UnrecoverableError') || job.attemptsMade >= (job.opts.attempts ?? 1);
}

/** What a jobs processor returns: worker/processor.ts's ProcessOutcome, or a whole JobResult. */
const Outcome = z.looseObject({
  status: z.enum(['succeeded', 'failed', 'cancelled']),
  timingsMs: z.record(z.string(), z.number()).optional(),
  error: z.looseObject({ code: z.string() }).optional(),
  matchScore: z.number().optional(),
  tries: z.number().int().positive().optional(),
});

const kindOf = (data: unknown): string => {
  const parsed = JobRequest.safeParse(data);
  return parsed.success ? parsed.data.kind : 'unknown';
};

/**
 * Job lifecycle metrics on a jobs Worker: queue wait, stage timings, GPU-seconds per platform and job duration
 * when a job ends; every failed attempt by reason.
 */
export function observeJobWorker(metrics: Metrics, worker: Worker, provider: () => string): void {
  const queue = worker.name;
  // Queue wait is taken when a job ends, from its last start (processedOn): a job parked again by fair
  // scheduling or retried after a fault starts more than once, and only the start that ran it counts.
  const observeWait = (job: Job, kind: string) =>
    metrics.queueWait.observe({ queue, kind }, Math.max(0, (job.processedOn ?? Date.now()) - job.timestamp) / 1000);
  worker.on('completed', (job: Job, returned: unknown) => {
    const kind = kindOf(job.data);
    observeWait(job, kind);
    const outcome = Outcome.safeParse(returned);
    const ranSeconds = Math.max(0, (job.finishedOn ?? Date.now()) - (job.processedOn ?? Date.now())) / 1000;
    metrics.jobSeconds.observe({ kind, outcome: outcome.success ? outcome.data.status : 'succeeded' }, ranSeconds);
    if (outcome.success && outcome.data.error) metrics.failures.inc({ component: 'worker', queue, reason: failureReason(outcome.data.error) });
    if (outcome.success && outcome.data.matchScore !== undefined) metrics.matchScore.observe({ kind }, outcome.data.matchScore);
    if (outcome.success && outcome.data.tries && outcome.data.tries > 1) metrics.rerolls.inc({ kind }, outcome.data.tries - 1);
    let computeSeconds = 0;
    for (const [stage, ms] of Object.entries((outcome.success && outcome.data.timingsMs) || {})) {
      if (!COMPUTE_STAGES.has(stage)) continue;
      metrics.stageSeconds.observe({ kind, stage }, ms / 1000);
      computeSeconds += ms / 1000;
    }
    if (computeSeconds === 0) computeSeconds = ranSeconds; // no per-stage timings: the whole run used the device
    const request = JobRequest.safeParse(job.data);
    if (request.success) chargeGpu(metrics, request.data.destination, provider(), computeSeconds);
  });
  worker.on('failed', (job: Job | undefined, err: Error) => {
    metrics.failures.inc({ component: 'worker', queue, reason: failureReason(err) });
    if (!job || !isFinalFailure(job, err)) return;
    observeWait(job, kindOf(job.data));
    const ranSeconds = Math.max(0, (job.finishedOn ?? Date.now()) - (job.processedOn ?? Date.now())) / 1000;
    // A cancel ends the job as the processor's UnrecoverableError tagged 'cancelled': its own outcome, not 'failed'.
    const outcome = failureReason(err) === 'cancelled' ? 'cancelled' : 'failed';
    metrics.jobSeconds.observe({ kind: kindOf(job.data), outcome }, ranSeconds);
    const request = JobRequest.safeParse(job.data);
    if (request.success) chargeGpu(metrics, request.data.destination, provider(), ranSeconds);
  });
}

// By platform only: a channel (a DM is one per user) would be an unbounded label naming who used the bot. GPU-seconds
// per channel, user and workspace are in Redis (src/accounting/usage.ts, `/blip3o-admin usage`).
function chargeGpu(metrics: Metrics, destination: Destination, provider: string, seconds: number): void {
  metrics.gpuSeconds.inc({ platform: destination.platform, provider }, seconds);
}

/**
 * Delivery metrics on a delivery Worker (bots/core/delivery.ts returns 'delivered' | 'duplicate', or 'elsewhere' |
 * 'nowhere': the requester's DM, or dropped, when the channel takes no posts any more).
 */
export function observeDeliveryWorker(metrics: Metrics, worker: Worker): void {
  const queue = worker.name;
  const platformOf = (job: Job): string => {
    const d = Destination.safeParse((job.data as { destination?: unknown } | undefined)?.destination);
    return d.success ? d.data.platform : 'unknown';
  };
  worker.on('completed', (job: Job, returned: unknown) => {
    const outcome = returned === 'duplicate' || returned === 'elsewhere' || returned === 'nowhere' ? returned : 'delivered';
    metrics.deliveries.inc({ platform: platformOf(job), outcome });
  });
  worker.on('failed', (job: Job | undefined, err: Error) => {
    metrics.failures.inc({ component: 'bot', queue, reason: failureReason(err) });
    if (job) metrics.deliveries.inc({ platform: platformOf(job), outcome: isFinalFailure(job, err) ? 'failed' : 'retried' });
  });
}
