// `/blip3o-admin …` → the core's admin commands (bots/core/commands/limits.ts, queue.ts). Who is an admin is
// Slack's answer, users.info read by adminOfWorkspace below (checked by the handler, enforced by the core).
//   /blip3o-admin limits [show]                         this channel's limits and usage
//   /blip3o-admin limits set requests=5 window=60 burst=5 concurrent=2   (window also as 10m, 2h, 1d)
//   /blip3o-admin limits reset
//   /blip3o-admin queue [status] | pause | resume | purge @user
//   /blip3o-admin checks [show] | set alt=on match=on threshold=0.7 rerolls=2 moderation=on nudity=0.9 | reset
//   /blip3o-admin budget [show [@user]] | set <GPU-seconds> [channel|workspace|@user] | reset [channel|workspace|@user]
//   /blip3o-admin usage [days]
import type { UsersInfoResponse } from '@slack/web-api';
import { UserError } from '../../src/errors.ts';
import type { CommandInput } from '../core/port.ts';
import { parseDuration } from '../core/settings.ts';

/** The workspace a command, event or button came from: its team id, and its Enterprise Grid org's (none outside Grid). */
export interface SlackWorkspace {
  teamId: string;
  enterpriseId?: string;
}

/**
 * Whether users.info's `user` is an admin of `where`. Fields: api.slack.com/types/user; who is external:
 * api.slack.com/apis/channels-between-orgs#external ("the team associated with the user is not the installing team").
 * Counted:
 *   - `is_admin` / `is_owner`: an Admin or Owner "of the current workspace" (the bot token's). Taken from a user of this
 *     workspace (`team_id`) or of its org only: a Slack Connect member of another organisation has their own team_id
 *     (and org), and is no admin here whatever they are there (until 2026-12-07 they were, on these two flags alone).
 *   - `enterprise_user.is_admin` / `is_owner`: an Org Admin or Owner of the Grid org `enterprise_user.enterprise_id`,
 *     who administers every workspace of the org, mostly without a role in it (until 2026-12-07 refused). Only where
 *     that org is the one the request came from (`where.enterpriseId`, named by Slack's payload).
 * A Primary Owner is an Owner too (is_owner), at both levels. Without an answer (`undefined`): nobody.
 */
export function adminOfWorkspace(user: UsersInfoResponse['user'], where: SlackWorkspace): boolean {
  if (!user) return false;
  const org = user.enterprise_user;
  const ofThisOrg = where.enterpriseId !== undefined && org?.enterprise_id === where.enterpriseId;
  const ofThisWorkspace = user.team_id === where.teamId || ofThisOrg;
  return (ofThisWorkspace && Boolean(user.is_admin || user.is_owner)) || (ofThisOrg && Boolean(org.is_admin || org.is_owner));
}

/**
 * Who was found not to be an admin of a workspace, for `forMs` after it was found (keys "<team> <user>"). Only that is
 * remembered, so a demoted admin is refused at once. Entries are kept in the order they were found and those past
 * `forMs` are dropped as new ones come: one bot asked by every user of a large workspace over months holds only the
 * last `forMs` of them (until 2026-12-08 one entry per user stayed for the life of the process).
 */
export class NotAdmins {
  private readonly foundAt = new Map<string, number>();

  constructor(
    private readonly forMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  has(key: string): boolean {
    const at = this.foundAt.get(key);
    return at !== undefined && this.now() - at < this.forMs;
  }

  /** `key` is no admin as of now (it moves to the end of the order), or is one again (`admin`: forgotten). */
  record(key: string, admin: boolean): void {
    this.foundAt.delete(key);
    if (!admin) this.foundAt.set(key, this.now());
    for (const [oldest, at] of this.foundAt) {
      if (this.now() - at < this.forMs) break;
      this.foundAt.delete(oldest);
    }
  }

  get size(): number {
    return this.foundAt.size;
  }
}

export const ADMIN_USAGE = [
  'Usage:',
  '• `/blip3o-admin limits` (or `limits show`): the limits in force in this channel and their use',
  '• `/blip3o-admin limits set requests=5 window=60 burst=5 concurrent=2`: override them here; window=60 (seconds, or 10m, 2h, 1d); 0 turns one off',
  '• `/blip3o-admin limits reset`: back to the configured defaults',
  '• `/blip3o-admin queue`: queue depth; `queue pause` / `queue resume` this channel; `queue purge @user`',
  '• `/blip3o-admin checks` (or `checks show`): what the model checks of images here; `checks set match=on threshold=0.7 rerolls=2 moderation=on nudity=0.9`; `checks reset`',
  '• `/blip3o-admin budget`: GPU-second budgets per day and their use; `budget set 600` (this channel), `budget set 3600 workspace`, `budget set 120 @user`, `budget reset …`',
  '• `/blip3o-admin usage [days]`: top channels and users by GPU-seconds, with a chart sent to you privately',
].join('\n');

// Stryker disable next-line StringLiteral: equivalent, nothing to match either way
const userMention = (text: string | undefined) => /^<@([A-Z0-9]+)(\|[^>]*)?>$/.exec(text ?? '')?.[1];

/** "channel" | "workspace" | "@user" (default channel) → scope and target. */
function budgetTarget(word: string | undefined): { scope: 'channel' | 'user' | 'workspace'; targetUserId?: string } {
  if (word === undefined || word === 'channel') return { scope: 'channel' };
  if (word === 'workspace') return { scope: 'workspace' };
  const user = userMention(word);
  if (user) return { scope: 'user', targetUserId: user };
  throw new UserError('bad_request', `\`${word}\` is not channel, workspace or @someone.\n${ADMIN_USAGE}`);
}

const SPEC_KEYS: Record<string, string> = {
  requests: 'requestsPerWindow',
  window: 'windowSeconds',
  burst: 'burst',
  concurrent: 'maxConcurrent',
};

/** A limit's value: a whole number; the window a duration as /settings reads one ("600", "10m", "2h", "1d"). */
function specValue(key: string, v: string | undefined): number | undefined {
  if (key !== 'windowSeconds') return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  try {
    return v === undefined || /\s/.test(v) ? undefined : parseDuration(v);
  } catch {
    return undefined; // said with the usage below
  }
}

export function parseAdmin(text: string): CommandInput {
  // Stryker disable next-line MethodExpression,Regex: equivalent, the trim, the filter and a single-space split each only remove empty words
  const words = text.trim().split(/\s+/).filter(Boolean);
  const [area, action, ...rest] = words;
  /**
   * The command is its first `n` words: a word after them is refused, not ignored (until 2026-12-07 `limits reset
   * #general` typed in #random reset #random, and `queue purge @a @b` purged @a alone).
   */
  const taking = (n: number, input: CommandInput): CommandInput => {
    if (words.length > n)
      throw new UserError('bad_request', `\`${words[n]}\` is more than \`/blip3o-admin ${words.slice(0, n).join(' ')}\` takes (it acts on the channel you type it in, on one user at a time).\n${ADMIN_USAGE}`);
    return input;
  };
  const showWords = action === undefined ? 1 : 2; // "limits" and "limits show" are the same command
  if (area === 'limits') {
    if (!action || action === 'show') return taking(showWords, { command: 'limits', action: 'show' });
    if (action === 'reset') return taking(2, { command: 'limits', action: 'reset' });
    if (action === 'set') {
      const spec: Record<string, number> = {};
      for (const pair of rest) {
        const [k, v] = pair.split('=', 2) as [string, string | undefined];
        const key = SPEC_KEYS[k.toLowerCase()];
        const value = key ? specValue(key, v) : undefined;
        if (!key || value === undefined) throw new UserError('bad_request', `\`${pair}\` is not one of requests=N window=N burst=N concurrent=N.\n${ADMIN_USAGE}`);
        spec[key] = value;
      }
      if (Object.keys(spec).length === 0) throw new UserError('bad_request', `Say which limits to set.\n${ADMIN_USAGE}`);
      return { command: 'limits', action: 'set', spec };
    }
  }
  if (area === 'checks') {
    if (!action || action === 'show') return taking(showWords, { command: 'checks', action: 'show' });
    if (action === 'reset') return taking(2, { command: 'checks', action: 'reset' });
    if (action === 'set') return { command: 'checks', action: 'set', settings: rest.join(' ') };
  }
  if (area === 'budget') {
    if (!action || action === 'show') {
      const user = userMention(rest[0]);
      // Something that is not a mention (plain "@pat", which Slack did not turn into one) is refused, not ignored.
      if (rest[0] !== undefined && !user) throw new UserError('bad_request', `\`${rest[0]}\` is not @someone.\n${ADMIN_USAGE}`);
      return taking(user ? 3 : showWords, { command: 'budget', action: 'show', ...(user ? { targetUserId: user } : {}) });
    }
    if (action === 'set') {
      const [amount, who] = rest;
      if (!amount || !/^\d+(\.\d+)?$/.test(amount)) throw new UserError('bad_request', `Give the budget in GPU-seconds per day: \`/blip3o-admin budget set 600\`.\n${ADMIN_USAGE}`);
      return taking(who === undefined ? 3 : 4, { command: 'budget', action: 'set', seconds: Number(amount), ...budgetTarget(who) });
    }
    if (action === 'reset') return taking(rest[0] === undefined ? 2 : 3, { command: 'budget', action: 'reset', ...budgetTarget(rest[0]) });
  }
  if (area === 'usage') {
    if (action === undefined) return { command: 'usage' };
    if (/^\d+$/.test(action)) return taking(2, { command: 'usage', days: Number(action) });
  }
  if (area === 'queue') {
    if (!action || action === 'status') return taking(showWords, { command: 'queue', action: 'status' });
    if (action === 'pause' || action === 'resume') return taking(2, { command: 'queue', action });
    if (action === 'purge') {
      const user = userMention(rest[0]);
      if (!user) throw new UserError('bad_request', `Name the user to purge: \`/blip3o-admin queue purge @someone\`.\n${ADMIN_USAGE}`);
      return taking(3, { command: 'queue', action: 'purge-user', targetUserId: user });
    }
  }
  throw new UserError('bad_request', ADMIN_USAGE);
}
