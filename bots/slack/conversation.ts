// Questions about images in threads. The image is the one attached to the mentioning message, else the newest
// image earlier in the thread (normally the parent's). Earlier questions to the bot and its answers in the same
// thread, from that image's message on, become the history, so a follow-up ("and what colour is it?") keeps the
// conversation.
import type { ImageRef } from '../core/port.ts';
import { newestTurns } from '../core/requests.ts';
import { withoutServedNote } from '../core/served-note.ts';
import { readSlackText } from './blocks.ts';
import { META_ANSWER, type ThreadFile, type ThreadMessage } from './port.ts';

export interface Turn {
  role: 'user' | 'assistant';
  text: string;
}

/**
 * `<@U123> what is this?` → `what is this?`: the bot's own mention removed, the rest as typed (readSlackText: Slack's
 * markup and its &amp; &lt; &gt; undone).
 */
export function stripMention(text: string, botUserId: string): string {
  // A space, not nothing: "what<@U1>is" reads "what is".
  return readSlackText(text.replace(new RegExp(`<@${botUserId}(\\|[^>]*)?>`, 'g'), ' ')).replace(/\s+/g, ' ').trim();
}

export function isImageFile(f: ThreadFile): boolean {
  // Stryker disable next-line StringLiteral: equivalent, no type is no image either way
  return (f.mimetype ?? '').startsWith('image/') && Boolean(f.url_private_download ?? f.url_private);
}

export function imageRef(f: ThreadFile): ImageRef {
  return { url: f.url_private_download ?? f.url_private, name: f.name, contentType: f.mimetype, sizeBytes: f.size };
}

/**
 * Any file of the message, image or not: a non-image is still returned so the user hears
 * "`notes.txt` is a text file, not an image" rather than "attach an image".
 */
export function firstFile(files: ThreadFile[] | undefined): ThreadFile | undefined {
  return files?.find(isImageFile) ?? files?.[0];
}

/** The image a question in `thread` (parent first) at `ts` is about: its own file, else the newest earlier one. */
export function imageForQuestion(thread: ThreadMessage[], ts: string, ownFiles: ThreadFile[] | undefined): ThreadFile | undefined {
  const own = firstFile(ownFiles);
  if (own) return own;
  const earlier = thread.filter((m) => m.ts < ts).reverse(); // Slack ts strings compare in time order
  for (const m of earlier) {
    const f = m.files?.find(isImageFile);
    if (f) return f;
  }
  return undefined;
}

/** The message of `thread` that holds `file` (imageForQuestion's pick), if any. */
export function messageWith(thread: ThreadMessage[], file: ThreadFile): ThreadMessage | undefined {
  return thread.find((m) => m.files?.includes(file));
}

/** An answer as the model wrote it: answerMessage's text without the served note it puts under it. */
function answerText(text: string): string {
  return withoutServedNote(readSlackText(text), (note) => `\n_${note}_`);
}

/**
 * Earlier turns of the conversation in `thread`, oldest first, from the message at `sinceTs` (the image's: turns
 * above it were about another image, which the model would see as this one's) and ending before the message at `ts`.
 */
export function historyBefore(thread: ThreadMessage[], ts: string, botUserId: string, maxTurns: number, sinceTs = ''): Turn[] {
  const turns: Turn[] = [];
  for (const m of thread) {
    if (m.ts >= ts) break;
    if (m.ts < sinceTs) continue;
    if (m.metadata?.event_type === META_ANSWER && m.text) turns.push({ role: 'assistant', text: answerText(m.text) });
    else if (!m.bot_id && m.text?.includes(`<@${botUserId}`)) {
      const q = stripMention(m.text, botUserId);
      if (q) turns.push({ role: 'user', text: q });
    }
  }
  return newestTurns(turns, maxTurns);
}
