// Button and modal custom_ids: "b3:<action>:<arg>". Discord caps custom_id at 100 characters, and a press may
// reach any bot process, so everything needed to act on it travels in the id (job ids are short: jobIdFor()).
import { ButtonStyle, ComponentType, type APIActionRowComponent, type APIButtonComponent } from 'discord.js';
import { UserError } from '../../src/errors.ts';

/** 'imagine': "Imagine this" under a /describe answer (the index says which of its prompts). */
export type ButtonAction = 'reroll' | 'vary' | 'cancel' | 'imagine';
const ACTIONS: ReadonlySet<string> = new Set<ButtonAction>(['reroll', 'vary', 'cancel', 'imagine']);
const PREFIX = 'b3';
const MAX_CUSTOM_ID = 100;

/** `index`: which image of a several-image message a Vary button is for (0-based; job ids never contain ':'). */
export function buttonId(action: ButtonAction, jobId: string, index?: number): string {
  const id = `${PREFIX}:${action}:${jobId}${index === undefined ? '' : `:${index}`}`;
  if (id.length > MAX_CUSTOM_ID) throw new Error(`custom_id over ${MAX_CUSTOM_ID} characters for job ${jobId}`);
  return id;
}

/** The action and job id (and image index) of one of our buttons, or undefined for anything else (another bot's, an old format). */
export function parseButtonId(customId: string): { action: ButtonAction; jobId: string; index?: number } | undefined {
  const [prefix, action, jobId, index, ...more] = customId.split(':');
  if (prefix !== PREFIX || !action || !ACTIONS.has(action) || !jobId || more.length > 0) return undefined;
  if (index === undefined) return { action: action as ButtonAction, jobId };
  if (!/^\d{1,2}$/.test(index)) return undefined;
  return { action: action as ButtonAction, jobId, index: Number(index) };
}

/**
 * Whether a custom_id is in our format at all, read or not. Discord sends a component's press only to the app that
 * posted it, so an id of ours that parseButtonId cannot read is an action of another version of this bot (a newer
 * instance's, during a rolling upgrade; an older format) and is answered, not left to "This interaction failed".
 */
export const isOurButtonId = (customId: string): boolean => customId.startsWith(`${PREFIX}:`) || customId.startsWith(`${PREFIX}s:`);

/** The "Ask about this image" modal remembers which message it is about. */
export function askModalId(channelId: string, messageId: string): string {
  return `${PREFIX}:ask:${channelId}:${messageId}`;
}

export function parseAskModalId(customId: string): { channelId: string; messageId: string } {
  const [prefix, kind, channelId, messageId] = customId.split(':');
  if (prefix !== PREFIX || kind !== 'ask' || !channelId || !messageId) throw new UserError('bad_request', 'That form has expired; please try again.');
  return { channelId, messageId };
}

/** The text input of the ask modal. */
export const QUESTION_INPUT_ID = 'question';

/** The components under a /settings answer: turn private results on or off, or clear the saved defaults. */
export type SettingsButton = { scope: 'user' | 'channel'; action: 'private-on' | 'private-off' | 'reset' };

export function settingsButtonId(b: SettingsButton): string {
  return `${PREFIX}s:${b.scope}:${b.action}`;
}

export function parseSettingsButton(customId: string): SettingsButton | undefined {
  const [prefix, scope, action] = customId.split(':');
  if (prefix !== `${PREFIX}s` || (scope !== 'user' && scope !== 'channel')) return undefined;
  if (action !== 'private-on' && action !== 'private-off' && action !== 'reset') return undefined;
  return { scope, action };
}

export function settingsRow(scope: 'user' | 'channel', privateOn: boolean): APIActionRowComponent<APIButtonComponent> {
  return {
    type: ComponentType.ActionRow,
    components: [
      { type: ComponentType.Button, style: ButtonStyle.Secondary, label: privateOn ? 'Make results public' : 'Make results private', custom_id: settingsButtonId({ scope, action: privateOn ? 'private-off' : 'private-on' }) },
      { type: ComponentType.Button, style: ButtonStyle.Danger, label: 'Reset', custom_id: settingsButtonId({ scope, action: 'reset' }) },
    ],
  };
}
