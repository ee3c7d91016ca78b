// /limits (admins): show, set or reset a channel's limits at runtime. Stored in Redis, where they win over
// config/default.yaml's channelOverrides and defaults; every bot instance reads them on the next request.
// The adapter decides who is an admin (Invocation.isAdmin); this refuses everyone else.
import { z } from 'zod';
import { LimitSpec, MAX_BURST, MAX_WINDOW_SECONDS, type Config } from '../../../src/config/schema.ts';
import { UserError } from '../../../src/errors.ts';
import { channelKey, workspaceOf, type Destination, type Platform } from '../../../src/jobs/contract.ts';
import type { Gate } from '../../../src/limits/gate.ts';
import { countOf, scopeIds, windowPhrase, type ScopeUsage } from '../../../src/limits/limiter.ts';
import type { Invocation, Reply } from '../port.ts';

/** The part of the core the admin commands use. */
export interface AdminDeps {
  readonly config: Readonly<Config>;
  readonly gate: Gate;
}

export function requireAdmin(inv: Invocation, what: string): void {
  if (!inv.isAdmin) throw new UserError('forbidden', `Only admins can ${what}.`);
}

/** A channel key the invoker may administer: its own channel by default, else one in the same workspace. */
export function targetChannel(inv: Invocation, requested: string | undefined): string {
  const own = channelKey(inv.destination);
  // Stryker disable next-line ConditionalExpression: equivalent, `requested === own`: the own channel passes the check below too
  if (!requested || requested === own) return own;
  const workspace = `${inv.destination.platform}:${workspaceOf(inv.destination)}:`;
  if (!requested.startsWith(workspace) || requested.length === workspace.length)
    throw new UserError('forbidden', 'You can only manage channels of this server or workspace.');
  return requested;
}

export const channelName = (inv: Invocation, ck: string) => (ck === channelKey(inv.destination) ? 'this channel' : ck);

/** "5 requests per minute (bursts of 5), at most 2 jobs queued or running" */
export function describeLimit(l: LimitSpec): string {
  const rate = l.requestsPerWindow > 0 ? `${countOf(l.requestsPerWindow, 'request')} ${windowPhrase(l.windowSeconds)} (bursts of ${l.burst > 0 ? l.burst : l.requestsPerWindow})` : 'no rate limit';
  const cap = l.maxConcurrent > 0 ? `at most ${countOf(l.maxConcurrent, 'job')} queued or running` : 'no cap on jobs queued or running';
  return `${rate}, ${cap}`;
}

export function describeUsage(u: ScopeUsage): string {
  const tokens = u.tokens === null ? '' : `${u.tokens} of ${u.limit.burst > 0 ? u.limit.burst : u.limit.requestsPerWindow} requests available now; `;
  const held = u.limit.maxConcurrent > 0 ? `${u.held}/${u.limit.maxConcurrent} jobs` : countOf(u.held, 'job');
  return `${tokens}${held} queued or running`;
}

/** What a set or reset does, said with it: a lowered limit removes nothing, and a channel's limit is not per user. */
const TAKES_EFFECT = 'They count all its users together and apply from the next request on; jobs already queued or running keep their place.';

const SpecPatch = LimitSpec.partial();
type SpecKey = keyof LimitSpec;
/**
 * What an admin types for each field, per platform: Slack's `requests=5 window=60` (bots/slack/admin.ts), Discord's
 * `per-minute:5`, which sets the rate and its burst over a one-minute window (bots/discord/admin.ts). A refusal names
 * these, never the stored fields: "windowSeconds" is no option on Discord, and no word a Slack admin typed.
 */
const TYPED: Record<Platform, Partial<Record<SpecKey, string>>> = {
  slack: { requestsPerWindow: 'requests', windowSeconds: 'window', burst: 'burst', maxConcurrent: 'concurrent' },
  discord: { requestsPerWindow: 'per-minute', burst: 'per-minute', maxConcurrent: 'concurrent' },
  cli: {},
};
const BOUNDS: Record<SpecKey, string> = {
  requestsPerWindow: `a whole number from 0 to ${MAX_BURST}`,
  windowSeconds: `a whole number of seconds from 1 to ${MAX_WINDOW_SECONDS} (30 days)`,
  burst: `a whole number from 0 to ${MAX_BURST}`,
  maxConcurrent: 'a whole number, 0 or more',
};
const SET_USAGE: Record<Platform, string> = {
  slack: 'Usage: `/blip3o-admin limits set requests=5 window=60 burst=5 concurrent=2` (0 turns one off).',
  discord: 'Usage: `/blip3o-admin limits set per-minute:5 concurrent:2` (0 turns one off).',
  cli: `Use requestsPerWindow (0 to ${MAX_BURST}), windowSeconds (1 to ${MAX_WINDOW_SECONDS}, 30 days), burst (0 to ${MAX_BURST}), maxConcurrent; 0 turns one off.`,
};

/** Why a limits patch was refused, in the words the admin typed: "`window` must be … from 1 to 2592000 (30 days); you gave 0". */
function whyRefused(platform: Platform, spec: Record<string, unknown>, issues: readonly z.core.$ZodIssue[]): string {
  const said = new Set<string>();
  for (const issue of issues) {
    const key = issue.path[0] as SpecKey | undefined;
    if (key === undefined || !(key in BOUNDS)) said.add(issue.message);
    else said.add(`\`${TYPED[platform][key] ?? key}\` must be ${BOUNDS[key]}; you gave ${String(spec[key])}`);
  }
  return [...said].join('; ');
}

async function show(deps: AdminDeps, inv: Invocation, ck: string): Promise<string> {
  const { limiter } = deps.gate;
  const { limit, source } = await limiter.channelLimit(ck);
  const from = { default: 'the default', config: 'the config file', redis: 'set by an admin' }[source];
  const d: Destination = inv.destination;
  const ids = scopeIds(d);
  const L = deps.config.limits;
  const [channel, user, workspace] = await Promise.all([
    limiter.usage('channel', ck, limit),
    limiter.usage('user', ids.user, L.user),
    limiter.usage('workspace', ids.workspace, L.workspace),
  ]);
  const prefix = `${d.platform}:${workspaceOf(d)}:`;
  const others = (await limiter.overriddenChannels()).filter((c) => c.startsWith(prefix) && c !== ck);
  return [
    `Limits for ${channelName(inv, ck)} (${from}): ${describeLimit(limit)}.`,
    `  now: ${describeUsage(channel)}`,
    `Per user: ${describeLimit(L.user)}. You: ${describeUsage(user)}.`,
    `Whole ${d.platform === 'discord' ? 'server' : 'workspace'}: ${describeLimit(L.workspace)}. Now: ${describeUsage(workspace)}.`,
    ...(others.length ? [`Other channels with limits set by an admin: ${others.join(', ')}`] : []),
  ].join('\n');
}

export async function limitsCommand(inv: Invocation, deps: AdminDeps): Promise<Reply> {
  const input = inv.input;
  if (input.command !== 'limits') throw new Error(`not a limits command: ${input.command}`);
  requireAdmin(inv, 'view or change limits');
  const ck = targetChannel(inv, input.channelKey);
  const { limiter } = deps.gate;
  switch (input.action) {
    case 'show':
      return { kind: 'text', text: await show(deps, inv, ck), private: true };
    case 'set': {
      const patch = SpecPatch.safeParse(input.spec ?? {});
      const platform = inv.destination.platform;
      if (!patch.success) throw new UserError('bad_request', `Cannot set those limits: ${whyRefused(platform, input.spec ?? {}, patch.error.issues)}. ${SET_USAGE[platform]}`);
      if (Object.keys(patch.data).length === 0) throw new UserError('bad_request', `Say which limits to set. ${SET_USAGE[platform]}`);
      const { limit } = await limiter.channelLimit(ck);
      const next = { ...limit, ...patch.data };
      await limiter.setChannelLimit(ck, next);
      return { kind: 'text', text: `Limits for ${channelName(inv, ck)} are now ${describeLimit(next)}. ${TAKES_EFFECT}`, private: true };
    }
    case 'reset': {
      await limiter.resetChannelLimit(ck);
      const { limit, source } = await limiter.channelLimit(ck);
      return { kind: 'text', text: `Limits for ${channelName(inv, ck)} are back to ${source === 'config' ? 'the config file' : 'the default'}: ${describeLimit(limit)}. ${TAKES_EFFECT}`, private: true };
    }
  }
}
