// /blip3o-settings on Slack: the saved defaults of bots/core/settings.ts (the same store as Discord's /settings),
// shown and edited in a Block Kit modal.
//   /blip3o-settings            your defaults (a modal with the current values filled in)
//   /blip3o-settings channel    this channel's defaults, retention TTL included (workspace admins and owners)
//   /blip3o-settings [channel] reset    clear them
// Submitting the modal saves exactly what it shows (an emptied field is no longer saved) and tells the asker
// privately what is now in force; if the values changed since it opened (another admin, on any bot instance), nothing
// is saved and the asker is told to open it again. The command is not called /settings: Slack slash commands share one namespace per
// workspace, and a generic name would collide with other apps'.
import { z } from 'zod';
import { AspectRatio } from '../../src/config/schema.ts';
import type { Config } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import type { CommandInput } from '../core/port.ts';
import { cutPoint } from '../../src/text.ts';
import { checkRetention, formatDuration, parseDuration, withDefaults, type SavedSettings, type SettingsScope } from '../core/settings.ts';

export const SETTINGS_COMMAND = '/blip3o-settings';
export const VIEW_SETTINGS = 'blip3o_settings';

/** Block ids of the modal's inputs; each input's action_id is `value`. */
export const FIELD = { aspect: 'aspect', steps: 'steps', guidance: 'guidance', count: 'count', negative: 'negative', private: 'private', retention: 'retention' } as const;

/** What the modal is about, carried in its private_metadata (and parsed back: Slack returns it to us). */
export const SettingsTarget = z.strictObject({
  scope: z.enum(['user', 'channel']),
  teamId: z.string().min(1).max(50),
  channelId: z.string().min(1).max(50),
  /** The version of the values the modal shows (SettingsStore.read): its submit saves only if they are unchanged. */
  version: z.string().regex(/^[0-9a-f]{40}$/).optional(),
});
export type SettingsTarget = z.infer<typeof SettingsTarget> & { scope: SettingsScope };

export function parseSettingsText(text: string): { scope: SettingsScope; reset: boolean } {
  // Stryker disable next-line MethodExpression,Regex: equivalent, the trim and a single-space split only leave empty words, which the filter removes
  const words = text.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const scope = words[0] === 'channel' ? 'channel' : 'user';
  const rest = scope === 'channel' ? words.slice(1) : words[0] === 'me' ? words.slice(1) : words;
  if (rest.length === 0) return { scope, reset: false };
  if (rest.length === 1 && rest[0] === 'reset') return { scope, reset: true };
  throw new UserError('bad_request', `Usage: \`${SETTINGS_COMMAND}\` (yours), \`${SETTINGS_COMMAND} channel\` (admins), add \`reset\` to clear them.`);
}

const plain = (text: string) => ({ type: 'plain_text', text, emoji: false });
/**
 * A pre-filled value within its input's max_length as a platform limit is kept (src/text.ts): in UTF-16 code units,
 * cut between whole characters. withDefaults cut it in code points, as the core counts; an emoji is two units, and
 * Slack's docs do not say how it counts, so 500 emoji saved under a limit of 500 are shown as 250. An initial_value
 * over max_length is taken as Slack refusing the whole views.open (invalid_arguments): the window would not open.
 */
const prefill = (text: string, maxLength: number) => (text.length <= maxLength ? text : text.slice(0, cutPoint(text, maxLength)).trim());
const option = (value: string) => ({ text: plain(value), value });
const PRIVATE = { text: plain('Results only the requester sees'), value: 'private' };
const NO_LOG = { text: plain('No-log mode: prompts and questions never reach the logs'), value: 'nolog' };

/** The modal: one optional input per saved default, the current values filled in. */
export function settingsModal(target: SettingsTarget, saved: SavedSettings, config: Readonly<Config>): Record<string, unknown> {
  const g = config.generation;
  // A value saved under a limit lowered since, as /imagine uses it (at the limit): shown over the input's maximum, Save
  // of an untouched form was refused over it.
  const used = withDefaults<{ ditSteps?: number; guidance?: number; count?: number; negative?: string }>({}, saved, g);
  const now: SavedSettings = { ...saved, steps: used.ditSteps, guidance: used.guidance, count: used.count, negative: used.negative };
  const input = (block_id: string, label: string, element: Record<string, unknown>, hint?: string) => ({
    type: 'input', block_id, optional: true, label: plain(label), element: { action_id: 'value', ...element }, ...(hint ? { hint: plain(hint) } : {}),
  });
  const blocks: Record<string, unknown>[] = [
    input(FIELD.aspect, 'Aspect ratio', { type: 'static_select', options: AspectRatio.options.map(option), ...(now.aspect ? { initial_option: option(now.aspect) } : {}) }),
    input(FIELD.steps, 'Diffusion steps', { type: 'number_input', is_decimal_allowed: false, min_value: '1', max_value: String(g.maxDitSteps), ...(now.steps !== undefined ? { initial_value: String(now.steps) } : {}) }),
    input(FIELD.guidance, 'Guidance', { type: 'number_input', is_decimal_allowed: true, min_value: '0', max_value: String(g.maxGuidance), ...(now.guidance !== undefined ? { initial_value: String(now.guidance) } : {}) }),
    input(FIELD.count, 'Images per prompt', { type: 'number_input', is_decimal_allowed: false, min_value: '1', max_value: String(g.maxImagesPerRequest), ...(now.count !== undefined ? { initial_value: String(now.count) } : {}) }),
    input(FIELD.negative, 'Negative prompt (--no)', { type: 'plain_text_input', max_length: g.maxNegativeChars, ...(now.negative ? { initial_value: prefill(now.negative, g.maxNegativeChars) } : {}) }),
    input(FIELD.private, 'Privacy', {
      type: 'checkboxes',
      options: target.scope === 'channel' ? [PRIVATE, NO_LOG] : [PRIVATE],
      ...(now.private || now.noLog ? { initial_options: [...(now.private ? [PRIVATE] : []), ...(now.noLog ? [NO_LOG] : [])] } : {}),
    }),
  ];
  if (target.scope === 'channel')
    blocks.push(input(FIELD.retention, 'Delete each job after', { type: 'plain_text_input', max_length: 20, ...(now.retentionSeconds !== undefined ? { initial_value: formatDuration(now.retentionSeconds).replace(/ /g, '') } : {}) }, 'e.g. 90s, 15m, 2h, 7d: prompts, images and answers are deleted from the bot then. Empty: the bot’s own retention.'));
  return {
    type: 'modal',
    callback_id: VIEW_SETTINGS,
    private_metadata: JSON.stringify(target),
    title: plain(target.scope === 'channel' ? 'Channel defaults' : 'Your defaults'),
    submit: plain('Save'),
    close: plain('Cancel'),
    blocks,
  };
}

type StateValues = Record<string, Record<string, { type?: string; value?: string | null; selected_option?: { value: string } | null; selected_options?: { value: string }[] }>>;

/**
 * The submitted modal → a settings command that saves exactly what it shows. A retention that is not a duration, or
 * is not 1 s to 30 days, is returned as a field error for Slack to show under the input (`response_action: errors`).
 */
export function settingsFromView(target: SettingsTarget, values: StateValues): { input: CommandInput } | { errors: Record<string, string> } {
  const v = (block: string) => values[block]?.value;
  const text = (block: string) => (v(block)?.value ?? '').trim() || undefined;
  const num = (block: string) => (text(block) === undefined ? undefined : Number(text(block)));
  const out: SavedSettings = {
    aspect: v(FIELD.aspect)?.selected_option?.value as SavedSettings['aspect'],
    steps: num(FIELD.steps),
    guidance: num(FIELD.guidance),
    count: num(FIELD.count),
    negative: text(FIELD.negative),
    private: v(FIELD.private)?.selected_options?.some((o) => o.value === PRIVATE.value) ? true : undefined,
    noLog: v(FIELD.private)?.selected_options?.some((o) => o.value === NO_LOG.value) ? true : undefined,
  };
  const retention = text(FIELD.retention);
  if (retention !== undefined) {
    try {
      out.retentionSeconds = parseDuration(retention);
      checkRetention(out.retentionSeconds);
    } catch (e) {
      return { errors: { [FIELD.retention]: (e as Error).message } };
    }
  }
  const defined = Object.fromEntries(Object.entries(out).filter(([, x]) => x !== undefined)) as SavedSettings;
  return { input: { command: 'settings', scope: target.scope, action: 'replace', values: defined, ...(target.version ? { version: target.version } : {}) } };
}
