// Text echoed back to a chat (prompts, questions, answers, error messages that quote what was typed) carries no
// control characters: a NUL, BEL or ESC from a prompt would reach every reader's client, and a bidi override
// (U+202E …) can make a message read differently from what it holds. Newlines and tabs stay; everything else in
// Unicode's Cc category (C0, DEL, C1) and the bidi embedding/override/isolate controls goes.

// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;

/** `text` without control characters (keeps `\n` and `\t`; `\r\n` becomes `\n`). */
export function stripControlChars(text: string): string {
  return text.replace(/\r\n?/g, '\n').replace(CONTROLS, '');
}

