// /blip3o-admin checks (bots/core/commands/checks.ts) on real Redis: an admin's change is what a worker's policy
// look-up (src/checks/policy.ts, used by worker/processor.ts per job) then sees; others are refused; bad input is
// answered with the settings it accepts.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checksCommand, parseCheckSettings } from '../../../../bots/core/commands/checks.ts';
import type { Invocation } from '../../../../bots/core/port.ts';
import { CheckOverrides, resolvePolicy } from '../../../../src/checks/policy.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { DiscordDestination } from '../../../../src/jobs/contract.ts';
import { closeRedis, createRedis, type Redis } from '../../../../src/redis.ts';

const prefix = `t-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ overrides: { queue: { prefix } }, env: {} });
let redis: Redis;
const destination: DiscordDestination = { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'a1' };
const inv = (settings: string | undefined, action: 'show' | 'set' | 'reset', isAdmin = true): Invocation => ({
  input: { command: 'checks', action, ...(settings !== undefined ? { settings } : {}) },
  destination,
  dedupeKey: randomUUID(),
  isAdmin,
});

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-checks-cmd');
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await closeRedis(redis);
});

describe('/blip3o-admin checks', () => {
  it('set → the policy workers resolve for that channel changes; reset → back to config', async () => {
    const core = { config, redis };
    const store = new CheckOverrides(redis, prefix);
    expect((await store.policyFor(config.checks, destination)).match.enabled).toBe(false);
    const set = await checksCommand(inv('match=on threshold=0.7 rerolls=1 moderation=on nudity=0.9', 'set'), core);
    expect(set).toMatchObject({ kind: 'text', private: true });
    const p = await store.policyFor(config.checks, destination);
    expect(p.match).toEqual({ enabled: true, threshold: 0.7, maxRerolls: 1 });
    expect(p.moderation.enabled).toBe(true);
    expect(p.moderation.questions.find((q) => q.id === 'nudity')?.threshold).toBe(0.9);
    expect(p.moderation.questions.find((q) => q.id === 'violence')?.threshold).toBe(0.5);
    // another channel keeps the config
    expect((await store.policyFor(config.checks, { ...destination, channelId: 'c2' })).match.enabled).toBe(false);
    const shown = await checksCommand(inv(undefined, 'show'), core);
    expect(shown.kind === 'text' && shown.text).toMatch(/changed by an admin[\s\S]*re-roll below 0.7 up to 1 times[\s\S]*nudity 0.9/);
    await checksCommand(inv(undefined, 'reset'), core);
    expect(await store.policyFor(config.checks, destination)).toEqual(resolvePolicy(config.checks, destination));
  });

  it('age-restricted Discord channels get the relaxed layer; refuses non-admins and unknown settings', async () => {
    const relaxed = resolvePolicy(config.checks, { ...destination, nsfw: true });
    expect(relaxed.moderation.questions.find((q) => q.id === 'nudity')?.threshold).toBe(1);
    expect(resolvePolicy(config.checks, destination).moderation.questions.find((q) => q.id === 'nudity')?.threshold).toBe(0.5);
    await expect(checksCommand(inv('match=on', 'set', false), { config, redis })).rejects.toThrow(/Only admins/);
    expect(() => parseCheckSettings('gore=0.5', ['nudity'])).toThrow(/Unknown setting `gore`/);
    expect(() => parseCheckSettings('threshold=2', ['nudity'])).toThrow(/from 0 to 1/);
    expect(() => parseCheckSettings('', ['nudity'])).toThrow(/Say what to change/);
    expect(parseCheckSettings('alt=off match=ON', [])).toEqual({ altText: false, match: true });
  });
});
