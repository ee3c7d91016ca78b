// What users see: progress lines, the final message (PNG with alt text, settings, buttons), answers and errors,
// as raw Discord API message bodies, so the same body works for PATCH @original and POST /channels/…/messages.
import { checkLine } from '../core/check-line.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { queuedLine, STAGE_LABEL, type ShownProgress } from '../core/stage-labels.ts';
import { servedNote } from '../core/served-note.ts';
import { ButtonStyle, ComponentType, MessageFlags, escapeMarkdown, type APIActionRowComponent, type APIButtonComponent, type APIMessageTopLevelComponent } from 'discord.js';
import type { JobResult } from '../../src/jobs/contract.ts';
import { clipText, cutPoint } from '../../src/text.ts';
import { buttonId } from './custom-ids.ts';
import { isJpeg } from './upload-size.ts';
import { modelText, modelTextWithin, partialModelText, readModelText, withoutLinksOrMentions } from './model-text.ts';

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
  /** NOTICE_FLAGS on a notice (noticeBody); an answer names none. */
  flags?: number;
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

/** `rendered` with `note` (a line of ours, no user text) first: in its text where it fits, else as an embed before the rest. */
export function withNote(rendered: Rendered, note: string): Rendered {
  const content = rendered.body.content ? `${note}\n${rendered.body.content}` : note;
  if (content.length <= MAX_CONTENT_CHARS) return { ...rendered, body: { ...rendered.body, content } };
  return { ...rendered, body: { ...rendered.body, embeds: [{ description: note }, ...(rendered.body.embeds ?? [])] } };
}

/**
 * A private text (an admin report, a settings summary) as messages of at most `max` characters, cut at line ends
 * where it can: Discord refuses a longer content whole (400, 50035), and the report of a busy server (a line per
 * channel) passes 2,000 characters. The first goes into the reply, the rest follow it.
 */
export function contentChunks(raw: string, max = MAX_CONTENT_CHARS): string[] {
  const chunks: string[] = [];
  let current = '';
  for (let line of stripControlChars(raw).split('\n')) {
    while (line.length > max) {
      if (current) chunks.push(current);
      current = '';
      const cut = cutPoint(line, max) || max; // between whole characters (src/text.ts); `|| max`: a room of one unit
      chunks.push(line.slice(0, cut));
      line = line.slice(cut);
    }
    if (current && current.length + 1 + line.length > max) {
      chunks.push(current);
      current = line;
    } else current = current ? `${current}\n${line}` : line;
  }
  chunks.push(current);
  return chunks;
}

/**
 * What a user typed, shown back as typed: Discord's markdown escaped, links and mentions too. Without it a prompt
 * `[free nitro](https://…)` came back as a link under the bot's name, and `||…||`, `__…__` or a backtick changed how
 * the rest read. (Headings and list markers count only at a line's start, where an echo never is: a slash command's
 * text is one line, shown after `**` or mid-line.) "Imagine this" prompts are the model's: the same holds for them.
 */
export function echo(typed: string): string {
  return withoutLinksOrMentions(escapeMarkdown(typed));
}

/**
 * Every text this file renders passes here: control characters out (bots/core/plain-text.ts), then the length cap,
 * cut between whole characters (src/text.ts: half an emoji shows as U+FFFD, a ZWJ sequence cut as its first person).
 */
function truncate(raw: string, max: number): string {
  return clipText(stripControlChars(raw), max);
}

function row(buttons: APIButtonComponent[]): APIActionRowComponent<APIButtonComponent> {
  return { type: ComponentType.ActionRow, components: buttons };
}

function button(label: string, style: ButtonStyle.Primary | ButtonStyle.Secondary | ButtonStyle.Danger, customId: string): APIButtonComponent {
  return { type: ComponentType.Button, style, label, custom_id: customId };
}

export const cancelRow = (jobId: string) => row([button('Cancel', ButtonStyle.Danger, buttonId('cancel', jobId))]);

/** One progress line: "Queued: 3rd in line." / "Drawing: step 12/30". */
export function progressText(progress: ShownProgress): string {
  if (progress.stage === 'queued') {
    return `⏳ ${queuedLine(progress.queuePosition, progress.noWorker, progress.paused)}`;
  }
  const steps = progress.total > 0 ? `: step ${Math.min(progress.step, progress.total)}/${progress.total}` : '…';
  const line = `⏳ ${STAGE_LABEL[progress.stage]}${steps}`;
  if (progress.stage === 'answering' && progress.partialText) {
    const partial = stripControlChars(progress.partialText);
    return truncate(`${line}\n${modelTextWithin(partial, MAX_CONTENT_CHARS - line.length - 1, partialModelText)}`, MAX_CONTENT_CHARS);
  }
  return line;
}

export function progressBody(progress: ShownProgress): MessageBody {
  return { content: progressText(progress), components: [cancelRow(progress.jobId)], allowed_mentions: noMentions };
}

/** The first edit after the core accepted the job. */
export function queuedBody(jobId: string, text: string): MessageBody {
  return { content: truncate(`⏳ ${text}`, MAX_CONTENT_CHARS), components: [cancelRow(jobId)], allowed_mentions: noMentions };
}

export function plainBody(text: string): MessageBody {
  return { content: truncate(text, MAX_CONTENT_CHARS), components: [], allowed_mentions: noMentions };
}

/**
 * The mark of a message of the bot's that is not the model's words: a failure, a refusal in a UserError's own words,
 * "Cancelled.", a help or a note. A reply chain reads it back (conversation.ts) and keeps the message out of a
 * follow-up's history, where before 2026-12-07 a refusal ("…; try again in 40 s.") went to the model as what it
 * had said. It is Discord's SUPPRESS_EMBEDS: the one flag a bot can set both on a new message and in an edit (a
 * status message becomes a failure by an edit), kept by edits that name no flags (the copy of an /ask image may land
 * after the failure), and sent back with every message, gateway and REST (a nonce is not). A notice has no embed of
 * ours: all it hides is a link preview. Status lines ("⏳ …") carry no mark: an answer replaces them by an edit,
 * which would have to clear it, and an older bot delivering the answer would not (its embed hidden).
 */
export const NOTICE_FLAGS = MessageFlags.SuppressEmbeds;

/** A notice (see NOTICE_FLAGS): plain text, marked as not the model's words. */
export function noticeBody(text: string): MessageBody {
  return { ...plainBody(text), flags: NOTICE_FLAGS };
}

/**
 * The first line of an image result: the prompt in bold, or for a Vary (no prompt of its own: the model's
 * reconstruction prompt over the image) "Variation", where an empty bold "****" was shown before 2026-12-07.
 */
function titleOf(prompt: string, prefix: string, max: number): string {
  if (!prompt) return `${prefix}**Variation**`;
  // The cut goes inside the bold span, within `max` with its closing `**`: cut across it, the rest of the message
  // rendered bold or showed stray asterisks. A cut after an escape's backslash (`\*` → `\`) drops it, not to show.
  const whole = stripControlChars(echo(prompt));
  const room = max - prefix.length - '****'.length;
  if (whole.length <= room) return `${prefix}**${whole}**`;
  const kept = clipText(whole, room - '…'.length, '');
  const halfEscape = /\\*$/.exec(kept)![0].length % 2 === 1;
  return `${prefix}**${halfEscape ? kept.slice(0, -1) : kept}…**`;
}

/** "seed 7 · 30 + 50 steps · guidance 3 · 1:1": enough to reproduce the image. */
export function settingsLine(options: NonNullable<JobResult['image']>['options']): string {
  const negative = options.negative ? ` · no: ${echo(truncate(options.negative, 200))}` : '';
  return `seed ${options.seed} · ${options.ditSteps} + ${options.decoderSteps} steps · guidance ${options.guidance} · ${options.aspect}${negative}`;
}

/**
 * The final message for a result. `mentionUserId` is set when it goes out as a channel message (the
 * interaction is gone), so the person who asked is notified.
 */
export function resultMessage(result: JobResult, image: Uint8Array | undefined, mentionUserId?: string, gallery?: Uint8Array[]): Rendered {
  const allowed: MessageBody['allowed_mentions'] = mentionUserId ? { parse: [], users: [mentionUserId] } : noMentions;
  const prefix = mentionUserId ? `<@${mentionUserId}> ` : '';
  if (result.status === 'cancelled') return { body: { ...noticeBody(`${prefix}Cancelled.`), allowed_mentions: allowed }, files: [] };
  if (result.status === 'failed' || (!result.image && !result.answer)) {
    const reason = result.error?.userFacing ? result.error.message : `Sorry, that failed (ref ${result.jobId}).`;
    return { body: { ...noticeBody(`${prefix}${reason}`), allowed_mentions: allowed }, files: [] };
  }
  if (result.answer?.prompts) return describedMessage(result.jobId, result.answer.prompts, prefix, allowed);
  if (result.answer) {
    const note = servedNote(result);
    const answer = stripControlChars(result.answer.text.trim());
    const noteLine = note ? `\n-# ${note}` : '';
    const withPrefix = `${prefix}${modelText(answer) || '(no answer)'}${noteLine}`;
    if (withPrefix.length <= MAX_CONTENT_CHARS) return { body: { ...plainBody(withPrefix), allowed_mentions: allowed }, files: [] };
    // cut in the model's text (modelTextWithin), not in what was shown: a cut code block's rest would read as markdown
    const embeds = [{ description: truncate(modelTextWithin(answer, MAX_EMBED_DESCRIPTION_CHARS - noteLine.length) + noteLine, MAX_EMBED_DESCRIPTION_CHARS) }];
    return { body: { content: prefix.trim(), embeds, components: [], allowed_mentions: allowed }, files: [] };
  }
  const meta = result.image!;
  if (image && gallery && result.images && gallery.length === result.images.length) return galleryMessage(result, result.images, gallery, prefix, allowed);
  if (!image) return { body: { ...noticeBody(`${prefix}The image could not be found (ref ${result.jobId}).`), allowed_mentions: allowed }, files: [] };
  const filename = fileNameOf(meta.options.seed, image);
  const checked = checkLine(meta);
  const content = titleOf(meta.prompt, prefix, MAX_CONTENT_CHARS - 200) + `\n-# ${[settingsLine(meta.options), checked, servedNote(result)].filter(Boolean).join(' · ')}`;
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
    files: [{ name: filename, data: Buffer.from(image), contentType: contentTypeOf(image) }],
  };
}

/** An image's file: `blip3o-<seed>.png`, or `.jpg` for one re-encoded to fit Discord's upload limit (upload-size.ts). */
const fileNameOf = (seed: number, bytes: Uint8Array): string => `blip3o-${seed}.${isJpeg(bytes) ? 'jpg' : 'png'}`;
const contentTypeOf = (bytes: Uint8Array): string => (isJpeg(bytes) ? 'image/jpeg' : 'image/png');

/** A /describe answer: the prompts as a numbered list, each with an "Imagine this" button (custom_id: job + index). */
function describedMessage(jobId: string, prompts: string[], prefix: string, allowed: MessageBody['allowed_mentions']): Rendered {
  const lines = prompts.map((p, i) => `${i + 1}. ${modelText(p.replace(/\s+/g, ' '))}`);
  const buttons = prompts.map((_, i) => button(`Imagine this #${i + 1}`, ButtonStyle.Primary, buttonId('imagine', jobId, i)));
  return { body: { content: truncate(`${prefix}${lines.join('\n')}`, MAX_CONTENT_CHARS), components: [row(buttons)], allowed_mentions: allowed }, files: [] };
}

/** Prompt `index` of a /describe answer message (the numbered line `index + 1`), or undefined. */
export function describedPrompt(content: string, index: number): string | undefined {
  for (const line of content.split('\n')) {
    // Stryker disable next-line Regex: equivalent, the `$` after a greedy `.+`
    const m = /^(?:<@!?\d+>\s*)?(\d+)\. (.+)$/.exec(line.trim());
    if (m && Number(m[1]) === index + 1) return readModelText(m[2]!.replace(/…$/, '').trim());
  }
  return undefined;
}

/** Discord shows at most 5 buttons per row. */
const ROW_BUTTONS = 5;

/**
 * Several images as one message: every PNG attached (Discord lays them out as a gallery), the seeds listed, a Vary
 * button per image (its custom_id carries the index) and one Re-roll all.
 */
function galleryMessage(result: JobResult, images: NonNullable<JobResult['images']>, pngs: Uint8Array[], prefix: string, allowed: MessageBody['allowed_mentions']): Rendered {
  const first = images[0]!;
  const seeds = images.map((i) => i.options.seed);
  const { seed: _seed, ...rest } = first.options;
  // Stryker disable next-line Regex: equivalent, the `^`: settingsLine starts with the seed
  const settings = settingsLine({ ...rest, seed: seeds[0]! }).replace(/^seed \d+/, `seeds ${seeds.join(', ')}`);
  const content = titleOf(first.prompt, prefix, MAX_CONTENT_CHARS - 300) + `\n-# ${settings}`;
  const vary = images.map((_, i) => button(`Vary ${i + 1}`, ButtonStyle.Secondary, buttonId('vary', result.jobId, i)));
  const rows: APIActionRowComponent<APIButtonComponent>[] = [];
  for (let i = 0; i < vary.length; i += ROW_BUTTONS) rows.push(row(vary.slice(i, i + ROW_BUTTONS)));
  rows.push(row([button('Re-roll all', ButtonStyle.Primary, buttonId('reroll', result.jobId))]));
  const names = images.map((img, i) => fileNameOf(img.options.seed, pngs[i]!));
  return {
    body: {
      content,
      components: rows,
      attachments: images.map((img, i) => ({ id: String(i), filename: names[i]!, description: truncate(img.altText || img.prompt, MAX_ALT_TEXT_CHARS) })),
      allowed_mentions: allowed,
    },
    files: pngs.map((png, i) => ({ name: names[i]!, data: Buffer.from(png), contentType: contentTypeOf(png) })),
  };
}
