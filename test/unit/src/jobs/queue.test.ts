import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../../src/config/load.ts';
import { assertClusterPrefix, deliveryJobOptions, deliveryQueueName, jobIdFor, jobOptions, lockOptions } from '../../../../src/jobs/queue.ts';

describe('jobIdFor', () => {
  it('is stable per platform + dedupe key and valid as a BullMQ custom id', () => {
    const a = jobIdFor('discord', '1234567890');
    expect(a).toBe(jobIdFor('discord', '1234567890'));
    expect(a).not.toBe(jobIdFor('slack', '1234567890'));
    expect(a).not.toBe(jobIdFor('discord', '1234567891'));
    expect(a).toMatch(/^j[0-9a-f]{24}$/); // no ':' and not all digits (BullMQ refuses both)
  });
});

describe('deliveryQueueName', () => {
  it('routes CLI results to the invoking process and chat results to the platform queue', () => {
    expect(deliveryQueueName({ platform: 'cli', clientId: 'abc', channelId: 'local', userId: 'u' })).toBe('delivery-cli-abc');
    expect(deliveryQueueName({ platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' })).toBe('delivery-slack');
    expect(deliveryQueueName({ platform: 'discord', guildId: null, channelId: 'C', userId: 'U', applicationId: 'A' })).toBe('delivery-discord');
  });
});

describe('job options', () => {
  it('take attempts, backoff and retention from config', () => {
    const config = loadConfig({ env: {} });
    expect(jobOptions(config)).toEqual({
      attempts: config.queue.attempts,
      backoff: { type: 'exponential', delay: config.queue.backoffMs },
      removeOnComplete: { age: config.queue.keepCompletedSeconds },
      removeOnFail: { age: config.queue.keepFailedSeconds },
    });
    expect(deliveryJobOptions(config)).toMatchObject({ attempts: config.queue.deliveryAttempts, backoff: { type: 'exponential', delay: config.queue.deliveryBackoffMs } });
  });
});

describe('lock options', () => {
  it('take lock duration, stall interval and stall count from config (every Worker, jobs and delivery)', () => {
    const config = loadConfig({ env: {} });
    const q = { ...config.queue, lockDurationMs: 1234, stalledIntervalMs: 567, maxStalledCount: 3 };
    expect(lockOptions({ queue: q })).toEqual({ lockDuration: 1234, stalledInterval: 567, maxStalledCount: 3 });
  });
});

describe('assertClusterPrefix', () => {
  it('refuses a prefix without a hash tag on Redis Cluster only, naming the fix', () => {
    const config = loadConfig({ env: {} });
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    const single = new Redis({ lazyConnect: true });
    const withPrefix = (prefix: string) => ({ queue: { ...config.queue, prefix } });
    expect(() => assertClusterPrefix(withPrefix('blip3o'), cluster)).toThrow('queue.prefix "blip3o" must be a hash tag with Redis Cluster, e.g. "{blip3o}"');
    expect(() => assertClusterPrefix(withPrefix('{}x'), cluster)).toThrow(/must be a hash tag/);
    expect(() => assertClusterPrefix(withPrefix('{blip3o}'), cluster)).not.toThrow();
    expect(() => assertClusterPrefix(withPrefix('{b}'), cluster)).not.toThrow();
    expect(() => assertClusterPrefix(withPrefix('team-{blip3o}'), cluster)).not.toThrow();
    expect(() => assertClusterPrefix(withPrefix('blip3o'), single)).not.toThrow();
    cluster.disconnect();
    single.disconnect();
  });
});
