// Block Kit for the one status message a job keeps updating (queue position → stage and step → done) and for
// the result posted in its thread (image with Re-roll / Vary, or an answer). Every message also carries a plain
// `text`, which Slack shows in notifications and screen readers read; tests read it too.
import { checkLine } from '../core/check-line.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { queuedLine, STAGE_LABEL, type ShownProgress } from '../core/stage-labels.ts';
import { servedNote } from '../core/served-note.ts';
import { z } from 'zod';
import type { JobResult } from '../../src/jobs/contract.ts';
import { clipText, cutPoint, withOpenBlockClosed } from '../../src/text.ts';

/** action_id of each button; `value` is always the job id. */
export const ACTION = { reroll: 'blip3o_reroll', vary: 'blip3o_vary', cancel: 'blip3o_cancel', imagineThis: 'blip3o_imagine_this' } as const;
/** callback_id of the message shortcut and of the modal it opens. */
export const SHORTCUT_ASK = 'blip3o_ask_about_image';
export const VIEW_ASK = 'blip3o_ask_view';
/** callback_id of the "Describe this image" message shortcut. */
export const SHORTCUT_DESCRIBE = 'blip3o_describe_image';

export interface SlackMessage {
  text: string;
  blocks: Record<string, unknown>[];
}

/** Slack mrkdwn treats &, < and > as control characters. */
export function escapeMrkdwn(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * What a user typed, from the text Slack sends (slash commands, messages): its markup made readable (a link → its
 * label, else its address; `<#C1|general>` → #general; `<@U1|ann>` → @ann; `<!here>` → @here) and then &, < and >
 * decoded, which Slack sends as &amp;, &lt; and &gt; (api.slack.com, "Formatting text for app surfaces": escaping).
 * The inverse of escapeMrkdwn for what it escapes: a prompt reaches the model as typed, and is escaped once on output.
 */
export function readSlackText(text: string): string {
  const readable = text.replace(/<([^<>]*)>/g, (_, inner: string) => {
    const bar = inner.indexOf('|');
    const target = bar < 0 ? inner : inner.slice(0, bar);
    const label = bar < 0 ? '' : inner.slice(bar + 1);
    // a user's or a channel's name comes bare (<@U1|ann>); a group's with its @ (<!subteam^S1|@design>)
    if (label) return `${/^[@#]/.exec(target)?.[0] ?? ''}${label}`;
    return target.startsWith('!') ? `@${target.slice(1).split('^')[0]}` : target;
  });
  return readable.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/**
 * Every text this file renders passes here: control characters out (bots/core/plain-text.ts), then the length cap,
 * cut between whole characters (src/text.ts): half an emoji in a top-level argument (`text`, a file's `title`) made
 * @slack/web-api's form encoding throw "URI malformed", and the message was never sent.
 */
function clip(raw: string, max: number): string {
  return clipText(stripControlChars(raw), max);
}

/** A result file's title or alt text (files.completeUploadExternal), as every text here: see clip. No "…": a title is a name. */
export const fileText = (raw: string, max: number): string => clipText(stripControlChars(raw), max, '');

function bar(step: number, total: number): string {
  const cells = 12;
  // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, the bar is drawn only with a total
  const filled = total > 0 ? Math.min(cells, Math.round((step / total) * cells)) : 0;
  return `${'▓'.repeat(filled)}${'░'.repeat(cells - filled)}`;
}

function button(text: string, actionId: string, jobId: string, style?: 'primary' | 'danger'): Record<string, unknown> {
  return { type: 'button', text: { type: 'plain_text', text }, action_id: actionId, value: jobId, ...(style ? { style } : {}) };
}

function section(text: string): Record<string, unknown> {
  return { type: 'section', text: { type: 'mrkdwn', text: clip(text, 3000) } };
}

/** `m` with `line` above it, as one message (a result sent elsewhere than asked, saying why). `line`: the caller's own mrkdwn (a channel link), not escaped. */
export function withLead(m: SlackMessage, line: string): SlackMessage {
  return { text: `${line}\n${m.text}`, blocks: [section(line), ...m.blocks] };
}

/** One line saying what the job is: the prompt or the question (a Vary's empty prompt: what it is). */
export function headline(kind: 'imagine' | 'vary' | 'ask', subject: string): string {
  const icon = kind === 'ask' ? ':speech_balloon:' : ':art:';
  if (kind === 'vary' && !subject.trim()) return `${icon} A variation of your image`; // before 2026-12-07: a bare icon
  return `${icon} ${escapeMrkdwn(clip(subject, 200))}`;
}

/** Plain text of a progress state, e.g. "Queued: 2nd in line." or "Drawing 12/30". */
export function progressText(p: Pick<ShownProgress, 'stage' | 'step' | 'total' | 'queuePosition' | 'noWorker' | 'paused'>): string {
  if (p.stage === 'queued') return queuedLine(p.queuePosition, p.noWorker, p.paused);
  return p.total > 0 ? `${STAGE_LABEL[p.stage]} ${p.step}/${p.total}` : STAGE_LABEL[p.stage];
}

/** The status message while a job waits or runs; Cancel stays available until it finishes. */
/** `note`: what to say instead of the progress line while queued (an admin paused the channel, a cache hit). */
export function statusMessage(jobId: string, title: string, p: Pick<ShownProgress, 'stage' | 'step' | 'total' | 'queuePosition' | 'partialText' | 'noWorker' | 'paused'>, note?: string): SlackMessage {
  const line = note ?? progressText(p);
  const detail = p.stage === 'queued' || p.total === 0 ? `*${line}*` : `*${line}*  \`${bar(p.step, p.total)}\``;
  const blocks = [section(`${title}\n${detail}`)];
  const partial = p.partialText ? partialAnswer(p.partialText) : '';
  if (partial) blocks.push(section(partial)); // (Slack refuses a section without text)
  blocks.push({ type: 'actions', block_id: 'status', elements: [button('Cancel', ACTION.cancel, jobId, 'danger')] });
  return { text: line, blocks };
}

/** The status message once the job is over: no Cancel; the result itself is in the thread. */
export function finalStatusMessage(title: string, result: JobResult): SlackMessage {
  const line =
    result.status === 'succeeded'
      ? result.kind === 'ask'
        ? 'Answered in the thread'
        : 'Done: the image is in the thread'
      : result.status === 'cancelled'
        ? 'Cancelled'
        : failureText(result);
  return { text: line, blocks: [section(`${title}\n*${escapeMrkdwn(line)}*`)] };
}

/** What a failed job tells the user: its own message when safe to show, else a reference for the operator. */
export function failureText(result: JobResult): string {
  if (result.error?.userFacing) return clip(result.error.message, 3000);
  return `Something went wrong on our side (ref ${result.jobId}).`;
}

/** action_id of the Vary button of image `index` (0-based) of a several-image result: blip3o_vary_1, _2, … */
export const varyActionId = (index: number): string => `${ACTION.vary}_${index + 1}`;
/** Matches both the single Vary and the per-image ones. */
export const VARY_ACTION = new RegExp(`^${ACTION.vary}(?:_(\\d+))?$`);

/**
 * Every action_id this bot posts starts with `blip3o_`, so a press of one that no listener of this version answers
 * (isKnownAction) is another version's button: a newer instance's (`blip3o_upscale`) during a rolling upgrade, or an
 * older format still on a message in the channel.
 */
export const OUR_ACTION = /^blip3o_/;

/** Whether this version has a listener for `actionId` (ACTION, and the per-image Vary ids). */
export function isKnownAction(actionId: string): boolean {
  return (Object.values(ACTION) as string[]).includes(actionId) || VARY_ACTION.test(actionId);
}

/** The image index a Vary button is for (undefined: the single image of a one-image result). */
export function varyIndex(actionId: string): number | undefined {
  const m = VARY_ACTION.exec(actionId);
  return m?.[1] ? Number(m[1]) - 1 : undefined;
}

/** Blocks that go with the uploaded image(s): what was drawn, with which settings, and the buttons. */
export function imageResultMessage(result: JobResult): SlackMessage {
  const image = result.image;
  const prompt = image?.prompt ?? '';
  const o = image?.options;
  const seeds = result.images ? `seeds ${result.images.map((i) => i.options.seed).join(', ')}` : `seed ${o?.seed}`;
  const negative = o?.negative ? ` · no: ${escapeMrkdwn(clip(o.negative, 200))}` : '';
  // Stryker disable next-line StringLiteral: equivalent, `o` and `image` are set together; no caller renders a result without an image
  const settings = o ? [`${seeds} · ${o.aspect} · ${o.ditSteps} steps · guidance ${o.guidance}${negative}`, image ? checkLine(image) : '', servedNote(result)].filter(Boolean).join(' · ') : '';
  if (result.images) {
    return {
      text: prompt ? `Here are ${result.images.length} pictures of “${escapeMrkdwn(clip(prompt, 200))}”` : `Here are ${result.images.length} variations of your image`,
      blocks: [
        section(`${headline(result.kind, prompt)}\n${settings}`),
        {
          type: 'actions',
          block_id: 'result',
          elements: [
            ...result.images.map((_, i) => button(`Vary ${i + 1}`, varyActionId(i), result.jobId)),
            button('Re-roll all', ACTION.reroll, result.jobId, 'primary'),
          ],
        },
      ],
    };
  }
  return {
    text: prompt ? `Here is “${escapeMrkdwn(clip(prompt, 200))}”` : 'Here is a variation of your image', // a Vary has no prompt of its own: not an empty “”
    blocks: [
      section(`${headline(result.kind, prompt)}\n${settings}`),
      {
        type: 'actions',
        block_id: 'result',
        elements: [button('Re-roll', ACTION.reroll, result.jobId, 'primary'), button('Vary', ACTION.vary, result.jobId)],
      },
    ],
  };
}

// --- an answer's text in sections
// Slack renders each section's mrkdwn on its own and pairs the ``` inside it: a code block opened in one section and
// closed in the next shows its backticks as text in the first, and the rest of its code as mrkdwn in the second. So
// every section holds whole code blocks. Slack has no language tags (```python shows "python" as the code's first
// line), so a block cut in two is reopened bare: the tag again would add a line of code that isn't there.

/** Each run of three or more backticks opens or closes a code block (Slack pairs them, wherever they stand). */
const FENCE = /`{3,}/g;
const fenceCount = (s: string): number => s.match(FENCE)?.length ?? 0;
const REOPEN = '```\n';
const CLOSE = '\n```';
/** Of a section's 3,000 characters; a section may add a fence reopened at its start and one closed at its end. */
const SECTION_TEXT = 2900;

/** `text` with the code block it leaves open (an answer cut short, or still streaming) closed (withOpenBlockClosed). */
function withCodeClosed(text: string): string {
  if (fenceCount(text) % 2 === 0) return text;
  let opened = text.lastIndexOf('```'); // Slack pairs every run of three or more, so the open one is the last
  while (text[opened - 1] === '`') opened--;
  return withOpenBlockClosed(text, opened);
}

/** `text` in at most `max` characters: cut with "…", a code block the cut leaves open closed before it. */
function clipWithCodeClosed(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, cutPoint(text, max - 1));
  return `${fenceCount(cut) % 2 === 0 ? cut : withCodeClosed(cut.slice(0, -CLOSE.length))}…`;
}

/**
 * Where the section of `escaped` from `start` ends, before `limit` (its length in SECTION_TEXT): at the last line end
 * outside code in the section's second half (before a block that fits the next section, rather than through it); else
 * at the last line end in that half (a block longer than a section); else after the last space outside code in it (a
 * long paragraph); else at `limit`, never inside an entity or a run of backticks. Cut after escaping (an answer of
 * many & < > grows up to five-fold, and a section past 3,000 is clipped).
 */
function sectionEnd(escaped: string, start: number, limit: number, inCode: boolean): number {
  // Stryker disable next-line UnaryOperator: equivalent, read only when past the section's second half, which 1 never is
  let lineEnd = -1;
  // Stryker disable next-line UnaryOperator: equivalent, read only when past the section's second half, which 1 never is
  let lineEndOutside = -1;
  let spaceOutside = -1; // before the limit: the cut goes after it
  for (let at = start, code = inCode; at <= limit; at++) {
    if (escaped[at] === '\n') {
      lineEnd = at;
      if (!code) lineEndOutside = at;
    } else if (escaped[at] === ' ' && !code && at < limit) {
      spaceOutside = at;
    } else if (escaped.startsWith('```', at)) {
      code = !code;
      while (escaped[at + 1] === '`') at++;
    }
  }
  const secondHalf = start + SECTION_TEXT / 2;
  if (lineEndOutside > secondHalf) return lineEndOutside;
  if (lineEnd > secondHalf) return lineEnd;
  // a paragraph longer than half a section: between two words rather than through one (never in code, whose line
  // the reopened fence would split)
  if (spaceOutside > secondHalf) return spaceOutside + 1;
  let end = cutPoint(escaped, limit, start); // between two characters a reader sees as such (src/text.ts)
  // every & starts an entity (at most five characters): one whose ; lies past the cut would be split
  const amp = escaped.lastIndexOf('&', end - 1);
  if (amp > start && escaped.indexOf(';', amp) >= end) end = amp;
  while (end > start + 1 && escaped[end - 1] === '`' && escaped[end] === '`') end--;
  return end;
}

/**
 * `escaped` (mrkdwn whose code blocks are all closed) as section texts, each with whole code blocks: a block cut
 * between two is closed at the end of the first and reopened at the start of the next. The newline at a cut is
 * dropped (the break between sections stands for it), and so is a piece with nothing but spaces (Slack refuses it).
 */
function sectionTexts(escaped: string): string[] {
  const texts: string[] = [];
  let inCode = false; // whether the text from `start` is inside a code block that began in an earlier section
  for (let start = 0; start < escaped.length; ) {
    const limit = start + SECTION_TEXT;
    const end = limit < escaped.length ? sectionEnd(escaped, start, limit, inCode) : escaped.length;
    const piece = escaped.slice(start, end);
    start = escaped[end] === '\n' ? end + 1 : end;
    if (!piece.trim()) continue;
    const endsInCode: boolean = inCode !== (fenceCount(piece) % 2 === 1);
    texts.push(`${inCode ? REOPEN : ''}${piece}${endsInCode ? CLOSE : ''}`);
    inCode = endsInCode;
  }
  return texts;
}

/** Slack's limit for one section's text is 3000 characters; answers longer than that go as several sections. */
export function answerMessage(answer: string, note = ''): SlackMessage {
  // an answer cut short inside code (the token limit) has its block closed, or the note would show as code
  const closed = withCodeClosed(stripControlChars(answer));
  const text = note ? `${closed}\n_${stripControlChars(note)}_` : closed;
  // `text` is the notification's (and the history's, read back with readSlackText): escaped as the blocks are, or an
  // answer quoting "<!channel>" would notify the whole channel
  return {
    text: escapeMrkdwn(clipWithCodeClosed(text, 3900)),
    blocks: sectionTexts(escapeMrkdwn(text)).slice(0, 45).map((t) => ({ type: 'section', text: { type: 'mrkdwn', text: t } })),
  };
}

/** The answer so far, while the model writes: its open code block closed, and when longer than a section, its first. */
function partialAnswer(partial: string): string {
  const [first = '', ...more] = sectionTexts(escapeMrkdwn(withCodeClosed(stripControlChars(partial))));
  return more.length === 0 ? first : first.endsWith(CLOSE) ? `${first}\n…` : `${first}…`;
}

/**
 * A /describe answer: one section per prompt, each with an "Imagine this" button whose value is the prompt itself.
 * The section's block id carries the describe job's id (`prompt_<n>_<jobId>`), so the job a button starts is at least
 * as private as it (a button pressed in a private result's DM).
 */
export function describedMessage(jobId: string, prompts: string[]): SlackMessage {
  return {
    text: escapeMrkdwn(stripControlChars(prompts.map((p, i) => `${i + 1}. ${p}`).join('\n'))),
    blocks: prompts.map((p, i) => ({
      type: 'section',
      block_id: `prompt_${i + 1}_${jobId}`,
      text: { type: 'mrkdwn', text: clip(`*${i + 1}.* ${escapeMrkdwn(p)}`, 3000) },
      accessory: { type: 'button', text: { type: 'plain_text', text: 'Imagine this' }, action_id: ACTION.imagineThis, value: clip(p, 2000) },
    })),
  };
}

/** The describe job an "Imagine this" button's section belongs to; undefined for an older message (`prompt_<n>`). */
export function describedJobOf(blockId: string | undefined): string | undefined {
  // Stryker disable next-line StringLiteral,Regex: equivalent, a missing id matches no more than an empty one; `(.+)` runs to the end without `$`
  return /^prompt_\d+_(.+)$/.exec(blockId ?? '')?.[1];
}

/** Where the image an "Ask about this image" modal asks about is: channel, thread, file (its private_metadata). */
export const AskTarget = z.strictObject({
  c: z.string().min(1).max(50),
  t: z.string().min(1).max(50),
  // only what the download needs: a message's file object (thumbnails, permalinks…) could pass private_metadata's 3000 characters
  f: z.object({
    id: z.string().min(1),
    name: z.string().optional(),
    mimetype: z.string().optional(),
    size: z.number().optional(),
    url_private: z.string().optional(),
    url_private_download: z.string().optional(),
  }),
});
export type AskTarget = z.infer<typeof AskTarget>;

/** A modal's private_metadata, handed back by Slack: parsed again (undefined when it is not what we wrote). */
export function parseMetadata<T>(schema: z.ZodType<T>, raw: string | undefined): T | undefined {
  let json: unknown;
  try {
    // Stryker disable next-line StringLiteral: equivalent, neither parses
    json = JSON.parse(raw ?? '');
  } catch {
    return undefined; // (without it, safeParse(undefined) below fails too)
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** Slack's most for a plain_text_input's max_length (Block Kit): a longer question cannot be typed in a modal. */
export const SLACK_MAX_INPUT_CHARS = 3000;

/**
 * The modal the "Ask about this image" shortcut opens; its private_metadata carries where the image is. The question
 * input takes `understanding.maxQuestionChars`, at most Slack's 3,000.
 */
export function askModal(target: AskTarget, maxQuestionChars: number): Record<string, unknown> {
  return {
    type: 'modal',
    callback_id: VIEW_ASK,
    private_metadata: JSON.stringify(AskTarget.parse(target)),
    title: { type: 'plain_text', text: 'Ask about this image' },
    submit: { type: 'plain_text', text: 'Ask' },
    close: { type: 'plain_text', text: 'Cancel' },
    blocks: [
      {
        type: 'input',
        block_id: 'question',
        label: { type: 'plain_text', text: 'Your question' },
        element: { type: 'plain_text_input', action_id: 'value', multiline: true, max_length: Math.min(maxQuestionChars, SLACK_MAX_INPUT_CHARS) },
      },
    ],
  };
}
