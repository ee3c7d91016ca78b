// `/blip3o-admin …` text → the core's admin commands (bots/slack/admin.ts): every form the usage lists, and a usage
// answer for anything else. And who is an admin of a workspace, from users.info's user object (adminOfWorkspace).
import { describe, expect, it } from 'vitest';
import { ADMIN_USAGE, adminOfWorkspace, NotAdmins, parseAdmin } from '../../../../bots/slack/admin.ts';
import { isUserError } from '../../../../src/errors.ts';

const refusal = (text: string): string => {
  try {
    parseAdmin(text);
  } catch (e) {
    if (isUserError(e)) return e.message;
    throw e;
  }
  throw new Error(`accepted: ${text}`);
};

describe('/blip3o-admin text', () => {
  it('limits: show by default, set with named numbers, reset', () => {
    expect(parseAdmin('limits')).toEqual({ command: 'limits', action: 'show' });
    expect(parseAdmin('  limits   show ')).toEqual({ command: 'limits', action: 'show' });
    expect(parseAdmin('limits reset')).toEqual({ command: 'limits', action: 'reset' });
    expect(parseAdmin('limits set requests=5 WINDOW=60 burst=8 concurrent=0')).toEqual({
      command: 'limits', action: 'set', spec: { requestsPerWindow: 5, windowSeconds: 60, burst: 8, maxConcurrent: 0 },
    });
    for (const pair of ['requests=-1', 'requests=1.5', 'requests=', 'requests', 'rate=5', 'requests=5x'])
      expect(refusal(`limits set ${pair}`), pair).toBe(`\`${pair}\` is not one of requests=N window=N burst=N concurrent=N.\n${ADMIN_USAGE}`);
    expect(refusal('limits set')).toBe(`Say which limits to set.\n${ADMIN_USAGE}`);
    expect(refusal('limits explode')).toBe(ADMIN_USAGE);
  });

  it('checks: show by default, set with the rest of the text, reset', () => {
    expect(parseAdmin('checks')).toEqual({ command: 'checks', action: 'show' });
    expect(parseAdmin('checks show')).toEqual({ command: 'checks', action: 'show' });
    expect(parseAdmin('checks reset')).toEqual({ command: 'checks', action: 'reset' });
    expect(parseAdmin('checks set match=on  threshold=0.7')).toEqual({ command: 'checks', action: 'set', settings: 'match=on threshold=0.7' });
    expect(parseAdmin('checks set')).toEqual({ command: 'checks', action: 'set', settings: '' });
    expect(refusal('checks explode')).toBe(ADMIN_USAGE);
  });

  it('budget: show (yours or @someone), set an amount for this channel, the workspace or @someone, reset', () => {
    expect(parseAdmin('budget')).toEqual({ command: 'budget', action: 'show' });
    expect(parseAdmin('budget show <@U123|pat>')).toEqual({ command: 'budget', action: 'show', targetUserId: 'U123' });
    expect(refusal('budget show nobody')).toBe(`\`nobody\` is not @someone.\n${ADMIN_USAGE}`); // was ignored: the caller's own budget shown
    expect(parseAdmin('budget set 600')).toEqual({ command: 'budget', action: 'set', seconds: 600, scope: 'channel' });
    expect(parseAdmin('budget set 1.5 channel')).toEqual({ command: 'budget', action: 'set', seconds: 1.5, scope: 'channel' });
    expect(parseAdmin('budget set 2.25')).toEqual({ command: 'budget', action: 'set', seconds: 2.25, scope: 'channel' });
    expect(parseAdmin('budget set 3600 workspace')).toEqual({ command: 'budget', action: 'set', seconds: 3600, scope: 'workspace' });
    expect(parseAdmin('budget set 120 <@U9>')).toEqual({ command: 'budget', action: 'set', seconds: 120, scope: 'user', targetUserId: 'U9' });
    expect(parseAdmin('budget reset')).toEqual({ command: 'budget', action: 'reset', scope: 'channel' });
    expect(parseAdmin('budget reset <@U9>')).toEqual({ command: 'budget', action: 'reset', scope: 'user', targetUserId: 'U9' });
    for (const amount of ['', ' -5', ' 1e3', ' 12x', ' .5'])
      expect(refusal(`budget set${amount}`), amount).toBe(`Give the budget in GPU-seconds per day: \`/blip3o-admin budget set 600\`.\n${ADMIN_USAGE}`);
    for (const who of ['guild', '@pat', '<@u9>', '<@U9>x', 'x<@U9>'])
      expect(refusal(`budget reset ${who}`), who).toBe(`\`${who}\` is not channel, workspace or @someone.\n${ADMIN_USAGE}`);
    expect(refusal('budget explode')).toBe(ADMIN_USAGE);
  });

  it('usage with or without a number of days; queue status, pause, resume and purge @user', () => {
    expect(parseAdmin('usage')).toEqual({ command: 'usage' });
    expect(parseAdmin('usage 30')).toEqual({ command: 'usage', days: 30 });
    expect(refusal('usage week')).toBe(ADMIN_USAGE);
    expect(refusal('usage 7d')).toBe(ADMIN_USAGE);
    expect(refusal('usage x7')).toBe(ADMIN_USAGE);
    expect(parseAdmin('queue')).toEqual({ command: 'queue', action: 'status' });
    expect(parseAdmin('queue status')).toEqual({ command: 'queue', action: 'status' });
    expect(parseAdmin('queue pause')).toEqual({ command: 'queue', action: 'pause' });
    expect(parseAdmin('queue resume')).toEqual({ command: 'queue', action: 'resume' });
    expect(parseAdmin('queue purge <@U7|sam>')).toEqual({ command: 'queue', action: 'purge-user', targetUserId: 'U7' });
    for (const who of ['', ' sam', ' <@U7>x'])
      expect(refusal(`queue purge${who}`), who).toBe(`Name the user to purge: \`/blip3o-admin queue purge @someone\`.\n${ADMIN_USAGE}`);
    expect(refusal('queue explode')).toBe(ADMIN_USAGE);
    expect(refusal('')).toBe(ADMIN_USAGE);
    expect(refusal('help')).toBe(ADMIN_USAGE);
    expect(ADMIN_USAGE.split('\n')).toHaveLength(8);
  });

  it('refuses words it would ignore: `limits reset #general` typed in #random reset #random', () => {
    const extra = (text: string, word: string) => `\`${word}\` is more than \`/blip3o-admin ${text.slice(0, text.lastIndexOf(word)).trim()}\` takes (it acts on the channel you type it in, on one user at a time).\n${ADMIN_USAGE}`;
    for (const [text, word] of [
      ['limits reset <#C2|general>', '<#C2|general>'],
      ['limits show <#C2|general>', '<#C2|general>'],
      ['checks reset <#C2>', '<#C2>'],
      ['checks show now', 'now'],
      ['queue pause <#C2|general>', '<#C2|general>'],
      ['queue resume everything', 'everything'],
      ['queue status all', 'all'],
      ['queue purge <@U7> <@U8>', '<@U8>'],
      ['budget show <@U7> <@U8>', '<@U8>'],
      ['budget set 600 workspace <@U8>', '<@U8>'],
      ['budget reset channel now', 'now'],
      ['usage 7 days', 'days'],
    ] as const)
      expect(refusal(text), text).toBe(extra(text, word));
  });

  it('limits set: the window in seconds, or with a unit (90s, 10m, 2h, 1d)', () => {
    for (const [window, seconds] of [['60', 60], ['90s', 90], ['10m', 600], ['2h', 7200], ['1d', 86_400], ['1D', 86_400]] as const)
      expect(parseAdmin(`limits set requests=5 window=${window}`), window).toEqual({ command: 'limits', action: 'set', spec: { requestsPerWindow: 5, windowSeconds: seconds } });
    for (const pair of ['requests=5m', 'window=m', 'window=10w', 'window=1.5h', 'concurrent=2h'])
      expect(refusal(`limits set ${pair}`), pair).toBe(`\`${pair}\` is not one of requests=N window=N burst=N concurrent=N.\n${ADMIN_USAGE}`);
    expect(ADMIN_USAGE).toContain('window=60 (seconds, or 10m, 2h, 1d)');
  });
});

describe('adminOfWorkspace: users.info\'s user object → an admin of the workspace asked in', () => {
  const HERE = { teamId: 'T1' };
  const GRID = { teamId: 'T1', enterpriseId: 'E1' };
  /** users.info's `enterprise_user` (api.slack.com/types/user) of org `enterpriseId`, with Org Admin / Owner roles. */
  const org = (enterpriseId: string, roles: { is_admin?: boolean; is_owner?: boolean } = {}) => ({
    id: 'U1', enterprise_id: enterpriseId, enterprise_name: 'Org', is_admin: false, is_owner: false, is_primary_owner: false, teams: ['T1'], ...roles,
  });

  it('a workspace Admin or Owner of this workspace; nobody else of it, and nobody without an answer', () => {
    expect(adminOfWorkspace({ team_id: 'T1', is_admin: true, is_owner: false }, HERE)).toBe(true);
    expect(adminOfWorkspace({ team_id: 'T1', is_admin: false, is_owner: true }, HERE)).toBe(true);
    expect(adminOfWorkspace({ team_id: 'T1', is_admin: false, is_owner: false }, HERE)).toBe(false);
    expect(adminOfWorkspace({ team_id: 'T1' }, HERE)).toBe(false);
    expect(adminOfWorkspace(undefined, HERE)).toBe(false);
  });

  it('on Grid, an Org Admin or Owner of this workspace\'s org, holding no workspace role; their team_id may be another workspace of the org', () => {
    expect(adminOfWorkspace({ team_id: 'T1', is_admin: false, enterprise_user: org('E1', { is_admin: true }) }, GRID)).toBe(true);
    expect(adminOfWorkspace({ team_id: 'T2', is_owner: false, enterprise_user: org('E1', { is_owner: true }) }, GRID)).toBe(true);
    expect(adminOfWorkspace({ team_id: 'T1', enterprise_user: org('E1') }, GRID)).toBe(false);
    // a workspace Admin whose team_id names another workspace of the org (or the org itself)
    expect(adminOfWorkspace({ team_id: 'E1', is_admin: true, enterprise_user: org('E1') }, GRID)).toBe(true);
  });

  it('a Slack Connect member of another organisation is none, whatever their roles there', () => {
    const partnerOrg = org('E9', { is_admin: true, is_owner: true });
    expect(adminOfWorkspace({ team_id: 'T9', is_admin: true, is_owner: true, enterprise_user: partnerOrg }, GRID)).toBe(false);
    expect(adminOfWorkspace({ team_id: 'T9', is_admin: true, is_owner: true, enterprise_user: partnerOrg }, HERE)).toBe(false);
    expect(adminOfWorkspace({ team_id: 'T9', is_admin: true, is_owner: true }, GRID)).toBe(false);
    // outside Grid, a user without an org is not "of the same org" as a workspace without one
    expect(adminOfWorkspace({ team_id: 'T9', is_admin: true }, HERE)).toBe(false);
    expect(adminOfWorkspace({ team_id: 'T9', enterprise_user: { is_admin: true } }, HERE)).toBe(false);
  });
});

describe('NotAdmins: who was found not to be an admin, for a while', () => {
  it('remembers "not an admin" for its time only, forgets an admin at once, and drops the expired as new ones come', () => {
    let now = 0;
    const notAdmins = new NotAdmins(300_000, () => now);
    notAdmins.record('T1 U1', false);
    expect(notAdmins.has('T1 U1')).toBe(true);
    expect(notAdmins.has('T2 U1')).toBe(false); // per workspace and user
    now = 299_999;
    expect(notAdmins.has('T1 U1')).toBe(true);
    now = 300_000;
    expect(notAdmins.has('T1 U1')).toBe(false); // asked again after 5 minutes
    notAdmins.record('T1 U2', false);
    notAdmins.record('T1 U2', true); // made an admin since: forgotten at once
    expect(notAdmins.has('T1 U2')).toBe(false);
    // The expired go as new ones come; a user found again moves behind the newer ones and stays its whole time.
    now = 0;
    const many = new NotAdmins(300_000, () => now);
    for (let i = 0; i < 1_000; i++) {
      now = i * 1_000;
      many.record(`T1 U${i}`, false);
    }
    expect(many.size).toBe(300); // the last 5 minutes' users only (before: all 1,000, for the life of the process)
    expect(many.has('T1 U699')).toBe(false);
    expect(many.has('T1 U700')).toBe(true);
    many.record('T1 U700', false); // found again at 999 s: kept to 1,299 s, behind the newer ones
    now = 1_100_000;
    many.record('T1 U2000', false);
    expect(many.has('T1 U700')).toBe(true);
    expect(many.has('T1 U800')).toBe(false);
    expect(many.size).toBe(201); // U801…U999 found in the last 5 minutes, U700 found again, U2000
  });
});
