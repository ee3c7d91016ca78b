// policyScope and sharingScope (src/checks/policy.ts): the name under which results are shared (src/cache/key.ts
// scopedDigest). Two channels whose effective checks are the same, in one tenant (a server, a workspace, a user's DMs,
// the CLI) unless cache.shareAcrossWorkspaces, share it; any difference that changes what a job delivers or withholds
// gives another.
import { describe, expect, it } from 'vitest';
import { policyScope, resolvePolicy, scopeOf as sharedIn, sharingScope, tenantOf } from '../../../../src/checks/policy.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination, DiscordDestination } from '../../../../src/jobs/contract.ts';

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

describe('sharingScope', () => {
  const discord = (guildId: string | null, userId = 'u', channelId = 'a'): Destination => ({ ...at(channelId), guildId, userId });
  const slack = (teamId: string, userId = 'u'): Destination => ({ platform: 'slack', teamId, channelId: 'a', userId });
  const cli = (clientId: string, userId = 'u'): Destination => ({ platform: 'cli', clientId, channelId: 'local', userId });
  const shared = loadConfig({ env: {}, overrides: { cache: { shareAcrossWorkspaces: true } } });

  it('names one tenant per Discord server, Slack workspace, user\'s DMs and the CLI', () => {
    expect(tenantOf(discord('g1'))).toBe('discord:g1');
    expect(tenantOf(discord('g1', 'v', 'b'))).toBe('discord:g1'); // every channel and user of the server
    expect(tenantOf(discord(null, 'u1'))).toBe('discord:dm:u1'); // not workspaceOf's one 'dm' for every DM
    expect(tenantOf(slack('T1'))).toBe('slack:T1');
    expect(tenantOf(cli('run-1'))).toBe(tenantOf(cli('run-2', 'v'))); // the operator's own CLI runs are one
    expect(tenantOf(discord('X'))).not.toBe(tenantOf(slack('X'))); // ids of two platforms never meet
  });

  it('by default differs between tenants whose checks are alike, and is one within a tenant', () => {
    expect(config.cache.shareAcrossWorkspaces).toBe(false);
    const scope = (d: Destination) => sharedIn(config, d, undefined);
    const tenants = [discord('g1'), discord('g2'), discord(null, 'u1'), discord(null, 'u2'), slack('T1'), slack('T2'), cli('c')];
    expect(new Set(tenants.map(scope)).size).toBe(tenants.length);
    expect(scope(discord('g1', 'v', 'b'))).toBe(scope(discord('g1')));
    expect(scope(discord('g1'))).toMatch(/^[0-9a-f]{32}$/);
  });

  it('with cache.shareAcrossWorkspaces is one for every tenant: the checks alone, as before tenants (old entries still hit)', () => {
    const scope = (d: Destination) => sharedIn(shared, d, undefined);
    expect(new Set([discord('g1'), discord('g2'), discord(null, 'u1'), slack('T1'), cli('c')].map(scope)).size).toBe(1);
    expect(scope(discord('g1'))).toBe(policyScope(resolvePolicy(config.checks, discord('g1'))));
    expect(sharingScope(shared.cache, discord('g1'), resolvePolicy(config.checks, at('strict')))).not.toBe(scope(discord('g1'))); // checks still part of it
  });
});
