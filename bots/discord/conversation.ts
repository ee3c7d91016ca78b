// Mention-replies: find the image a question is about and the conversation so far by walking the reply chain
// upwards: image message ← "@bot what is this?" ← bot's answer ← "@bot and the colour?" (the current message).
// Bot messages become assistant turns, messages addressed to the bot (see addressesBot) user turns, oldest first.
import type { Message } from 'discord.js';
import type { Turn } from '../../src/jobs/contract.ts';
import { isImageAttachment, type AttachmentMeta } from './attachments.ts';
import { questionFromMention } from './options.ts';
import { readModelText } from './model-text.ts';

/** Messages fetched at most while walking one chain (two per turn, plus the image message). */
const MAX_CHAIN = 24;

export interface ChainResult {
  image?: AttachmentMeta & { messageId: string };
  history: Turn[];
  /** Messages on the chain whose attachments we could not see (no Message Content intent). */
  blankedMessages: number;
}

/** The first image attachment of a message, or any attachment if none is declared as an image (to explain why). */
export function firstImage(message: Pick<Message, 'id' | 'attachments'>): (AttachmentMeta & { messageId: string }) | undefined {
  const all = [...message.attachments.values()].map((a) => ({
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
  return a && { url: a.url, filename: a.name, size: a.size, contentType: a.contentType, messageId: message.id };
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

/** A bot's answer as the model wrote it (render.ts shows it through modelText). */
function turnText(message: Message): string {
  return readModelText(message.content || message.embeds[0]?.description || '');
}

export async function walkChain(message: Message, botId: string, maxHistoryTurns: number): Promise<ChainResult> {
  const own = firstImage(message);
  if (own) return { image: own, history: [], blankedMessages: 0 };
  const history: Turn[] = [];
  const roleIds = botRoleIds(message, botId); // the chain stays in the message's channel
  let blankedMessages = 0;
  let current = message;
  for (let depth = 0; depth < Math.min(MAX_CHAIN, 2 * maxHistoryTurns + 2) && current.reference?.messageId; depth++) {
    let parent: Message;
    try {
      parent = await current.fetchReference();
    } catch {
      break; // deleted or not visible: ask about what we have
    }
    if (parent.author.id === botId) {
      const text = turnText(parent);
      if (text && !parent.attachments.size) history.unshift({ role: 'assistant', text });
    } else if (addressesBot(parent, botId, roleIds)) {
      const text = questionFromMention(parent.content, botId, roleIds);
      if (text) history.unshift({ role: 'user', text });
    } else if (!parent.content && !parent.attachments.size && !parent.embeds.length) {
      blankedMessages++;
    }
    const image = firstImage(parent);
    if (image) return { image, history: history.slice(-maxHistoryTurns), blankedMessages };
    current = parent;
  }
  return { history: history.slice(-maxHistoryTurns), blankedMessages };
}
