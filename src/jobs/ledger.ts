// The delivered-ledger: `<prefix>:delivered:<jobId>` is set once a result has been posted, so a delivery
// job that runs again (bot died after posting but before BullMQ recorded completion, or the worker re-added
// it) is acknowledged without posting twice. TTL = keepFailedSeconds: longer than any delivery job lives.
//
// It also orders progress edits before the result, across bot instances: a progress edit runs inside a short
// "showing" slot and only while no delivery has begun; a delivery first marks "delivering", then waits for a
// slot in flight to end. Whichever of the two Redis writes comes first wins, so no edit lands after a result.
import type { Redis } from 'ioredis';
import type { Config } from '../config/schema.ts';

/** Longest a progress edit may hold off a delivery (a platform answering 429 to the edit, say). */
const SHOWING_SLOT_MS = 10_000;

const RENEW_IF_OWNER = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const DELETE_IF_OWNER = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

export class DeliveryLedger {
  constructor(
    private readonly redis: Redis,
    private readonly config: Pick<Config, 'queue'>,
  ) {}

  private key(jobId: string): string {
    return `${this.config.queue.prefix}:delivered:${jobId}`;
  }
  private deliveringKey(jobId: string): string {
    return `${this.config.queue.prefix}:delivering:${jobId}`;
  }
  private showingKey(jobId: string): string {
    return `${this.config.queue.prefix}:showing:${jobId}`;
  }
  private claimKey(jobId: string): string {
    return `${this.config.queue.prefix}:delivery-claim:${jobId}`;
  }
  private get ttlSeconds(): number {
    return Math.max(this.config.queue.keepFailedSeconds, this.config.queue.keepCompletedSeconds);
  }

  /** Before posting a result: no progress edit starts after this, and one in flight (at most waitMs) is waited for. */
  async beginDelivery(jobId: string, waitMs = SHOWING_SLOT_MS): Promise<void> {
    await this.redis.set(this.deliveringKey(jobId), '1', 'EX', this.ttlSeconds);
    const end = Date.now() + waitMs;
    while ((await this.redis.exists(this.showingKey(jobId))) === 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
  }

  /**
   * Run one progress edit unless the job's result is being or has been delivered (or another edit of it is in
   * flight); returns whether it ran.
   */
  async whileNotDelivered(jobId: string, edit: () => Promise<void>): Promise<boolean> {
    if ((await this.redis.set(this.showingKey(jobId), '1', 'PX', SHOWING_SLOT_MS, 'NX')) !== 'OK') return false;
    try {
      if ((await this.redis.exists(this.deliveringKey(jobId), this.key(jobId))) > 0) return false;
      await edit();
      return true;
    } finally {
      await this.redis.del(this.showingKey(jobId));
    }
  }

  /**
   * Take the right to post jobId's result for `claimMs` (renew with `renewClaim` while posting). False while
   * another run of the same delivery holds it: BullMQ can start a delivery job twice at once when its lock
   * lapsed (Redis failing over, a stalled event loop). A claim whose owner died expires, and the next run
   * posts again: the one window where PlatformPort.deliver must be idempotent.
   */
  async claim(jobId: string, owner: string, claimMs: number): Promise<boolean> {
    return (await this.redis.set(this.claimKey(jobId), owner, 'PX', claimMs, 'NX')) === 'OK';
  }

  /** Extend our claim; false if it lapsed and is someone else's now. */
  async renewClaim(jobId: string, owner: string, claimMs: number): Promise<boolean> {
    return (await this.redis.eval(RENEW_IF_OWNER, 1, this.claimKey(jobId), owner, claimMs)) === 1;
  }

  /** Give a claim back when the run ends (posted and marked, or failed: then the retry need not wait). */
  async releaseClaim(jobId: string, owner: string): Promise<void> {
    await this.redis.eval(DELETE_IF_OWNER, 1, this.claimKey(jobId), owner);
  }

  async isDelivered(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.key(jobId))) === 1;
  }

  /** Record a posted result; returns false if it was already recorded. */
  async markDelivered(jobId: string): Promise<boolean> {
    return (await this.redis.set(this.key(jobId), String(Date.now()), 'EX', this.ttlSeconds, 'NX')) === 'OK';
  }
}
