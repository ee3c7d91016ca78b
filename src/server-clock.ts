// Redis's clock, read from any process: the one clock that bots and workers on different hosts share. A deadline one
// process writes and another compares (a retention channel's, src/jobs/retention.ts) is on this clock, so hosts whose
// own clocks differ by minutes (no NTP, a VM resumed after suspend) still agree on it. Scripts read it themselves
// (NOW_MS_LUA in src/redis.ts); code outside a script asks this.
//
//   now() = this host's clock + offset, offset = Redis TIME − this host's clock at the middle of the TIME round trip
//
// The offset is read again every SAMPLE_MS, and at once when this host's clock jumped against the monotonic clock
// (stepped by an admin or NTP, or a VM resumed): so a reading is off by at most half a TIME round trip plus what the
// host's clock drifted since (ppm: milliseconds).
//
// On a Redis Cluster each master is a host with its own clock, and a TIME without a key goes to any of them: there it
// is read through a script routed by a key of the deployment's slot (`routeKey`), on the master whose clock the
// scripts read and whose TTLs run (test/unit/src/server-clock-cluster.redis.test.ts).
import { isCluster, runScript, type Redis } from './redis.ts';

/** How often the offset is read again while nothing else says so. */
export const SAMPLE_MS = 30_000;
/** A jump of this host's clock against the monotonic clock that makes the next reading sample the offset again. */
const JUMP_MS = 1_000;
/** TIME on the node that holds KEYS[1] (never written). */
const TIME_LUA = `return redis.call('TIME')`;

export class ServerClock {
  private offsetMs = 0;
  private sampled: { at: number; monotonicAt: number } | undefined;
  private sampling: Promise<void> | undefined;

  /**
   * `hostNow`: this host's clock (a seam: tests pass one that runs ahead or behind). `monotonicNow`: a clock that does
   * not jump, to notice when the host's one did. `routeKey`: on a Cluster, a key in the deployment's slot (forDeployment).
   */
  constructor(
    private readonly redis: Pick<Redis, 'time'> | Redis,
    private readonly hostNow: () => number = Date.now,
    private readonly monotonicNow: () => number = () => performance.now(),
    private readonly routeKey?: string,
  ) {}

  /** The clock of the deployment whose keys start with `prefix` (queue.prefix: a hash tag on a Cluster). */
  static forDeployment(redis: Redis, prefix: string): ServerClock {
    return new ServerClock(redis, undefined, undefined, `${prefix}:server-clock`);
  }

  /** Milliseconds since the epoch by Redis's clock. Without an answer from Redis, the last offset read (0 at first). */
  async now(): Promise<number> {
    if (this.stale()) {
      this.sampling ??= this.sample().finally(() => (this.sampling = undefined));
      await this.sampling;
    }
    return Math.round(this.hostNow() + this.offsetMs);
  }

  private stale(): boolean {
    if (!this.sampled) return true;
    const hostPassed = this.hostNow() - this.sampled.at;
    const monotonicPassed = this.monotonicNow() - this.sampled.monotonicAt;
    return monotonicPassed >= SAMPLE_MS || Math.abs(hostPassed - monotonicPassed) >= JUMP_MS;
  }

  private async sample(): Promise<void> {
    const before = this.hostNow();
    const time = await this.readTime().catch(() => undefined);
    if (!time) return; // Redis away: the last offset stands, and the next reading asks again
    const at = this.hostNow();
    const [seconds, micros] = time;
    this.offsetMs = Number(seconds) * 1000 + Number(micros) / 1000 - (before + at) / 2;
    this.sampled = { at, monotonicAt: this.monotonicNow() };
  }

  private readTime(): Promise<readonly (string | number)[]> {
    const redis = this.redis as Redis;
    if (this.routeKey === undefined || !isCluster(redis)) return this.redis.time();
    return runScript(redis, 'serverTime', TIME_LUA, [this.routeKey], []) as Promise<string[]>;
  }
}
