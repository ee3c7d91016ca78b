// The progress relay: listens to the jobs queue's events and forwards progress to the PlatformPort whose
// platform (and, for the CLI, clientId) matches the job's destination, throttled per job. While a job this
// core submitted is still waiting, every job start elsewhere recomputes its queue position ("queued, 3rd").
// Several bot instances of one platform may run: each job's progress is shown by one of them only (a lease in
// Redis, taken by the submitting instance and renewed on every edit; another instance takes over if it stops, or dies:
// every instance says it is alive every few seconds, and a lease whose holder has not is free), and edits are ordered
// before the result through the ledger (src/jobs/ledger.ts), so a late edit never covers it.
import type { QueueEvents } from 'bullmq';
import { isRedisConnectionError, NOW_MS_LUA, runScript, type Redis } from '../../src/redis.ts';
import { JobProgress, type Destination } from '../../src/jobs/contract.ts';
import { HELD_ELSEWHERE_LUA, type DeliveryLedger } from '../../src/jobs/ledger.ts';
import { noWorkerReady } from '../../src/cache/results.ts';
import { HELD, queuePlaces, type QueuePlaceShown } from '../../src/jobs/position.ts';
import type { JobsQueue } from '../../src/jobs/queue.ts';
import type { Logger } from '../../src/log.ts';
import type { PlatformPort } from './port.ts';
import type { ShownProgress } from './stage-labels.ts';

export interface RelayDeps {
  queue: JobsQueue;
  events: QueueEvents;
  redis: Redis;
  /** The port for a destination, or undefined when this process does not serve it. */
  portFor(destination: Destination): PlatformPort | undefined;
  /** Minimum milliseconds between two progress calls for one job on a platform. */
  intervalMs(destination: Destination): number;
  ledger: DeliveryLedger;
  /** Queue places of waiting jobs (src/jobs/position.ts queuePlaces); a test counts the passes through it. */
  queuePositions?: typeof queuePlaces;
  /**
   * GPU workers ready (ResultCache.readyWorkers, cached): a place pushed while none is says so, as the first reply did,
   * and every waiting job's place is pushed again when that changes (a worker that died, one that came back).
   */
  readyWorkers?: () => Promise<number>;
  /** How often, while jobs wait, readyWorkers is asked whether that changed (default WORKER_CHECK_MS; tests). */
  workerCheckMs?: number;
  /** How long at most an edit waits while another instance holds the job's lease (default LEASE_RETRY_MS; tests). */
  leaseRetryMs?: number;
  /** How long this instance counts as alive after each time it says so (default OWNER_ALIVE_MS; tests). */
  ownerAliveMs?: number;
  /** This bot process, as the owner written into progress leases. */
  instanceId: string;
  /** Key prefix (config.queue.prefix). */
  prefix: string;
  log: Logger;
}

/** How long a progress lease outlives its owner's last edit before another instance may take the job over. */
export const PROGRESS_LEASE_MS = 60_000;
/**
 * How long an instance counts as alive after it last said so (every third of this): a lease whose holder has not said
 * so for longer is free, so the jobs of a bot that died (SIGKILL, a crash, its host gone) show their progress in
 * another instance about this long after, not PROGRESS_LEASE_MS.
 */
export const OWNER_ALIVE_MS = 15_000;
/**
 * How often at most an instance asks again for a job whose lease another holds: an owner that stops gracefully hands
 * its leases back (stop()), and the job's progress shows again within this, not PROGRESS_LEASE_MS, later.
 */
export const LEASE_RETRY_MS = 5_000;
/**
 * Least milliseconds between the starts of two queue-position passes. Positions reach users through edits throttled
 * per job, so passes are also at least half the shortest edit interval of the jobs they cover apart (Discord and
 * Slack: 750 ms at the default 1,500; a CLI's 100 ms leaves this): more would show nothing new, and a position shown is
 * at most that half interval older than the pass before the edit.
 */
export const POSITION_REFRESH_MS = 250;
/**
 * How often, while this instance's jobs wait, it asks whether GPU workers came or went. readyWorkers reads Redis at most
 * every cache.manifestRefreshMs, and a worker counts as gone ≈ 3 of those after it stopped; this adds at most its own.
 */
export const WORKER_CHECK_MS = 5_000;

// KEYS[1] lease key, KEYS[2] alive hash; ARGV[1] instance id; ARGV[2] lease ms. Take the lease if free, ours (renewing
// it) or its holder's alive time is over; 1 = ours.
const CLAIM_LUA = `${HELD_ELSEWHERE_LUA}
if heldElsewhere(KEYS[1], ARGV[1], KEYS[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1`;

// KEYS[1] alive hash; ARGV[1] instance id; ARGV[2] alive ms. This instance is alive for ARGV[2] more (Redis's clock);
// entries already past their time are dropped (a missing entry reads as gone too), and the hash outlives the last
// instance by a little.
const ALIVE_LUA = `${NOW_MS_LUA}
local now = nowMs()
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if tonumber(entries[i + 1]) < now then redis.call('HDEL', KEYS[1], entries[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 4 * tonumber(ARGV[2]))
return 1`;

// KEYS[1] alive hash, then lease keys; ARGV[1] instance id. This instance is no longer alive, and each lease it holds
// is deleted; → how many.
const RELEASE_LUA = `
redis.call('HDEL', KEYS[1], ARGV[1])
local n = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) n = n + 1 end
end
return n`;

interface Tracked {
  destination: Destination;
  port: PlatformPort;
  /** When the last edit was handed to the port (or, not shown, tried): the next waits its interval from then. */
  lastAt: number;
  /** The newest progress not shown yet: shown once the interval is over and no edit of the job is in flight. */
  pending?: ShownProgress;
  timer?: NodeJS.Timeout;
  /**
   * The edit of this job in flight (the ledger's round trip, the platform's answer), if any: the next waits for its
   * end, or the ledger's showingSlotMs (SHOWING_SLOT_MS, 10 s) at most from when the ledger gave it the slot (a
   * platform that never answers: the slot lapses then too).
   */
  editing?: ShownProgress;
  /** The place last shown (HELD: the channel is paused). */
  lastPosition?: QueuePlaceShown;
  started: boolean;
  /** Another instance holds this job's progress lease until then (ms since epoch): nothing is tried before it. */
  leasedElsewhereUntil?: number;
}

export class ProgressRelay {
  private readonly jobs = new Map<string, Tracked | null>(); // null: looked up, not ours
  private readonly listeners: [string, (...args: never[]) => void][] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private workerCheck: NodeJS.Timeout | undefined;
  /** Whether no GPU worker was ready at the last check (undefined: not asked yet). */
  private noWorker: boolean | undefined;
  /** The next pass pushes every waiting job's place, changed or not (the no-worker note came or went). */
  private pushAll = false;

  constructor(private readonly deps: RelayDeps) {}

  start(): void {
    const aliveMs = this.deps.ownerAliveMs ?? OWNER_ALIVE_MS;
    const sayAlive = () =>
      // Stryker disable next-line StringLiteral: equivalent, any name no other script on the connection uses defines the same command
      void runScript(this.deps.redis, 'blip3oProgressAlive', ALIVE_LUA, [this.aliveKey], [this.deps.instanceId, aliveMs])
        .catch((e: unknown) => {
          // Redis unreachable is logged once by src/redis.ts; the next beat says it again
          if (!isRedisConnectionError(e)) this.deps.log.warn({ err: (e as Error).message }, 'could not say this bot is alive; other instances may take its jobs\' progress over');
        });
    sayAlive();
    this.heartbeat = setInterval(sayAlive, aliveMs / 3).unref();
    // Stryker disable next-line ConditionalExpression: a relay without readyWorkers (tests) has nothing to check
    if (this.deps.readyWorkers) this.workerCheck = setInterval(() => void this.checkWorkers(), this.deps.workerCheckMs ?? WORKER_CHECK_MS).unref();
    const on = <A extends unknown[]>(event: string, fn: (...args: A) => void) => {
      this.deps.events.on(event as 'progress', fn as never);
      this.listeners.push([event, fn as never]);
    };
    on('progress', ({ jobId, data }: { jobId: string; data: unknown }) => void this.onProgress(jobId, data));
    on('active', ({ jobId }: { jobId: string }) => void this.onActive(jobId));
    const done = ({ jobId }: { jobId: string }) => this.forget(jobId);
    on('completed', done);
    on('failed', done);
    // A job a worker took that waits again: its worker was lost (BullMQ's stall check put it back in line), or its
    // channel was paused just before (the worker parked it again, src/scheduling/fair.ts startOrHold). Its status showed
    // the last thing before ("Drawing: step 12/30", "Queued: 1st in line.") for as long as it waited; now its place,
    // or that its channel is paused, is pushed again, and from then on like any waiting job's.
    const waitsAgain = ({ jobId }: { jobId: string }) => {
      const t = this.jobs.get(jobId);
      if (!t?.started) return;
      t.started = false;
      t.lastPosition = undefined;
      void this.onActive(undefined);
    };
    on('stalled', waitsAgain);
    on('delayed', waitsAgain);
    // A job released to the workers (submitted, or its channel's turn came): under fair scheduling one of another channel
    // goes ahead of the jobs a busy channel still has waiting, and their places shown were one too good until the next start.
    on('waiting', () => {
      if ([...this.jobs.values()].some((t) => t !== null && !t.started)) void this.onActive(undefined);
    });
    // a removed (cancelled, purged) job moves everyone behind it up: push the new positions now
    on('removed', ({ jobId }: { jobId: string }) => {
      this.forget(jobId);
      void this.onActive(jobId);
    });
  }

  /**
   * Stops relaying, and hands back the progress leases of the jobs this instance shows: a graceful stop (a restart, a
   * deploy, `docker compose restart`) lets the next instance, or this one started again, show their progress at once
   * rather than after PROGRESS_LEASE_MS, and says it is no longer alive. One that dies hands nothing back; its leases
   * are free once its alive time (OWNER_ALIVE_MS) is over.
   */
  async stop(): Promise<void> {
    clearInterval(this.heartbeat);
    clearInterval(this.workerCheck);
    for (const [event, fn] of this.listeners) this.deps.events.off(event as 'progress', fn as never);
    for (const t of this.jobs.values()) if (t?.timer) clearTimeout(t.timer);
    // Every job it looked at: the script deletes only the leases that are this instance's (10,000 jobs: 12 ms of Redis, once, measured).
    const leases = [...this.jobs.keys()].map((jobId) => this.leaseKey(jobId));
    this.jobs.clear();
    // Stryker disable next-line StringLiteral: equivalent, any name no other script on the connection uses defines the same command
    await runScript(this.deps.redis, 'blip3oProgressRelease', RELEASE_LUA, [this.aliveKey, ...leases], [this.deps.instanceId]).catch(() => undefined); // else they lapse
  }

  /** Called by submit for jobs this process enqueued, so queue positions are pushed while they wait. */
  track(jobId: string, destination: Destination, position: number | undefined): void {
    const port = this.deps.portFor(destination);
    if (!port) return;
    this.jobs.set(jobId, { destination, port, lastAt: 0, lastPosition: position, started: false });
    void this.claim(jobId).catch(() => undefined); // the submitter shows this job's progress while it lives
  }

  /** Take or renew this job's progress lease, unless another live instance holds it (then its edits wait, in send()). */
  private async claim(jobId: string): Promise<void> {
    // Stryker disable next-line StringLiteral: equivalent, any name no other script on the connection uses defines the same command
    await runScript(this.deps.redis, 'blip3oProgressClaim', CLAIM_LUA, [this.leaseKey(jobId), this.aliveKey], [this.deps.instanceId, PROGRESS_LEASE_MS]);
  }

  private leaseKey(jobId: string): string {
    return `${this.deps.prefix}:progress-owner:${jobId}`;
  }

  /** Every bot instance → until when it is alive (Redis ms): ALIVE_LUA. */
  private get aliveKey(): string {
    return `${this.deps.prefix}:progress-alive`;
  }

  private forget(jobId: string): void {
    const t = this.jobs.get(jobId);
    if (t?.timer) clearTimeout(t.timer);
    this.jobs.delete(jobId);
  }

  private async lookup(jobId: string): Promise<Tracked | null> {
    if (this.jobs.has(jobId)) return this.jobs.get(jobId) ?? null;
    const job = await this.deps.queue.getJob(jobId);
    // A job gone or finished by now has nothing more to show, and its end may have been handled during this round trip
    // (a report and the end in one batch of events): stored, it was never forgotten (a bot's memory grew by one job
    // per such report for its whole life; test/unit/bots/core/progress-memory.redis.test.ts).
    if (!job || job.finishedOn !== undefined) return null;
    const destination = job.data?.destination as Destination | undefined;
    const port = destination ? this.deps.portFor(destination) : undefined;
    // Stryker disable next-line BooleanLiteral: equivalent, its one caller (onProgress) marks the job started at once
    const tracked = destination && port ? { destination, port, lastAt: 0, started: true } : null;
    this.jobs.set(jobId, tracked);
    return tracked;
  }

  private async onProgress(jobId: string, data: unknown): Promise<void> {
    const parsed = JobProgress.safeParse(data);
    if (!parsed.success) return;
    try {
      const t = await this.lookup(jobId);
      // Not if the job ended meanwhile: its completed event, read in the same batch as this report, ran forget() first.
      if (!t || this.jobs.get(jobId) !== t) return;
      t.started = true;
      this.send(t, parsed.data);
    } catch (e) {
      this.deps.log.warn({ jobId, err: (e as Error).message }, 'progress relay lookup failed');
    }
  }

  /** While jobs wait: whether GPU workers came or went since the last check; if so, every waiting place is pushed again. */
  private async checkWorkers(): Promise<void> {
    // Stryker disable next-line ConditionalExpression,MethodExpression: equivalent for what users see, it saves a (cached) read while nothing waits
    if (![...this.jobs.values()].some((t) => t !== null && !t.started)) return;
    const noWorker = await this.noWorkerReady();
    const changed = this.noWorker !== undefined && noWorker !== this.noWorker;
    this.noWorker = noWorker;
    if (!changed) return;
    this.pushAll = true;
    await this.onActive(undefined);
  }

  /** Whether no GPU worker is ready, by the rule the first reply follows (src/cache/results.ts). */
  private async noWorkerReady(): Promise<boolean> {
    return this.deps.readyWorkers ? noWorkerReady(this.deps.readyWorkers) : false;
  }

  private recomputing = false;
  // Stryker disable next-line BooleanLiteral: equivalent, each pass sets it false before it begins
  private recomputeAgain = false;
  /** When the next pass may begin (ms since epoch). */
  private nextPassAt = 0;

  /**
   * A job started (or was removed): positions behind it moved. A pass reads every waiting job's place in one round
   * trip, but Redis works for each of them (its script blocks every other client meanwhile), so passes begin at least
   * POSITION_REFRESH_MS, five times the last one's duration (at most a fifth of the time goes to them) and half the
   * shortest edit interval of the jobs it covered apart. A start sooner than that waits for the next pass, which covers
   * every start until it begins.
   */
  private async onActive(activeId: string | undefined): Promise<void> {
    const t = activeId === undefined ? undefined : this.jobs.get(activeId);
    if (t) t.started = true;
    if (this.recomputing) {
      this.recomputeAgain = true;
      return;
    }
    this.recomputing = true;
    try {
      do {
        const wait = this.nextPassAt - Date.now();
        // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, a timer of 0 or less fires at once (one macrotask later)
        if (wait > 0) await new Promise((r) => setTimeout(r, wait).unref()); // never what keeps a stopping bot alive
        this.recomputeAgain = false; // the starts until now are this pass's
        const began = Date.now();
        const shortestInterval = await this.pushPositions();
        this.nextPassAt = began + Math.max(POSITION_REFRESH_MS, 5 * (Date.now() - began), shortestInterval / 2);
      } while (this.recomputeAgain);
    } finally {
      this.recomputing = false;
    }
  }

  /** Pushes the waiting jobs' new positions; resolves to the shortest edit interval among them (0: none waits). */
  private async pushPositions(): Promise<number> {
    const pushAll = this.pushAll;
    this.pushAll = false;
    const waiting = [...this.jobs].filter((e): e is [string, Tracked] => e[1] !== null && !e[1].started);
    if (waiting.length === 0) return 0;
    const positionsOf = this.deps.queuePositions ?? queuePlaces;
    const positions = await positionsOf(this.deps.redis, this.deps.queue, waiting.map(([jobId]) => jobId)).catch(() => []);
    const noWorker = await this.noWorkerReady();
    for (const [i, [jobId, w]] of waiting.entries()) {
      const position = positions[i];
      if (w.started || position === undefined || (position === w.lastPosition && !pushAll)) continue;
      w.lastPosition = position;
      // ShownProgress (stage-labels.ts): held in a paused channel, the job has no place; its user reads why it waits
      const place = position === HELD ? { paused: true as const } : { queuePosition: position, ...(noWorker ? { noWorker } : {}) };
      this.send(w, { v: 1, jobId, stage: 'queued', step: 0, total: 0, ...place });
    }
    return Math.min(...waiting.map(([, w]) => this.deps.intervalMs(w.destination)));
  }

  /**
   * Leading edge now, then at most one call per interval carrying the newest progress: the trailing one is held, never
   * dropped, and shown once the interval since the last edit was handed to the port is over and that edit has ended
   * (one edit of a job in flight at a time: a second would find the ledger's edit slot taken, and be dropped). Spaced
   * by when an edit reached the port, not by when it was started: a round trip slower before one edit than before the
   * next shortened their gap below the interval, and the Discord port then dropped the newer (the last state before a
   * silent stretch, the VAE decode, stayed stale for seconds; found by an audit). While another instance holds the
   * job's lease, the newest waits until that lease would lapse or its holder's alive time end, or leaseRetryMs at
   * most: one try per few seconds, not one per interval (a takeover shows it then: at once after its owner stopped
   * gracefully and handed the lease back, once its alive time ran out if it died).
   */
  private send(t: Tracked, progress: ShownProgress): void {
    t.pending = progress;
    this.flush(t);
  }

  /** Shows the pending progress if its time has come; else arms the timer (one at a time) that asks again. */
  private flush(t: Tracked): void {
    if (!t.pending || t.editing || t.timer) return; // the edit in flight, or the timer, asks again at its end
    const wait = Math.max(t.lastAt + this.deps.intervalMs(t.destination), t.leasedElsewhereUntil ?? 0) - Date.now();
    // Stryker disable next-line EqualityOperator: equivalent, at exactly 0 the timer fires one macrotask later and shows it then
    if (wait > 0) {
      t.timer = setTimeout(() => {
        t.timer = undefined;
        this.flush(t); // asks the clock again: a timer may fire up to a millisecond before Date.now() reaches its time
      }, wait);
      return;
    }
    const progress = t.pending;
    t.pending = undefined;
    this.fire(t, progress);
  }

  private fire(t: Tracked, progress: ShownProgress): void {
    t.lastAt = Date.now();
    t.editing = progress;
    let cap: NodeJS.Timeout | undefined;
    const ended = () => {
      if (t.editing !== progress) return; // counted over already
      clearTimeout(cap);
      t.editing = undefined;
      // Not for a job forgotten meanwhile (it ended, or the relay stopped): nothing more of it is shown.
      if (this.jobs.get(progress.jobId) === t) this.flush(t);
    };
    const show = async () => {
      // Skipped when another instance holds this job's progress lease (ours is taken or renewed in the same round
      // trip), and never over the result: skipped once its delivery has begun, and a delivery waits for this edit to
      // end; nor once the job is finished or gone (purged by the retention sweep, which deletes the ledger's marks too).
      const lease = { key: this.leaseKey(progress.jobId), owner: this.deps.instanceId, ms: PROGRESS_LEASE_MS, alive: this.aliveKey, job: this.deps.queue.toKey(progress.jobId) };
      const edit = () => {
        // From when the ledger gives the edit its slot, which lapses after its showingSlotMs: a platform that never answers
        // holds the next edit so long at most. Not before: while the ledger's script waits for Redis (down), the next
        // edit's would wait behind it, run right after it and find the slot taken; the newest step was dropped, the one
        // before it left shown after the outage (found by an audit, 2026-12-07).
        // + 250 ms: the next edit, let go at the cap, must find the ledger's slot lapsed, not just about to (it was dropped)
        cap = setTimeout(ended, this.deps.ledger.showingSlotMs + 250).unref();
        const shown = t.port.showProgress(t.destination, progress);
        t.lastAt = Date.now(); // the port has it (and read its clock) now: the interval runs from here
        return shown;
      };
      const { leasedElsewhereMs } = await this.deps.ledger.whileLeasedAndNotDelivered(progress.jobId, edit, lease);
      if (leasedElsewhereMs !== undefined) t.leasedElsewhereUntil = Date.now() + Math.min(leasedElsewhereMs, this.deps.leaseRetryMs ?? LEASE_RETRY_MS);
    };
    show()
      .catch((e: unknown) => this.deps.log.warn({ jobId: progress.jobId, err: (e as Error).message }, 'showProgress failed'))
      .finally(ended);
  }
}
