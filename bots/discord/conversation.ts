// Mention-replies: find the image a question is about and the conversation so far by walking the reply chain
// upwards: image message ← "@bot what is this?" ← bot's answer ← "@bot and the colour?" (the current message).
// The bot's answers become assistant turns, messages addressed to the bot (see addressesBot) user turns, oldest first.
// Of the bot's messages only answers are turns: its notices (failures, refusals, help) carry a mark (turnText).
// An /ask answer replies to nothing: it carries its image and question itself (asked-image.ts), so the walk ends there.
import type { Message } from 'discord.js';
import { newestTurns } from '../core/requests.ts';
import { withoutServedNote } from '../core/served-note.ts';
import type { Turn } from '../../src/jobs/contract.ts';
import { isImageAttachment, type AttachmentMeta } from './attachments.ts';
import { ASKED_IMAGE_FILE, questionOf } from './asked-image.ts';
import { questionFromMention } from './options.ts';
import { readModelText } from './model-text.ts';
import { NOTICE_FLAGS } from './render.ts';

/**
 * Messages fetched at most while walking one chain, whatever understanding.maxHistoryTurns is: the image is needed
 * for any answer, so the walk goes on past the turns it keeps (before, it stopped at 2 × turns + 2, and with
 * maxHistoryTurns 0 a follow-up two replies below its image was told to attach one). Messages the gateway delivered
 * are in discord.js's cache (no API call); each other one costs a GET, rate-limited by discord.js.
 */
export const MAX_CHAIN = 24;

export interface ChainResult {
  image?: AttachmentMeta & { messageId: string };
  history: Turn[];
  /** Messages on the chain whose attachments we could not see (no Message Content intent). */
  blankedMessages: number;
  /** The walk stopped at MAX_CHAIN with more of the chain above it: the image may be there. */
  tooLong?: boolean;
}

/** The first image attachment of a message, or any attachment if none is declared as an image (to explain why). */
export function firstImage(message: Pick<Message, 'id' | 'attachments'>): (AttachmentMeta & { messageId: string }) | undefined {
  const all = [...message.attachments.values()].map((a) => ({
    id: a.id,
    url: a.url,
    filename: a.name,
    size: a.size,
    contentType: a.contentType,
    messageId: message.id,
  }));
  return all.find((a) => isImageAttachment(a)) ?? all[0];
}

/** The image attachment at `index` (a per-image Vary button of a several-image message); the first without one. */
export function imageAt(message: Pick<Message, 'id' | 'attachments'>, index: number | undefined): (AttachmentMeta & { messageId: string }) | undefined {
  if (index === undefined) return firstImage(message);
  const a = [...message.attachments.values()][index];
  return a && { id: a.id, url: a.url, filename: a.name, size: a.size, contentType: a.contentType, messageId: message.id };
}

/**
 * The roles whose mention addresses the bot: those it holds in the message's server. Discord's @-autocomplete offers
 * the bot's managed role (named like the bot) next to the bot itself, and users pick either. Never @everyone.
 */
export function botRoleIds(message: Pick<Message, 'guild'>, botId: string): string[] {
  const guild = message.guild;
  if (!guild) return [];
  const ids = new Set<string>(guild.members.me?.roles.cache.keys());
  const managed = guild.roles.botRoleFor(botId); // the bot's own member may be missing from the cache
  if (managed) ids.add(managed.id);
  ids.delete(guild.id); // @everyone's id is the server's: every member holds it
  return [...ids];
}

/** Every message in a DM is addressed to the bot; elsewhere a mention of it, or of a role it holds. */
export function addressesBot(message: Pick<Message, 'guildId' | 'mentions'>, botId: string, roleIds: readonly string[]): boolean {
  return message.guildId === null || message.mentions.users.has(botId) || roleIds.some((id) => message.mentions.roles.has(id));
}

/**
 * Unmarked messages of the bot's that are not the model's words, known by their words: a status or progress line
 * (every one starts with ⏳; one left behind by a lost job shows the answer so far after it), and the failures and
 * notes of bots before 2026-12-07, which marked none (messages already in channels). A refusal such a bot posted in a
 * UserError's own words cannot be told from an answer and still counts as one.
 */
const UNMARKED_NOT_AN_ANSWER = /^(?:⏳|Cancelled\.$|Sorry, that failed \(ref |Something went wrong|The image could not be found \(ref |Done: the result is in the message below\.$|Mention me in a reply to |I can't see images in other messages)/;

/**
 * A bot's answer as the model wrote it (render.ts shows it through modelText, and a served note under it), or '' for
 * anything else: a notice, marked with NOTICE_FLAGS (render.ts) wherever the bot posts one that a reply can reach,
 * whatever its words (before 2026-12-07 a rate limit's refusal, "…; try again in 40 s.", went to the model as its
 * own answer).
 */
function turnText(message: Message): string {
  if (message.flags.has(NOTICE_FLAGS)) return '';
  // a result posted in the channel (its interaction gone) starts with the asker's mention (render.ts): not the model's;
  // the model's own `<` is escaped, so a bare `<@id> ` in front can only be ours
  const shown = (message.content || message.embeds[0]?.description || '').replace(/^<@\d+> /, '');
  if (UNMARKED_NOT_AN_ANSWER.test(shown)) return '';
  return readModelText(withoutServedNote(shown, (note) => `\n-# ${note}`));
}

/** Whether a Discord CDN link's signature has expired (its `ex`: hex Unix seconds), or will within a minute. */
function linkExpired(url: string, now = Date.now()): boolean {
  const ex = /[?&]ex=([0-9a-f]+)(?:&|$)/i.exec(url)?.[1];
  return ex !== undefined && parseInt(ex, 16) * 1000 < now + 60_000;
}

/**
 * The image of `message`, a message up the chain: fetched again from the API when its link has expired. discord.js
 * answers fetchReference from its cache, where a message posted days ago keeps the link it arrived with, which the
 * CDN refuses after about a day ("I couldn't download … (HTTP 404)" on a follow-up the next day).
 */
async function freshImage(message: Message, image: AttachmentMeta & { messageId: string }): Promise<AttachmentMeta & { messageId: string }> {
  if (!linkExpired(image.url)) return image;
  try {
    return firstImage(await message.channel.messages.fetch({ message: message.id, force: true })) ?? image;
  } catch {
    return image; // gone since: the download says so
  }
}

export async function walkChain(message: Message, botId: string, maxHistoryTurns: number): Promise<ChainResult> {
  const own = firstImage(message);
  if (own) return { image: own, history: [], blankedMessages: 0 };
  const history: Turn[] = [];
  const roleIds = botRoleIds(message, botId); // the chain stays in the message's channel
  const kept = (): Turn[] => newestTurns(history, maxHistoryTurns);
  let blankedMessages = 0;
  let current = message;
  for (let depth = 0; current.reference?.messageId; depth++) {
    if (depth === MAX_CHAIN) return { history: kept(), blankedMessages, tooLong: true };
    let parent: Message;
    try {
      parent = await current.fetchReference();
    } catch {
      break; // deleted or not visible: ask about what we have
    }
    if (parent.author.id === botId) {
      // An /ask answer carries a copy of its image, the question in its alt text (asked-image.ts): the answer is a turn,
      // and the question before it. Any other image of the bot's is a generated one, whose message is no turn.
      const copy = [...parent.attachments.values()].find((a) => a.name === ASKED_IMAGE_FILE);
      const text = turnText(parent);
      if (text && (copy || !parent.attachments.size)) history.unshift({ role: 'assistant', text });
      const question = questionOf(copy?.description);
      if (question) history.unshift({ role: 'user', text: question });
    } else if (addressesBot(parent, botId, roleIds)) {
      const text = questionFromMention(parent.content, botId, roleIds);
      if (text) history.unshift({ role: 'user', text });
    } else if (!parent.content && !parent.attachments.size && !parent.embeds.length) {
      blankedMessages++;
    }
    const image = firstImage(parent);
    if (image) return { image: await freshImage(parent, image), history: kept(), blankedMessages };
    current = parent;
  }
  return { history: kept(), blankedMessages };
}
