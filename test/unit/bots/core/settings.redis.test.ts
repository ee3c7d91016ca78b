// Saved settings read back from Redis (bots/core/settings.ts): a value that is not JSON, or not settings, reads as none
// rather than failing every request of the channel (Redis is a trust boundary too); whose settings win; the /settings
// command's answers and refusals; durations.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { Reply } from '../../../../bots/core/port.ts';
import { checkRetention, describeSettings, formatDuration, parseDuration, settingsCommand, SettingsStore, withDefaults, type SavedSettings, type SettingsInput } from '../../../../bots/core/settings.ts';
import { imagineOptions } from '../../../../bots/core/requests.ts';
import { isUserError, UserError } from '../../../../src/errors.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Destination } from '../../../../src/jobs/contract.ts';
import { closeRedis, createRedis, deleteKeys } from '../../../../src/redis.ts';

const prefix = `t-settings-${randomUUID().slice(0, 8)}`;
const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-settings');
const config = loadConfig({ env: {}, overrides: { queue: { prefix } } });

afterAll(async () => {
  await deleteKeys(redis, `${prefix}:*`);
  await closeRedis(redis);
});

it('a saved value that is not JSON, or not settings, reads as nothing saved; a good one is read', async () => {
  const store = new SettingsStore(redis, config);
  const d: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
  await store.set('channel', d, { noLog: true });
  expect(await store.get('channel', d)).toEqual({ noLog: true });
  const [key] = await redis.keys(`${prefix}:settings:channel:*`);
  await redis.set(key!, 'not json at all');
  expect(await store.get('channel', d)).toEqual({});
  expect(await store.effective(d)).toEqual({});
  await redis.set(key!, '{"noLog":"yes"}');
  expect(await store.get('channel', d)).toEqual({});
});

it('clearing the last saved default, by /settings or a form, leaves no key behind (one per user who ever saved one)', async () => {
  const store = new SettingsStore(redis, config);
  const d: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C2', userId: 'U2' };
  const keys = () => redis.keys(`${prefix}:settings:user:slack:T1:U2`);
  await settingsCommand({ input: { command: 'settings', scope: 'user', action: 'set', values: { steps: 9 } }, destination: d, dedupeKey: randomUUID(), isAdmin: false }, store, config);
  expect(await keys()).toHaveLength(1);
  await settingsCommand({ input: { command: 'settings', scope: 'user', action: 'set', clear: ['steps'] }, destination: d, dedupeKey: randomUUID(), isAdmin: false }, store, config);
  expect(await keys(), 'the key of nothing saved').toEqual([]); // before: "{}", kept for good
  await store.set('user', d, { aspect: '16:9' });
  expect(await store.replaceIf('user', d, (await store.read('user', d)).version, {})).toBe(true); // a form saved with every field empty
  expect(await keys(), 'the key of nothing saved').toEqual([]);
  expect(await store.read('user', d)).toEqual({ values: {}, version: 'da39a3ee5e6b4b0d3255bfef95601890afd80709' }); // as never saved
});

const discord = (userId = 'u1', channelId = 'c1'): Destination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app' });
const run = (store: SettingsStore, input: Omit<SettingsInput, 'command'>, opts: { isAdmin?: boolean; d?: Destination } = {}) =>
  settingsCommand({ input: { command: 'settings', ...input }, destination: opts.d ?? discord(), dedupeKey: randomUUID(), isAdmin: opts.isAdmin ?? false }, store, config);
const textOf = async (reply: Promise<Reply>) => {
  const r = await reply;
  if (r.kind !== 'text') throw new Error(`not a text reply: ${JSON.stringify(r)}`);
  expect(r.private).toBe(true); // settings answers are only ever for the one who asked
  return r.text;
};
const firstLine = (text: string) => text.split('\n')[0];
const userError = async (reply: Promise<Reply>) => {
  const e = await reply.then(() => undefined, (err: unknown) => err);
  if (!isUserError(e)) throw new Error(`expected a UserError, got ${String(e)}`);
  return e;
};

describe('SettingsStore', () => {
  it("keeps each user's own settings and the channel's apart; the user's win, except privacy, retention and no-log", async () => {
    const store = new SettingsStore(redis, config);
    await store.set('channel', discord(), { steps: 20, aspect: '16:9', private: true, retentionSeconds: 3600, noLog: true });
    await store.set('user', discord('u1'), { steps: 30, private: false });
    expect(await store.get('user', discord('u1'))).toEqual({ steps: 30, private: false });
    expect(await store.get('user', discord('u2'))).toEqual({});
    expect(await store.get('user', discord('u1', 'other-channel'))).toEqual({ steps: 30, private: false }); // a user's are theirs in every channel of the server
    expect(await store.get('channel', discord('u2'))).toEqual({ steps: 20, aspect: '16:9', private: true, retentionSeconds: 3600, noLog: true });
    expect(await store.get('channel', discord('u1', 'other-channel'))).toEqual({});
    // A user cannot make a private channel public, nor shorten or drop its retention or no-log.
    expect(await store.effective(discord('u1'))).toEqual({ steps: 30, aspect: '16:9', private: true, retentionSeconds: 3600, noLog: true });
    expect(await store.effective(discord('u2'))).toEqual({ steps: 20, aspect: '16:9', private: true, retentionSeconds: 3600, noLog: true });
    // In a channel with nothing saved, only the user's apply; `private: false` saved means public, which is the default.
    expect(await store.effective(discord('u1', 'other-channel'))).toStrictEqual({ steps: 30 });
    await store.set('user', discord('u3'), { private: true, retentionSeconds: 60, noLog: true } as SavedSettings); // as if written by hand
    expect(await store.effective(discord('u3', 'other-channel'))).toStrictEqual({ private: true });
    await store.reset('user', discord('u1'));
    expect(await store.get('user', discord('u1'))).toEqual({});
    expect(await store.get('channel', discord('u1'))).not.toEqual({});
  });
});

describe('settingsCommand', () => {
  it('is only for /settings', async () => {
    const store = new SettingsStore(redis, config);
    await expect(settingsCommand({ input: { command: 'queue', action: 'status' }, destination: discord(), dedupeKey: 'x', isAdmin: true }, store, config)).rejects.toThrow('not a settings command: queue');
  });

  it('sets (merging with what was saved), replaces, shows and resets your own defaults', async () => {
    const store = new SettingsStore(redis, config);
    const d = discord('cmd-u1', 'cmd-c1');
    expect(firstLine(await textOf(run(store, { scope: 'user', action: 'set', values: { steps: 12, guidance: 4.5 } }, { d })))).toBe('Your defaults are now: 12 steps · guidance 4.5.');
    expect(firstLine(await textOf(run(store, { scope: 'user', action: 'set', values: { aspect: '3:4', steps: undefined, count: 1 } }, { d })))).toBe('Your defaults are now: aspect 3:4 · 12 steps · guidance 4.5 · 1 image.');
    expect(await store.get('user', d)).toEqual({ steps: 12, guidance: 4.5, aspect: '3:4', count: 1 });
    expect(await textOf(run(store, { scope: 'user', action: 'replace', values: { count: 2, negative: 'blur', private: true } }, { d }))).toBe(
      'Your defaults are now: 2 images · no: blur · results private.\nIn force for you here: aspect 1:1 (bot default) · 30 steps (bot default) · guidance 3 (bot default) · 2 images (yours) · no: blur (yours) · results private (yours).',
    );
    expect(await store.get('user', d)).toEqual({ count: 2, negative: 'blur', private: true });
    expect(await textOf(run(store, { scope: 'user', action: 'show' }, { d }))).toBe(
      'Your defaults: 2 images · no: blur · results private.\nIn force for you here: aspect 1:1 (bot default) · 30 steps (bot default) · guidance 3 (bot default) · 2 images (yours) · no: blur (yours) · results private (yours).',
    );
    expect(await textOf(run(store, { scope: 'user', action: 'reset' }, { d }))).toBe('Your defaults are cleared.');
    expect(await store.get('user', d)).toEqual({});
    expect(await textOf(run(store, { scope: 'user', action: 'show' }, { d }))).toBe(
      'Your defaults: nothing saved (the bot defaults apply).\nIn force for you here: aspect 1:1 (bot default) · 30 steps (bot default) · guidance 3 (bot default) · 1 image (bot default) · results public (bot default).',
    );
  });

  it("only admins change the channel's defaults, which alone hold retention and no-log; show says what is in force", async () => {
    const store = new SettingsStore(redis, config);
    const d = discord('cmd-u2', 'cmd-c2');
    for (const action of ['set', 'replace', 'reset', 'show'] as const) {
      const e = await userError(run(store, { scope: 'channel', action, values: { steps: 5 } }, { d }));
      expect(e.code).toBe('forbidden');
      expect(e.message).toBe("Only admins can change this channel's defaults.");
    }
    expect(await store.get('channel', d)).toEqual({});
    expect(firstLine(await textOf(run(store, { scope: 'channel', action: 'set', values: { retentionSeconds: 7200, noLog: true, private: false } }, { d, isAdmin: true })))).toBe(
      "This channel's defaults are now: results public · jobs deleted after 2 h · no-log mode.",
    );
    for (const values of [{ retentionSeconds: 60 }, { noLog: true }, { noLog: false }]) {
      const e = await userError(run(store, { scope: 'user', action: 'set', values }, { d, isAdmin: true }));
      expect(e.message).toBe('The retention TTL and no-log mode are channel settings: an admin sets them for the whole channel.');
    }
    expect(await store.get('user', d)).toEqual({});
    await run(store, { scope: 'user', action: 'set', values: { steps: 9 } }, { d });
    // the channel's public results, said by the admin, and the user's own steps
    const inForce = 'In force for you here: aspect 1:1 (bot default) · 9 steps (yours) · guidance 3 (bot default) · 1 image (bot default) · results public (this channel) · jobs deleted after 2 h (this channel) · no-log mode (this channel).';
    expect(await textOf(run(store, { scope: 'user', action: 'show' }, { d }))).toBe(`Your defaults: 9 steps.\n${inForce}`);
    expect(await textOf(run(store, { scope: 'channel', action: 'show' }, { d, isAdmin: true }))).toBe(
      `This channel's defaults: results public · jobs deleted after 2 h · no-log mode.\n${inForce}`,
    );
    expect(await textOf(run(store, { scope: 'channel', action: 'reset' }, { d, isAdmin: true }))).toBe("This channel's defaults are cleared.");
    expect(await store.get('channel', d)).toEqual({});
  });

  it("refuses values beyond this bot's limits and what is not a setting, saving nothing", async () => {
    const store = new SettingsStore(redis, config);
    const d = discord('cmd-u3', 'cmd-c3');
    const g = config.generation;
    await run(store, { scope: 'user', action: 'set', values: { steps: 3 } }, { d });
    const refused: [SettingsInput['values'], string][] = [
      [{ steps: g.maxDitSteps + 1 }, `steps can be at most ${g.maxDitSteps}.`],
      [{ guidance: g.maxGuidance + 0.5 }, `guidance can be at most ${g.maxGuidance}.`],
      [{ count: g.maxImagesPerRequest + 1 }, `images can be at most ${g.maxImagesPerRequest}.`],
      [{ negative: 'x'.repeat(g.maxNegativeChars + 1) }, `The negative prompt can be at most ${g.maxNegativeChars} characters.`],
    ];
    for (const [values, message] of refused) expect((await userError(run(store, { scope: 'user', action: 'set', values }, { d }))).message, JSON.stringify(values)).toBe(message);
    const bad = await userError(run(store, { scope: 'user', action: 'set', values: { aspect: '5:1', steps: 0 } }, { d }));
    expect(bad.code).toBe('bad_request');
    expect(bad.message).toMatch(/^Cannot save that: .*aspect.*; .*steps/); // both problems, on one line
    expect(bad.message).not.toContain('\n');
    expect(await store.get('user', d)).toEqual({ steps: 3 });
    // At the limits themselves: saved.
    await run(store, { scope: 'user', action: 'set', values: { steps: g.maxDitSteps, guidance: g.maxGuidance, count: g.maxImagesPerRequest, negative: 'x'.repeat(g.maxNegativeChars) } }, { d });
    expect(await store.get('user', d)).toMatchObject({ steps: g.maxDitSteps, guidance: g.maxGuidance, count: g.maxImagesPerRequest });
  });
});

describe('defaults, descriptions and durations', () => {
  it("fills in only what the request left out; a request's own 0 stays", () => {
    const saved: SavedSettings = { steps: 20, guidance: 5, aspect: '16:9', negative: 'blur', count: 3 };
    expect(withDefaults({ prompt: 'p' } as { prompt: string; ditSteps?: number }, saved, config.generation)).toEqual({ prompt: 'p', ditSteps: 20, guidance: 5, aspect: '16:9', negative: 'blur', count: 3 });
    expect(withDefaults({ ditSteps: 7, guidance: 0, aspect: '1:1', negative: '', count: 1 }, saved, config.generation)).toEqual({ ditSteps: 7, guidance: 0, aspect: '1:1', negative: '', count: 1 });
  });

  it('a saved default above a limit lowered since is used at the limit; one at or below it as saved; nothing saved, nothing filled in', () => {
    const limits = { maxDitSteps: 40, maxGuidance: 10, maxImagesPerRequest: 2, maxNegativeChars: 500 };
    expect(withDefaults({}, { steps: 80, guidance: 15, count: 4 }, limits)).toEqual({ ditSteps: 40, guidance: 10, count: 2 });
    expect(withDefaults({}, { steps: 40, guidance: 9.5, count: 1 }, limits)).toEqual({ ditSteps: 40, guidance: 9.5, count: 1 });
    const none = withDefaults<{ ditSteps?: number; guidance?: number; count?: number }>({}, {}, limits);
    expect([none.ditSteps, none.guidance, none.count]).toEqual([undefined, undefined, undefined]);
  });

  it('a retention from 1 second to 30 days passes; 0, a fraction or one second more is refused in the admin\'s terms', () => {
    for (const ok of [1, 60, 2_592_000]) expect(() => checkRetention(ok)).not.toThrow();
    for (const low of [0, -5, 1.5]) expect(() => checkRetention(low), String(low)).toThrow(new UserError('bad_request', 'The retention must be at least 1 second.'));
    expect(() => checkRetention(2_592_001)).toThrow(new UserError('bad_request', 'The retention can be at most 30 days; you gave 2592001 s.'));
    expect(() => checkRetention(90 * 86_400)).toThrow(new UserError('bad_request', 'The retention can be at most 30 days; you gave 90 days.'));
  });

  it('describes saved settings in one line', () => {
    expect(describeSettings({})).toBe('nothing saved (the bot defaults apply)');
    expect(describeSettings({ aspect: '1:1', steps: 1, guidance: 0, count: 1, negative: 'x', private: false, retentionSeconds: 90, noLog: false })).toBe(
      'aspect 1:1 · 1 steps · guidance 0 · 1 image · no: x · results public · jobs deleted after 90 s',
    );
  });

  it('reads a duration with or without its unit, and refuses anything else', () => {
    const cases: [string, number][] = [['90', 90], [' 90 s ', 90], ['90sec', 90], ['15m', 900], ['15min', 900], ['15 MIN', 900], ['2h', 7200], ['7d', 604_800], ['1 day', 86_400], ['3days', 259_200]];
    for (const [text, seconds] of cases) expect(parseDuration(text), text).toBe(seconds);
    for (const text of ['', 'soon', '90 junk', '90sx', '1.5h', '-5m', '12345678s', '2w']) expect(() => parseDuration(text), text).toThrow(/is not a duration: write e\.g\. 90s, 15m, 2h or 7d\./);
    expect(() => parseDuration('x'.repeat(100))).toThrow(`"${'x'.repeat(40)}" is not a duration`);
    expect(formatDuration(90)).toBe('90 s');
    expect(formatDuration(120)).toBe('2 min');
    expect(formatDuration(7200)).toBe('2 h');
    expect(formatDuration(86_400)).toBe('1 day');
    expect(formatDuration(172_800)).toBe('2 days');
  });
});

it("a form's replace saves only while the values are those it showed (another admin's change on any instance is not undone)", async () => {
  const store = new SettingsStore(redis, config);
  const other = new SettingsStore(redis, config); // another bot instance: the same key
  const d = discord('u1', 'versioned');
  const shown = await store.read('channel', d);
  expect(shown).toEqual({ values: {}, version: 'da39a3ee5e6b4b0d3255bfef95601890afd80709' }); // SHA-1 of '' = nothing saved
  await other.set('channel', d, { noLog: true });
  const refused = await userError(run(store, { scope: 'channel', action: 'replace', values: { aspect: '16:9' }, version: shown.version }, { isAdmin: true, d }));
  expect(refused.message).toBe("This channel's defaults changed while this window was open, so nothing was saved: open it again to see them.");
  expect(await store.get('channel', d)).toEqual({ noLog: true });
  const now = await store.read('channel', d);
  expect(now.values).toEqual({ noLog: true });
  expect(firstLine(await textOf(run(store, { scope: 'channel', action: 'replace', values: { aspect: '16:9', noLog: true }, version: now.version }, { isAdmin: true, d })))).toBe("This channel's defaults are now: aspect 16:9 · no-log mode.");
  expect(await store.replaceIf('channel', d, now.version, {})).toBe(false); // that version is gone now
  await other.reset('channel', d);
  expect(await store.replaceIf('channel', d, shown.version, { steps: 4 })).toBe(true); // nothing saved again: the first version
  expect(await store.get('channel', d)).toEqual({ steps: 4 });
  // Without a version (a window opened before this change, a CLI), replace saves as before
  await textOf(run(store, { scope: 'channel', action: 'replace', values: { count: 2 } }, { isAdmin: true, d }));
  expect(await store.get('channel', d)).toEqual({ count: 2 });
});

describe('saved defaults after the operator or the version changed, and what a user is shown', () => {
  // The operator lowered limits since these were saved (config/default.yaml: maxDitSteps 100, maxNegativeChars 500)
  const lowered = loadConfig({ env: {}, overrides: { queue: { prefix }, generation: { maxDitSteps: 40, maxNegativeChars: 10 } } });
  const runWith = (cfg: typeof config, store: SettingsStore, input: Omit<SettingsInput, 'command'>, d: Destination, isAdmin = false) =>
    settingsCommand({ input: { command: 'settings', ...input }, destination: d, dedupeKey: randomUUID(), isAdmin }, store, cfg);

  it("a stored record with one field this version no longer accepts keeps its other fields: the channel's privacy, TTL and no-log", async () => {
    const store = new SettingsStore(redis, config);
    const d = discord('u1', 'old-record');
    await store.set('channel', d, { private: true, retentionSeconds: 600, noLog: true, steps: 20 });
    const [key] = await redis.keys(`${prefix}:settings:channel:discord:g1:old-record`);
    // As an older or newer version of the bot wrote it: an aspect ratio since removed, a key this version does not know
    await redis.set(key!, JSON.stringify({ aspect: '5:4', private: true, retentionSeconds: 600, noLog: true, steps: 20, upscale: 2 }));
    expect(await store.get('channel', d)).toEqual({ private: true, retentionSeconds: 600, noLog: true, steps: 20 });
    expect(await store.effective(d)).toEqual({ private: true, retentionSeconds: 600, noLog: true, steps: 20 });
  });

  it('a saved negative prompt longer than a limit lowered since is used cut to the limit, not refused on every /imagine', () => {
    const used = withDefaults<{ negative?: string }>({}, { negative: 'blurry, watermark, text' }, lowered.generation);
    expect(used.negative).toBe('blurry, wa');
    expect(() => imagineOptions(lowered, used)).not.toThrow();
    expect(withDefaults({ negative: 'mine' }, { negative: 'blurry, watermark, text' }, lowered.generation).negative).toBe('mine'); // typed now: its own check
  });

  it('changing one default is not refused over another saved under a higher limit; a value typed now is checked', async () => {
    const store = new SettingsStore(redis, lowered);
    const d = discord('lowered-u', 'lowered-c');
    await new SettingsStore(redis, config).set('user', d, { steps: 80, negative: 'blurry, watermark, text' });
    expect(await textOf(runWith(lowered, store, { scope: 'user', action: 'set', values: { aspect: '16:9' } }, d))).toMatch(/^Your defaults are now: aspect 16:9 · 80 steps · no: blurry, watermark, text\./);
    expect((await userError(runWith(lowered, store, { scope: 'user', action: 'set', values: { steps: 50 } }, d))).message).toBe('steps can be at most 40.');
    // show says what is used, and why
    const shown = await textOf(runWith(lowered, store, { scope: 'user', action: 'show' }, d));
    expect(shown).toContain("40 steps (yours: 80, above this bot's limit of 40)");
    expect(shown).toContain("no: blurry, wa (yours, cut to this bot's limit of 10 characters)");
  });

  it('show and every change say where each value in force comes from: yours, this channel, or the bot default', async () => {
    const store = new SettingsStore(redis, config);
    const d = discord('src-u', 'src-c');
    await store.set('channel', d, { aspect: '16:9', steps: 20, private: true, retentionSeconds: 7200, noLog: true });
    await store.set('user', d, { steps: 9 });
    const inForce = 'In force for you here: aspect 16:9 (this channel) · 9 steps (yours) · guidance 3 (bot default) · 1 image (bot default) · results private (this channel) · jobs deleted after 2 h (this channel) · no-log mode (this channel).';
    expect(await textOf(run(store, { scope: 'user', action: 'show' }, { d }))).toBe(`Your defaults: 9 steps.\n${inForce}`);
    // A user who turns private results off in a channel that forces them is told they stay private
    const changed = await textOf(run(store, { scope: 'user', action: 'set', values: { private: false } }, { d }));
    expect(changed).toBe(`Your defaults are now: 9 steps · results public.\n${inForce}`);
  });

  it('a long negative prompt is whole once in an answer and brief in its in-force line: it stays under a Discord message', async () => {
    const roomy = loadConfig({ env: {}, overrides: { queue: { prefix }, generation: { maxNegativeChars: 1000 } } });
    const store = new SettingsStore(redis, roomy);
    const d = discord('long-neg', 'long-neg');
    const negative = 'x'.repeat(1000);
    const text = await textOf(runWith(roomy, store, { scope: 'user', action: 'set', values: { negative } }, d));
    expect(text.split(negative)).toHaveLength(2);
    expect(text).toContain(`no: ${'x'.repeat(79)}… (yours)`);
    expect(text.length).toBeLessThanOrEqual(2000);
  });

  it('a single saved default is cleared without resetting the others', async () => {
    const store = new SettingsStore(redis, config);
    const d = discord('clear-u', 'clear-c');
    await store.set('user', d, { steps: 9, negative: 'blur', private: true });
    await textOf(run(store, { scope: 'user', action: 'set', clear: ['negative'] }, { d }));
    expect(await store.get('user', d)).toEqual({ steps: 9, private: true });
    await textOf(run(store, { scope: 'user', action: 'set', clear: ['private'], values: { count: 2 } }, { d }));
    expect(await store.get('user', d)).toEqual({ steps: 9, count: 2 });
    await store.set('channel', d, { retentionSeconds: 60, noLog: true });
    await textOf(run(store, { scope: 'channel', action: 'set', clear: ['retentionSeconds'] }, { d, isAdmin: true }));
    expect(await store.get('channel', d)).toEqual({ noLog: true });
  });

  it("a user's defaults are per server (workspace): another server's, and direct messages with the bot, have their own", async () => {
    const store = new SettingsStore(redis, config);
    const inGuild = (guildId: string | null): Destination => ({ platform: 'discord', guildId, channelId: `ch-${guildId}`, userId: 'roaming', applicationId: 'app' });
    await store.set('user', inGuild('gA'), { steps: 9 });
    expect(await store.effective(inGuild('gA'))).toEqual({ steps: 9 });
    expect(await store.effective(inGuild('gB'))).toEqual({});
    expect(await store.effective(inGuild(null))).toEqual({});
    await store.set('user', inGuild(null), { aspect: '16:9' }); // saved in one DM: every DM with the bot
    expect(await store.effective({ ...inGuild(null), channelId: 'another-dm' })).toEqual({ aspect: '16:9' });
    const slack = (teamId: string): Destination => ({ platform: 'slack', teamId, channelId: 'C1', userId: 'roaming' });
    await store.set('user', slack('T1'), { count: 2 });
    expect(await store.effective(slack('T2'))).toEqual({});
  });

  it('durations are read in the words they are shown in, and the other usual ones', () => {
    for (const s of [90, 120, 600, 7200, 86_400, 172_800]) expect(parseDuration(formatDuration(s)), String(s)).toBe(s);
    const cases: [string, number][] = [['10m', 600], ['1 h', 3600], ['600', 600], ['1 hour', 3600], ['2 hours', 7200], ['30 mins', 1800], ['10 minutes', 600], ['45 seconds', 45], ['1hr', 3600]];
    for (const [text, seconds] of cases) expect(parseDuration(text), text).toBe(seconds);
  });
});
