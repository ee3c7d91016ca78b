// Where the copies of an Ask form's target are (asked-image.ts), so that a copy follows its target: when the user deletes
// the message with the image, or removes the image from it by an edit, the answers about it lose their copy. Discord
// sends MESSAGE_DELETE and MESSAGE_UPDATE to the shard of the target's server, which may run in another bot process than
// the one that posted the answer, or in one started since: the link is in Redis, not in memory.
//
//   <prefix>:discord-asked-copy:target:<target message id>   SET of the job ids asked about it
//   <prefix>:discord-asked-copy:job:<job id>                  SET of "<channel id>/<message id>": the messages with its copy,
//                                                            and "attachment:<attachment id>": the image it asked about
//
// A job's copy is on its original response, and also on the answer posted as a new message when the interaction token
// expired in the queue (delivery.ts). An /ask upload is in no message: nothing to follow, no link. The target's set
// expires LINK_SECONDS after the last answer about it, a job's LINK_SECONDS after that job's answer; the copy itself
// is only made where the channel has no retention TTL and no no-log mode (adapter.ts attachAskedImage), so the link
// never outlives what such a channel keeps. A job set written before 2026-12-08 names no attachment (readers before
// then skip the member, which names no message): for it, an edit takes the copy off only when no image is left.
import { z } from 'zod';
import { runScript, type Redis } from '../../src/redis.ts';
import { isImageAttachment } from './attachments.ts';

/** How long a target's deletion is followed after the last answer about it: 30 days (about 100 bytes per answer). */
export const LINK_SECONDS = 30 * 86_400;

/** What an Ask form asked about: the message, and its image (its attachment id, where the bot read it). */
export interface AskedTarget {
  messageId: string;
  attachmentId?: string;
}

/** A target's attachments after an edit: their ids, and whether any of them is an image. */
export interface LeftAttachments {
  attachmentIds: readonly string[];
  anyImage: boolean;
}

/** A message carrying a copy. */
export interface CopyAt {
  channelId: string;
  messageId: string;
}

/** One more message with the job's copy, only where the job is linked to a target (an upload's is not): its TTL kept. */
const alsoAtLua = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1`;

/** The messages a MESSAGE_DELETE (`id`) or MESSAGE_DELETE_BULK (`ids`) names: ids are all a deletion carries. */
export const DeletedMessages = z.union([
  z.object({ ids: z.array(z.string()) }).transform((d) => d.ids),
  z.object({ id: z.string() }).transform((d) => [d.id]),
]);

/** A MESSAGE_UPDATE, the fields the copies read. Discord sends the whole message; `attachments` lists those it still has. */
const EditedMessage = z.object({
  id: z.string(),
  guild_id: z.string().optional(),
  author: z.object({ id: z.string() }).optional(),
  mentions: z.array(z.object({ id: z.string() })).optional(),
  attachments: z.array(z.object({ id: z.string(), filename: z.string(), content_type: z.string().nullish() })),
});

/**
 * The attachments a MESSAGE_UPDATE leaves its message, or undefined where it tells nothing to go by: a payload that
 * lists none (Discord's partial updates of old named only what changed), or one Discord blanked. Without the Message
 * Content intent a message's attachments arrive empty, except in a DM, in the bot's own messages and in those that
 * mention it (as content does): read as "every image removed", every edit of a target would take its copies off.
 */
export function attachmentsLeft(payload: unknown, botId: string, messageContent: boolean): { messageId: string; left: LeftAttachments } | undefined {
  const parsed = EditedMessage.safeParse(payload);
  if (!parsed.success) return undefined;
  const edit = parsed.data;
  const visible = messageContent || edit.guild_id === undefined || edit.author?.id === botId || (edit.mentions ?? []).some((u) => u.id === botId);
  if (!visible) return undefined;
  return {
    messageId: edit.id,
    left: {
      attachmentIds: edit.attachments.map((a) => a.id),
      anyImage: edit.attachments.some((a) => isImageAttachment({ filename: a.filename, contentType: a.content_type })),
    },
  };
}

export class AskedCopies {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** Job `jobId`, asked about the image `target.attachmentId` (where known) of message `target.messageId`, put its copy `at`. */
  async link(target: AskedTarget, jobId: string, at: CopyAt): Promise<void> {
    const targetKey = this.targetKey(target.messageId);
    const job = this.jobKey(jobId);
    const members = target.attachmentId ? [member(at), ASKED + target.attachmentId] : [member(at)];
    await this.redis.multi().sadd(targetKey, jobId).expire(targetKey, LINK_SECONDS).sadd(job, ...members).expire(job, LINK_SECONDS).exec();
  }

  /** The job's copy is also `at` (its answer, posted anew): followed with the rest, if the job follows a target. */
  async alsoAt(jobId: string, at: CopyAt): Promise<void> {
    // Stryker disable next-line StringLiteral: equivalent, the name only names the script's command on the connection (src/redis.ts runScript) and no other script is named ''
    await runScript(this.redis, 'blip3oAskedCopyAlsoAt', alsoAtLua, [this.jobKey(jobId)], [member(at)]);
  }

  /** The messages with copies of these (deleted) targets; their links are removed as they are read. Two round trips. */
  async take(targetIds: readonly string[]): Promise<CopyAt[]> {
    const jobIds = await this.takeSets(targetIds.map((id) => this.targetKey(id)));
    if (jobIds.length === 0) return [];
    return copiesIn(await this.takeSets(jobIds.map((id) => this.jobKey(id))));
  }

  /**
   * The messages with copies of images an edit removed from `targetId` (`left`: what its attachments are now); the links
   * of those jobs are removed as they are read, the others kept. One round trip for a message that is no target (most
   * edits the bot hears), three for one whose asked image is gone.
   */
  async takeRemoved(targetId: string, left: LeftAttachments): Promise<CopyAt[]> {
    const targetKey = this.targetKey(targetId);
    const jobIds = await this.redis.smembers(targetKey);
    if (jobIds.length === 0) return [];
    const read = this.redis.multi();
    for (const id of jobIds) read.smembers(this.jobKey(id));
    // Stryker disable next-line ArrayDeclaration: equivalent, a MULTI without WATCH is never aborted, so exec() never gives null
    const sets = ((await read.exec()) ?? []).map(([error, members]) => {
      if (error) throw error;
      return members as string[];
    });
    const gone = jobIds.filter((_, i) => {
      const asked = sets[i]!.find((m) => m.startsWith(ASKED))?.slice(ASKED.length);
      return asked === undefined ? !left.anyImage : !left.attachmentIds.includes(asked);
    });
    if (gone.length === 0) return [];
    const take = this.redis.multi().srem(targetKey, ...gone);
    for (const id of gone) take.smembers(this.jobKey(id)).del(this.jobKey(id));
    // Stryker disable next-line ArrayDeclaration: equivalent, a MULTI without WATCH is never aborted, so exec() never gives null
    const replies = ((await take.exec()) ?? []).slice(1);
    // [SMEMBERS, DEL] per job after the SREM: the members are at the even places
    return copiesIn(replies.filter((_, i) => i % 2 === 0).flatMap(([error, members]) => {
      if (error) throw error;
      return members as string[];
    }));
  }

  private async takeSets(keys: string[]): Promise<string[]> {
    const tx = this.redis.multi();
    for (const key of keys) tx.smembers(key).del(key);
    // Stryker disable next-line ArrayDeclaration: equivalent, a MULTI without WATCH is never aborted, so exec() never gives null
    const replies = (await tx.exec()) ?? [];
    // [SMEMBERS, DEL] per key: the members are at the even places
    return replies.filter((_, i) => i % 2 === 0).flatMap(([error, members]) => {
      if (error) throw error;
      return members as string[];
    });
  }

  private targetKey(messageId: string): string {
    return `${this.prefix}:discord-asked-copy:target:${messageId}`;
  }

  private jobKey(jobId: string): string {
    return `${this.prefix}:discord-asked-copy:job:${jobId}`;
  }
}

const member = (at: CopyAt): string => `${at.channelId}/${at.messageId}`;
/** A job set's member naming the attachment asked about (no '/': readers of messages skip it). */
const ASKED = 'attachment:';

/** The messages a job set's members name; any other member (the asked attachment, one of another version) is left out. */
function copiesIn(members: readonly string[]): CopyAt[] {
  return members.flatMap((m) => {
    const [channelId, messageId] = m.split('/');
    return channelId && messageId ? [{ channelId, messageId }] : [];
  });
}
