// Which checks run for a job, and how strict they are (issue 16, docs/checks.md). Layers, later wins:
//   config checks.*  →  checks.ageRestricted (Discord channels marked nsfw)  →  checks.channelOverrides[channel]
//   →  the override an admin set at runtime (Redis, `<prefix>:checks:override:<platform:workspace:channel>`).
// Workers read the runtime layer per job, so an admin's change applies to the next job on every worker.
import { createHash } from 'node:crypto';
import type { Redis } from '../redis.ts';
import { CheckPolicyOverride, type Config } from '../config/schema.ts';
import { channelKey, parseStoredJson, workspaceOf, type Destination } from '../jobs/contract.ts';

export interface CheckPolicy {
  altText: boolean;
  captionMaxTokens: number;
  match: { enabled: boolean; threshold: number; maxRerolls: number };
  moderation: { enabled: boolean; checkInputs: boolean; questions: { id: string; question: string; threshold: number }[] };
}

/** `base` with `o` applied (absent keys keep the base). */
export function applyOverride(base: CheckPolicy, o: CheckPolicyOverride | undefined): CheckPolicy {
  if (!o) return base;
  return {
    altText: o.altText ?? base.altText,
    captionMaxTokens: base.captionMaxTokens,
    match: { enabled: o.match ?? base.match.enabled, threshold: o.matchThreshold ?? base.match.threshold, maxRerolls: o.maxRerolls ?? base.match.maxRerolls },
    moderation: {
      enabled: o.moderation ?? base.moderation.enabled,
      checkInputs: base.moderation.checkInputs,
      questions: base.moderation.questions.map((q) => ({ ...q, threshold: o.thresholds?.[q.id] ?? q.threshold })),
    },
  };
}

/** The policy for `destination` from config alone, with `runtime` (an admin's override) on top. */
export function resolvePolicy(checks: Config['checks'], destination: Destination, runtime?: CheckPolicyOverride): CheckPolicy {
  let p: CheckPolicy = {
    altText: checks.altText,
    captionMaxTokens: checks.captionMaxTokens,
    match: { ...checks.match },
    moderation: { ...checks.moderation, questions: checks.moderation.questions.map((q) => ({ ...q })) },
  };
  if (destination.platform === 'discord' && destination.nsfw) p = applyOverride(p, checks.ageRestricted);
  p = applyOverride(p, checks.channelOverrides[channelKey(destination)]);
  return applyOverride(p, runtime);
}

/** The ids of the questions whose P(yes) is over their threshold. */
export function flaggedBy(policy: CheckPolicy, answers: Record<string, number>): string[] {
  return policy.moderation.questions.filter((q) => (answers[q.id] ?? 0) > q.threshold).map((q) => q.id);
}

/**
 * A short name for everything in `policy` that decides what a job delivers (or withholds): sha256 of its fields,
 * written in a fixed order, and of `tenant` when results are shared within one only (sharingScope). Results are
 * shared only within one scope (src/cache/key.ts scopedDigest), so an image made where the checks are off never
 * reaches a channel whose checks would withhold it, and the reverse.
 */
export function policyScope(policy: CheckPolicy, tenant?: string): string {
  const { altText, captionMaxTokens, match, moderation } = policy;
  const fields = [
    altText, captionMaxTokens, match.enabled, match.threshold, match.maxRerolls, moderation.enabled, moderation.checkInputs,
    moderation.questions.map((q) => [q.id, q.question, q.threshold]),
  ];
  // Without a tenant the fields alone, as before tenants: entries cached then still hit where sharing is on
  return createHash('sha256').update(JSON.stringify(tenant === undefined ? fields : [...fields, tenant])).digest('hex').slice(0, 32);
}

/**
 * Who may share results by default: one Discord server, one Slack workspace, one user's DMs with the bot (workspaceOf
 * calls every DM 'dm'; two users' DMs are two tenants), the CLI. A cache hit, a joined job or the "from the cache"
 * footer tells the asker that someone in the same tenant asked the same thing (a shown seed makes a prompt guessable).
 */
export function tenantOf(d: Destination): string {
  if (d.platform === 'discord' && d.guildId === null) return `discord:dm:${d.userId}`;
  return `${d.platform}:${workspaceOf(d)}`;
}

/** What sharing results depends on: the checks, and whether the operator shares them across workspaces. */
export type SharingConfig = Pick<Config, 'checks' | 'cache'>;

/**
 * The scope results made for `destination` under `policy` are shared in (src/cache/key.ts scopedDigest): its checks,
 * within its tenant unless cache.shareAcrossWorkspaces. Every caller goes through here (the bot's lookup and claim,
 * the worker's put and its followers), so a flight's followers and its cache entry agree.
 */
export function sharingScope(cache: SharingConfig['cache'], destination: Destination, policy: CheckPolicy): string {
  return policyScope(policy, cache.shareAcrossWorkspaces ? undefined : tenantOf(destination));
}

/** Admins' runtime overrides, one JSON value per channel. */
export class CheckOverrides {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(channel: string): string {
    return `${this.prefix}:checks:override:${channel}`;
  }

  /** The override for "platform:workspace:channel"; a value that no longer parses is ignored (config applies). */
  async get(channel: string): Promise<CheckPolicyOverride | undefined> {
    const raw = await this.redis.get(this.key(channel));
    if (!raw) return undefined;
    return parseStoredJson(CheckPolicyOverride, raw);
  }

  /** Merges `change` into the channel's override (thresholds merge per question). */
  async set(channel: string, change: CheckPolicyOverride): Promise<CheckPolicyOverride> {
    const current = (await this.get(channel)) ?? {};
    const next = CheckPolicyOverride.parse({ ...current, ...change, thresholds: change.thresholds || current.thresholds ? { ...current.thresholds, ...change.thresholds } : undefined });
    await this.redis.set(this.key(channel), JSON.stringify(next));
    return next;
  }

  async reset(channel: string): Promise<void> {
    await this.redis.del(this.key(channel));
  }

  /** The effective policy for a job's destination: config, then this store's override for its channel. */
  async policyFor(checks: Config['checks'], destination: Destination): Promise<CheckPolicy> {
    return resolvePolicy(checks, destination, await this.get(channelKey(destination)));
  }

  /** sharingScope of the effective policy for `destination`. */
  async scopeFor(config: SharingConfig, destination: Destination): Promise<string> {
    return scopeOf(config, destination, await this.get(channelKey(destination)));
  }
}

/** sharingScope of the effective policy for `destination`, given its channel's override as read (CheckOverrides.get). */
export function scopeOf(config: SharingConfig, destination: Destination, override: CheckPolicyOverride | undefined): string {
  return sharingScope(config.cache, destination, resolvePolicy(config.checks, destination, override));
}
