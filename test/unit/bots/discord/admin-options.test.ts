// /blip3o-admin as a server admin meets it in Discord's client: what the registration lets them type
// (bots/discord/commands.ts: required options, bounds, defaults named in descriptions) and which budget a
// budget subcommand changes when they name a user (bots/discord/admin.ts).
import { describe, expect, it } from 'vitest';
import { adminInput, type AdminOptionReader } from '../../../../bots/discord/admin.ts';
import { COMMAND, commandDefinitions } from '../../../../bots/discord/commands.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { MAX_BURST } from '../../../../src/config/schema.ts';
import { isUserError } from '../../../../src/errors.ts';

interface Option { name: string; description?: string; required?: boolean; min_value?: number; max_value?: number; options?: Option[] }
const adminOptions = (retainDays = 30): Option[] => {
  const config = loadConfig({ env: {}, overrides: { usage: { retainDays } } });
  return ((commandDefinitions(config) as unknown as Option[]).find((c) => c.name === COMMAND.admin)?.options) ?? [];
};
const at = (options: Option[], ...path: string[]): Option => {
  let found: Option | undefined;
  let list = options;
  for (const name of path) {
    found = list.find((o) => o.name === name);
    if (!found) throw new Error(`no option ${path.join(' ')}`);
    list = found.options ?? [];
  }
  return found!;
};

/** Options as discord.js's resolver gives them: null for anything not sent. */
function reader(group: string | null, sub: string, values: Record<string, string | number | { id: string }> = {}): AdminOptionReader {
  const get = (name: string) => (name in values ? values[name] : null);
  return {
    getSubcommandGroup: () => group,
    getSubcommand: () => sub,
    getInteger: (name) => get(name) as number | null,
    getNumber: (name) => get(name) as number | null,
    getString: (name) => get(name) as string | null,
    getUser: ((name: string) => get(name)) as AdminOptionReader['getUser'],
  };
}
const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (isUserError(e)) return e.message;
    throw e;
  }
  throw new Error('accepted');
};

describe('/blip3o-admin registration', () => {
  it('limits set: each limit can be given alone (only those given change), within the bounds the core accepts', () => {
    const set = at(adminOptions(), 'limits', 'set');
    // until now per-minute was required: an admin could not change the cap without also replacing the rate
    expect(set.options?.filter((o) => o.required).map((o) => o.name)).toEqual([]);
    expect(at(set.options!, 'per-minute')).toMatchObject({ min_value: 0, max_value: MAX_BURST });
    for (const o of set.options!) expect(o.description, o.name).toMatch(/0 = no limit/);
  });

  it("budget set: seconds up to the core's bound; the user option says what it is for", () => {
    const options = adminOptions();
    expect(at(options, 'budget', 'set', 'seconds')).toMatchObject({ min_value: 0, max_value: 1_000_000_000 });
    expect(at(options, 'budget', 'show', 'user').description).not.toMatch(/scope/); // show has no scope option
  });

  it("usage: the default number of days it names is the one it uses (a week, or every day kept when fewer are)", () => {
    expect(at(adminOptions(30), 'usage', 'days').description).toMatch(/default 7\b/);
    expect(at(adminOptions(3), 'usage', 'days')).toMatchObject({ max_value: 3, description: expect.stringMatching(/default 3\b/) });
  });
});

describe('/blip3o-admin budget with a user', () => {
  const ck = 'discord:g:c';
  it("a user named without a scope is that user's budget, not this channel's", () => {
    expect(adminInput(reader('budget', 'set', { seconds: 120, user: { id: 'u9' } }), ck)).toEqual({ command: 'budget', action: 'set', scope: 'user', targetUserId: 'u9', seconds: 120 });
    expect(adminInput(reader('budget', 'reset', { user: { id: 'u9' } }), ck)).toEqual({ command: 'budget', action: 'reset', scope: 'user', targetUserId: 'u9' });
    expect(adminInput(reader('budget', 'set', { seconds: 120 }), ck)).toEqual({ command: 'budget', action: 'set', scope: 'channel', seconds: 120 });
  });

  it('a user with scope this channel or this server is refused, not ignored', () => {
    for (const scope of ['channel', 'workspace'])
      expect(refusal(() => adminInput(reader('budget', 'set', { seconds: 5, scope, user: { id: 'u9' } }), ck)), scope).toBe(
        'Choose scope: a user (or leave scope out) to change a user\'s budget; the user option is for that only.',
      );
  });
});
