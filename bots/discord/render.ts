// What users see: progress lines, the final message (PNG with alt text, settings, buttons), answers and errors,
// as raw Discord API message bodies, so the same body works for PATCH @original and POST /channels/…/messages.
import { checkLine } from '../core/check-line.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { STAGE_LABEL } from '../core/stage-labels.ts';
import { servedNote } from '../core/served-note.ts';
import { ButtonStyle, ComponentType, type APIActionRowComponent, type APIButtonComponent, type APIMessageTopLevelComponent } from 'discord.js';
import type { JobProgress, JobResult } from '../../src/jobs/contract.ts';
import { buttonId } from './custom-ids.ts';

export const MAX_CONTENT_CHARS = 2000;
export const MAX_EMBED_DESCRIPTION_CHARS = 4096;
/** Discord caps attachment descriptions (alt text) at 1024 characters. */
export const MAX_ALT_TEXT_CHARS = 1024;

/** A message body without files; `files` travel next to it (multipart). */
export interface MessageBody {
  content: string;
  embeds?: { description: string }[];
  components: APIMessageTopLevelComponent[];
  attachments?: { id: string; filename: string; description?: string }[];
  /** Never ping anyone from text the user typed (prompts may contain @everyone). */
  allowed_mentions: { parse: []; users?: string[]; replied_user?: boolean };
}

export interface RenderedFile {
  name: string;
  data: Buffer;
  contentType: string;
}

export interface Rendered {
  body: MessageBody;
  files: RenderedFile[];
}

const noMentions = { parse: [] } as MessageBody['allowed_mentions'];

/** Every text this file renders passes here: control characters out (bots/core/plain-text.ts), then the length cap. */
function truncate(raw: string, max: number): string {
  const text = stripControlChars(raw);
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function row(buttons: APIButtonComponent[]): APIActionRowComponent<APIButtonComponent> {
  return { type: ComponentType.ActionRow, components: buttons };
}

function button(label: string, style: ButtonStyle.Primary | ButtonStyle.Secondary | ButtonStyle.Danger, customId: string): APIButtonComponent {
  return { type: ComponentType.Button, style, label, custom_id: customId };
}

export const cancelRow = (jobId: string) => row([button('Cancel', ButtonStyle.Danger, buttonId('cancel', jobId))]);

/** One progress line: "Queued: 3rd in line." / "Drawing: step 12/30". */
export function progressText(progress: JobProgress): string {
  if (progress.stage === 'queued') {
    return progress.queuePosition ? `⏳ Queued: ${ordinal(progress.queuePosition)} in line.` : '⏳ Queued.';
  }
  const steps = progress.total > 0 ? `: step ${Math.min(progress.step, progress.total)}/${progress.total}` : '…';
  const line = `⏳ ${STAGE_LABEL[progress.stage]}${steps}`;
  if (progress.stage === 'answering' && progress.partialText) return truncate(`${line}\n${progress.partialText}`, MAX_CONTENT_CHARS);
  return line;
}

export function progressBody(progress: JobProgress): MessageBody {
  return { content: progressText(progress), components: [cancelRow(progress.jobId)], allowed_mentions: noMentions };
}

/** The first edit after the core accepted the job. */
export function queuedBody(jobId: string, text: string): MessageBody {
  return { content: truncate(`⏳ ${text}`, MAX_CONTENT_CHARS), components: [cancelRow(jobId)], allowed_mentions: noMentions };
}

export function plainBody(text: string): MessageBody {
  return { content: truncate(text, MAX_CONTENT_CHARS), components: [], allowed_mentions: noMentions };
}

/** "seed 7 · 30 + 50 steps · guidance 3 · 1:1": enough to reproduce the image. */
export function settingsLine(options: NonNullable<JobResult['image']>['options']): string {
  return `seed ${options.seed} · ${options.ditSteps} + ${options.decoderSteps} steps · guidance ${options.guidance} · ${options.aspect}`;
}

/**
 * The final message for a result. `mentionUserId` is set when it goes out as a channel message (the
 * interaction is gone), so the person who asked is notified.
 */
export function resultMessage(result: JobResult, image: Uint8Array | undefined, mentionUserId?: string): Rendered {
  const allowed: MessageBody['allowed_mentions'] = mentionUserId ? { parse: [], users: [mentionUserId] } : noMentions;
  const prefix = mentionUserId ? `<@${mentionUserId}> ` : '';
  if (result.status === 'cancelled') return { body: { ...plainBody(`${prefix}Cancelled.`), allowed_mentions: allowed }, files: [] };
  if (result.status === 'failed' || (!result.image && !result.answer)) {
    const reason = result.error?.userFacing ? result.error.message : `Sorry, that failed (ref ${result.jobId}).`;
    return { body: { ...plainBody(`${prefix}${reason}`), allowed_mentions: allowed }, files: [] };
  }
  if (result.answer) {
    const note = servedNote(result);
    const text = (result.answer.text.trim() || '(no answer)') + (note ? `\n-# ${note}` : '');
    const withPrefix = `${prefix}${text}`;
    if (withPrefix.length <= MAX_CONTENT_CHARS) return { body: { ...plainBody(withPrefix), allowed_mentions: allowed }, files: [] };
    const embeds = [{ description: truncate(text, MAX_EMBED_DESCRIPTION_CHARS) }];
    return { body: { content: prefix.trim(), embeds, components: [], allowed_mentions: allowed }, files: [] };
  }
  const meta = result.image!;
  if (!image) return { body: { ...plainBody(`${prefix}The image could not be found (ref ${result.jobId}).`), allowed_mentions: allowed }, files: [] };
  const filename = `blip3o-${meta.options.seed}.png`;
  const checked = checkLine(meta);
  const content = truncate(`${prefix}**${meta.prompt.replaceAll('*', '\\*')}**`, MAX_CONTENT_CHARS - 200) + `\n-# ${[settingsLine(meta.options), checked, servedNote(result)].filter(Boolean).join(' · ')}`;
  return {
    body: {
      content,
      components: [
        row([
          button('Re-roll', ButtonStyle.Primary, buttonId('reroll', result.jobId)),
          button('Vary', ButtonStyle.Secondary, buttonId('vary', result.jobId)),
        ]),
      ],
      attachments: [{ id: '0', filename, description: truncate(meta.altText || meta.prompt, MAX_ALT_TEXT_CHARS) }],
      allowed_mentions: allowed,
    },
    files: [{ name: filename, data: Buffer.from(image), contentType: 'image/png' }],
  };
}

/** 1 → 1st, 2 → 2nd, 11 → 11th. */
export function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}
