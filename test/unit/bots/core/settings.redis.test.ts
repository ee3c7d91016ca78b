// Saved settings read back from Redis (bots/core/settings.ts): a value that is not JSON, or not settings, reads as none
// rather than failing every request of the channel (Redis is a trust boundary too).
import { randomUUID } from 'node:crypto';
import { afterAll, expect, it } from 'vitest';
import { SettingsStore } from '../../../../bots/core/settings.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination } from '../../../../src/jobs/contract.ts';
import { closeRedis, createRedis, deleteKeys } from '../../../../src/redis.ts';

const prefix = `t-settings-${randomUUID().slice(0, 8)}`;
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-settings');
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });

afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

it('a saved value that is not JSON, or not settings, reads as nothing saved; a good one is read', async () => {
  const store = new SettingsStore(redis, config);
  const d: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
  await store.set('channel', d, { noLog: true });
  expect(await store.get('channel', d)).toEqual({ noLog: true });
  const [key] = await redis.keys(`${prefix}:settings:channel:*`);
  await redis.set(key!, 'not json at all');
  expect(await store.get('channel', d)).toEqual({});
  expect(await store.effective(d)).toEqual({});
  await redis.set(key!, '{"noLog":"yes"}');
  expect(await store.get('channel', d)).toEqual({});
});
