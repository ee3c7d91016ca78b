// Admission control shared by every bot instance: one atomic Redis script per request checks the channel,
// the user and the workspace together (rate: token bucket with burst; cap: jobs queued or running), and
// either takes a token + a slot in all three or nothing. See docs/limits.md.
//
//   bot A ─┐                      ┌─ rate:channel:<ck> ─ rate:user:<u> ─ rate:workspace:<w>
//          ├─ admit(jobId, d) ──▶ ├─ conc:channel:<ck> ─ conc:user:<u> ─ conc:workspace:<w>   (one EVALSHA)
//   bot B ─┘                      └─ ovr:<ck> (admin override, wins over config)
//
//   job finished/failed/removed ──▶ release(jobId)  (exactly once: deleting the lease frees the slots)
//   sweep() and every admit      ──▶ free slots whose job is finished or gone (a process died mid-way)
import type { Redis, ScriptCall } from '../redis.ts';
import type { Config, LimitSpec } from '../config/schema.ts';
import { channelKey, QueueNames, workspaceOf, workspaceSubject, type Destination } from '../jobs/contract.ts';
import { UserError } from '../errors.ts';
import { admitLua, releaseLua, settleLua, sweepLua, usageLua } from './scripts.ts';

export type Scope = 'channel' | 'user' | 'workspace';
const SCOPES: readonly Scope[] = ['channel', 'user', 'workspace'];

/** The ids a request is limited under. */
export interface ScopeIds {
  channel: string;
  user: string;
  workspace: string;
}

export function scopeIds(d: Destination): ScopeIds {
  return { channel: channelKey(d), user: `${d.platform}:${d.userId}`, workspace: `${d.platform}:${workspaceOf(d)}` };
}

/**
 * A refusal names the limit that holds longest (src/limits/scripts.ts admitLua): a full cap if there is one, else the
 * rate with the longest wait. `retryAfterMs` is the longest rate wait: a retry sooner is refused again; for a full cap
 * it is 0 unless a rate refuses too.
 */
export type Admission =
  | { admitted: true; duplicate: boolean }
  | { admitted: false; scope: Scope; kind: 'rate' | 'concurrency'; limit: LimitSpec; retryAfterMs: number };

export type SpecSource = 'default' | 'config' | 'redis';

export interface ScopeUsage {
  limit: LimitSpec;
  /** Requests that could be admitted right now (whole tokens), or null when the rate is off. */
  tokens: number | null;
  /** Jobs holding a slot (queued or running). */
  held: number;
}

export interface Limiter {
  /** Check and take, atomically over all three scopes. The same jobId twice is admitted once (duplicate = true). */
  /** `cost`: how many requests this job counts as (a 4-image /imagine counts 4); at most a full bucket is needed. */
  admit(jobId: string, destination: Destination, cost?: number): Promise<Admission>;
  /** Like admit, but a denial throws a UserError('rate_limited') naming the limit, what the request counted as, and when to retry. */
  admitOrThrow(jobId: string, destination: Destination, cost?: number): Promise<void>;
  /** admitLua's keys and arguments (src/limits/gate.ts runs it after the budgets, in one script). */
  admitCall(jobId: string, destination: Destination, cost?: number): ScriptCall;
  /** releaseLua's keys and arguments. */
  releaseCall(jobId: string): ScriptCall;
  /** Free a job's slots; true only for the call that actually freed them. */
  release(jobId: string): Promise<boolean>;
  /** Free a job's slots if BullMQ finished it or it is gone (completed/failed/removed events; a retry keeps its slot). */
  settle(jobId: string): Promise<boolean>;
  /** Free slots of jobs that finished or vanished without a release (a process died); returns how many. */
  sweep(): Promise<number>;
  /** The channel's limits in effect and where they come from (Redis override > config override > default). */
  channelLimit(channelKey: string): Promise<{ limit: LimitSpec; source: SpecSource }>;
  /** Store a runtime override; the channel's bucket starts full under the new limit. */
  setChannelLimit(channelKey: string, limit: LimitSpec): Promise<void>;
  /** Drop the runtime override; the config's values apply again, from a full bucket. */
  resetChannelLimit(channelKey: string): Promise<void>;
  usage(scope: Scope, id: string, limit: LimitSpec): Promise<ScopeUsage>;
  /** Channels with a runtime override. */
  overriddenChannels(): Promise<string[]>;
}

type LimitsConfig = Pick<Config, 'queue' | 'limits'>;

/** What admitLua answered. */
export function admissionOf(res: readonly number[]): Admission {
  if (res[0] === 1) return { admitted: true, duplicate: res[1] === 1 };
  const [, scope, kind, retryAfterMs, requestsPerWindow, windowSeconds, burst, maxConcurrent] = res;
  return {
    admitted: false,
    scope: SCOPES[(scope ?? 1) - 1]!,
    kind: kind === 1 ? 'rate' : 'concurrency',
    retryAfterMs: retryAfterMs ?? 0,
    limit: { requestsPerWindow: requestsPerWindow!, windowSeconds: windowSeconds!, burst: burst!, maxConcurrent: maxConcurrent! },
  };
}

/** A denial as the UserError('rate_limited') the user reads: which limit, and when to retry. `cost`: as admit's. */
export function throwIfDenied(a: Admission, d: Destination, cost = 1): void {
  if (!a.admitted) throw new UserError('rate_limited', denialMessage(a, d, cost), { context: { scope: a.scope, kind: a.kind, retryAfterMs: a.retryAfterMs } });
}

// ioredis defineCommand adds methods at runtime; this is their shape.
interface LimiterCommands {
  blip3oLimitAdmit(...args: (string | number | Buffer)[]): Promise<number[]>;
  blip3oLimitRelease(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oLimitSweep(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oLimitSettle(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oLimitUsage(...args: (string | number | Buffer)[]): Promise<number[]>;
}

function defineCommands(redis: Redis): Redis & LimiterCommands {
  const r = redis as Redis & Partial<LimiterCommands>;
  // Stryker disable next-line ConditionalExpression,StringLiteral: defining the commands again on every call defines the same scripts
  if (typeof r.blip3oLimitAdmit !== 'function') {
    redis.defineCommand('blip3oLimitAdmit', { numberOfKeys: 9, lua: admitLua });
    redis.defineCommand('blip3oLimitRelease', { numberOfKeys: 2, lua: releaseLua });
    redis.defineCommand('blip3oLimitSweep', { numberOfKeys: 2, lua: sweepLua });
    redis.defineCommand('blip3oLimitSettle', { numberOfKeys: 2, lua: settleLua });
    redis.defineCommand('blip3oLimitUsage', { numberOfKeys: 2, lua: usageLua });
  }
  return r as Redis & LimiterCommands;
}

const SPEC_FIELDS = ['requestsPerWindow', 'windowSeconds', 'burst', 'maxConcurrent'] as const;
const specArgs = (l: LimitSpec) => SPEC_FIELDS.map((f) => l[f]);

/** The keys every held slot is recorded under (src/limits/scripts.ts): the delivery ledger frees a job's slots too. */
export function leaseKeysOf(prefix: string): { leases: string; leaseKeys: string } {
  return { leases: `${prefix}:limits:leases`, leaseKeys: `${prefix}:limits:lease-keys` };
}

/** `redis` is used for commands only (no blocking), so the caller's shared connection is fine. */
export function createLimiter(redis: Redis, config: LimitsConfig): Limiter {
  const r = defineCommands(redis);
  const base = `${config.queue.prefix}:limits:`;
  const key = {
    rate: (s: Scope, id: string) => `${base}rate:${s}:${id}`,
    conc: (s: Scope, id: string) => `${base}conc:${s}:${id}`,
    ovr: (ck: string) => `${base}ovr:${ck}`,
    overridden: `${base}overridden`,
    ...leaseKeysOf(config.queue.prefix),
  };
  // BullMQ keeps each job in the hash "<prefix>:<queue>:<jobId>"; the scripts read finishedOn from it.
  const jobKeyPrefix = `${config.queue.prefix}:${QueueNames.jobs}:`;
  const L = config.limits;
  const configured = (ck: string): { limit: LimitSpec; source: SpecSource } =>
    L.channelOverrides[ck] ? { limit: L.channelOverrides[ck], source: 'config' } : { limit: L.channel, source: 'default' };

  function admitCall(jobId: string, d: Destination, cost = 1): ScriptCall {
    const ids = scopeIds(d);
    const specs: LimitSpec[] = [configured(ids.channel).limit, L.user, L.workspace];
    return {
      keys: [...SCOPES.map((s) => key.rate(s, ids[s])), ...SCOPES.map((s) => key.conc(s, ids[s])), key.ovr(ids.channel), key.leases, key.leaseKeys],
      args: [jobId, ...specs.flatMap(specArgs), jobKeyPrefix, L.admitGraceMs, Math.max(1, Math.floor(cost))],
    };
  }

  const releaseCall = (jobId: string): ScriptCall => ({ keys: [key.leases, key.leaseKeys], args: [jobId] });

  async function admit(jobId: string, d: Destination, cost = 1): Promise<Admission> {
    const { keys, args } = admitCall(jobId, d, cost);
    return admissionOf(await r.blip3oLimitAdmit(...keys, ...args));
  }

  return {
    admit,
    admitCall,
    async admitOrThrow(jobId, d, cost) {
      throwIfDenied(await admit(jobId, d, cost), d, cost);
    },
    releaseCall,
    async release(jobId) {
      const { keys, args } = releaseCall(jobId);
      return (await r.blip3oLimitRelease(...keys, ...args)) === 1;
    },
    async settle(jobId) {
      return (await r.blip3oLimitSettle(key.leases, key.leaseKeys, jobId, jobKeyPrefix)) === 1;
    },
    async sweep() {
      return r.blip3oLimitSweep(key.leases, key.leaseKeys, jobKeyPrefix, L.admitGraceMs, 10_000);
    },
    async channelLimit(ck) {
      const v = await redis.hmget(key.ovr(ck), ...SPEC_FIELDS);
      if (v[0] === null) return configured(ck);
      const limit = Object.fromEntries(SPEC_FIELDS.map((f, i) => [f, Number(v[i])])) as LimitSpec;
      return { limit, source: 'redis' };
    },
    async setChannelLimit(ck, limit) {
      await redis.multi().hset(key.ovr(ck), limit).sadd(key.overridden, ck).del(key.rate('channel', ck)).exec();
    },
    async resetChannelLimit(ck) {
      await redis.multi().del(key.ovr(ck)).srem(key.overridden, ck).del(key.rate('channel', ck)).exec();
    },
    async usage(scope, id, limit) {
      const [tokens, held] = await r.blip3oLimitUsage(key.rate(scope, id), key.conc(scope, id), limit.requestsPerWindow, limit.windowSeconds, limit.burst);
      return { limit, tokens: tokens! < 0 ? null : Math.floor(tokens! / 1000), held: held! };
    },
    async overriddenChannels() {
      return (await redis.smembers(key.overridden)).sort();
    },
  };
}

// ---- what the user reads ----------------------------------------------------------------------------------

/** "per minute", "per 2 minutes", "per hour", "per 90 seconds". */
export function windowPhrase(seconds: number): string {
  const unit = (n: number, word: string) => (n === 1 ? `per ${word}` : `per ${n} ${word}s`);
  if (seconds % 86_400 === 0) return unit(seconds / 86_400, 'day');
  if (seconds % 3600 === 0) return unit(seconds / 3600, 'hour');
  if (seconds % 60 === 0) return unit(seconds / 60, 'minute');
  return unit(seconds, 'second');
}

/** "42 s", "3 min", "1 h 5 min": rounded up, so retrying at that time succeeds. */
export function durationPhrase(ms: number): string {
  const s = Math.max(1, Math.ceil(ms / 1000));
  if (s < 120) return `${s} s`;
  const min = Math.ceil(s / 60);
  if (min < 120) return `${min} min`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}

/** "1 request", "5 requests": `n` and `word`, in the plural unless n is 1. */
export const countOf = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * The sentence a limited user sees (privately): which limit, and when to try again. `cost`: the images the request
 * asked for, each a request to the rate (admitLua takes at most a full bucket), so a user refused after fewer requests
 * than the limit learns why.
 */
export function denialMessage(a: Extract<Admission, { admitted: false }>, d: Destination, cost = 1): string {
  const place = workspaceSubject(d);
  const who = { channel: 'This channel', user: 'You', workspace: place.subject }[a.scope];
  const plural = a.scope === 'workspace' && place.plural;
  if (a.kind === 'rate') {
    const verb = a.scope === 'user' ? 'can make' : plural ? 'allow' : 'allows';
    const counted = Math.min(Math.floor(cost), a.limit.burst > 0 ? a.limit.burst : a.limit.requestsPerWindow);
    const images = counted > 1 ? `, and a request for ${Math.floor(cost)} images counts as ${counted}` : '';
    return `${who} ${verb} ${countOf(a.limit.requestsPerWindow, 'request')} ${windowPhrase(a.limit.windowSeconds)}${images}; try again in ${durationPhrase(a.retryAfterMs)}.`;
  }
  const has = a.scope === 'user' ? 'You already have' : `${who} already ${plural ? 'have' : 'has'}`;
  // A rate refuses too: a job finishing is not enough, so say the earliest time as well.
  const notBefore = a.retryAfterMs > 0 ? `, and not before ${durationPhrase(a.retryAfterMs)} from now` : '';
  return `${has} ${countOf(a.limit.maxConcurrent, 'job')} queued or running, the most allowed; try again when one finishes${notBefore}.`;
}
