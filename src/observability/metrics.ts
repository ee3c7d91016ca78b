// Prometheus metrics (prom-client), one registry per process. Bots and workers both make one with
// `createMetrics(component)` and serve it on /metrics (http.ts); hooks.ts feeds it from BullMQ events, so
// the job code itself stays free of metric calls. Names follow Prometheus conventions: base units (seconds),
// `_total` for counters. Label values are bounded: kinds, stages, platforms, outcomes and error codes; never a
// channel, user or workspace id (unbounded, and they say who used the bot).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Component = 'bot' | 'worker';

/** Seconds: 0.1 s … ~1.8 h, wide enough for a queue wait behind a busy GPU and a cold first start. */
const WAIT_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6400];
/** Seconds per pipeline stage and per job: 10 ms … 15 min (queue.jobTimeoutMs). */
const STAGE_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 900];

export interface Metrics {
  readonly registry: Registry;
  /** Jobs (or deliveries) waiting, active, delayed… per queue; read from Redis at scrape time. */
  readonly queueDepth: Gauge<'queue' | 'state'>;
  /** Enqueue → a worker picks it up. */
  readonly queueWait: Histogram<'queue' | 'kind'>;
  /** Time in each pipeline stage (conditioning, features, decoding, encoding, answering, loading). */
  readonly stageSeconds: Histogram<'kind' | 'stage'>;
  /** Whole job on the worker, by outcome (succeeded | failed | cancelled). */
  readonly jobSeconds: Histogram<'kind' | 'outcome'>;
  /** Accelerator time spent per platform, summed over the compute stages (per channel: src/accounting/usage.ts). */
  readonly gpuSeconds: Counter<'platform' | 'provider'>;
  /** Results posted to the chat platform, by outcome (delivered | duplicate | elsewhere: the requester's DM | nowhere | retried | failed). */
  readonly deliveries: Counter<'platform' | 'outcome'>;
  /** Failed job or delivery attempts by reason (an ErrorCode, or the error's name). */
  readonly failures: Counter<'component' | 'queue' | 'reason'>;
  /**
   * Commands a bot answered with a failure that is not the user's (bots/core/submit.ts onCommandFailed): a "Something
   * went wrong (ref …)" by its error's code or name, or redis_unavailable | redis_full | answer_unknown.
   */
  readonly commandFailures: Counter<'platform' | 'command' | 'reason'>;
  /** The model's prompt-match score of each delivered image (checks.match), and the extra images drawn for it. */
  readonly matchScore: Histogram<'kind'>;
  readonly rerolls: Counter<'kind'>;
  /** 1 for the execution provider this worker runs the model on (cuda | webgpu | cpu). */
  readonly executionProvider: Gauge<'provider' | 'configured'>;
  /** Result-cache lookups by outcome: hit | miss | joined (single flight) | bypass (workers disagree about the model). */
  readonly cacheLookups: Counter<'outcome'>;
  /** Bytes and entries the result cache holds, read from Redis at scrape time (see trackCache). */
  readonly cacheBytes: Gauge;
  readonly cacheEntries: Gauge;
  /** Adds the result cache to cacheBytes/cacheEntries: `stats` is read at every scrape. */
  trackCache(stats: () => Promise<{ bytes: number; entries: number }>): void;
  /** Adds a queue to `queueDepth`: `counts` is read at every scrape (BullMQ `queue.getJobCounts()`). */
  trackQueue(queue: string, counts: () => Promise<Record<string, number>>): void;
}

export function createMetrics(component: Component, options: { prefix?: string; defaultMetrics?: boolean } = {}): Metrics {
  const prefix = options.prefix ?? 'blip3o_';
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix });
  const registers = [registry];
  const depthSources = new Map<string, () => Promise<Record<string, number>>>();
  const queueDepth = new Gauge({
    name: `${prefix}queue_depth`,
    help: 'Jobs in a queue by state, read from Redis at scrape time',
    labelNames: ['queue', 'state'],
    registers,
    async collect() {
      // A scrape must not fail because Redis blinked: a queue that cannot be read is left out of this scrape.
      const read = await Promise.allSettled([...depthSources].map(async ([queue, counts]) => ({ queue, counts: await counts() })));
      this.reset();
      for (const r of read) {
        if (r.status !== 'fulfilled') continue;
        for (const [state, n] of Object.entries(r.value.counts)) this.set({ queue: r.value.queue, state }, n);
      }
    },
  });
  let cacheStats: (() => Promise<{ bytes: number; entries: number }>) | undefined;
  const readCache = async () => (cacheStats ? await cacheStats().catch(() => undefined) : undefined);
  return {
    registry,
    queueDepth,
    cacheLookups: new Counter({ name: `${prefix}cache_lookups_total`, help: 'Result-cache lookups by outcome (hit, miss, joined, bypass)', labelNames: ['outcome'], registers }),
    cacheBytes: new Gauge({ name: `${prefix}cache_bytes`, help: 'Bytes held by the result cache', registers, async collect() {
      const s = await readCache();
      if (s) this.set(s.bytes);
    } }),
    cacheEntries: new Gauge({ name: `${prefix}cache_entries`, help: 'Entries held by the result cache', registers, async collect() {
      const s = await readCache();
      if (s) this.set(s.entries);
    } }),
    trackCache: (stats) => void (cacheStats = stats),
    trackQueue: (queue, counts) => void depthSources.set(queue, counts),
    queueWait: new Histogram({ name: `${prefix}queue_wait_seconds`, help: 'Seconds from enqueue until a worker started the job', labelNames: ['queue', 'kind'], buckets: WAIT_BUCKETS, registers }),
    stageSeconds: new Histogram({ name: `${prefix}job_stage_seconds`, help: 'Seconds spent in each pipeline stage', labelNames: ['kind', 'stage'], buckets: STAGE_BUCKETS, registers }),
    jobSeconds: new Histogram({ name: `${prefix}job_seconds`, help: 'Seconds a worker spent on a job, by outcome', labelNames: ['kind', 'outcome'], buckets: STAGE_BUCKETS, registers }),
    gpuSeconds: new Counter({ name: `${prefix}gpu_seconds_total`, help: 'Accelerator seconds spent on jobs, per platform', labelNames: ['platform', 'provider'], registers }),
    deliveries: new Counter({ name: `${prefix}deliveries_total`, help: 'Result deliveries to chat platforms, by outcome', labelNames: ['platform', 'outcome'], registers }),
    failures: new Counter({ name: `${prefix}failures_total`, help: 'Failed job and delivery attempts, by reason', labelNames: ['component', 'queue', 'reason'], registers }),
    commandFailures: new Counter({ name: `${prefix}command_failures_total`, help: "Commands answered with a failure that is not the user's, by reason", labelNames: ['platform', 'command', 'reason'], registers }),
    matchScore: new Histogram({ name: `${prefix}prompt_match_score`, help: "The model's P(yes) that a delivered image shows its prompt", labelNames: ['kind'], buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1], registers }),
    rerolls: new Counter({ name: `${prefix}rerolls_total`, help: 'Images drawn again because the first scored below the match threshold', labelNames: ['kind'], registers }),
    executionProvider: new Gauge({ name: `${prefix}execution_provider`, help: 'Execution provider in use (1) and the one configured', labelNames: ['provider', 'configured'], registers }),
  };
}

/** Records the provider the model runs on; call once at start-up, after the first session opened. */
export function reportExecutionProvider(metrics: Metrics, provider: 'cuda' | 'webgpu' | 'cpu', configured: 'auto' | 'cuda' | 'webgpu' | 'cpu'): void {
  metrics.executionProvider.reset();
  metrics.executionProvider.set({ provider, configured }, 1);
}
