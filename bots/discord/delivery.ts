// The Discord PlatformPort: progress edits and final results over Discord's REST API (discord.js's REST client,
// which waits out 429s using Retry-After and retries 5xx). Any bot process can deliver any job: everything
// needed is in the Destination.
//
// Idempotent per job (the core may call deliver again after a crash):
//   - interaction token still valid → PATCH the interaction's @original message: repeating it changes nothing;
//   - mention-replies → PATCH the status message the bot posted when it accepted the job: same;
//   - token expired (or the original was deleted) → a channel message with nonce + enforce_nonce (Discord returns
//     the earlier message instead of posting twice), after looking for one already posted with this job's buttons;
//     the status message it did not replace (the original response, a message of the bot's own) is then edited
//     through the channel to say how the job ended, without its Cancel button (closeStaleStatus).
// An interaction follow-up has no nonce in Discord's API: discord.js never sends one again that Discord may have
// posted (followUpsAtMostOnce, lost-replies.ts), and such a failure ends the delivery rather than failing it into a blind repeat.
import { createHash } from 'node:crypto';
import { ChannelType, DiscordAPIError, MessageFlags, PermissionFlagsBits, RateLimitError, Routes, type REST, type RequestData } from 'discord.js';
import type { Config } from '../../src/config/schema.ts';
import type { DiscordDestination, Destination, JobResult } from '../../src/jobs/contract.ts';
import type { Logger } from '../../src/log.ts';
import { namesOf, type DeliveredAside, type DisplayNames, type NameQuery, type PlatformPort } from '../core/port.ts';
import type { ShownProgress } from '../core/stage-labels.ts';
import type { AskedCopies } from './asked-copies.ts';
import { ASKED_IMAGE_FILE } from './asked-image.ts';
import { downloadImage } from './attachments.ts';
import { parseButtonId } from './custom-ids.ts';
import { followUpsAtMostOnce, MayHaveBeenPosted } from './lost-replies.ts';
import { NOTICE_FLAGS, noticeBody, progressBody, queuedBody, resultMessage, withNote, type MessageBody, type Rendered, type RenderedFile } from './render.ts';
import { withinUploadLimit } from './upload-size.ts';

/** Discord error codes meaning "this token/message is gone": fall back to a channel message. */
const GONE_CODES = new Set<number | string>([10008, 10015, 10062, 50027]);
/** Discord's answer to a direct message the user's privacy settings refuse ("Cannot send messages to this user"). */
const CANNOT_DM = 50007;
export const refusesDirectMessages = (e: unknown): boolean => e instanceof DiscordAPIError && e.code === CANNOT_DM;
/**
 * Discord's answers to a post the channel's permissions forbid the bot: Send Messages denied (50013 Missing
 * Permissions), or Read Message History denied, which a reply needs (160002).
 */
const CANNOT_POST = new Set<number | string>([50013, 160002]);
export const forbiddenToPost = (e: unknown): e is DiscordAPIError => e instanceof DiscordAPIError && CANNOT_POST.has(e.code);
/**
 * Discord's answer to an edit or a delete of a message in an archived thread, and to a post in one a moderator locked
 * (50083 "Thread is archived"; the Threads topic of Discord's docs: a new message unarchives a thread unless it is
 * locked). A thread archives itself after an hour without messages, at its shortest: a job that waited longer in the
 * queue found its status message uneditable, and its result was retried until dropped (found by an audit, 2026-12-07).
 */
const THREAD_ARCHIVED = 50083;
const inArchivedThread = (e: unknown): boolean => e instanceof DiscordAPIError && e.code === THREAD_ARCHIVED;
/**
 * Discord's answers to a post in a channel that takes none of the bot's messages any more: forbiddenToPost, the bot's
 * access to it taken away (50001 Missing Access; a thread it cannot see, a server it was removed from), the channel
 * deleted (10003 Unknown Channel), a thread a moderator locked (160005 "Thread is locked"; archived too: 50083).
 */
const CHANNEL_LOST = new Set<number | string>([50001, 10003, 160005, THREAD_ARCHIVED]);
const cannotPostIn = (e: unknown): e is DiscordAPIError => forbiddenToPost(e) || (e instanceof DiscordAPIError && CHANNEL_LOST.has(e.code));
/** Why, in a sentence's end, for the requester. */
const whyNotPosted = (e: DiscordAPIError): string =>
  e.code === 10003
    ? 'it no longer exists'
    : e.code === 50001
      ? 'I no longer have access to it'
      : e.code === 160005 || e.code === THREAD_ARCHIVED
        ? 'the thread is locked'
        : `I don't have the ${missingPermission(e)} permission there`;
/** The permission a forbiddenToPost error says is missing. */
export const missingPermission = (e: DiscordAPIError): string => (e.code === 160002 ? 'Read Message History' : 'Send Messages');
/** What a user whose privacy settings refuse the bot's direct messages reads (after "I couldn't …: "). */
export const DMS_CLOSED_HELP =
  "you don't accept direct messages from me. Allow them for this server (click its name → Privacy Settings → Direct Messages), then ask again.";
/** How many recent channel messages to scan for an earlier delivery of the same job. */
const LOOKBACK_MESSAGES = 50;
/** Discord caps `nonce` at 25 characters. */
const NONCE_CHARS = 25;

/**
 * A progress edit gives up after this long, retries included: under the delivery ledger's 10 s edit slot
 * (src/jobs/ledger.ts SHOWING_SLOT_MS), so it never lands after another process, tired of waiting, posted the result.
 */
const PROGRESS_EDIT_TIMEOUT_MS = 5_000;

/** discord.js's REST waits out Discord's rate limits by itself; the operator sees each wait in the log. */
export function logRateLimits(rest: Pick<REST, 'on'>, log: Logger): void {
  rest.on('rateLimited', (info) => log.info({ route: info.route, retryAfterMs: info.retryAfter }, 'rate limited by Discord; waiting'));
}

/** Where the bot posts in the channel asked in: the thread, if it was asked in one (its parent is `channelId`). */
export const postChannelOf = (d: DiscordDestination): string => d.threadId ?? d.channelId;
/** Where a job's status message is: the requester's DM for a private channel's mention-question, else where it was asked. */
export const statusChannelOf = (d: DiscordDestination): string => d.dmChannelId ?? postChannelOf(d);

export const nonceFor = (jobId: string): string => createHash('sha256').update(jobId).digest('hex').slice(0, NONCE_CHARS);

function isGone(e: unknown): boolean {
  return e instanceof DiscordAPIError && (GONE_CODES.has(e.code) || e.status === 401);
}

interface ApiMessage {
  id: string;
  channel_id?: string;
  author?: { id: string };
  components?: { components?: { custom_id?: string }[] }[];
  attachments?: { id: string; filename: string; size: number; url: string; content_type?: string; description?: string }[];
}

interface ApiChannel {
  name?: string | null;
  type?: number;
  guild_id?: string;
  /** Overwrites by role or member; the @everyone role's id is the server's. */
  permission_overwrites?: { id: string; deny?: string }[];
}

interface ApiUser {
  username?: string;
  global_name?: string | null;
}

interface ApiMember {
  nick?: string | null;
  user?: ApiUser;
}

export class DiscordDelivery implements PlatformPort {
  readonly platform = 'discord' as const;
  /** Per job: operations run one after another, so a late progress edit never lands after the result. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Jobs delivered by this process (bounded): later progress for them is dropped. */
  private readonly delivered = new Set<string>();
  /** Interaction tokens Discord already refused (expired, deleted original): not tried again. */
  private readonly deadTokens = new Set<string>();
  /** Routes of the progress edits in flight: a rate limit on one of them rejects it instead of waiting it out. */
  private readonly progressEdits = new Set<string>();
  /**
   * Per job (bounded): the id of its interaction's original response (the status message), read from an edit's answer
   * while the token worked. Once the token expires (a long queue, 14 min) the bot still edits that message, its own,
   * through the channel.
   */
  private readonly statusIds = new Map<string, string>();
  /** Where Ask form copies are linked (asked-copies.ts), from the adapter's start(); until then no copy is carried. */
  private copies: AskedCopies | undefined;

  constructor(
    private readonly rest: REST,
    private readonly config: Readonly<Config>,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    logRateLimits(rest, log); // progress edits and results are what Discord limits most
    this.rejectRateLimitedProgress(rest);
    followUpsAtMostOnce(rest);
  }

  /**
   * Every edit the core hands over is made: the core's relay spaces a job's edits by progressEditIntervalMs and holds
   * the newest back meanwhile (bots/core/progress.ts), and one bot instance shows a job's progress at a time (its lease).
   * This port dropped an edit less than the interval after the previous had reached it, a second throttle on another
   * clock: a Redis round trip slower before one edit than before the next was enough, and the dropped one could be the
   * last before a silent stretch (found by an audit). It could not see other bot processes' edits anyway.
   */
  showProgress(destination: Destination, progress: ShownProgress): Promise<void> {
    const d = asDiscord(destination);
    return this.serial(progress.jobId, async () => {
      if (this.delivered.has(progress.jobId)) return;
      await this.editStatus(d, progress.jobId, progressBody(progress));
    });
  }

  /** The first edit after the core accepted a job ("Queued: 2nd in line."), ordered with progress and delivery. */
  showQueued(destination: DiscordDestination, jobId: string, text: string): Promise<void> {
    return this.serial(jobId, async () => {
      if (this.delivered.has(jobId)) return;
      await this.editStatus(destination, jobId, queuedBody(jobId, text));
    });
  }

  deliver(result: JobResult, image: Uint8Array | undefined, gallery?: Uint8Array[]): Promise<void | DeliveredAside> {
    const d = asDiscord(result.destination);
    return this.serial(result.jobId, async () => {
      // What does not fit Discord's upload limit as PNG goes as JPEG (upload-size.ts); the shown image is the gallery's own
      const sent = gallery ? await withinUploadLimit(gallery) : undefined;
      const at = image && gallery ? gallery.indexOf(image) : -1;
      const shown = at >= 0 ? sent![at] : image && (await withinUploadLimit([image]))[0];
      const aside = await this.post(d, result, shown, sent);
      this.markDelivered(result.jobId);
      return aside;
    });
  }

  /**
   * Channel names (`GET /channels/{id}`) and users' names in the server (`GET /guilds/{guild}/members/{user}`: the
   * server nickname, else the display name, else the username; a user who left the server: `GET /users/{id}`). An id
   * Discord does not name (a DM, a deleted channel, no access) is left out.
   */
  async displayNames(destination: Destination, ids: NameQuery): Promise<DisplayNames> {
    const d = asDiscord(destination);
    // A private channel's name is not the bot's to tell: the admin asking may not see it (the report shows its id).
    const channelName = async (id: string) => {
      const channel = (await this.rest.get(Routes.channel(id))) as ApiChannel;
      const hidden = channel.type === ChannelType.PrivateThread || channel.permission_overwrites?.some((o) => o.id === channel.guild_id && (BigInt(o.deny ?? '0') & PermissionFlagsBits.ViewChannel) !== 0n);
      return hidden ? undefined : (channel.name ?? undefined);
    };
    const userName = async (id: string) => {
      // not a member (left the server, or a DM): the account itself
      const member = d.guildId ? ((await this.rest.get(Routes.guildMember(d.guildId, id)).catch(() => undefined)) as ApiMember | undefined) : undefined;
      const user = member?.user ?? ((await this.rest.get(Routes.user(id))) as ApiUser);
      return member?.nick ?? user.global_name ?? user.username;
    };
    const [channels, users] = await Promise.all([namesOf(ids.channels, channelName, this.log), namesOf(ids.users, userName, this.log)]);
    return { channels, users };
  }

  /** Stop the REST client's sweep timers (they are unref'd; this just leaves nothing behind). */
  // Stryker disable next-line BlockStatement: not observable, the REST client's sweep timers are unref'd
  close(): void {
    this.rest.clearHashSweeper();
    this.rest.clearHandlerSweeper();
  }

  /** The Redis links of the copies of Ask form targets: an answer posted anew with its copy is linked too. */
  followCopies(copies: AskedCopies): void {
    this.copies = copies;
  }

  tokenUsable(d: DiscordDestination): d is DiscordDestination & { interactionToken: string } {
    if (!d.interactionToken || this.deadTokens.has(d.interactionToken)) return false;
    const at = d.interactionAt ?? 0;
    // Stryker disable next-line EqualityOperator: the boundary millisecond
    return this.now() - at < this.config.discord.interactionTokenTtlMs;
  }

  private async post(d: DiscordDestination, result: JobResult, image: Uint8Array | undefined, gallery?: Uint8Array[]): Promise<void | DeliveredAside> {
    if (result.error?.private) return this.postPrivately(d, result);
    if (this.tokenUsable(d)) {
      try {
        await this.patchOriginal(d, resultMessage(result, image, undefined, gallery));
        return;
      } catch (e) {
        if (this.archivedThread(e, result.jobId)) {
          // posted anew below, which unarchives it (or, locked, goes to the requester)
        } else if (!isGone(e)) throw e;
        else {
          this.forgetToken(d.interactionToken);
          this.log.info({ jobId: result.jobId, code: (e as DiscordAPIError).code }, 'interaction token gone; posting to the channel');
        }
      }
    }
    if (d.statusMessageId) {
      try {
        await this.rest.patch(Routes.channelMessage(statusChannelOf(d), d.statusMessageId), withFiles(resultMessage(result, image, undefined, gallery)));
        return;
      } catch (e) {
        if (this.archivedThread(e, result.jobId)) {
          // posted anew below, as for the interaction's original
        } else if (cannotPostIn(e)) return this.postToRequester(d, result, e, image, gallery);
        else if (!isGone(e)) throw e;
      }
    }
    // Private results never go to the channel: the requester's DM instead.
    if (d.private) return this.postDirect(d, result.jobId, resultMessage(result, image, undefined, gallery));
    const recent = await this.recentMessages(d, result.jobId);
    const status = this.statusIds.get(result.jobId) ?? statusIn(recent, d, result.jobId);
    if (!recent.some((m) => m.author?.id === d.applicationId && hasButton(m, (b) => b.action !== 'cancel' && b.jobId === result.jobId))) {
      const copy = result.kind === 'ask' && result.status === 'succeeded' && status ? await this.askedCopyOn(recent.find((m) => m.id === status), result.jobId) : undefined;
      const rendered = withAskedCopy(resultMessage(result, image, d.replyToMessageId ? undefined : d.userId, gallery), copy);
      const body: Record<string, unknown> = { ...rendered.body, nonce: nonceFor(result.jobId), enforce_nonce: true };
      if (d.replyToMessageId) body.message_reference = { message_id: d.replyToMessageId, fail_if_not_exists: false };
      let posted: ApiMessage;
      try {
        posted = (await this.rest.post(Routes.channelMessages(postChannelOf(d)), withFiles({ body: body as unknown as MessageBody, files: rendered.files }))) as ApiMessage;
      } catch (e) {
        if (!cannotPostIn(e)) throw e;
        return this.postToRequester(d, result, e, image, gallery);
      }
      if (copy) await this.followedThere(result.jobId, posted);
    }
    if (status) await this.closeStaleStatus(d, status, result);
  }

  /** Whether an edit of `post` failed in an archived thread (THREAD_ARCHIVED), said in the log for either edit. */
  private archivedThread(e: unknown, jobId: string): boolean {
    if (!inArchivedThread(e)) return false;
    this.log.info({ jobId }, 'the thread was archived: posting the result in it anew');
    return true;
  }

  /**
   * The copy of the asked-about image on an /ask or Ask form answer's status message (asked-image.ts), for the answer
   * posted as a new message once the token expired: a reply to the answer then finds the image and the question, as
   * under an answer whose token held. Downloaded from Discord's CDN (the bot's own message, just read among the
   * channel's latest) under the attachment checks; the status keeps its copy (closeStaleStatus edits its text alone).
   * Best effort: the answer is posted without.
   */
  private async askedCopyOn(status: ApiMessage | undefined, jobId: string): Promise<AskedCopy | undefined> {
    const copy = status?.attachments?.find((a) => a.filename === ASKED_IMAGE_FILE);
    if (!copy || !this.copies) return undefined;
    try {
      const policy = { allowedHosts: this.config.discord.downloadHosts, maxBytes: this.config.discord.maxAttachmentBytes };
      const got = await downloadImage({ url: copy.url, filename: copy.filename, size: copy.size, contentType: copy.content_type ?? null }, policy);
      return { bytes: got.bytes, description: copy.description ?? '' };
    } catch (e) {
      this.log.warn({ jobId, err: (e as Error).message }, 'could not copy the asked-about image to the answer posted anew: a reply to it will not find the image');
      return undefined;
    }
  }

  /**
   * The answer posted anew carries the job's copy: linked with its status message's, to follow an Ask form's target
   * (asked-copies.ts). Where the link cannot be written, the copy is taken off again: it could not follow its target.
   */
  private async followedThere(jobId: string, posted: ApiMessage): Promise<void> {
    const at = { channelId: posted.channel_id!, messageId: posted.id };
    try {
      await this.copies!.alsoAt(jobId, at);
    } catch (e) {
      this.log.warn({ jobId, err: (e as Error).message }, 'could not link the copy of an asked-about image: taking it off the answer');
      await this.rest.patch(Routes.channelMessage(at.channelId, at.messageId), { body: { attachments: [] } }).catch(() => undefined);
    }
  }

  /**
   * The status message a result could not replace (its interaction token expired while the job waited, so the result
   * went out as a new message): left alone it said "⏳ Queued: 3rd in line." (or a step) for good, with a Cancel button
   * that could no longer work. It now says how the job ended, without buttons. Best effort: the result is posted.
   */
  private async closeStaleStatus(d: DiscordDestination, messageId: string, result: JobResult): Promise<void> {
    const line = result.status === 'succeeded' ? 'Done: the result is in the message below.' : resultMessage(result, undefined).body.content;
    try {
      await this.rest.patch(Routes.channelMessage(postChannelOf(d), messageId), { body: noticeBody(line) });
    } catch (e) {
      this.log.warn({ jobId: result.jobId, err: (e as Error).message }, 'could not close the status message the result did not replace');
    }
  }

  /**
   * The channel takes none of the bot's messages any more (`e`): slash commands need no Send Messages permission, so a
   * job asked there whose interaction token expired in the queue (14 min), or a channel changed or deleted while its
   * job ran, had its result retried until dropped: the GPU's work lost. It goes to the requester's DM instead, saying
   * why (and where their DMs are closed too, it is only logged: no retry can help).
   */
  private async postToRequester(d: DiscordDestination, result: JobResult, e: DiscordAPIError, image: Uint8Array | undefined, gallery?: Uint8Array[]): Promise<DeliveredAside> {
    this.log.warn({ jobId: result.jobId, code: e.code, err: e.message }, 'the result cannot be posted in its channel: sending it to the requester directly');
    const note = `I couldn't post this in <#${postChannelOf(d)}>: ${whyNotPosted(e)}.`;
    return (await this.postDirect(d, result.jobId, withNote(resultMessage(result, image, undefined, gallery), note), true)) ?? 'elsewhere';
  }

  /**
   * A result only the user may see (an image the content checks withheld): the public progress message is deleted
   * and the user told in an ephemeral follow-up, or, without a usable interaction token, in a direct message
   * (nonce + enforce_nonce, so a repeated delivery posts once). The follow-up has no nonce: one whose reply was lost
   * (MayHaveBeenPosted) is taken as posted, neither sent again by discord.js nor failed into a repeated delivery, which
   * would post it again. A delivery repeated for another reason (a crash after the follow-up) may repeat the note.
   */
  private async postPrivately(d: DiscordDestination, result: JobResult): Promise<void | 'nowhere'> {
    const text = resultMessage(result, undefined).body;
    // A status message that is gone, or in an archived thread (which a delete would not unarchive): left as it is.
    const gone = async (call: () => Promise<unknown>) => {
      try {
        await call();
      } catch (e) {
        if (!isGone(e) && !inArchivedThread(e)) throw e;
      }
    };
    if (this.tokenUsable(d)) {
      const token = d.interactionToken;
      await gone(() => this.rest.delete(Routes.webhookMessage(d.applicationId, token, '@original'), { auth: false }));
      try {
        await this.rest.post(Routes.webhook(d.applicationId, token), { body: { ...text, flags: MessageFlags.Ephemeral }, auth: false });
        return;
      } catch (e) {
        if (e instanceof MayHaveBeenPosted) return void this.log.warn({ jobId: result.jobId, err: e.message }, 'the private note may have been posted: not sent again');
        if (!isGone(e)) throw e;
        this.forgetToken(token);
      }
    }
    // Without the token, a public original response is deleted through the channel too (it said "⏳ Drawing" with Cancel for good).
    const status = d.statusMessageId ?? (d.private ? undefined : await this.staleStatusOf(d, result.jobId));
    if (status) await gone(() => this.rest.delete(Routes.channelMessage(statusChannelOf(d), status)));
    return this.postDirect(d, result.jobId, { body: text, files: [] });
  }

  /**
   * A message for the requester alone, in their DM (nonce + enforce_nonce: posted once). When their privacy settings
   * refuse it, a retry cannot help: a request from a server channel gets a short notice there instead, naming the
   * user and nothing of the request (posted once, by the same nonce); one from a DM, or from a channel that refuses
   * the bot (`channelRefuses`), is only logged. Resolves to 'nowhere' where the result did not reach the requester
   * (their DMs closed), whether or not the notice did.
   */
  private async postDirect(d: DiscordDestination, jobId: string, rendered: Rendered, channelRefuses = false): Promise<void | 'nowhere'> {
    const dm = (await this.rest.post(Routes.userChannels(), { body: { recipient_id: d.userId } })) as { id: string };
    const body = { ...rendered.body, nonce: nonceFor(jobId), enforce_nonce: true };
    try {
      await this.rest.post(Routes.channelMessages(dm.id), withFiles({ body: body as unknown as MessageBody, files: rendered.files }));
      return;
    } catch (e) {
      if (!refusesDirectMessages(e)) throw e;
    }
    const nowhere = 'the requester does not accept direct messages, and the channel refuses the bot: the result was not posted';
    if (channelRefuses) return this.dropped({ jobId }, nowhere);
    // Stryker disable next-line ConditionalExpression: equivalent, `d.guildId !== null`: a request made in a DM has that DM as its channel
    const inServer = d.guildId !== null && d.channelId !== dm.id;
    if (!inServer) return this.dropped({ jobId, toldInChannel: false }, 'the requester does not accept direct messages: the private result was not posted');
    const notice = { content: `<@${d.userId}> I couldn't send you your private result: ${DMS_CLOSED_HELP}`, allowed_mentions: { users: [d.userId] }, flags: NOTICE_FLAGS, nonce: nonceFor(jobId), enforce_nonce: true };
    try {
      await this.rest.post(Routes.channelMessages(postChannelOf(d)), { body: notice });
    } catch (e) {
      // The channel lost too (the bot removed from the server, the channel deleted): no retry can tell them (until
      // 2026-12-07 the notice's refusal was retried for the whole delivery backoff, then dropped).
      if (!cannotPostIn(e)) throw e;
      return this.dropped({ jobId, code: e.code }, nowhere);
    }
    return this.dropped({ jobId, toldInChannel: true }, 'the requester does not accept direct messages: the private result was not posted');
  }

  /** A result no retry can post: one warning for the operator, and 'nowhere' for the core's metrics. */
  private dropped(fields: Record<string, unknown>, why: string): 'nowhere' {
    this.log.warn(fields, why);
    return 'nowhere';
  }

  /**
   * The channel's recent messages, read before a result is posted there: an earlier delivery of this job is found by
   * its Re-roll/Vary buttons (not by its nonce: Discord returns a message's nonce only to the post that created it,
   * never in a later fetch; a result without buttons, an answer, is guarded by enforce_nonce alone, within Discord's
   * few minutes), and the job's own status message by its Cancel button.
   */
  private async recentMessages(d: DiscordDestination, jobId: string): Promise<ApiMessage[]> {
    try {
      return (await this.rest.get(Routes.channelMessages(postChannelOf(d)), {
        query: new URLSearchParams({ limit: String(LOOKBACK_MESSAGES) }),
      })) as ApiMessage[];
    } catch (e) {
      // Without Read Message History the look-up fails; enforce_nonce still guards the post itself.
      this.log.warn({ jobId, err: (e as Error).message }, 'could not read recent messages before posting');
      return [];
    }
  }

  /**
   * A progress edit is replaceable (the next one, or the result, supersedes it), so it never waits out a 429 nor is
   * sent late: discord.js's REST rejects a rate-limited request whose route is in `progressEdits` (other requests keep
   * the filter the REST was built with), and `PROGRESS_EDIT_TIMEOUT_MS` bounds it, retries included. Waited out, a
   * 429's Retry-After outlasts the ledger's edit slot: another process delivers the result meanwhile, and the edit,
   * sent after, turns the result back into "⏳ Drawing" with a Cancel button.
   */
  private rejectRateLimitedProgress(rest: REST): void {
    const before = rest.options.rejectOnRateLimit;
    rest.options.rejectOnRateLimit = async (limit) => {
      if ([...this.progressEdits].some((route) => limit.url.endsWith(route))) return true;
      if (typeof before === 'function') return before(limit);
      return (before ?? []).some((route) => limit.route.startsWith(route.toLowerCase()));
    };
  }

  private async editStatus(d: DiscordDestination, jobId: string, body: MessageBody): Promise<void> {
    const progress = async (route: `/${string}`, options: RequestData) => {
      this.progressEdits.add(route);
      try {
        return (await this.rest.patch(route, { ...options, signal: AbortSignal.timeout(PROGRESS_EDIT_TIMEOUT_MS) })) as ApiMessage | undefined;
      } finally {
        this.progressEdits.delete(route);
      }
    };
    // A public original response is a channel message of the bot's own: editable through the channel after the token expired.
    const byChannel = (): `/${string}` | undefined => {
      const id = d.statusMessageId ?? (d.private ? undefined : this.statusIds.get(jobId));
      return id ? Routes.channelMessage(statusChannelOf(d), id) : undefined;
    };
    try {
      if (this.tokenUsable(d)) {
        try {
          const edited = await progress(Routes.webhookMessage(d.applicationId, d.interactionToken, '@original'), { body, auth: false });
          if (edited?.id && !d.private) this.rememberStatus(jobId, edited.id);
          return;
        } catch (e) {
          const route = isGone(e) ? byChannel() : undefined;
          if (!route) throw e;
          this.forgetToken(d.interactionToken);
          await progress(route, { body });
          return;
        }
      }
      const route = byChannel();
      if (route) await progress(route, { body });
    } catch (e) {
      if (e instanceof RateLimitError) return void this.log.info({ route: e.route, retryAfterMs: e.retryAfter, channel: d.channelId }, 'progress edit rate limited; dropped');
      if (isGone(e) && d.interactionToken) this.forgetToken(d.interactionToken);
      // Progress is best effort: a failed edit must not fail the job or its delivery.
      this.log.warn({ err: (e as Error).message, channel: d.channelId }, 'progress edit failed');
    }
  }

  /** The job's status message that its expired token can no longer edit: remembered, else found by its Cancel button. */
  private async staleStatusOf(d: DiscordDestination, jobId: string): Promise<string | undefined> {
    return this.statusIds.get(jobId) ?? statusIn(await this.recentMessages(d, jobId), d, jobId);
  }

  private rememberStatus(jobId: string, messageId: string): void {
    this.statusIds.set(jobId, messageId);
    keepNewest(this.statusIds, 10_000);
  }

  private async patchOriginal(d: DiscordDestination & { interactionToken?: string }, rendered: Rendered): Promise<void> {
    await this.rest.patch(Routes.webhookMessage(d.applicationId, d.interactionToken!, '@original'), { ...withFiles(rendered), auth: false });
  }

  private forgetToken(token: string): void {
    this.deadTokens.add(token);
    keepNewest(this.deadTokens, 10_000);
  }

  private markDelivered(jobId: string): void {
    this.delivered.add(jobId);
    keepNewest(this.delivered, 10_000);
  }

  private serial<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    const before = this.chains.get(jobId) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(work);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(jobId, tail);
    // Stryker disable next-line BlockStatement: forgets a finished chain (memory); the order is kept either way
    void tail.then(() => {
      // Stryker disable next-line ConditionalExpression,EqualityOperator: forgets a finished chain (memory); the order is kept either way
      if (this.chains.get(jobId) === tail) this.chains.delete(jobId);
    });
    return run;
  }
}

/**
 * Whether a message carries one of our buttons that `matches`: Re-roll/Vary exist only on a delivered result, Cancel
 * only on a job's status message.
 */
function hasButton(m: ApiMessage, matches: (button: NonNullable<ReturnType<typeof parseButtonId>>) => boolean): boolean {
  return (m.components ?? []).some((r) =>
    (r.components ?? []).some((c) => {
      const parsed = c.custom_id ? parseButtonId(c.custom_id) : undefined;
      return parsed !== undefined && matches(parsed);
    }),
  );
}

/** The id of `jobId`'s status message among `messages`: the bot's own, with the job's Cancel button. */
const statusIn = (messages: ApiMessage[], d: DiscordDestination, jobId: string): string | undefined =>
  messages.find((m) => m.author?.id === d.applicationId && hasButton(m, (b) => b.action === 'cancel' && b.jobId === jobId))?.id;

/** A memory bound: drops the oldest entries (insertion order) of a Set or Map past `max`. */
export function keepNewest(memory: Set<unknown> | Map<unknown, unknown>, max: number): void {
  // Stryker disable next-line ConditionalExpression,EqualityOperator: a memory bound, not behaviour a test can see
  while (memory.size > max) memory.delete(memory.keys().next().value);
}

interface AskedCopy {
  bytes: Uint8Array;
  description: string;
}

/** `rendered` (an answer: text, no files) with the copy of the asked-about image, under its alt text. */
function withAskedCopy(rendered: Rendered, copy: AskedCopy | undefined): Rendered {
  if (!copy) return rendered;
  return {
    body: { ...rendered.body, attachments: [{ id: '0', filename: ASKED_IMAGE_FILE, description: copy.description }] },
    files: [{ name: ASKED_IMAGE_FILE, data: Buffer.from(copy.bytes), contentType: 'image/jpeg' }],
  };
}

function withFiles(rendered: Rendered): { body: MessageBody; files?: RenderedFile[] } {
  return rendered.files.length ? { body: rendered.body, files: rendered.files } : { body: rendered.body };
}

function asDiscord(d: Destination): DiscordDestination {
  if (d.platform !== 'discord') throw new Error(`the Discord port got a ${d.platform} destination`);
  return d;
}
