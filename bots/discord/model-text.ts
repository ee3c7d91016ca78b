// What the model wrote (/describe's prompts, /ask's answers, an answer while it streams), as Discord text: its
// markdown still reads as markdown, but no link or mention does, and its code shows as written. readModelText gives
// back the exact text for "Imagine this" and a conversation's history.
//
// Outside code, backslashes are doubled and every `[`, `<`, `@everyone`/`@here` goes behind one. Inside a code span or
// fenced block Discord renders no markdown and shows a backslash as itself, so there the text stays as written (before
// 2026-12-07 it was escaped too, and an answer about code showed `grid\[0]`). Safety does not rest on reading code
// spans as Discord does: a span is left as written only if no link or mention could start in it even were it read as
// plain text (`liveFrom`, on the text without its backslashes), and a span always ends in a backtick, so it never
// leaves a backslash to pair with ours after it. Reading spans wrong only costs looks, never a live link.
import { cutPoint, withOpenBlockClosed } from '../../src/text.ts';

/**
 * Where, in backslash-free text, a link or mention could start: a masked link `[…](scheme:`, `<@…`, `<#…`, a command
 * `</name:id>`, `<id:…>`, `@everyone`, `@here`. Wider than Discord's own rules on purpose (any scheme, any link text).
 */
const LIVE_FROM = /\[[\s\S]*?\]\(\s*<?[a-z][a-z\d+.-]*:|<(?:[@#]|\/[^<>]*:\d|id:)|@(?:everyone|here)/iy;

/**
 * `text` (its backslashes already escaped) with nothing that links or mentions: every `[` behind a backslash (a masked
 * link `[text](url)` starts with one), every `<` (`<@id>`, `<@&role>`, `<#channel>`, a command `</name:id>`) and
 * `@everyone`/`@here`. Discord's markdown shows any punctuation after a backslash as itself (discord-api-docs
 * reference.mdx, "Message Formatting"). discord.js's escapeMaskedLink is not enough: its `\[.+]\(.+\)` is greedy and
 * escapes only the first `[` of a line, so of `[a](…) [b](…)` the second stayed a link.
 */
export function withoutLinksOrMentions(text: string): string {
  return text.replace(/[[<]/g, '\\$&').replace(/@(everyone|here)/g, '\\@$1');
}

const escaped = (text: string): string => withoutLinksOrMentions(text.replace(/\\/g, '\\\\'));
const unescaped = (shown: string): string => shown.replace(/\\([\\[<@])/g, '$1');

/** The length of the run of backticks at `at`. */
function runAt(text: string, at: number): number {
  let end = at;
  while (text[end] === '`') end++;
  return end - at;
}

/** The end of the first run of exactly `length` backticks from `from` (an inline code span's closing one), or -1. */
function closingRun(text: string, from: number, length: number): number {
  // Stryker disable next-line StringLiteral,EqualityOperator: equivalent, indexOf('') stays at `from`, where a run of length 0 matches no closing run and the search moves on to the next backtick; `from` is at least 1 (after an opening run), so `at` is never 0
  for (let at = text.indexOf('`', from); at >= 0; ) {
    const run = runAt(text, at);
    if (run === length) return at + run;
    at = text.indexOf('`', at + run);
  }
  return -1;
}

interface CodeSpans {
  /** [start, end) of each code span and fenced block, backticks included, in order. */
  spans: [number, number][];
  /** Where a ``` opens that nothing closes yet (an answer still streaming, or cut), if one does. */
  openFence?: number;
}

/**
 * The code of `text` as Discord reads it: a ``` opens a block that the next ``` closes (after at least one character
 * that is not a newline, as Discord's code block rule asks); else a run of n backticks opens an inline span that the
 * next run of exactly n closes. Backslashes are ignored: outside code, ours come in pairs that never end on a backtick,
 * and escaping only puts backslashes before `\ [ < @`, so `text` and modelText(text) split at the same places.
 */
function codeSpans(text: string): CodeSpans {
  const spans: [number, number][] = [];
  let openFence: number | undefined;
  // Stryker disable next-line StringLiteral: equivalent, indexOf('') starts at 0, where a run of length 0 opens nothing and the search moves on to the first backtick
  for (let at = text.indexOf('`'); at >= 0; ) {
    const run = runAt(text, at);
    let end = -1;
    if (run >= 3) {
      const content = text.slice(at + 3).search(/[^\n]/);
      const close = content < 0 ? -1 : text.indexOf('```', at + 3 + content + 1);
      // Stryker disable next-line EqualityOperator: equivalent, a close is found past the opening fence, never at 0
      if (close >= 0) end = close + 3;
    }
    // Stryker disable next-line EqualityOperator: equivalent, an end is after at least one backtick, never 0
    if (end < 0) end = closingRun(text, at + run, run);
    // Stryker disable next-line EqualityOperator: equivalent, an end is never 0
    if (end < 0 && run >= 3) openFence ??= at;
    // Stryker disable next-line EqualityOperator: equivalent, an end is never 0
    if (end >= 0) spans.push([at, end]);
    // Stryker disable next-line EqualityOperator: equivalent, an end is never 0
    at = text.indexOf('`', end >= 0 ? end : at + run);
  }
  return { spans, openFence };
}

/** Text and code of `text` in order; code that a link or mention could start in counts as text (see the top). */
function pieces(text: string): { text: string; asWritten: boolean }[] {
  const bare = text.replace(/\\/g, '');
  const bareIndex: number[] = []; // bareIndex[i]: where text[i] lands in `bare`
  // Stryker disable next-line EqualityOperator: equivalent, one more index past the text's end, never read
  for (let i = 0, n = 0; i < text.length; i++) {
    bareIndex.push(n);
    if (text[i] !== '\\') n++;
  }
  const liveFrom = (start: number, end: number): boolean => {
    for (let i = start; i < end; i++) {
      // Stryker disable next-line ConditionalExpression: equivalent, LIVE_FROM is sticky and starts only at [ < @: the skip only saves its tries
      if (!'[<@'.includes(text[i]!)) continue;
      LIVE_FROM.lastIndex = bareIndex[i]!;
      if (LIVE_FROM.test(bare)) return true;
    }
    return false;
  };
  const out: { text: string; asWritten: boolean }[] = [];
  let done = 0;
  for (const [start, end] of codeSpans(text).spans) {
    // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, an empty piece of text adds nothing
    if (start > done) out.push({ text: text.slice(done, start), asWritten: false });
    out.push({ text: text.slice(start, end), asWritten: !liveFrom(start, end) });
    done = end;
  }
  // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, an empty piece of text adds nothing
  if (done < text.length) out.push({ text: text.slice(done), asWritten: false });
  return out;
}

/**
 * What the model wrote, as Discord text (see the top of this file): bold and lists still read as such, no link and no
 * mention does (allowed_mentions only stops the ping; a masked link under the bot's name reads as the bot's own), and
 * code shows as written. Before 2026-12-07 links went out as written (found by a review).
 */
export function modelText(text: string): string {
  return pieces(text).map((p) => (p.asWritten ? p.text : escaped(p.text))).join('');
}

/** The model's text as it wrote it, from what modelText made of it ("Imagine this", an answer read back as history). */
export function readModelText(shown: string): string {
  return pieces(shown).map((p) => (p.asWritten ? p.text : unescaped(p.text))).join('');
}

/**
 * A partial answer while it streams: a ``` the model opened and has not closed yet is closed here, so its code shows
 * as code while it grows rather than as text (backslashes and all) until its end arrives. A fence whose first line
 * has not ended yet (its language still coming) is left out until it has, or the language would show as its code.
 */
export function partialModelText(partial: string): string {
  const { openFence } = codeSpans(partial);
  return modelText(openFence === undefined ? partial : withOpenBlockClosed(partial, openFence));
}

/**
 * `show(text)` in at most `max` characters: when too long, the model's text is cut and shown again (a cut fence
 * closed, as while streaming) with "…", rather than cutting what was shown, which could end a code span halfway.
 */
export function modelTextWithin(text: string, max: number, show: (text: string) => string = modelText): string {
  let shown = show(text);
  for (let kept = text.length; shown.length > max && kept > 0; ) {
    kept = cutPoint(text, Math.max(0, kept - (shown.length - max))); // between whole characters (src/text.ts)
    shown = `${partialModelText(text.slice(0, kept))}…`;
  }
  return shown.length > max ? '…' : shown;
}
