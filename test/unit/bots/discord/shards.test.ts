// discord.shards (DISCORD_SHARDS) as operators write it, and the discord.js options it becomes.
import { describe, expect, it } from 'vitest';
import { shardOptions } from '../../../../bots/discord/adapter.ts';
import { loadConfig } from '../../../../src/config/load.ts';

const shardsFromEnv = (value: string) => loadConfig({ env: { DISCORD_SHARDS: value } }).discord.shards;
const refusal = (value: string): string => {
  try {
    shardsFromEnv(value);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${value} was accepted`);
};

describe('discord.shards', () => {
  it('is auto by default, and reads a count, ids of a count, ranges and lists, blanks and quotes', () => {
    expect(loadConfig({ env: {} }).discord.shards).toBe('auto');
    expect(shardsFromEnv('auto')).toBe('auto');
    expect(shardsFromEnv('8')).toEqual({ count: 8 });
    expect(shardsFromEnv('0-3/8')).toEqual({ count: 8, ids: [0, 1, 2, 3] });
    expect(shardsFromEnv(' "0, 2, 5-6 / 8" ')).toEqual({ count: 8, ids: [0, 2, 5, 6] });
    expect(shardsFromEnv('7/8')).toEqual({ count: 8, ids: [7] });
  });

  it('takes the YAML form too', () => {
    const config = loadConfig({ env: {}, overrides: { discord: { shards: { count: 4, ids: [3] } } } });
    expect(config.discord.shards).toEqual({ count: 4, ids: [3] });
  });

  it('refuses what no Discord bot can run, naming the variable', () => {
    expect(refusal('0-8/8')).toContain('shard ids run from 0 to 7 when the count is 8 (got 8) → at discord.shards.ids (set by the environment variable DISCORD_SHARDS)');
    expect(refusal('1,1/2')).toContain('a shard id is listed twice');
    expect(refusal('0')).toContain('Too small');
    expect(refusal('5000')).toContain('at most 4096');
    expect(refusal('3-1/8')).toContain('shards is auto, a shard count (8), or the ids this process runs and the count (0-3/8, 0,2,4/8) → at discord.shards (set by the environment variable DISCORD_SHARDS)');
    expect(refusal('all')).toContain('shards is auto');
    expect(refusal('0-3/')).toContain('shards is auto');
  });

  it('becomes explicit discord.js options, so that its own SHARDS / SHARD_COUNT variables are never read', () => {
    expect(shardOptions('auto')).toEqual({ shards: 'auto' });
    expect(shardOptions({ count: 3 })).toEqual({ shards: [0, 1, 2], shardCount: 3 });
    expect(shardOptions({ count: 8, ids: [4, 5] })).toEqual({ shards: [4, 5], shardCount: 8 });
  });
});
