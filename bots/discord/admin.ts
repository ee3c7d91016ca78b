// `/blip3o-admin queue …`, `limits …`, `budget …`, `checks …` and `usage [days]` → the core's admin CommandInputs (bots/core/commands/).
// Permission is checked by the adapter (Manage Server) before this runs; the core refuses non-admins again.
import { UserError } from '../../src/errors.ts';
import type { CommandInput } from '../core/port.ts';

/** The part of discord.js's option resolver the admin command reads. */
export interface AdminOptionReader {
  getSubcommandGroup(required?: boolean): string | null;
  getSubcommand(required: true): string;
  getInteger(name: string): number | null;
  getUser(name: string, required: true): { id: string };
  getNumber?(name: string): number | null;
  getString?(name: string): string | null;
  getUser(name: string): { id: string } | null;
}

const BUDGET_ACTIONS = new Set(['show', 'set', 'reset']);
const SCOPES = new Set(['channel', 'user', 'workspace']);

const QUEUE_ACTIONS = new Set(['status', 'pause', 'resume', 'purge-user']);
const LIMITS_ACTIONS = new Set(['show', 'set', 'reset']);

/** `channelKey` is this channel's ("discord:<guild>:<channel>"): admins act on the channel they type in. */
export function adminInput(o: AdminOptionReader, channelKey: string): CommandInput {
  const group = o.getSubcommandGroup(false);
  const sub = o.getSubcommand(true);
  if (group === null && sub === 'usage') {
    const days = o.getInteger('days');
    return { command: 'usage', ...(days !== null ? { days } : {}) };
  }
  if (group === 'budget' && BUDGET_ACTIONS.has(sub)) {
    const action = sub as 'show' | 'set' | 'reset';
    const user = o.getUser('user');
    // A user named without a scope means their budget: until 2026-12-07 scope fell back to this channel, and
    // `budget set seconds:120 user:@pat` changed the channel's budget.
    const scope = o.getString?.('scope') ?? (user ? 'user' : 'channel');
    if (!SCOPES.has(scope)) throw new UserError('bad_request', 'scope must be channel, user or workspace.');
    if (user && scope !== 'user' && action !== 'show')
      throw new UserError('bad_request', "Choose scope: a user (or leave scope out) to change a user's budget; the user option is for that only.");
    const seconds = o.getNumber?.('seconds') ?? null;
    return {
      command: 'budget', action, scope: scope as 'channel' | 'user' | 'workspace',
      ...(user ? { targetUserId: user.id } : {}), ...(action === 'set' && seconds !== null ? { seconds } : {}),
    };
  }
  if (group === 'queue' && QUEUE_ACTIONS.has(sub)) {
    const action = sub as 'status' | 'pause' | 'resume' | 'purge-user';
    return action === 'purge-user' ? { command: 'queue', action, targetUserId: o.getUser('user', true).id } : { command: 'queue', action };
  }
  if (group === 'limits' && LIMITS_ACTIONS.has(sub)) {
    const action = sub as 'show' | 'set' | 'reset';
    if (action !== 'set') return { command: 'limits', action, channelKey };
    // "per-minute" is a one-minute window that may burst to the same number; 0 turns a limit off.
    const spec: Record<string, number> = {};
    const perMinute = o.getInteger('per-minute');
    const concurrent = o.getInteger('concurrent');
    if (perMinute !== null) Object.assign(spec, { requestsPerWindow: perMinute, windowSeconds: 60, burst: perMinute });
    if (concurrent !== null) spec.maxConcurrent = concurrent;
    return { command: 'limits', action, channelKey, spec };
  }
  if (group === 'checks' && LIMITS_ACTIONS.has(sub)) {
    const action = sub as 'show' | 'set' | 'reset';
    return action === 'set' ? { command: 'checks', action, channelKey, settings: o.getString?.('settings') ?? '' } : { command: 'checks', action, channelKey };
  }
  throw new UserError('bad_request', `Unknown admin command: ${group} ${sub}. Restart the bot so it registers its commands again (or run npm run discord:register).`);
}
