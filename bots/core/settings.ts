// Saved defaults (/settings): per user, and per channel (admins). Stored in Redis as JSON, no expiry:
//   <prefix>:settings:user:<platform>:<workspace>:<userId>
//   <prefix>:settings:channel:<platform>:<workspace>:<channelId>
// For /imagine the request's own options win, then the user's saved ones, then the channel's, then config.
// `private` is the exception: a channel an admin made private stays private whatever a user saved.
import { createHash } from 'node:crypto';
import { runScript, type Redis } from '../../src/redis.ts';
import { z } from 'zod';
import { AspectRatio, type Config } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import { charCount, clipText, cutPoint, firstChars } from '../../src/text.ts';
import { countOf } from '../../src/limits/limiter.ts';
import { MAX_IMAGES_PER_JOB, MAX_NEGATIVE_CHARS, MAX_RETENTION_SECONDS, channelKey, parseStoredJson, workspaceOf, type Destination } from '../../src/jobs/contract.ts';
import type { CommandInput, Invocation, Reply } from './port.ts';

export const SavedSettings = z.strictObject({
  aspect: AspectRatio.optional(),
  steps: z.number().int().min(1).max(500).optional(),
  guidance: z.number().min(0).max(50).optional(),
  count: z.number().int().min(1).max(MAX_IMAGES_PER_JOB).optional(),
  negative: z.string().trim().min(1).max(MAX_NEGATIVE_CHARS).optional(),
  /** Results only the requester sees (ephemeral / DM). */
  private: z.boolean().optional(),
  /** Channel only (admins): delete everything stored about a job this many seconds after it was submitted (src/jobs/retention.ts). */
  retentionSeconds: z.number().int().min(1).max(MAX_RETENTION_SECONDS).optional(),
  /** Channel only (admins): no-log mode, no text that may quote a prompt or question reaches any process's log. */
  noLog: z.boolean().optional(),
});
export type SavedSettings = z.infer<typeof SavedSettings>;
export type SettingsScope = 'user' | 'channel';

export type SettingsInput = Extract<CommandInput, { command: 'settings' }>;

const keyOf = (prefix: string, scope: SettingsScope, d: Destination) =>
  scope === 'user' ? `${prefix}:settings:user:${d.platform}:${workspaceOf(d)}:${d.userId}` : `${prefix}:settings:channel:${channelKey(d)}`;

export type SettingName = keyof SavedSettings;

/**
 * Field by field: a value this version no longer accepts (an aspect ratio since removed, a key written by a newer
 * version) is dropped alone. Before 2026-12 it emptied the whole record, and with it a channel's private results,
 * retention TTL and no-log mode. What is not a JSON object at all reads as nothing saved.
 */
function parse(raw: string | null | undefined): SavedSettings {
  const stored = raw ? parseStoredJson(z.record(z.string(), z.unknown()), raw) : undefined;
  if (!stored) return {};
  const kept: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(SavedSettings.shape)) {
    const value = field.safeParse(stored[name]);
    if (value.success && value.data !== undefined) kept[name] = value.data;
  }
  return kept as SavedSettings;
}

/** A stored value's version: the SHA-1 of its text ('' when nothing is saved), as Redis' redis.sha1hex computes it. */
const versionOf = (raw: string | null) => createHash('sha1').update(raw ?? '').digest('hex');

/**
 * KEYS settings key · ARGV version, values JSON: saved only if the stored value is still that version (nothing to save
 * deletes the key, as SettingsStore.set does). → 1 saved, 0 not
 */
const replaceIfLua = `local current = redis.call('GET', KEYS[1]) or ''
if redis.sha1hex(current) ~= ARGV[1] then return 0 end
if ARGV[2] == '{}' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1`;

export class SettingsStore {
  constructor(
    private readonly redis: Redis,
    private readonly config: Readonly<Config>,
  ) {}

  async get(scope: SettingsScope, d: Destination): Promise<SavedSettings> {
    return parse(await this.redis.get(keyOf(this.config.queue.prefix, scope, d)));
  }

  /** The saved values with their version, for a form that saves them back later (replaceIf). */
  async read(scope: SettingsScope, d: Destination): Promise<{ values: SavedSettings; version: string }> {
    const raw = await this.redis.get(keyOf(this.config.queue.prefix, scope, d));
    return { values: parse(raw), version: versionOf(raw) };
  }

  /** Save `values` only if nothing changed them since `read` answered `version` (one script: no write slips in between). */
  async replaceIf(scope: SettingsScope, d: Destination, version: string, values: SavedSettings): Promise<boolean> {
    return Number(await runScript(this.redis, 'blip3oSettingsReplaceIf', replaceIfLua, [keyOf(this.config.queue.prefix, scope, d)], [version, JSON.stringify(values)])) === 1;
  }

  /** Nothing to save (the last default cleared) deletes the key: a `{}` per user who ever saved one stayed for good. */
  async set(scope: SettingsScope, d: Destination, values: SavedSettings): Promise<void> {
    const key = keyOf(this.config.queue.prefix, scope, d);
    if (Object.keys(values).length === 0) await this.redis.del(key);
    else await this.redis.set(key, JSON.stringify(values));
  }

  async reset(scope: SettingsScope, d: Destination): Promise<void> {
    await this.redis.del(keyOf(this.config.queue.prefix, scope, d));
  }

  /**
   * What applies to a request from `d`: the user's saved values over the channel's; private if either says so; the
   * retention TTL is the channel's alone (a user cannot lengthen it).
   */
  async effective(d: Destination): Promise<SavedSettings> {
    const { channel, user } = await this.layers(d);
    const merged: SavedSettings = { ...channel, ...user };
    if (channel.private || user.private) merged.private = true;
    else delete merged.private;
    if (channel.retentionSeconds !== undefined) merged.retentionSeconds = channel.retentionSeconds;
    else delete merged.retentionSeconds;
    if (channel.noLog) merged.noLog = true;
    else delete merged.noLog;
    return merged;
  }

  /** The channel's and the user's saved values for a request from `d`, apart (to say where each value comes from). */
  async layers(d: Destination): Promise<Layers> {
    // One MGET (both keys share queue.prefix, so one hash slot on a Redis Cluster).
    const [channel, user] = (await this.redis.mget(keyOf(this.config.queue.prefix, 'channel', d), keyOf(this.config.queue.prefix, 'user', d))).map(parse) as [SavedSettings, SavedSettings];
    return { channel, user };
  }
}

export type Layers = { channel: SavedSettings; user: SavedSettings };

/** A saved negative prompt over a limit lowered since: its first `max` characters (code points, as the limit counts). */
const cutTo = (negative: string | undefined, max: number) => (negative === undefined || charCount(negative) <= max ? negative : firstChars(negative, max).trim());

/**
 * A request's options, its own first, then the saved defaults. A saved default above a limit the operator has lowered
 * since (`generation.max*`) is used at the limit, a negative prompt cut to it: it is a preference the user set under
 * the old limit, not a value they typed now (before 2026-12-07 each /imagine of theirs was refused over a number they
 * had not typed; a negative prompt, until 2026-12). /settings says so (describeInForce).
 */
export function withDefaults<T extends { ditSteps?: number; guidance?: number; aspect?: string; negative?: string; count?: number }>(
  input: T,
  s: SavedSettings,
  limits: Pick<Config['generation'], 'maxDitSteps' | 'maxGuidance' | 'maxImagesPerRequest' | 'maxNegativeChars'>,
): T {
  const atMost = (saved: number | undefined, max: number) => (saved === undefined ? undefined : Math.min(saved, max));
  return {
    ...input,
    ditSteps: input.ditSteps ?? atMost(s.steps, limits.maxDitSteps),
    guidance: input.guidance ?? atMost(s.guidance, limits.maxGuidance),
    aspect: input.aspect ?? s.aspect,
    negative: input.negative ?? cutTo(s.negative, limits.maxNegativeChars),
    count: input.count ?? atMost(s.count, limits.maxImagesPerRequest),
  };
}

export function describeSettings(s: SavedSettings): string {
  const parts = [
    s.aspect && `aspect ${s.aspect}`,
    s.steps !== undefined && `${s.steps} steps`,
    s.guidance !== undefined && `guidance ${s.guidance}`,
    s.count !== undefined && countOf(s.count, 'image'),
    s.negative && `no: ${s.negative}`,
    s.private !== undefined && (s.private ? 'results private' : 'results public'),
    s.retentionSeconds !== undefined && `jobs deleted after ${formatDuration(s.retentionSeconds)}`,
    s.noLog && 'no-log mode',
  ].filter(Boolean);
  return parts.length ? parts.join(' · ') : 'nothing saved (the bot defaults apply)';
}

/**
 * What applies to a request here and where each value comes from: "9 steps (yours) · aspect 16:9 (this channel) ·
 * guidance 3 (bot default)", and a saved value the bot's limits lower since, as it is used (withDefaults). Before
 * 2026-12 /settings listed the values alone: a user who turned private results off in a channel an admin made
 * private read "results public" and could not tell which default was whose.
 */
export function describeInForce({ channel, user }: Layers, config: Readonly<Config>): string {
  const g = config.generation;
  const saved = <K extends 'aspect' | 'steps' | 'guidance' | 'count' | 'negative'>(name: K) =>
    user[name] !== undefined ? { value: user[name]!, whose: 'yours' } : channel[name] !== undefined ? { value: channel[name]!, whose: 'this channel' } : undefined;
  const number = (name: 'steps' | 'guidance' | 'count', fallback: number, max: number, say: (n: number) => string) => {
    const s = saved(name);
    if (!s) return `${say(fallback)} (bot default)`;
    return s.value > max ? `${say(max)} (${s.whose}: ${s.value}, above this bot's limit of ${max})` : `${say(s.value)} (${s.whose})`;
  };
  const aspect = saved('aspect');
  const negative = saved('negative');
  const isPrivate = channel.private ? 'results private (this channel)' : user.private ? 'results private (yours)'
    : `results public (${user.private === false ? 'yours' : channel.private === false ? 'this channel' : 'bot default'})`;
  return [
    aspect ? `aspect ${aspect.value} (${aspect.whose})` : `aspect ${g.defaultAspect} (bot default)`,
    number('steps', g.defaultDitSteps, g.maxDitSteps, (n) => `${n} steps`),
    number('guidance', g.defaultGuidance, g.maxGuidance, (n) => `guidance ${n}`),
    number('count', g.defaultImageCount, g.maxImagesPerRequest, (n) => countOf(n, 'image')),
    negative && (charCount(negative.value) > g.maxNegativeChars
      ? `no: ${briefly(cutTo(negative.value, g.maxNegativeChars)!)} (${negative.whose}, cut to this bot's limit of ${g.maxNegativeChars} characters)`
      : `no: ${briefly(negative.value)} (${negative.whose})`),
    isPrivate,
    channel.retentionSeconds !== undefined && `jobs deleted after ${formatDuration(channel.retentionSeconds)} (this channel)`,
    channel.noLog ? 'no-log mode (this channel)' : config.noLog && 'no-log mode (this bot)',
  ].filter(Boolean).join(' · ');
}

/** A negative prompt in the in-force line: the answer's first line has it whole, and two copies of a 1,000-character
 * one passed Discord's 2,000 characters for a message. */
const briefly = (text: string) => clipText(text, 80);

/** 90 → "90 s", 3600 → "1 h", 86400 → "1 day": how a retention TTL is shown. */
export function formatDuration(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400} day${seconds === 86_400 ? '' : 's'}`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/** "90", "90s", "15m", "2h", "7d", "1 hour", "10 minutes" (and formatDuration's own "2 min") → seconds; anything else is a UserError. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d{1,7})\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)?\s*$/i.exec(text);
  if (!m) throw new UserError('bad_request', `"${text.slice(0, cutPoint(text, 40))}" is not a duration: write e.g. 90s, 15m, 2h or 7d.`);
  // Stryker disable next-line StringLiteral: equivalent, no unit and '' both mean seconds below
  const unit = (m[2] ?? 's').toLowerCase();
  const factor = unit.startsWith('d') ? 86_400 : unit.startsWith('h') ? 3600 : unit.startsWith('m') ? 60 : 1;
  return Number(m[1]) * factor;
}

/** A channel's retention TTL in seconds, said in the admin's terms: 1 second to 30 days (MAX_RETENTION_SECONDS). */
export function checkRetention(seconds: number): void {
  if (!Number.isInteger(seconds) || seconds < 1) throw new UserError('bad_request', 'The retention must be at least 1 second.');
  if (seconds > MAX_RETENTION_SECONDS)
    throw new UserError('bad_request', `The retention can be at most ${formatDuration(MAX_RETENTION_SECONDS)}; you gave ${formatDuration(seconds)}.`);
}

/** /settings show | set | reset, for yourself or (admins) this channel. */
export async function settingsCommand(inv: Invocation, store: SettingsStore, config: Readonly<Config>): Promise<Reply> {
  const input = inv.input;
  if (input.command !== 'settings') throw new Error(`not a settings command: ${input.command}`);
  if (input.scope === 'channel' && !inv.isAdmin) throw new UserError('forbidden', "Only admins can change this channel's defaults.");
  const d = inv.destination;
  const whose = input.scope === 'user' ? 'Your defaults' : "This channel's defaults";
  if (input.action === 'reset') {
    await store.reset(input.scope, d);
    return { kind: 'text', text: `${whose} are cleared.`, private: true };
  }
  if (input.action === 'set' || input.action === 'replace') {
    // `clear`: those defaults alone are no longer saved (Discord's /settings clear:steps); the others stay.
    const current = input.action === 'set' ? withoutNames(await store.get(input.scope, d), input.clear ?? []) : {};
    const values = Object.fromEntries(Object.entries(input.values ?? {}).filter(([, v]) => v !== undefined));
    // Before the schema: its "Too big: expected number to be <=2592000 → at retentionSeconds" is no answer to "90d".
    if (input.scope === 'user' && (values.retentionSeconds !== undefined || values.noLog !== undefined))
      throw new UserError('bad_request', 'The retention TTL and no-log mode are channel settings: an admin sets them for the whole channel.');
    if (typeof values.retentionSeconds === 'number') checkRetention(values.retentionSeconds);
    const next = SavedSettings.safeParse({ ...current, ...values });
    if (!next.success) throw new UserError('bad_request', `Cannot save that: ${z.prettifyError(next.error).replace(/\n/g, '; ')}`);
    // Only what is typed now meets the bot's limits: one saved under a higher limit is used at the limit (withDefaults),
    // and before 2026-12 it refused every change to the other defaults until the user found and lowered it.
    const g = config.generation;
    const typed = <K extends SettingName>(name: K): SavedSettings[K] | undefined => (name in values ? next.data[name] : undefined);
    if ((typed('steps') ?? 0) > g.maxDitSteps) throw new UserError('bad_request', `steps can be at most ${g.maxDitSteps}.`);
    if ((typed('guidance') ?? 0) > g.maxGuidance) throw new UserError('bad_request', `guidance can be at most ${g.maxGuidance}.`);
    if ((typed('count') ?? 0) > g.maxImagesPerRequest) throw new UserError('bad_request', `images can be at most ${g.maxImagesPerRequest}.`);
    if (charCount(typed('negative') ?? '') > g.maxNegativeChars) throw new UserError('bad_request', `The negative prompt can be at most ${g.maxNegativeChars} characters.`);
    // A form (Slack's modal) saves what it showed, edited: only if nobody changed the values since it was opened (another
    // admin, another window, on any bot instance), or it would undo their change, no-log mode and retention included.
    if (input.action === 'replace' && input.version !== undefined) {
      if (!(await store.replaceIf(input.scope, d, input.version, next.data)))
        throw new UserError('bad_request', `${whose} changed while this window was open, so nothing was saved: open it again to see them.`);
    } else await store.set(input.scope, d, next.data);
    return { kind: 'text', text: `${whose} are now: ${describeSettings(next.data)}.\nIn force for you here: ${describeInForce(await store.layers(d), config)}.`, private: true };
  }
  const [own, layers] = await Promise.all([store.get(input.scope, d), store.layers(d)]);
  return { kind: 'text', text: `${whose}: ${describeSettings(own)}.\nIn force for you here: ${describeInForce(layers, config)}.`, private: true };
}

const withoutNames = (s: SavedSettings, names: readonly SettingName[]): SavedSettings =>
  Object.fromEntries(Object.entries(s).filter(([name]) => !names.includes(name as SettingName))) as SavedSettings;
