// Where the copies of an Ask form's target are (asked-image.ts), so that a copy follows its target: when the user deletes
// the message with the image, the answers about it lose their copy. Discord sends MESSAGE_DELETE to the shard of the
// target's server, which may run in another bot process than the one that posted the answer, or in one started since:
// the link is in Redis, not in memory.
//
//   <prefix>:discord-asked-copy:target:<target message id>   SET of the job ids asked about it
//   <prefix>:discord-asked-copy:job:<job id>                  SET of "<channel id>/<message id>": the messages with its copy
//
// A job's copy is on its original response, and also on the answer posted as a new message when the interaction token
// expired in the queue (delivery.ts). An /ask upload is in no message: nothing to follow, no link. The target's set
// expires LINK_SECONDS after the last answer about it, a job's LINK_SECONDS after that job's answer; the copy itself
// is only made where the channel has no retention TTL and no no-log mode (adapter.ts attachAskedImage), so the link
// never outlives what such a channel keeps.
import { runScript, type Redis } from '../../src/redis.ts';

/** How long a target's deletion is followed after the last answer about it: 30 days (about 100 bytes per answer). */
export const LINK_SECONDS = 30 * 86_400;

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

export class AskedCopies {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** Job `jobId`, asked about message `targetId`, put its copy `at`. */
  async link(targetId: string, jobId: string, at: CopyAt): Promise<void> {
    const target = this.targetKey(targetId);
    const job = this.jobKey(jobId);
    await this.redis.multi().sadd(target, jobId).expire(target, LINK_SECONDS).sadd(job, member(at)).expire(job, LINK_SECONDS).exec();
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
    return (await this.takeSets(jobIds.map((id) => this.jobKey(id)))).flatMap((m) => {
      const [channelId, messageId] = m.split('/');
      return channelId && messageId ? [{ channelId, messageId }] : [];
    });
  }

  private async takeSets(keys: string[]): Promise<string[]> {
    const tx = this.redis.multi();
    for (const key of keys) tx.smembers(key).del(key);
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
