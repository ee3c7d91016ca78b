// /blip3o-admin budget and usage (bots/core/commands/usage.ts) over real Redis and a real gate, without a worker: who
// may use them, whose budget each one changes and what the admin reads back, the usage report's table and chart.
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandInput, Invocation, Reply } from '../../../../../bots/core/port.ts';
import { budgetCommand, cleanName, usageChart, usageChartSvg, usageCommand } from '../../../../../bots/core/commands/usage.ts';
import { loadConfig } from '../../../../../src/config/load.ts';
import { isUserError } from '../../../../../src/errors.ts';
import { CONTRACT_VERSION, type Destination, type JobRequest } from '../../../../../src/jobs/contract.ts';
import { createJobsQueue, type JobsQueue } from '../../../../../src/jobs/queue.ts';
import { createGate, type Gate } from '../../../../../src/limits/gate.ts';
import { scopeIds } from '../../../../../src/limits/limiter.ts';
import { memberId } from '../../../../../src/accounting/usage.ts';
import { closeRedis, createRedis, deleteKeys, type Redis } from '../../../../../src/redis.ts';

const prefix = `t-usage-cmd-${randomUUID().slice(0, 8)}`;
const config = loadConfig({ env: {}, overrides: { queue: { prefix }, usage: { budgets: { channel: 600, user: 0, workspace: 5000 }, estimateSmoothing: 0.3, fairCostUnitMs: 100, retainDays: 30 } } });
let redis: Redis;
let queue: JobsQueue;
let gate: Gate;

const discord = (channelId = 'c1', userId = 'admin', guildId = 'g1'): Destination => ({ platform: 'discord', guildId, channelId, userId, applicationId: 'app' });
const slack = (channelId = 'C1', userId = 'UADMIN'): Destination => ({ platform: 'slack', teamId: 'T1', channelId, userId });
const inv = (input: CommandInput, destination: Destination = discord(), isAdmin = true): Invocation => ({ input, destination, dedupeKey: randomUUID(), isAdmin });
const textOf = async (reply: Promise<Reply>) => {
  const r = await reply;
  if (r.kind !== 'text') throw new Error(`not a text reply: ${JSON.stringify(r)}`);
  expect(r.private).toBe(true); // budgets and usage are for the admin's eyes only
  return r.text;
};
const refusal = async (reply: Promise<Reply>) => {
  const e = await reply.then(() => undefined, (err: unknown) => err);
  if (!isUserError(e)) throw new Error(`expected a UserError, got ${String(e)}`);
  return e;
};
const budget = (input: Omit<Extract<CommandInput, { command: 'budget' }>, 'command'>, d?: Destination, isAdmin?: boolean) =>
  budgetCommand(inv({ command: 'budget', ...input }, d, isAdmin), { config, gate });
/** A finished job of `seconds` GPU-seconds, counted as the worker counts it. */
async function ran(id: string, d: Destination, seconds: number) {
  const request: JobRequest = { v: CONTRACT_VERSION, id, destination: d, submittedAt: 1, kind: 'imagine', prompt: 'p', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } };
  await gate.usage.settle(request, { status: 'succeeded', timingsMs: { decoding: seconds * 1000 } }, 0);
}

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-usage-cmd');
  queue = createJobsQueue(config, redis);
  gate = createGate(redis, config, queue);
});
afterAll(async () => {
  gate.stop();
  await queue.close();
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

describe('/blip3o-admin budget', () => {
  it('is for admins only, and only for budget commands', async () => {
    for (const action of ['show', 'set', 'reset'] as const) {
      const e = await refusal(budget({ action, seconds: 5 }, discord(), false));
      expect(e.code).toBe('forbidden');
      expect(e.message).toBe('Only admins can view or change GPU budgets.');
    }
    await expect(budgetCommand(inv({ command: 'usage' }), { config, gate })).rejects.toThrow('not a budget command: usage');
  });

  it("shows each scope's budget, where it comes from, and today's use and what is in flight", async () => {
    const d = discord('show-c', 'show-admin', 'show-g');
    await ran('s1', d, 123.456);
    await gate.usage.admit('s2', d, { v: CONTRACT_VERSION, id: 's2', destination: d, submittedAt: 1, kind: 'imagine', prompt: 'p', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } });
    expect(await textOf(budget({ action: 'show' }, d))).toBe(
      [
        'GPU-second budgets per day (UTC; resets at 00:00 UTC):',
        '• this channel: 600 (default); used today 123, 123 more queued or running (estimated)',
        '• you: no budget; used today 123, 123 more queued or running (estimated)',
        '• this server: 5,000 (default); used today 123, 123 more queued or running (estimated)',
      ].join('\n'),
    );
    await gate.usage.release('s2');
    await budget({ action: 'set', scope: 'user', seconds: 12.34 }, d);
    expect(await textOf(budget({ action: 'show', targetUserId: 'someone' }, d))).toBe(
      [
        'GPU-second budgets per day (UTC; resets at 00:00 UTC):',
        '• this channel: 600 (default); used today 123',
        '• user <@someone>: no budget; used today 0',
        '• this server: 5,000 (default); used today 123',
      ].join('\n'),
    );
    expect(await textOf(budget({ action: 'show', targetUserId: 'show-admin' }, d))).toContain('• you: 12.3 (set by an admin); used today 123');
    expect(await textOf(budget({ action: 'show' }, slack('C9', 'U9')))).toContain('• this workspace: 5,000 (default); used today 0');
  });

  it("sets and resets the budget of this channel (the default), a user (the caller by default) or this workspace", async () => {
    const d = discord('set-c', 'set-admin', 'set-g');
    expect(await textOf(budget({ action: 'set', seconds: 90 }, d))).toBe('The GPU budget for this channel is now 90 GPU-seconds per day (resets at 00:00 UTC).');
    expect((await gate.usage.budgets(d)).channel).toEqual({ seconds: 90, source: 'redis' });
    expect(await textOf(budget({ action: 'set', scope: 'user', targetUserId: 'pat', seconds: 0 }, d))).toBe('The GPU budget for user <@pat> is now no budget.');
    expect((await gate.usage.budgets(discord('x', 'pat', 'set-g'))).user).toEqual({ seconds: 0, source: 'redis' }); // in any channel of this server
    expect((await gate.usage.budgets(discord('x', 'pat', 'other-g'))).user).toEqual({ seconds: 0, source: 'default' }); // not in another server
    expect((await gate.usage.budgets(d)).user).toEqual({ seconds: 0, source: 'default' });
    expect(await textOf(budget({ action: 'set', scope: 'user', seconds: 2500.7 }, d))).toBe('The GPU budget for you is now 2,501 GPU-seconds per day (resets at 00:00 UTC).');
    expect((await gate.usage.budgets(d)).user).toEqual({ seconds: 2500.7, source: 'redis' });
    expect(await textOf(budget({ action: 'set', scope: 'user', targetUserId: 'set-admin', seconds: 5 }, d))).toBe('The GPU budget for you is now 5 GPU-seconds per day (resets at 00:00 UTC).');
    expect(await textOf(budget({ action: 'set', scope: 'workspace', seconds: 1e9 }, d))).toBe('The GPU budget for this server is now 1,000,000,000 GPU-seconds per day (resets at 00:00 UTC).');
    expect((await gate.usage.budgets(discord('other-c', 'u', 'set-g'))).workspace).toEqual({ seconds: 1e9, source: 'redis' });

    expect(await textOf(budget({ action: 'reset' }, d))).toBe('The GPU budget for this channel is back to the default: 600 GPU-seconds per day.');
    expect((await gate.usage.budgets(d)).channel).toEqual({ seconds: 600, source: 'default' });
    expect(await textOf(budget({ action: 'reset', scope: 'user', targetUserId: 'pat' }, d))).toBe('The GPU budget for user <@pat> is back to the default: no budget.');
    expect((await gate.usage.budgets(discord('x', 'pat', 'set-g'))).user.source).toBe('default');
    expect(await textOf(budget({ action: 'reset', scope: 'workspace' }, slack()))).toBe('The GPU budget for this workspace is back to the default: 5,000 GPU-seconds per day.');
  });

  it("a reset in one server says so when a budget set on every server before budgets were per server still holds (before: 'back to the default')", async () => {
    const d = discord('legacy-c', 'legacy-admin', 'legacy-g');
    await gate.usage.setBudget('user', scopeIds({ ...d, userId: 'old' }).user, 30); // as chat stored a user's budget before 2026-12-07
    await gate.usage.setBudget('member', memberId({ ...d, userId: 'old' }), 60);
    expect(await textOf(budget({ action: 'reset', scope: 'user', targetUserId: 'old' }, d))).toBe('The GPU budget for user <@old> set in this server is removed; a budget set for them on every server before budgets were per server still applies: 30 GPU-seconds per day.');
    expect((await gate.usage.budgets({ ...d, userId: 'old' })).user).toEqual({ seconds: 30, source: 'redis' });
  });

  it("a user's budget an admin sets holds in their server only: another server's admin neither sees nor resets it, and the user is not refused there", async () => {
    const here = (channelId = 'own-c') => discord(channelId, 'own-admin', 'own-g');
    const there = discord('their-c', 'their-admin', 'their-g');
    const victim = (guildId: string) => discord(`${guildId}-c`, 'victim', guildId);
    await ran(`victim-${randomUUID()}`, victim('their-g'), 5); // used 5 GPU-seconds today, in their own server
    expect(await textOf(budget({ action: 'set', scope: 'user', targetUserId: 'victim', seconds: 1 }, here()))).toBe('The GPU budget for user <@victim> is now 1 GPU-seconds per day (resets at 00:00 UTC).');
    expect(await textOf(budget({ action: 'show', targetUserId: 'victim' }, there))).toContain('• user <@victim>: no budget; used today 5');
    const request = (d: Destination): JobRequest => ({ v: CONTRACT_VERSION, id: randomUUID(), destination: d, submittedAt: 1, kind: 'imagine', prompt: 'p', options: { seed: 1, ditSteps: 1, decoderSteps: 1, guidance: 1, aspect: '1:1' } });
    const admit = async (d: Destination) => {
      const r = request(d);
      const a = await gate.usage.admit(r.id, d, r);
      if (a.admitted) await gate.usage.release(r.id);
      return a.admitted;
    };
    expect(await admit(victim('their-g'))).toBe(true); // another server's admin cannot starve them there
    expect(await admit(victim('own-g'))).toBe(false); // here their use everywhere counts against it
    await textOf(budget({ action: 'set', scope: 'user', targetUserId: 'victim', seconds: 1e9 }, there));
    expect(await admit(victim('own-g'))).toBe(false); // nor lift this server's
    await textOf(budget({ action: 'reset', scope: 'user', targetUserId: 'victim' }, there));
    expect(await textOf(budget({ action: 'show', targetUserId: 'victim' }, here('other-c')))).toContain('• user <@victim>: 1 (set by an admin); used today 5');
  });

  it('refuses a budget that is missing, negative, not a number or absurdly large, and changes nothing', async () => {
    const d = discord('bad-c', 'bad-admin', 'bad-g');
    for (const seconds of [undefined, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e9 + 1]) {
      const e = await refusal(budget({ action: 'set', seconds }, d));
      expect(e.code, String(seconds)).toBe('bad_request');
      // 1e9 + 1 was told "0 or more", which it is
      expect(e.message).toBe('Give the budget in GPU-seconds per day, from 0 (no budget) to 1,000,000,000.');
    }
    expect((await gate.usage.budgets(d)).channel.source).toBe('default');
    expect(await textOf(budget({ action: 'set', seconds: 0 }, d))).toBe('The GPU budget for this channel is now no budget.');
  });

  it('shows a budget an admin turned off as theirs, not as the default: a reset brings the default back', async () => {
    const d = discord('off-c', 'off-admin', 'off-g');
    await budget({ action: 'set', seconds: 0 }, d); // the default is 600
    await budget({ action: 'set', scope: 'user', seconds: 0 }, d); // the default is none: an admin's none all the same
    const shown = await textOf(budget({ action: 'show' }, d));
    expect(shown).toContain('• this channel: no budget (set by an admin); used today 0');
    expect(shown).toContain('• you: no budget (set by an admin); used today 0');
    expect(shown).toContain('• this server: 5,000 (default); used today 0');
    await budget({ action: 'reset' }, d);
    expect(await textOf(budget({ action: 'show' }, d))).toContain('• this channel: 600 (default); used today 0');
  });
});

describe('/blip3o-admin usage', () => {
  it("reports this server's channels and users over the days asked for, as a table and a chart", async () => {
    const g = 'rep-g';
    await ran('r1', discord('c-own', 'alice', g), 250);
    await ran('r2', discord('c-other', 'bob', g), 40.25);
    await ran('r3', discord('c-other', 'alice', g), 4);
    await ran('r4', discord('c-elsewhere', 'carol', 'another-g'), 999);
    await gate.usage.count('hits', discord('c-own', 'bob', g));
    const reply = await usageCommand(inv({ command: 'usage', days: 1 }, discord('c-own', 'admin', g)), { config, gate });
    if (reply.kind !== 'text') throw new Error('not text');
    expect(reply.private).toBe(true);
    expect(reply.text).toBe(
      [
        'GPU usage in this server over today (UTC): 294 GPU-seconds.',
        'Top channels:',
        '```',
        'name          GPU-s    jobs  cached  refused',
        'this channel    250       1       1        0',
        '#c-other       44.3       2       0        0',
        '```',
        'Top users:',
        '```',
        'name      GPU-s    jobs  cached  refused',
        '@alice      254       2       0        0',
        '@bob       40.3       1       1        0',
        '```',
      ].join('\n'),
    );
    expect(reply.image).toMatchObject({ name: 'usage-1d.png', altText: 'Bar chart of GPU-seconds per channel and per user over today (UTC)' });
    // The chart is these rows under this title, pixel for pixel.
    const chart = await usageChart([{ label: 'this channel', value: 250 }, { label: '#c-other', value: 44.25 }], [{ label: '@alice', value: 254 }, { label: '@bob', value: 40.25 }], 'GPU-seconds, today');
    expect(Buffer.from(reply.image!.png).equals(Buffer.from(chart))).toBe(true);
    const meta = await sharp(reply.image!.png).metadata();
    expect(meta.format).toBe('png');
    expect(meta.width).toBe(640);

    const week = await usageCommand(inv({ command: 'usage' }, discord('c-own', 'admin', g)), { config, gate });
    expect(week.kind === 'text' && week.text.split('\n')[0]).toBe('GPU usage in this server over the last 7 days (UTC, today included): 294 GPU-seconds.');
    expect(week.kind === 'text' && week.image?.name).toBe('usage-7d.png');
    const weekChart = await usageChart([{ label: 'this channel', value: 250 }, { label: '#c-other', value: 44.25 }], [{ label: '@alice', value: 254 }, { label: '@bob', value: 40.25 }], 'GPU-seconds, last 7 days');
    expect(week.kind === 'text' && Buffer.from(week.image!.png).equals(Buffer.from(weekChart))).toBe(true);
  });

  it('labels Slack channels and users by their ids, says when there is nothing yet, and shows the top five', async () => {
    const empty = await usageCommand(inv({ command: 'usage', days: 30 }, slack('C-empty', 'U1')), { config, gate });
    expect(empty.kind === 'text' && empty.text).toBe(['GPU usage in this workspace over the last 30 days (UTC, today included): 0 GPU-seconds.', 'Top channels: nothing yet.', 'Top users: nothing yet.'].join('\n'));
    for (let i = 1; i <= 7; i++) await ran(`sl${i}`, { platform: 'slack', teamId: 'T-top', channelId: `C${i}`, userId: `U${i}` }, i);
    const top = await usageCommand(inv({ command: 'usage', days: 1 }, { platform: 'slack', teamId: 'T-top', channelId: 'C7', userId: 'UADMIN' }), { config, gate });
    if (top.kind !== 'text') throw new Error('not text');
    const rows = top.text.split('\n');
    expect(rows[0]).toBe('GPU usage in this workspace over today (UTC): 28 GPU-seconds.'); // every channel counts in the total
    expect(rows.slice(4, 10).map((r) => r.split(/\s+/)[0])).toEqual(['this', 'C6', 'C5', 'C4', 'C3', '```']);
    expect(rows[4]).toBe('this channel      7       1       0        0');
    expect(rows.slice(13, 19).map((r) => r.split(/\s+/)[0])).toEqual(['U7', 'U6', 'U5', 'U4', 'U3', '```']);
    // The name column is as wide as the longest name shown, not one left out below the top five.
    await ran('sl-long', { platform: 'slack', teamId: 'T-top', channelId: 'C-with-a-very-long-channel-name', userId: 'U1' }, 0.5);
    const again = await usageCommand(inv({ command: 'usage', days: 1 }, { platform: 'slack', teamId: 'T-top', channelId: 'C7', userId: 'UADMIN' }), { config, gate });
    expect(again.kind === 'text' && again.text.split('\n')[3]).toBe('name          GPU-s    jobs  cached  refused');
  });

  it('shows the names the platform gives for the top rows (the own channel as "#name (here)"), cleaned for a code block, and ids for the rest', async () => {
    const g = 'named-g';
    for (let i = 1; i <= 6; i++) await ran(`n${i}`, discord(`nc${i}`, `nu${i}`, g), 10 * i);
    const asked: { destination: Destination; channels: readonly string[]; users: readonly string[] }[] = [];
    const names = new Map<string, string>([
      ['nc6', 'general'],
      ['nc5', 'art `room`\u202e'],
      ['nc4', '   '],
      ['nu6', 'Alice Liddell'],
      ['nu5', 'a name that goes on and on and on'],
      ['nu4', 'tab\tand\nnewline'],
    ]);
    const displayNames = async (destination: Destination, ids: { channels: readonly string[]; users: readonly string[] }) => {
      asked.push({ destination, ...ids });
      const pick = (list: readonly string[]) => new Map(list.filter((id) => names.has(id)).map((id) => [id, names.get(id)!]));
      return { channels: pick(ids.channels), users: pick(ids.users) };
    };
    const admin = discord('nc6', 'admin', g);
    const reply = await usageCommand(inv({ command: 'usage', days: 1 }, admin), { config, gate, displayNames });
    if (reply.kind !== 'text') throw new Error('not text');
    // the top five of each, by their platform ids (the channel's, not our key)
    expect(asked).toEqual([{ destination: admin, channels: ['nc6', 'nc5', 'nc4', 'nc3', 'nc2'], users: ['nu6', 'nu5', 'nu4', 'nu3', 'nu2'] }]);
    expect(reply.text.split('\n').slice(3, 9)).toEqual([
      'name             GPU-s    jobs  cached  refused',
      '#general (here)     60       1       0        0',
      "#art 'room'         50       1       0        0",
      '#nc4                40       1       0        0', // a blank name is no name
      '#nc3                30       1       0        0',
      '#nc2                20       1       0        0',
    ]);
    expect(reply.text.split('\n').slice(12, 18)).toEqual([
      'name                       GPU-s    jobs  cached  refused',
      '@Alice Liddell                60       1       0        0',
      '@a name that goes on and…     50       1       0        0',
      '@tab and newline              40       1       0        0',
      '@nu3                          30       1       0        0',
      '@nu2                          20       1       0        0',
    ]);
    const chart = await usageChart(
      [['#general (here)', 60], ["#art 'room'", 50], ['#nc4', 40], ['#nc3', 30], ['#nc2', 20], ['#nc1', 10]].map(([label, value]) => ({ label: label as string, value: value as number })),
      [['@Alice Liddell', 60], ['@a name that goes on and…', 50], ['@tab and newline', 40], ['@nu3', 30], ['@nu2', 20], ['@nu1', 10]].map(([label, value]) => ({ label: label as string, value: value as number })),
      'GPU-seconds, today',
    );
    expect(Buffer.from(reply.image!.png).equals(Buffer.from(chart))).toBe(true);
    // a platform that names nothing leaves the ids
    const unnamed = await usageCommand(inv({ command: 'usage', days: 1 }, admin), { config, gate, displayNames: async () => ({ channels: new Map(), users: new Map() }) });
    expect(unnamed.kind === 'text' && unnamed.text.split('\n')[4]).toBe('this channel     60       1       0        0');
  });

  it('pads names by the columns a monospace font gives them: a CJK character or an emoji 2, a combining mark 0', async () => {
    const g = 'wide-g';
    for (const [i, seconds] of [[1, 30], [2, 20], [3, 10]] as const) await ran(`w${i}`, discord(`wc${i}`, `wu${i}`, g), seconds);
    const names = new Map([['wc1', '一般'], ['wc2', 'general'], ['wc3', '🎨-art'], ['wu1', '山田太郎'], ['wu2', 'Jose\u0301'], ['wu3', '🦊 fox']]);
    const displayNames = async (_d: Destination, ids: { channels: readonly string[]; users: readonly string[] }) => {
      const pick = (list: readonly string[]) => new Map(list.filter((id) => names.has(id)).map((id) => [id, names.get(id)!]));
      return { channels: pick(ids.channels), users: pick(ids.users) };
    };
    const reply = await usageCommand(inv({ command: 'usage', days: 1 }, discord('wc-admin', 'admin', g)), { config, gate, displayNames });
    if (reply.kind !== 'text') throw new Error('not text');
    // Before 2026-12-08 names were padded by UTF-16 units: "#一般" (5 columns, 3 units) took 5 spaces, 2 too many.
    expect(reply.text.split('\n').slice(3, 7)).toEqual([
      'name      GPU-s    jobs  cached  refused',
      '#一般        30       1       0        0',
      '#general     20       1       0        0',
      '#🎨-art      10       1       0        0',
    ]);
    expect(reply.text.split('\n').slice(10, 14)).toEqual([
      'name       GPU-s    jobs  cached  refused',
      '@山田太郎     30       1       0        0',
      '@Jose\u0301         20       1       0        0',
      '@🦊 fox       10       1       0        0',
    ]);
  });

  it('cleanName: one line, no control characters, no backtick, at most 24 characters', () => {
    expect(cleanName('  two\n lines\r\n ')).toBe('two lines');
    expect(cleanName('\u0007bell\u202eback')).toBe('bellback');
    expect(cleanName('```end')).toBe("'''end");
    expect(cleanName('x'.repeat(24))).toBe('x'.repeat(24));
    expect(cleanName('x'.repeat(25))).toBe(`${'x'.repeat(23)}…`);
    expect(cleanName(`${'x'.repeat(22)} and more`)).toBe(`${'x'.repeat(22)}…`); // no space before the …
    expect(cleanName('🦊'.repeat(25))).toBe(`${'🦊'.repeat(23)}…`); // characters, not UTF-16 units
  });

  it('is for admins only, and takes 1 to usage.retainDays whole days', async () => {
    const e = await refusal(usageCommand(inv({ command: 'usage' }, discord(), false), { config, gate }));
    expect(e.message).toBe('Only admins can see GPU usage.');
    for (const days of [0, -1, 1.5, 31]) {
      const bad = await refusal(usageCommand(inv({ command: 'usage', days }), { config, gate }));
      expect(bad.message, String(days)).toBe('days must be a whole number from 1 to 30.');
    }
    expect((await usageCommand(inv({ command: 'usage', days: 30 }), { config, gate })).kind).toBe('text');
    await expect(usageCommand(inv({ command: 'budget', action: 'show' }), { config, gate })).rejects.toThrow('not a usage command: budget');
  });
});

describe('usageChart', () => {
  it('is an SVG of labelled bars per section, text escaped and labels cut at 28 characters, "none" for an empty section', () => {
    const svg = usageChartSvg([{ label: `<a & 'b' "c">`, value: 200 }, { label: 'x'.repeat(40), value: 50 }], [], 'usage <today> & "more"');
    expect(svg).toBe(
      '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="170" font-family="sans-serif"><rect width="100%" height="100%" fill="#ffffff"/>' +
        '<text x="12" y="22" font-size="15" font-weight="bold">usage &lt;today&gt; &amp; &quot;more&quot;</text>' +
        '<text x="12" y="54" font-size="13" font-weight="bold">Channels</text>' +
        '<text x="24" y="78" font-size="12">&lt;a &amp; &apos;b&apos; &quot;c&quot;&gt;</text><rect x="230" y="67" width="330" height="14" fill="#5865f2"/><text x="566" y="78" font-size="12">200 s</text>' +
        `<text x="24" y="100" font-size="12">${'x'.repeat(28)}</text><rect x="230" y="89" width="83" height="14" fill="#5865f2"/><text x="319" y="100" font-size="12">50 s</text>` +
        '<text x="12" y="128" font-size="13" font-weight="bold">Users</text>' +
        '<text x="24" y="150" font-size="12" fill="#666">none</text>' +
        '</svg>',
    );
    // Only the top five of each section are drawn.
    const many = usageChartSvg([], Array.from({ length: 7 }, (_, i) => ({ label: `u${i}`, value: 7 - i })), 't');
    expect(many.match(/<rect x="230"/g)).toHaveLength(5);
    expect(many).not.toContain('>u5<');
  });

  it('draws a bar per row, the longest for the most, at most five per section, and says none for an empty one', async () => {
    const rows = (n: number) => Array.from({ length: n }, (_, i) => ({ label: `row ${i}`, value: (i + 1) * 10 }));
    const draw = async (channels: { label: string; value: number }[], users: { label: string; value: number }[]) => {
      const png = await usageChart(channels, users, 'title <&>');
      return sharp(png).metadata();
    };
    // Height: 34 + per section 8 + 22 (its name) + 22 per row (or 22 for "none"), + 10.
    expect((await draw(rows(2), rows(1))).height).toBe(34 + (8 + 22 + 2 * 22) + (8 + 22 + 22) + 10);
    expect((await draw(rows(9), [])).height).toBe(34 + (8 + 22 + 5 * 22) + (8 + 22 + 22) + 10);
    expect((await draw([], [])).height).toBe(34 + 2 * (8 + 22 + 22) + 10);
  });

  it('scales the bars to the largest value: the top row is the longest bar', async () => {
    const png = await usageChart([{ label: 'a', value: 100 }, { label: 'b', value: 25 }], [], 't');
    const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const barWidth = (y: number) => {
      let n = 0;
      for (let x = 0; x < info.width; x++) {
        const i = (y * info.width + x) * 3;
        if (data[i] === 0x58 && data[i + 1] === 0x65 && data[i + 2] === 0xf2) n++;
      }
      return n;
    };
    // Rows start at y = 34 + 8 + 22 = 64; each bar is drawn from y + 3, 14 px high.
    expect(barWidth(64 + 10)).toBe(330);
    expect(barWidth(64 + 22 + 10)).toBe(Math.round(0.25 * 330));
  });
});
