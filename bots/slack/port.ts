// Slack's PlatformPort: progress goes into the job's one status message (chat.update), results go into its
// thread. deliver() may run more than once for a job (a bot died after posting, before the core's ledger
// recorded it), so every write is either naturally idempotent (chat.update, chat.delete) or preceded by a
// look-up: an image is uploaded as `blip3o-<jobId>.png` and not again if the thread already holds that file;
// an answer carries message metadata with the job id and is not posted again if the thread has it. A result
// whose channel refuses the bot goes to the requester's DM, looked up there the same way.
import { webApi } from '@slack/bolt';
import type { RetryOptions, WebClient } from '@slack/web-api';
import { servedNote } from '../core/served-note.ts';
import type { Redis } from '../../src/redis.ts';
import type { Config } from '../../src/config/schema.ts';
import type { Destination, JobResult, SlackDestination } from '../../src/jobs/contract.ts';
import type { Logger } from '../../src/log.ts';
import { namesOf, neverSent, type DeliveredAside, type DisplayNames, type NameQuery, type PlatformPort, type ReplyImage } from '../core/port.ts';
import type { ShownProgress } from '../core/stage-labels.ts';
import { answerMessage, describedMessage, failureText, fileText, finalStatusMessage, headline, imageResultMessage, statusMessage, withLead } from './blocks.ts';

/** Message metadata event types: the status message of a job, and an answer to a question. */
export const META_STATUS = 'blip3o_status';
export const META_ANSWER = 'blip3o_answer';
/** Pages of a thread read at most (200 messages each): a thread longer than that is read from its start only. */
const THREAD_PAGES = 10;

/** The uploaded PNG's name: `blip3o-<jobId>.png`, or `blip3o-<jobId>-<n>.png` (n = 1, 2, …) for image n−1 of several. */
export const resultFileName = (jobId: string, index?: number): string => (index === undefined ? `blip3o-${jobId}.png` : `blip3o-${jobId}-${index + 1}.png`);

/** A job's subject: its prompt (imagine, vary) or its question (ask). */
export interface JobTitle {
  kind: 'imagine' | 'ask';
  text: string;
}

/** What the port needs from the running core (known only after start): Redis and a job's title. */
export interface PortContext {
  redis: Redis;
  /** The prompt or question of a job, for the status message's first line. */
  titleOf(jobId: string): Promise<JobTitle | undefined>;
  /** The job's result is delivered (or dropped for good): its title need not be held in memory any more. */
  forgetTitle?(jobId: string): void;
}

/**
 * A status message that cannot be edited any more: deleted, or left as the "This message was deleted." tombstone
 * Slack keeps for a deleted thread parent that has replies (not the bot's message any more).
 */
const STATUS_GONE = ['message_not_found', 'cant_update_message'] as const;

/**
 * chat.postMessage's refusal of a post at a channel's top level where a workspace setting lets members post only in
 * threads. The bot posts there only a slash command's status message (handlers.ts startJob) and, its status message
 * deleted with nothing under it, a result (Slack puts a reply to a message that is gone at the top level).
 */
export const THREAD_ONLY = 'restricted_action_thread_only_channel';

/**
 * Slack's answers to a post in a channel that takes none of the bot's posts any more: the bot removed from it, the
 * channel deleted (or made private without the bot), archived; or posts refused by the workspace's settings
 * (chat.postMessage's documented errors): posting restricted to some members, a read-only channel, a thread an admin
 * locked, the administrators' Enterprise Key Management revoking access, a top-level post where posts go only in
 * threads (its thread gone, above). Until 2026-12-07 those four were retried for the whole delivery backoff, then
 * dropped (found by an audit); until 2026-12-08 the last one was.
 */
const CHANNEL_LOST: Record<string, string> = {
  not_in_channel: "I'm no longer a member of it",
  channel_not_found: 'I can no longer see it',
  is_archived: 'it was archived',
  restricted_action: 'a workspace setting keeps me from posting there',
  restricted_action_read_only_channel: 'it is read-only',
  restricted_action_thread_locked: 'its thread was locked',
  ekm_access_denied: 'its administrators suspended posting there',
  [THREAD_ONLY]: 'it takes posts only in threads, and the thread of your request is gone',
};

/**
 * conversations.open's answers for a requester the bot can never write to: the account deactivated, gone, or hidden
 * from the bot (a Slack Connect user whose organisation does not allow it).
 */
const NO_DM = new Set(['user_disabled', 'user_not_found', 'user_not_visible']);

/** The error code of a Web API call that answered ok:false. */
export const slackError = (e: unknown): string | undefined => (e as { data?: { error?: string } }).data?.error;

/** Why a failed call's channel takes no posts any more (CHANNEL_LOST), or undefined for any other failure. */
// Stryker disable next-line StringLiteral: equivalent, no code is the key of nothing, whatever it is called
const channelLost = (e: unknown): string | undefined => CHANNEL_LOST[slackError(e) ?? ''];

/** Whether a conversation's message is `jobId`'s status message (by its metadata). */
const isStatusOf = (jobId: string) => (x: ThreadMessage): boolean => x.metadata?.event_type === META_STATUS && x.metadata.event_payload?.job_id === jobId;

/**
 * Whether Slack may have carried out a call that failed: its reply lost (the connection closed after the request was
 * sent, a timeout), or an HTTP error (a 5xx, a proxy's 408). Not: a 429 the client waited out (Slack refused the call;
 * the client tells it on with a request error of its own wording), or a connection never made.
 */
function mayHaveBeenDone(e: unknown): boolean {
  const { code, original } = e as { code?: string; original?: { message?: string; cause?: { code?: string } } };
  if (code === webApi.ErrorCode.HTTPError) return true;
  if (code !== webApi.ErrorCode.RequestError) return false;
  if (original?.message?.startsWith('A rate limit was exceeded')) return false;
  return !neverSent(original?.cause?.code);
}

/**
 * The Web API retry policy of the port's posts (`filesUploadV2`, whose files.completeUploadExternal shares the file,
 * and `chat.postMessage`), which carry no key by which Slack could tell a post sent again from a new one: `policy`,
 * except that a post Slack may have carried out (mayHaveBeenDone) is not sent again by the client. It fails the
 * delivery instead, whose retry looks for what was posted before posting (`postedBefore`). A 429 waited out and a
 * connection never made are retried as before. Until 2026-12-07 the client sent a post whose reply was lost again
 * (after Slack had shared the image, or posted the answer), and the result was posted twice.
 */
export function postedAtMostOnce(policy: RetryOptions): RetryOptions {
  const once: RetryOptions & { onFailedAttempt(e: unknown): Promise<void> } = {
    ...policy,
    onFailedAttempt: async (e) => {
      if (mayHaveBeenDone(e)) throw e; // p-retry: thrown from here, the call fails with it, not tried again
    },
  };
  return once;
}

/** Where a job's messages are: the requester's DM with the bot for private results, else the channel. */
const postedIn = (d: SlackDestination): string => d.dmChannelId ?? d.channelId;

export class SlackPort implements PlatformPort {
  readonly platform = 'slack' as const;
  private context?: PortContext;

  /**
   * `progressClient`: the client progress edits go through, one that neither waits out a 429 nor retries (the adapter
   * makes it so). A progress edit is replaceable: late, it would land on top of the result (the delivery waits for an
   * edit in flight only so long), and waiting out its 429 paused the one client's queue, every other job's result
   * behind it (found by an audit, 2026-12-07). Refused, it is dropped; the next one or the result supersedes it.
   * `postClient`: the client posts (an upload, a chat.postMessage) go through, one whose retries never send a post
   * again that Slack may have carried out (postedAtMostOnce; the adapter makes it so).
   */
  constructor(
    private readonly client: WebClient,
    private readonly config: Readonly<Config>,
    private readonly log: Logger,
    private readonly progressClient: WebClient = client,
    private readonly postClient: WebClient = client,
  ) {}

  attach(context: PortContext): void {
    this.context = context;
  }

  /** `<prefix>:slack:finished:<jobId>`: set when delivery starts, so late progress never overwrites the final state. */
  private finishedKey(jobId: string): string {
    return `${this.config.queue.prefix}:slack:finished:${jobId}`;
  }

  /** The status message's first line: icon and (escaped) prompt or question. */
  private async headlineOf(jobId: string): Promise<string> {
    const t = await this.context?.titleOf(jobId);
    return t ? headline(t.kind, t.text) : '';
  }

  /** A result's first line: its image's prompt, else the job's title. */
  private async titleOf(result: JobResult): Promise<string> {
    return result.image ? headline(result.kind, result.image.prompt) : this.headlineOf(result.jobId);
  }

  /**
   * Channel names (`conversations.info`: scopes channels:read, groups:read) and users' names (`users.info`: the
   * display name, else the full name, else the handle). An id Slack does not name (a DM, a channel the bot cannot
   * see, an install without the scopes) is left out.
   */
  async displayNames(_destination: Destination, ids: NameQuery): Promise<DisplayNames> {
    // A private channel's name is not the bot's to tell: the admin asking may not be in it (the report shows its id).
    const channelName = async (id: string) => {
      const { channel } = await this.client.conversations.info({ channel: id });
      return channel?.is_private ? undefined : channel?.name;
    };
    const userName = async (id: string) => {
      const { user } = await this.client.users.info({ user: id });
      return user?.profile?.display_name || user?.real_name || user?.name;
    };
    const [channels, users] = await Promise.all([namesOf(ids.channels, channelName, this.log), namesOf(ids.users, userName, this.log)]);
    return { channels, users };
  }

  /** `progress`: the relay's, which may say the job's channel is paused (ShownProgress). */
  async showProgress(destination: Destination, progress: ShownProgress): Promise<void> {
    if (destination.platform !== 'slack') return;
    await this.showStatus(destination, progress.jobId, progress);
  }

  /** The status message of a queued job that has no place to show (held in a paused channel, served from the cache): the core's words. */
  async showNote(d: SlackDestination, jobId: string, note: string): Promise<void> {
    await this.showStatus(d, jobId, { stage: 'queued', step: 0, total: 0 }, note);
  }

  /** Edit the status message of a job whose delivery has not begun: its progress, or `note` in place of the progress line. */
  private async showStatus(d: SlackDestination, jobId: string, p: Parameters<typeof statusMessage>[2], note?: string): Promise<void> {
    if (!d.statusMessageTs || !this.context) return;
    if ((await this.context.redis.exists(this.finishedKey(jobId))) === 1) return;
    const m = statusMessage(jobId, await this.headlineOf(jobId), p, note);
    try {
      await this.progressClient.chat.update({ channel: postedIn(d), ts: d.statusMessageTs, text: m.text, blocks: m.blocks as never });
    } catch (e) {
      if ((e as { code?: string }).code !== webApi.ErrorCode.RateLimitedError) throw e;
      // Stryker disable next-line ObjectLiteral,StringLiteral: a debug log line
      this.log.debug({ jobId }, 'a progress edit was rate limited: dropped');
    }
  }

  async deliver(result: JobResult, image: Uint8Array | undefined, gallery?: Uint8Array[]): Promise<void | DeliveredAside> {
    if (result.destination.platform !== 'slack') return;
    const d = result.destination;
    const ttl = Math.max(this.config.queue.keepCompletedSeconds, this.config.queue.keepFailedSeconds);
    // The first attempt sets the key. Only a repeat (crash mid-delivery) pays for a conversations.replies look-up,
    // which non-Marketplace apps may call once a minute.
    // Stryker disable next-line StringLiteral: equivalent, only the key's existence is read
    const first = (await this.context?.redis.set(this.finishedKey(result.jobId), '1', 'EX', ttl, 'NX')) === 'OK';
    let aside: DeliveredAside | undefined;
    try {
      try {
        await this.deliverOnce(d, result, image, !first, gallery);
      } catch (e) {
        const why = channelLost(e);
        // A private job's messages are in the DM already: no other place to try (nowhere, below).
        if (why === undefined || d.dmChannelId) throw e;
        aside = await this.deliverToRequester(d, result, why, image, !first, gallery);
      }
    } catch (e) {
      // Neither the channel nor the requester's DM takes it, for good: no retry can post it. Until 2026-12-07 it was
      // retried for the whole delivery backoff (queue.deliveryAttempts, about 17 minutes), then dropped.
      const error = slackError(e);
      // Stryker disable next-line StringLiteral: equivalent, no other string is in NO_DM either
      if (channelLost(e) === undefined && !NO_DM.has(error ?? '')) throw e;
      this.log.warn({ jobId: result.jobId, channel: d.channelId, user: d.userId, error }, 'the result could not be posted anywhere: dropped');
      this.context?.forgetTitle?.(result.jobId);
      return 'nowhere';
    }
    // Stryker disable next-line ObjectLiteral,StringLiteral: a debug log line
    this.log.debug({ jobId: result.jobId, status: result.status }, 'slack result delivered');
    // Not after a failed attempt: its retry shows the same headline (read from Redis it would lose "Variation of …")
    this.context?.forgetTitle?.(result.jobId);
    return aside;
  }

  /**
   * The job's channel takes none of the bot's posts any more (`why`): its image, answer or failure goes to the
   * requester's DM as one message whose first line says why, rather than being retried until the delivery is dropped.
   * A repeated delivery (a crash in here) looks for it among the DM's latest messages first, so it is posted once. A
   * cancelled job has nothing to tell: the user or an admin cancelled it.
   */
  private async deliverToRequester(d: SlackDestination, result: JobResult, why: string, image: Uint8Array | undefined, repeat: boolean, gallery?: Uint8Array[]): Promise<DeliveredAside> {
    if (result.status === 'cancelled') {
      this.log.info({ jobId: result.jobId, why }, 'a cancelled job\'s channel takes no posts any more: nothing to tell');
      return 'nowhere';
    }
    this.log.warn({ jobId: result.jobId, why }, 'the result cannot be posted in its channel: sending it to the requester directly');
    const dm = String((await this.client.conversations.open({ users: d.userId })).channel?.id);
    const to: SlackDestination = { ...d, dmChannelId: dm, threadTs: undefined, statusMessageTs: undefined };
    const channel = `<#${d.channelId}>`;
    if (result.status === 'failed') {
      await this.updateStatus(to, result.jobId, withLead(finalStatusMessage(await this.titleOf(result), result), `I couldn't tell you in ${channel} (${why}): your request did not finish.`), repeat);
    } else {
      const lead = `I couldn't post your result in ${channel}: ${why}. Here it is.`;
      // Stryker disable next-line ConditionalExpression: equivalent, the core passes bytes only with a succeeded image (bots/core/delivery.ts)
      if (result.image && image) await this.deliverImage(to, result, image, repeat, gallery, lead);
      else await this.deliverAnswer(to, result, repeat, lead);
    }
    return 'elsewhere';
  }

  /** One attempt at a result; `repeat`: an earlier attempt may have posted some of it. */
  private async deliverOnce(d: SlackDestination, result: JobResult, image: Uint8Array | undefined, repeat: boolean, gallery?: Uint8Array[]): Promise<void> {
    const title = await this.titleOf(result);
    // Stryker disable next-line ConditionalExpression: equivalent, the core passes bytes only with a succeeded image (bots/core/delivery.ts)
    if (result.status === 'succeeded' && result.image && image) {
      await this.deliverImage(d, result, image, repeat, gallery);
      // The image is posted: a channel lost between the two only leaves its status line behind.
      return this.updateStatus(d, result.jobId, finalStatusMessage(title, result), repeat).catch((e: unknown) => {
        if (channelLost(e) === undefined) throw e;
      });
    }
    // Stryker disable next-line ConditionalExpression,LogicalOperator: equivalent, only a succeeded result has an answer, and a succeeded one has an image or an answer
    if (result.status === 'succeeded' && result.answer) return this.deliverAnswer(d, result, repeat);
    if (result.status === 'failed' && result.error?.userFacing) {
      // Something the user can fix: tell only them, and take the public status message away.
      if (d.dmChannelId) return this.updateStatus(d, result.jobId, { text: failureText(result), blocks: [] }, repeat); // the DM is theirs alone
      await this.postEphemeral(d.channelId, d.userId, failureText(result), d.threadTs);
      if (d.statusMessageTs) await this.ignoring(['message_not_found'], () => this.client.chat.delete({ channel: d.channelId, ts: d.statusMessageTs! }));
      return;
    }
    await this.updateStatus(d, result.jobId, finalStatusMessage(title, result), repeat);
  }

  /** The image (or several in one message) in the job's thread; `lead`: a line above it. */
  private async deliverImage(d: SlackDestination, result: JobResult, png: Uint8Array, repeat: boolean, gallery?: Uint8Array[], lead?: string): Promise<void> {
    const several = gallery && result.images && gallery.length === result.images.length;
    const filename = resultFileName(result.jobId, several ? 0 : undefined);
    const threadTs = d.threadTs ?? d.statusMessageTs;
    if (repeat && (await this.postedBefore(d, threadTs, (m) => m.files?.some((f) => f.name === filename)))) return; // posted by an earlier attempt
    const m = lead ? withLead(imageResultMessage(result), lead) : imageResultMessage(result);
    const where = threadTs ? { channel_id: postedIn(d), thread_ts: threadTs } : { channel_id: postedIn(d) };
    if (several) {
      // One message in the thread with every picture (one files.completeUploadExternal), named per image.
      const file_uploads = result.images!.map((img, i) => ({
        file: Buffer.from(gallery[i]!),
        filename: resultFileName(result.jobId, i),
        title: `${fileText(img.prompt, 230)} (${i + 1}/${gallery.length}, seed ${img.options.seed})`,
        alt_text: fileText(img.altText, 1000),
      }));
      await this.postClient.filesUploadV2({ ...where, file_uploads, blocks: m.blocks as never });
      return;
    }
    const upload = {
      file: Buffer.from(png),
      filename,
      title: fileText(result.image!.prompt, 250) || filename,
      alt_text: fileText(result.image!.altText, 1000),
      blocks: m.blocks as never,
    };
    await this.postClient.filesUploadV2({ ...upload, ...where });
  }

  private async deliverAnswer(d: SlackDestination, result: JobResult, repeat: boolean, lead?: string): Promise<void> {
    const answer = result.answer!.prompts ? describedMessage(result.jobId, result.answer!.prompts) : answerMessage(result.answer!.text, servedNote(result));
    const m = lead ? withLead(answer, lead) : answer;
    const metadata = { event_type: META_ANSWER, event_payload: { job_id: result.jobId } };
    if (d.statusMessageTs) {
      // The status message becomes the answer: one message in the thread, and chat.update is idempotent.
      const updated = await this.ignoring(STATUS_GONE, () =>
        this.client.chat.update({ channel: postedIn(d), ts: d.statusMessageTs!, text: m.text, blocks: m.blocks as never, metadata }),
      );
      if (updated) return;
    }
    const threadTs = d.threadTs;
    if (repeat && (await this.postedBefore(d, threadTs, (x) => x.metadata?.event_type === META_ANSWER && x.metadata.event_payload?.job_id === result.jobId))) return;
    await this.postClient.chat.postMessage({ channel: postedIn(d), text: m.text, blocks: m.blocks as never, metadata, ...(threadTs ? { thread_ts: threadTs } : {}) });
  }

  /**
   * The status message says `m`; where it is gone (deleted by an admin), `m` is posted in the thread instead, marked
   * with the job id so that a repeated delivery finds it there and posts it only once.
   */
  private async updateStatus(d: SlackDestination, jobId: string, m: { text: string; blocks: Record<string, unknown>[] }, repeat: boolean): Promise<void> {
    if (d.statusMessageTs) {
      const ok = await this.ignoring(STATUS_GONE, () => this.client.chat.update({ channel: postedIn(d), ts: d.statusMessageTs!, text: m.text, blocks: m.blocks as never }));
      if (ok) return;
    }
    // Stryker disable next-line ConditionalExpression: equivalent, the status message itself is gone (or a tombstone, which has no metadata) whenever this runs
    const isOurs = (x: ThreadMessage) => x.ts !== d.statusMessageTs && isStatusOf(jobId)(x);
    if (repeat && (await this.postedBefore(d, d.threadTs, isOurs))) return;
    await this.postStatusMessage(postedIn(d), d.threadTs, jobId, m);
  }

  /** Post `jobId`'s status message (its metadata names the job, for a repeat to find it); resolves to its ts. */
  private async postStatusMessage(channel: string, threadTs: string | undefined, jobId: string, m: { text: string; blocks: Record<string, unknown>[] }): Promise<string> {
    const metadata = { event_type: META_STATUS, event_payload: { job_id: jobId } };
    const posted = await this.postClient.chat.postMessage({ channel, text: m.text, blocks: m.blocks as never, metadata, ...(threadTs ? { thread_ts: threadTs } : {}) });
    return String(posted.ts);
  }

  /**
   * Post a job's status message (the handlers' first post, before the job exists) once; resolves to its ts. Posted
   * through the client that sends no post again that Slack may have carried out (postedAtMostOnce): where Slack may
   * have, the conversation is asked first (the thread, else the channel's latest messages) and its status message of
   * `jobId` is taken, and only where there is none is it posted again. Until 2026-12-07 the client sent it again: a
   * second status message, the first left at "Queued." for good (found by an audit).
   */
  async postStatus(channel: string, threadTs: string | undefined, jobId: string, m: { text: string; blocks: Record<string, unknown>[] }): Promise<string> {
    const post = () => this.postStatusMessage(channel, threadTs, jobId, m);
    try {
      return await post();
    } catch (e) {
      if (!mayHaveBeenDone(e)) throw e;
      const seen = threadTs ? await this.thread(channel, threadTs) : await this.latest(channel);
      const posted = seen.find(isStatusOf(jobId));
      this.log.info({ jobId, found: posted !== undefined }, 'the reply to a status message was lost: looked for it before posting again');
      return posted?.ts ?? post();
    }
  }

  /**
   * A message only `user` sees (chat.postEphemeral), shown at most once: Slack keeps no ephemeral message to look for,
   * so one Slack may have shown (its reply lost, a 5xx) counts as shown, rather than showing it twice (the client sent it
   * again until 2026-12-07, found by an audit). Any other failure is thrown.
   */
  async postEphemeral(channel: string, user: string, text: string, threadTs?: string): Promise<void> {
    try {
      await this.postClient.chat.postEphemeral({ channel, user, text, ...(threadTs ? { thread_ts: threadTs } : {}) });
    } catch (e) {
      if (!mayHaveBeenDone(e)) throw e;
      this.log.warn({ channel, user, err: (e as Error).message }, 'the reply to a private message was lost: taken as shown, not sent again');
    }
  }

  /**
   * A file in a conversation (the usage chart in the asker's DM), shared at most once: uploaded through the client that
   * sends no post again that Slack may have carried out (postedAtMostOnce). Its name is the same every time, so there is
   * nothing to look for: one Slack may have shared (a reply lost, a 5xx) counts as shared, as an ephemeral counts as
   * shown (postEphemeral). Until 2026-12-07 it went through Bolt's client, which sent files.completeUploadExternal again
   * when its reply was lost: the chart was posted twice (found by an audit). Any other failure is thrown.
   */
  async uploadOnce(channel: string, file: ReplyImage): Promise<void> {
    try {
      await this.postClient.filesUploadV2({ channel_id: channel, file: Buffer.from(file.png), filename: file.name, alt_text: file.altText });
    } catch (e) {
      if (!mayHaveBeenDone(e)) throw e;
      this.log.warn({ channel, file: file.name, err: (e as Error).message }, 'the reply to a file upload was lost: taken as shared, not sent again');
    }
  }

  /**
   * A thread's messages, parent first; none when the parent is gone (Slack's thread_not_found), which is no error.
   * Slack gives them oldest first, a page (200) a call: every page is read, up to THREAD_PAGES, or a follow-up in a
   * busy thread read only its first 200 messages, and took the history (and the image) from there (before 2026-12-07).
   */
  async thread(channel: string, ts: string): Promise<ThreadMessage[]> {
    try {
      const messages: ThreadMessage[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < THREAD_PAGES; page++) {
        const res = await this.client.conversations.replies({ channel, ts, include_all_metadata: true, limit: 200, ...(cursor ? { cursor } : {}) });
        messages.push(...((res.messages ?? []) as ThreadMessage[]));
        cursor = res.response_metadata?.next_cursor;
        if (!res.has_more || !cursor) break;
      }
      return messages;
    } catch (e) {
      if (slackError(e) === 'thread_not_found') return [];
      throw e;
    }
  }

  /**
   * Whether an earlier attempt posted what `found` matches: in the thread `threadTs`; in a DM without a thread, among
   * its latest messages (a result sent to the requester because its channel refused it). A channel's top level is not
   * searched: too busy to find it in the 15 messages Slack gives non-Marketplace apps per minute.
   */
  private async postedBefore(d: SlackDestination, threadTs: string | undefined, found: (m: ThreadMessage) => boolean | undefined): Promise<boolean> {
    if (threadTs) return (await this.earlierPosts(postedIn(d), threadTs)).some(found);
    if (!d.dmChannelId) return false;
    return (await this.latest(d.dmChannelId)).some(found);
  }

  /** A conversation's latest top-level messages (and thread parents), newest first. */
  private async latest(channel: string): Promise<ThreadMessage[]> {
    const res = await this.client.conversations.history({ channel, include_all_metadata: true, limit: 100 });
    return (res.messages ?? []) as ThreadMessage[];
  }

  /**
   * Where a repeated delivery looks for what an earlier attempt posted: the thread, or, once the thread's parent is gone
   * (an admin deleted the status message before anything was under it), the channel's latest messages, since Slack
   * posts a reply to a deleted parent at the top level instead.
   */
  private async earlierPosts(channel: string, threadTs: string): Promise<ThreadMessage[]> {
    const thread = await this.thread(channel, threadTs);
    if (thread.length > 0) return thread;
    return this.latest(channel);
  }

  /** Run a Web API call; an ok:false with one of `codes` resolves to false instead of throwing. */
  private async ignoring(codes: readonly string[], call: () => Promise<unknown>): Promise<boolean> {
    try {
      await call();
      return true;
    } catch (e) {
      // Stryker disable next-line StringLiteral: equivalent, no code the callers ignore is empty
      if (codes.includes(slackError(e) ?? '')) return false;
      throw e;
    }
  }
}

export interface ThreadFile {
  id: string;
  name?: string;
  mimetype?: string;
  size?: number;
  url_private?: string;
  url_private_download?: string;
}

export interface ThreadMessage {
  ts: string;
  text?: string;
  user?: string;
  bot_id?: string;
  thread_ts?: string;
  files?: ThreadFile[];
  metadata?: { event_type?: string; event_payload?: Record<string, unknown> };
}
