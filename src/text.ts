// Counting and cutting text that people type and read, in any script. JavaScript's `.length` counts UTF-16 code
// units: 🦊 is 2, 👨‍👩‍👧 is 8, and `slice` can stop between the two halves of a surrogate pair (shown as U+FFFD, or a
// request refused) or between a letter and its marks (a Devanagari or Thai syllable, an emoji and its skin tone).
//
// - A user's limit (prompt, question, negative prompt) is counted in characters as Discord counts an option's
//   max_length and zod's `.max()` counts the job format's bounds: code points (Discord's API is Python 3;
//   discord-api-docs#1315). Not graphemes: one grapheme can hold any number of combining marks, and the limit bounds
//   the model's input.
// - A platform's limit (Discord's 2,000-character content, Slack's 3,000-character section) is kept in code units,
//   of which a text has at least as many as the code points or graphemes a platform may count, and a cut a reader
//   sees falls between two graphemes (Intl.Segmenter): between characters as the reader sees them.

/** Characters as Discord and the job format count them: code points (🦊 is 1, 👨‍👩‍👧 is 5). */
export function charCount(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * The refusal of a user's text past its limit, counted with charCount: "Your prompt is 1400 characters; the limit is
 * 1000." (`what` begins the sentence); undefined within the limit. The bots (bots/core/requests.ts,
 * bots/slack/options.ts) and the worker (worker/limits.ts) all say it with this one sentence, so the wording and the
 * count cannot drift apart between them. Every limit is at least 1, so the count past it is always "characters".
 */
export function lengthRefusal(what: string, text: string, max: number): string | undefined {
  const chars = charCount(text);
  return chars > max ? `${what} is ${chars} characters; the limit is ${max}.` : undefined;
}

/** The first `max` characters (code points) of `text`: never half a surrogate pair. */
export function firstChars(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = 0;
  for (const c of text) {
    if (max-- <= 0) break;
    end += c.length;
  }
  return text.slice(0, end);
}

const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
const isLowSurrogate = (code: number) => code >= 0xdc00 && code <= 0xdfff;

/**
 * The last place at or before code unit `at` where `text` can be cut without splitting what a reader sees as one
 * character (a grapheme: 👨‍👩‍👧, 🇯🇵, स्ते), and after `from` where one is. When the grapheme there began at or before
 * `from` (one longer than the room: a letter under hundreds of marks), the cut goes between two code points instead,
 * which can be `from` itself.
 */
export function cutPoint(text: string, at: number, from = 0): number {
  if (at >= text.length) return text.length;
  if (at <= from) return at;
  const start = GRAPHEMES.segment(text).containing(at)!.index;
  if (start > from) return start;
  return isLowSurrogate(text.charCodeAt(at)) ? at - 1 : at;
}

/** `text` in at most `max` code units: whole, else its first whole graphemes and `mark` ("…"). */
export function clipText(text: string, max: number, mark = '…'): string {
  if (text.length <= max) return text;
  return text.slice(0, cutPoint(text, Math.max(0, max - mark.length))) + mark;
}

/**
 * `text`, whose code block opened at `openedAt` (its first backtick) is still open (an answer cut short, or still
 * streaming), with that block closed: a closing fence whose first backticks have arrived is finished, else one is
 * added on a line of its own. A block with no code yet (nothing after its first line, where its language may still be
 * coming) is left out until it has some, or the platform would show its backticks, or its language as its code.
 * Discord and Slack find the open fence each by their own rules (bots/discord/model-text.ts, bots/slack/blocks.ts).
 */
export function withOpenBlockClosed(text: string, openedAt: number): string {
  const firstLineEnd = text.indexOf('\n', openedAt);
  // Stryker disable next-line EqualityOperator: equivalent, a line end after a fence is past its backticks, never at 0
  if (firstLineEnd < 0 || !text.slice(firstLineEnd).trim()) return text.slice(0, openedAt).trimEnd();
  const closingStarted = /\n(`{0,2})$/.exec(text)?.[1];
  return closingStarted === undefined ? `${text}\n\`\`\`` : `${text}${'`'.repeat(3 - closingStarted.length)}`;
}
