// `npm run worker`: one worker process. Loads config, starts the model threads (pipeline loaded once per
// thread, kept warm), then consumes the shared jobs queue. Many such processes on many hosts share one Redis.
import { isAbsolute, resolve } from 'node:path';
import { loadConfig, loadSecrets, repoRoot } from '../src/config/load.ts';
import { createBlobStore } from '../src/blobs/index.ts';
import { onCancel } from '../src/jobs/cancel.ts';
import { Retention } from '../src/jobs/retention.ts';
import { JobRequest, QueueNames } from '../src/jobs/contract.ts';
import { createJobsQueue, createQueueWorker, logWorkerError, runningJobsOf } from '../src/jobs/queue.ts';
import { watchFetchLoop } from '../src/jobs/fetch-watchdog.ts';
import type { Job } from 'bullmq';
import { createLogger } from '../src/log.ts';
import { observeJobWorker, trackQueue } from '../src/observability/hooks.ts';
import { serveHealth } from '../src/observability/http.ts';
import { createMetrics, reportExecutionProvider } from '../src/observability/metrics.ts';
import { closeRedis, createRedis, setRedisLogger, stopDeadline, waitForRedis } from '../src/redis.ts';
import { createFairScheduler, startOrHold } from '../src/scheduling/fair.ts';
import { Usage } from '../src/accounting/usage.ts';
import { handleUsage } from '../src/usage.ts';
import type { PipelineOptions } from './pipeline/types.ts';
import { createProcessor, HAND_BACK, type ProcessOutcome } from './processor.ts';
import { ThreadHost } from './thread-host.ts';
import { ensureModel, SetupStopped } from './setup.ts';
import { createAfterJob, modelIdentity } from './after-job.ts';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';

/** How long a stop may take past worker.stopGraceMs + worker.abortGraceMs (the closes after the running jobs end) before the worker exits 1 anyway. */
const STOP_CLOSE_MS = 3_000;

/** The shipped pipeline loads its graphs from model.onnxDir, so the worker sets the model up for it first. */
const SHIPPED_PIPELINE = 'worker/pipeline/blip3o.ts';

const USAGE = `usage: npm run worker [-- --help]

Starts one worker: fetches and converts the model on first start (model.* in config/default.yaml), then runs jobs
from the shared Redis queue (REDIS_URL, and REDIS_PASSWORD if it asks for one). Settings come from config/local.yaml
or BLIP3O_CONFIG, secrets from the environment (config/.env.example). Start one per GPU; any number may share one
Redis.`;

async function main(): Promise<void> {
  handleUsage(process.argv.slice(2), USAGE);
  const config = loadConfig();
  const secrets = loadSecrets();
  const log = createLogger('worker', config.logLevel);
  setRedisLogger(log);
  const fromRoot = (p: string) => (isAbsolute(p) ? p : resolve(repoRoot, p));

  // SIGTERM/SIGINT from the start. Before the jobs worker runs: a stop during model setup stops the conversion child,
  // releases the setup lock and exits 0 (worker/setup.ts SetupStopped, below); at any other start-up step there is
  // nothing to hand back, so the worker exits 0 at once. Once jobs run, `stopRunning` (set below) stops gracefully.
  const setupStop = new AbortController();
  let settingUp = false;
  let stopRunning: ((reason: NodeJS.Signals | 'a model thread lost', exitCode?: 0 | 1) => Promise<void>) | undefined;
  // Set by stopRunning: hands the running jobs back now, without waiting out the grace; false when there are none.
  let handBackNow: ((why: string) => boolean) | undefined;
  let stopRequested = false;
  const onSignal = (signal: NodeJS.Signals) => {
    // Asked again while stopping (a second Ctrl-C, `docker compose stop` run twice): the running jobs go back to the
    // queue now, for another worker; asked again after that, or with nothing to hand back, the worker exits at once.
    if (stopRequested) {
      if (handBackNow?.('asked again to stop: handing the running jobs back now')) return;
      log.fatal({ signal }, 'asked again to stop: exiting now');
      process.exit(1);
    }
    stopRequested = true;
    if (stopRunning) return void stopRunning(signal);
    log.info({ signal }, settingUp ? 'stopping during model setup' : 'stopping during start-up');
    if (settingUp) setupStop.abort(signal); // ensureModel rejects with SetupStopped once the child is gone and the lock released
    else process.exit(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  // Health first: /healthz answers during a first start's download and conversion; /readyz waits for the jobs worker.
  const metrics = createMetrics('worker');
  let acceptingJobs = false;
  const health = await serveHealth(
    {
      host: config.http.host,
      port: config.worker.healthPort,
      registry: metrics.registry,
      readiness: { jobs: () => acceptingJobs || (stopRequested ? 'stopping: finishing running jobs, taking no new ones' : 'starting: model setup or pipeline load in progress') },
    },
    log,
  );
  // Redis before the model: a refused REDIS_URL (credentials, certificate) ends the start at once, saying so, not
  // after a first start's hours of download and conversion.
  const redis = createRedis(secrets.REDIS_URL, 'worker');
  await waitForRedis(redis, secrets.REDIS_URL);

  // Model fetch/convert (worker/setup.ts); a pipeline module swapped in by config (the tests' double) brings its own.
  settingUp = true;
  const setup = fromRoot(config.worker.pipelineModule) === fromRoot(SHIPPED_PIPELINE) ? await ensureModel(config, secrets, log, { root: repoRoot, signal: setupStop.signal }) : undefined;
  settingUp = false;
  if (stopRequested) process.exit(0); // asked to stop as the setup finished
  if (setup) reportExecutionProvider(metrics, setup.provider, config.model.executionProvider);

  const pipelineOptions: PipelineOptions = {
    modelDir: fromRoot(config.model.onnxDir),
    dtype: config.model.dtype,
    // The provider the start-up probe settled on, so every session in every thread uses the one reported and logged.
    executionProvider: setup?.provider ?? config.model.executionProvider,
    intraOpThreads: config.model.intraOpThreads,
    understanding: {
      minPixels: config.understanding.minPixels,
      maxPixels: config.understanding.maxPixels,
      maxInputPixels: config.understanding.maxInputPixels,
      maxAspectRatio: config.understanding.maxAspectRatio,
    },
    maxBatch: { ...config.worker.maxBatch },
    extra: { ...config.worker.pipelineExtra },
  };
  const host = await ThreadHost.start({
    size: config.worker.concurrency,
    maxBatch: config.worker.maxBatch,
    pipelineModule: fromRoot(config.worker.pipelineModule),
    pipelineOptions,
    abortGraceMs: config.worker.abortGraceMs,
    respawnBaseMs: config.worker.threadRestartMs,
    log,
    // A thread that cannot be restarted (the GPU lost): its jobs would wait here for ever while this worker looks
    // ready. Stop, handing every job back at once for other workers, and exit 1 for the supervisor to start it again.
    onThreadLost: (e) => {
      log.fatal({ err: e.message }, 'a model thread could not be restarted: handing the jobs back and exiting so that the worker is restarted');
      if (!stopRunning || stopRequested) process.exit(1);
      stopRequested = true;
      void stopRunning('a model thread lost', 1);
      handBackNow?.('a model thread is lost: handing the running jobs back now');
    },
  });

  const subscriber = createRedis(secrets.REDIS_URL, 'worker-cancel');
  const blobs = createBlobStore(config, redis);
  // Result cache, single-flight followers (worker/after-job.ts): results are stored under this worker's model identity.
  const manifestHash = modelIdentity(setup?.onnxDir, config.worker.pipelineModule);
  const afterJob = createAfterJob({ config, redis, blobs, log, manifestHash });
  // Fair scheduling (src/scheduling/fair.ts): first tell the scheduler a job started, which releases its channel's
  // next job; a job of a paused channel is parked again (DelayedError) instead of run. The processor runs this hook
  // first, its round trips alongside the job's own checks.
  const jobsQueue = createJobsQueue(config, redis);
  const scheduler = createFairScheduler(redis, config, jobsQueue);
  const usage = new Usage(redis, config);
  const start = async (job: Job<JobRequest>, token: string | undefined) => {
    // the job's cost for fair scheduling: its estimate now, from the latest measurements of jobs like it
    const request = JobRequest.safeParse(job.data);
    const cost = request.success ? usage.costUnits(await usage.estimate(request.data)) : undefined;
    await startOrHold(scheduler, job, token, cost);
  };
  const processor = createProcessor({ config, redis, blobs, host, log, afterHandOver: afterJob.afterHandOver, start });
  // Jobs of channels with a retention TTL are deleted at their deadline by every bot's sweep and by this one: while no
  // bot runs (all stopped, an upgrade), what was delivered before is still deleted on time (src/jobs/retention.ts).
  const retention = new Retention(redis, config, log);
  // The jobs this worker runs, for the cancel flags' re-check (src/jobs/cancel.ts: a cancel published while the
  // subscriber was disconnected is lost, its flag is not).
  const running = new Set<string>();
  const processTracked: typeof processor.process = async (job, token, signal) => {
    running.add(job.id!);
    try {
      return await processor.process(job, token, signal);
    } finally {
      running.delete(job.id!);
    }
  };
  const worker = createQueueWorker<JobRequest, ProcessOutcome>(config, redis, QueueNames.jobs, processTracked, {
    // One job per run the threads can hold: with worker.maxBatch > 1 a thread takes several jobs of one stage at
    // once (docs/batching.md). Jobs that wait for room keep their locks renewed by BullMQ like running ones.
    concurrency: host.maxRuns,
  });
  // From here a stop closes the jobs worker: running jobs get worker.stopGraceMs to finish, then are handed back.
  let watchdog: { stop(): void } | undefined;
  let unsubscribe: (() => Promise<void>) | undefined;
  stopRunning = async (signal, exitCode = 0) => {
    acceptingJobs = false; // /readyz: a stopping worker takes no new job (it only finishes or hands back its running ones)
    const graceMs = config.worker.stopGraceMs;
    log.info({ signal, graceMs }, 'shutting down: finishing running jobs');
    watchdog?.stop();
    // Jobs still running after the grace are aborted with HAND_BACK: the processor moves each back to wait, its lock
    // released, and another worker takes it (an idle one within 5 s: HAND_BACK says why; not failed, nothing delivered,
    // no stall counted). The model thread stops within one step (or is terminated after worker.abortGraceMs), well
    // inside compose's 60 s.
    let handedBack = false;
    const handBack = (why: string) => {
      if (handedBack || runningJobsOf(worker) === 0) return false;
      handedBack = true;
      clearTimeout(graceTimer);
      log.warn({ running: runningJobsOf(worker), graceMs }, why);
      worker.cancelAllJobs(HAND_BACK);
      return true;
    };
    const graceTimer = setTimeout(() => handBack('jobs still running after the stop grace: handing them back'), graceMs);
    handBackNow = handBack;
    // Every step below that speaks to Redis waits for it (maxRetriesPerRequest: null): with Redis down or failing over
    // the stop would never end, silent until compose's SIGKILL. Past its bound it says what it waited for and exits 1;
    // a job it could not hand back is taken by another worker once its lock expires (queue.lockDurationMs).
    const stop = stopDeadline(log, graceMs + config.worker.abortGraceMs + STOP_CLOSE_MS, () => redis, () => ({ signal, running: runningJobsOf(worker) }));
    stop.waitingFor = 'the jobs worker to close, its running jobs finished or handed back';
    await worker.close();
    clearTimeout(graceTimer);
    stop.waitingFor = 'the queues and the model threads to close';
    await unsubscribe?.();
    await processor.close();
    await afterJob.close();
    await retention.stop();
    await jobsQueue.close();
    await host.close();
    await health?.close();
    stop.waitingFor = 'the Redis connections to close';
    await Promise.all([closeRedis(subscriber), closeRedis(redis)]);
    process.exit(exitCode);
  };

  observeJobWorker(metrics, worker, () => setup?.provider ?? 'unknown');
  trackQueue(metrics, jobsQueue);
  worker.on('failed', (job, err) => {
    if (!job) return;
    void job.getState().then(async (state) => {
      if (state === 'failed') await processor.onFinallyFailed(job, err);
    }).catch((e: unknown) => log.error({ jobId: job.id, err: (e as Error).message }, 'could not hand over a failure'));
  });
  worker.on('error', (err) => logWorkerError(log, err, 'worker error'));
  worker.on('stalled', (jobId) => log.warn({ jobId }, 'job stalled (its worker died); requeued'));
  unsubscribe = await onCancel(subscriber, config, (jobId) => {
    if (worker.cancelJob(jobId, 'cancelled')) log.info({ jobId }, 'cancelling');
  }, { redis, running: () => running });
  await worker.waitUntilReady();
  await afterJob.start(`${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`);
  if (stopRequested) return; // stopping already (stopRunning): no watchdog, not ready
  retention.start();

  acceptingJobs = true;
  health?.setCheck('redis', async () => (await redis.ping()) === 'PONG' || 'Redis did not answer PING');

  // A fetch loop that stops taking jobs while they wait and this worker has room (a library's bug has done it to
  // delivery workers twice): exit, and let the supervisor start the worker again; the jobs wait in Redis.
  watchdog = watchFetchLoop(worker, {
    redis,
    stallMs: config.queue.fetchStallMs,
    onStuck: (waitedMs, ready) => {
      log.fatal({ waitedMs, ready }, `this worker has taken no job for ${Math.round(waitedMs / 1000)} s while ${ready} waited and it had room: exiting so that it is restarted`);
      process.exit(1);
    },
  });

  log.info({ concurrency: config.worker.concurrency, maxBatch: config.worker.maxBatch, pipeline: config.worker.pipelineModule, pid: process.pid }, 'worker ready');
}

main().catch((e: unknown) => {
  if (e instanceof SetupStopped) process.exit(0); // a requested stop during model setup: the lock is released, the child gone
  console.error(e instanceof Error ? `worker failed to start: ${e.message}` : e);
  process.exit(1);
});
