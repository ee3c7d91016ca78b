// policyScope (src/checks/policy.ts): the name under which results are shared (src/cache/key.ts scopedDigest). Two
// channels whose effective checks are the same share it; any difference that changes what a job delivers or withholds
// gives another.
import { describe, expect, it } from 'vitest';
import { policyScope, resolvePolicy } from '../../../../src/checks/policy.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { DiscordDestination } from '../../../../src/jobs/contract.ts';

const config = loadConfig({ env: {}, overrides: { checks: { channelOverrides: { 'discord:g:strict': { moderation: true } } } } });
const at = (channelId: string, nsfw = false): DiscordDestination => ({ platform: 'discord', guildId: 'g', channelId, userId: 'u', applicationId: 'a', ...(nsfw ? { nsfw: true } : {}) });
const scopeOf = (channelId: string, nsfw = false, runtime?: Parameters<typeof resolvePolicy>[2]) => policyScope(resolvePolicy(config.checks, at(channelId, nsfw), runtime));

describe('policyScope', () => {
  it('is shared by channels whose checks are alike, and not by one whose checks differ', () => {
    expect(scopeOf('a')).toBe(scopeOf('b'));
    expect(scopeOf('a')).toMatch(/^[0-9a-f]{32}$/); // a short name: 128 bits of sha256 in hex, inside every shared result's key
    expect(scopeOf('strict')).not.toBe(scopeOf('a')); // a configured channel override
    expect(scopeOf('a', false, { moderation: true })).toBe(scopeOf('strict')); // the same checks by another route
  });

  it('differs for every setting that changes what a job delivers or withholds', () => {
    const base = scopeOf('a', false, { moderation: true });
    const changes: Parameters<typeof resolvePolicy>[2][] = [
      { moderation: true, thresholds: { nudity: 0.9 } },
      { moderation: true, altText: !config.checks.altText },
      { moderation: true, match: !config.checks.match.enabled },
      { moderation: true, matchThreshold: 0.123 },
      { moderation: true, maxRerolls: 7 },
    ];
    const scopes = changes.map((c) => scopeOf('a', false, c));
    expect(new Set([base, ...scopes]).size).toBe(1 + changes.length);
    expect(scopeOf('strict', true)).not.toBe(scopeOf('strict')); // an age-restricted channel relaxes nudity
  });
});
