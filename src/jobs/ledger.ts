// The delivered-ledger: `<prefix>:delivered:<jobId>` is set once a result has been posted, so a delivery
// job that runs again (bot died after posting but before BullMQ recorded completion, or the worker re-added
// it) is acknowledged without posting twice. TTL = keepFailedSeconds: longer than any delivery job lives.
import type { Redis } from 'ioredis';
import type { Config } from '../config/schema.ts';

export class DeliveryLedger {
  constructor(
    private readonly redis: Redis,
    private readonly config: Pick<Config, 'queue'>,
  ) {}

  private key(jobId: string): string {
    return `${this.config.queue.prefix}:delivered:${jobId}`;
  }

  async isDelivered(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.key(jobId))) === 1;
  }

  /** Record a posted result; returns false if it was already recorded. */
  async markDelivered(jobId: string): Promise<boolean> {
    const ttl = Math.max(this.config.queue.keepFailedSeconds, this.config.queue.keepCompletedSeconds);
    return (await this.redis.set(this.key(jobId), String(Date.now()), 'EX', ttl, 'NX')) === 'OK';
  }
}
