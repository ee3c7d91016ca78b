// /blip3o-admin checks (admins): show, set or reset what the model checks of this channel's images (issue 16,
// docs/checks.md). Stored in Redis (src/checks/policy.ts CheckOverrides), where every worker reads it per job; it
// wins over config/default.yaml's checks.channelOverrides and checks.ageRestricted.
//   checks [show] · checks set alt=on match=on threshold=0.7 rerolls=2 moderation=on nudity=0.9 · checks reset
import { CheckOverrides, resolvePolicy, type CheckPolicy } from '../../../src/checks/policy.ts';
import { CheckPolicyOverride } from '../../../src/config/schema.ts';
import { UserError } from '../../../src/errors.ts';
import { channelKey, type Destination } from '../../../src/jobs/contract.ts';
import type { Redis } from '../../../src/redis.ts';
import type { Config } from '../../../src/config/schema.ts';
import type { Invocation, Reply } from '../port.ts';
import { channelName, requireAdmin, targetChannel } from './limits.ts';

export const CHECKS_USAGE =
  'Settings: alt=on|off, match=on|off, threshold=0…1 (re-roll below it), rerolls=0…10, moderation=on|off, and <question id>=0…1 (withhold above it).';

const onOff = (key: string, v: string): boolean => {
  if (/^(on|true|yes)$/i.test(v)) return true;
  if (/^(off|false|no)$/i.test(v)) return false;
  throw new UserError('bad_request', `${key} must be on or off. ${CHECKS_USAGE}`);
};

const fraction = (key: string, v: string): number => {
  const n = Number(v);
  // Stryker disable next-line ConditionalExpression: equivalent, `n < 0`: the pattern lets no sign through
  if (!/^\d*\.?\d+$/.test(v) || n < 0 || n > 1) throw new UserError('bad_request', `${key} must be a number from 0 to 1. ${CHECKS_USAGE}`);
  return n;
};

/** "match=on threshold=0.7 nudity=0.9" → an override; question ids are checked against the configured questions. */
export function parseCheckSettings(text: string, questionIds: readonly string[]): CheckPolicyOverride {
  const change: CheckPolicyOverride = {};
  // Stryker disable next-line MethodExpression,Regex: equivalent, the empty pieces an untrimmed text or a single-space split leaves are filtered out
  for (const pair of text.trim().split(/\s+/).filter(Boolean)) {
    const [rawKey, v] = pair.split('=', 2) as [string, string | undefined];
    const key = rawKey.toLowerCase();
    if (v === undefined || v === '') throw new UserError('bad_request', `\`${pair}\` is not key=value. ${CHECKS_USAGE}`);
    if (key === 'alt') change.altText = onOff(key, v);
    else if (key === 'match') change.match = onOff(key, v);
    else if (key === 'moderation') change.moderation = onOff(key, v);
    else if (key === 'threshold') change.matchThreshold = fraction(key, v);
    else if (key === 'rerolls') {
      if (!/^\d+$/.test(v) || Number(v) > 10) throw new UserError('bad_request', `rerolls must be a whole number from 0 to 10. ${CHECKS_USAGE}`);
      change.maxRerolls = Number(v);
    } else if (questionIds.includes(key)) change.thresholds = { ...change.thresholds, [key]: fraction(key, v) };
    else throw new UserError('bad_request', `Unknown setting \`${rawKey}\`. ${CHECKS_USAGE} Questions here: ${questionIds.join(', ') || 'none'}.`);
  }
  if (Object.keys(change).length === 0) throw new UserError('bad_request', `Say what to change. ${CHECKS_USAGE}`);
  return CheckPolicyOverride.parse(change);
}

export function describePolicy(p: CheckPolicy): string {
  const lines = [
    `alt text from the model's caption: ${p.altText ? 'on' : 'off'}`,
    p.match.enabled ? `prompt match: on, re-roll below ${p.match.threshold} up to ${p.match.maxRerolls} times` : 'prompt match: off',
    p.moderation.enabled
      ? `moderation: on, withheld when P(yes) is above: ${p.moderation.questions.map((q) => `${q.id} ${q.threshold}`).join(', ') || '(no questions configured)'}`
      : 'moderation: off',
  ];
  return lines.map((l) => `• ${l}`).join('\n');
}

export async function checksCommand(inv: Invocation, core: { readonly config: Readonly<Config>; readonly redis: Redis }): Promise<Reply> {
  const input = inv.input;
  if (input.command !== 'checks') throw new Error(`not a checks command: ${input.command}`);
  requireAdmin(inv, "view or change this channel's image checks");
  const ck = targetChannel(inv, input.channelKey);
  const store = new CheckOverrides(core.redis, core.config.queue.prefix);
  const name = channelName(inv, ck);
  // The age-restricted layer depends on the channel, and is known only for the channel the admin types in: another
  // channel is shown without it (not with this channel's).
  const elsewhere = (): Destination => {
    const other = { ...inv.destination, channelId: ck.split(':')[2] ?? '' };
    if (other.platform === 'discord') delete other.nsfw;
    return other;
  };
  const policyOf = async () => resolvePolicy(core.config.checks, ck === channelKey(inv.destination) ? inv.destination : elsewhere(), await store.get(ck));
  switch (input.action) {
    case 'show': {
      const set = await store.get(ck);
      return { kind: 'text', text: `Image checks in ${name}${set ? ' (changed by an admin)' : ''}:\n${describePolicy(await policyOf())}`, private: true };
    }
    case 'set': {
      const change = parseCheckSettings(input.settings ?? '', core.config.checks.moderation.questions.map((q) => q.id));
      await store.set(ck, change);
      return { kind: 'text', text: `Image checks in ${name} are now:\n${describePolicy(await policyOf())}`, private: true };
    }
    case 'reset': {
      await store.reset(ck);
      return { kind: 'text', text: `Image checks in ${name} are back to the configured defaults:\n${describePolicy(await policyOf())}`, private: true };
    }
  }
}
