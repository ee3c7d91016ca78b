// Saved defaults (/settings): per user, and per channel (admins). Stored in Redis as JSON, no expiry:
//   <prefix>:settings:user:<platform>:<workspace>:<userId>
//   <prefix>:settings:channel:<platform>:<workspace>:<channelId>
// For /imagine the request's own options win, then the user's saved ones, then the channel's, then config.
// `private` is the exception: a channel an admin made private stays private whatever a user saved.
import type { Redis } from '../../src/redis.ts';
import { z } from 'zod';
import { AspectRatio, type Config } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import { MAX_IMAGES_PER_JOB, MAX_NEGATIVE_CHARS, channelKey, workspaceOf, type Destination } from '../../src/jobs/contract.ts';
import type { CommandInput, Invocation, Reply } from './port.ts';

export const SavedSettings = z.strictObject({
  aspect: AspectRatio.optional(),
  steps: z.number().int().min(1).max(500).optional(),
  guidance: z.number().min(0).max(50).optional(),
  count: z.number().int().min(1).max(MAX_IMAGES_PER_JOB).optional(),
  negative: z.string().trim().min(1).max(MAX_NEGATIVE_CHARS).optional(),
  /** Results only the requester sees (ephemeral / DM). */
  private: z.boolean().optional(),
});
export type SavedSettings = z.infer<typeof SavedSettings>;
export type SettingsScope = 'user' | 'channel';

export type SettingsInput = Extract<CommandInput, { command: 'settings' }>;

const keyOf = (prefix: string, scope: SettingsScope, d: Destination) =>
  scope === 'user' ? `${prefix}:settings:user:${d.platform}:${workspaceOf(d)}:${d.userId}` : `${prefix}:settings:channel:${channelKey(d)}`;

function parse(raw: string | null | undefined): SavedSettings {
  if (!raw) return {};
  const parsed = SavedSettings.safeParse(JSON.parse(raw)); // Redis is a trust boundary too
  return parsed.success ? parsed.data : {};
}

export class SettingsStore {
  constructor(
    private readonly redis: Redis,
    private readonly config: Readonly<Config>,
  ) {}

  async get(scope: SettingsScope, d: Destination): Promise<SavedSettings> {
    return parse(await this.redis.get(keyOf(this.config.queue.prefix, scope, d)));
  }

  async set(scope: SettingsScope, d: Destination, values: SavedSettings): Promise<void> {
    await this.redis.set(keyOf(this.config.queue.prefix, scope, d), JSON.stringify(values));
  }

  async reset(scope: SettingsScope, d: Destination): Promise<void> {
    await this.redis.del(keyOf(this.config.queue.prefix, scope, d));
  }

  /** What applies to a request from `d`: the user's saved values over the channel's; private if either says so. */
  async effective(d: Destination): Promise<SavedSettings> {
    // One MGET (both keys share queue.prefix, so one hash slot on a Redis Cluster).
    const [channel, user] = (await this.redis.mget(keyOf(this.config.queue.prefix, 'channel', d), keyOf(this.config.queue.prefix, 'user', d))).map(parse) as [SavedSettings, SavedSettings];
    const merged: SavedSettings = { ...channel, ...user };
    if (channel.private || user.private) merged.private = true;
    else delete merged.private;
    return merged;
  }
}

/** /imagine input with saved defaults filled in where the request left an option out. */
export function withDefaults<T extends { ditSteps?: number; guidance?: number; aspect?: string; negative?: string; count?: number }>(input: T, s: SavedSettings): T {
  return {
    ...input,
    ditSteps: input.ditSteps ?? s.steps,
    guidance: input.guidance ?? s.guidance,
    aspect: input.aspect ?? s.aspect,
    negative: input.negative ?? s.negative,
    count: input.count ?? s.count,
  };
}

export function describeSettings(s: SavedSettings): string {
  const parts = [
    s.aspect && `aspect ${s.aspect}`,
    s.steps !== undefined && `${s.steps} steps`,
    s.guidance !== undefined && `guidance ${s.guidance}`,
    s.count !== undefined && `${s.count} image${s.count === 1 ? '' : 's'}`,
    s.negative && `no: ${s.negative}`,
    s.private !== undefined && (s.private ? 'results private' : 'results public'),
  ].filter(Boolean);
  return parts.length ? parts.join(' · ') : 'nothing saved (the bot defaults apply)';
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
  if (input.action === 'set') {
    const current = await store.get(input.scope, d);
    const values = Object.fromEntries(Object.entries(input.values ?? {}).filter(([, v]) => v !== undefined));
    const next = SavedSettings.safeParse({ ...current, ...values });
    if (!next.success) throw new UserError('bad_request', `Cannot save that: ${z.prettifyError(next.error).replace(/\n/g, '; ')}`);
    const g = config.generation;
    if (next.data.steps !== undefined && next.data.steps > g.maxDitSteps) throw new UserError('bad_request', `steps can be at most ${g.maxDitSteps}.`);
    if (next.data.guidance !== undefined && next.data.guidance > g.maxGuidance) throw new UserError('bad_request', `guidance can be at most ${g.maxGuidance}.`);
    if (next.data.count !== undefined && next.data.count > g.maxImagesPerRequest) throw new UserError('bad_request', `images can be at most ${g.maxImagesPerRequest}.`);
    if (next.data.negative !== undefined && next.data.negative.length > g.maxNegativeChars) throw new UserError('bad_request', `The negative prompt can be at most ${g.maxNegativeChars} characters.`);
    await store.set(input.scope, d, next.data);
    return { kind: 'text', text: `${whose} are now: ${describeSettings(next.data)}.`, private: true };
  }
  const [own, effective] = await Promise.all([store.get(input.scope, d), store.effective(d)]);
  return { kind: 'text', text: `${whose}: ${describeSettings(own)}.\nIn force for you here: ${describeSettings(effective)}.`, private: true };
}
