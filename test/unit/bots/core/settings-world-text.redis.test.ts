// /settings negative prompt typed in emoji (bots/core/settings.ts): measured in characters as /imagine's own negative
// prompt is (code points, src/text.ts), so a default /imagine would accept is not refused as twice as long.
import { randomUUID } from 'node:crypto';
import { afterAll, expect, it } from 'vitest';
import { settingsCommand, SettingsStore } from '../../../../bots/core/settings.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination } from '../../../../src/jobs/contract.ts';
import { closeRedis, createRedis, deleteKeys } from '../../../../src/redis.ts';

const prefix = `t-settings-world-${randomUUID().slice(0, 8)}`;
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-settings-world');
const config = loadConfig({ env: {}, overrides: { queue: { prefix }, generation: { maxNegativeChars: 6 } } });
afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

it('a negative prompt of emoji at the limit is saved; one more is refused', async () => {
  const store = new SettingsStore(redis, config);
  const d: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
  const save = (negative: string) =>
    settingsCommand({ input: { command: 'settings', scope: 'user', action: 'set', values: { negative } }, destination: d, dedupeKey: randomUUID(), isAdmin: false }, store, config);
  await save('🚫'.repeat(6));
  expect(await store.get('user', d)).toEqual({ negative: '🚫'.repeat(6) });
  await expect(save('🚫'.repeat(7))).rejects.toThrow('The negative prompt can be at most 6 characters.');
});
