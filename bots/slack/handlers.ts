// Bolt listeners → core.handle. Every listener acks first (Slack's 3 s window), then works:
//   /imagine <text>            parse options (bad ones: ephemeral usage in the ack) → status message → job
//   @bot <question> (mention)  image from the message or its thread, earlier turns as history → job
//   "Ask about this image"     message shortcut → modal for the question → job
//   Re-roll / Vary / Cancel    buttons on the status and result messages (value = job id)
// A job's status message is posted before the job is submitted, so its ts travels in the Destination and any
// bot instance can update it. Duplicate deliveries (socket redelivery, HTTP retries) use the same dedupe key,
// which maps to the same job id: the second one finds the job and does nothing.
import { createHash, randomUUID } from 'node:crypto';
import { ErrorCode, type App } from '@slack/bolt';
import type { WebClient } from '@slack/web-api';
import type { Config } from '../../src/config/schema.ts';
import { isUserError, UserError } from '../../src/errors.ts';
import { CONTRACT_VERSION, MAX_RETENTION_SECONDS, type SlackDestination } from '../../src/jobs/contract.ts';
import { jobIdFor } from '../../src/jobs/queue.ts';
import type { Logger } from '../../src/log.ts';
import { thrownUnsent, type CommandInput, type Reply } from '../core/port.ts';
import { STARTED_TEXT, type CommandLabel, type Core } from '../core/submit.ts';
import { ACTION, AskTarget, OUR_ACTION, SHORTCUT_ASK, SHORTCUT_DESCRIBE, VARY_ACTION, VIEW_ASK, askModal, describedJobOf, isKnownAction, parseMetadata, headline, readSlackText, statusMessage, varyIndex } from './blocks.ts';
import { firstFile, historyBefore, imageForQuestion, imageRef, messageWith, stripMention } from './conversation.ts';
import { adminOfWorkspace, NotAdmins, parseAdmin } from './admin.ts';
import { checkDeclared } from './download.ts';
import { parseImagine } from './options.ts';
import { SETTINGS_COMMAND, SettingsTarget, VIEW_SETTINGS, parseSettingsText, settingsFromView, settingsModal } from './settings.ts';
import { resultFileName, slackError, THREAD_ONLY, type JobTitle, type SlackPort, type ThreadFile } from './port.ts';

export interface HandlerDeps {
  app: App;
  core: Core;
  port: SlackPort;
  config: Readonly<Config>;
  botUserId: string;
  log: Logger;
  /** Titles of jobs this process started (prompt or question), for status messages. */
  titles: Map<string, JobTitle>;
  /** A job's title from memory or from the job in Redis (buttons pressed on another instance's jobs). */
  titleOf(jobId: string): Promise<JobTitle | undefined>;
}

/** Where a job was asked for, and how to tell the asker something only they see. */
interface Origin {
  client: WebClient;
  teamId: string;
  /** The Enterprise Grid org of that workspace, as Bolt reads it from the payload (context.enterpriseId); none outside Grid. */
  enterpriseId?: string;
  channelId: string;
  userId: string;
  /**
   * The asker's own workspace, as the payload names it (an event's `user_team`/`team`, an interactive payload's
   * `user.team_id`); another than `teamId` for a Slack Connect member of another organisation. Unknown for slash
   * commands, whose payload names only `team_id`.
   */
  askerTeamId?: string;
  /** The thread to work in; undefined = a new top-level status message becomes the thread. */
  threadTs?: string;
  /**
   * A button pressed in the bot's DM on a private job of `channelId` (Re-roll, Vary, "Imagine this"): the new job
   * belongs to that channel (its limits, settings and fair share) and is posted in this DM, whatever the channel's
   * setting is now.
   */
  dmChannelId?: string;
  responseUrl?: string;
  tellPrivately(text: string): Promise<void>;
}

const ADMIN_CACHE_MS = 5 * 60_000;

/**
 * A request of another organisation's member in a Slack Connect channel goes outside the result cache: no lookup, no
 * entry, no shared run (src/cache/fanout.ts digestOf). The cache's tenant is the installation's workspace (src/checks/
 * policy.ts tenantOf), and a hit, a joined run or the "from the cache" note would tell them that someone here asked the
 * same, or tell people here what they asked. The job contract says "outside the cache" only with a retention TTL (a
 * tenant of their own would need the asker's organisation in the Destination, a field older workers refuse:
 * docs/self-hosting.md "Upgrading"), so such a job gets one: the longest this deployment keeps a job's data anyway
 * (queue.keep*Seconds, blobs.ttlSeconds), which deletes nothing sooner. A channel's own TTL replaces it (core.handle).
 */
function keptAnywaySeconds(config: Readonly<Config>): number {
  return Math.min(MAX_RETENTION_SECONDS, Math.max(config.queue.keepCompletedSeconds, config.queue.keepFailedSeconds, config.blobs.ttlSeconds));
}
/**
 * What each listener was doing (`guarded`'s `what`, in its log line) → the command its failure is counted by
 * (Core.commandFailed, blip3o_command_failures_total): a small fixed set, as a metric label must be.
 */
const COMMAND_OF = {
  '/imagine': 'imagine',
  '/blip3o-admin': 'admin',
  [SETTINGS_COMMAND]: 'settings',
  'settings modal': 'settings',
  app_mention: 'ask',
  'ask shortcut window': 'ask',
  'ask shortcut': 'ask',
  'describe shortcut': 'describe',
  're-roll': 'reroll',
  vary: 'vary',
  'imagine this': 'imagine',
  cancel: 'cancel',
  'button of another version': 'other',
} as const satisfies Record<string, CommandLabel>;

/** How long a mention's hint is remembered as told (onceFor): longer than Slack retries an event (about 6 minutes). */
const TOLD_TTL_S = 3_600;

export function registerHandlers(deps: HandlerDeps): void {
  const { app, core, config, log } = deps;
  const inFlight = new Set<string>();
  const downloadPolicy = { allowedHosts: config.slack.downloadHosts, maxBytes: config.slack.maxFileBytes };
  // Stryker disable next-line StringLiteral: equivalent, any text that is no URL gets the same "no usable download link"
  const slackFileRef = (f: ThreadFile) => ({ url: f.url_private_download ?? f.url_private ?? '', name: f.name, mimetype: f.mimetype, size: f.size });
  /**
   * Users found not to be admins of a workspace, for ADMIN_CACHE_MS (admin.ts NotAdmins). Per workspace and user: the
   * same answer of users.info makes an admin of one workspace and not of another (admin.ts adminOfWorkspace).
   */
  const notAdmins = new NotAdmins(ADMIN_CACHE_MS);

  /** Whether the asker is an admin of the workspace they asked in: a workspace Admin or Owner, or an Org Admin or Owner of its Grid org. */
  async function isAdmin(origin: Origin): Promise<boolean> {
    const { userId } = origin;
    const key = `${origin.teamId} ${userId}`;
    if (notAdmins.has(key)) return false;
    // Without an answer (missing users:read scope, user gone) nobody is an admin: only admin-only commands suffer.
    const res = await origin.client.users.info({ user: userId }).catch((e: unknown) => {
      log.warn({ userId, err: (e as Error).message }, 'users.info failed; treating the user as not an admin');
      return undefined;
    });
    const value = adminOfWorkspace(res?.user, origin);
    notAdmins.record(key, value);
    return value;
  }

  /** Events may carry file stubs (`file_access: "check_file_info"`, no URLs): files.info has the real thing. */
  async function resolveFile(client: WebClient, f: ThreadFile): Promise<ThreadFile> {
    if (f.url_private || f.url_private_download || !f.id) return f;
    const res = await client.files.info({ file: f.id });
    return (res.file as ThreadFile | undefined) ?? f;
  }

  /**
   * A shortcut's message's files, whole. In a Slack Connect channel a file shared from the other organisation comes as
   * a stub (`file_access: "check_file_info"`, no links, no type): until 2026-12-07 "Ask about this image" and "Describe
   * this image" on one answered "That file has no usable download link." (test/unit/bots/slack/slack-connect.redis.test.ts)
   */
  async function filesOf(client: WebClient, message: { files?: ThreadFile[] }): Promise<ThreadFile[]> {
    return Promise.all((message.files ?? []).map((f) => resolveFile(client, f)));
  }

  /** Post the status message, submit, and show the reply: the path every job takes. */
  async function startJob(origin: Origin, input: CommandInput, dedupeKey: string, title: string): Promise<void> {
    const jobId = jobIdFor('slack', dedupeKey);
    if (inFlight.has(dedupeKey)) return log.info({ jobId, dedupeKey }, 'duplicate delivery ignored (in flight)');
    inFlight.add(dedupeKey); // before any await: a concurrent duplicate must see it
    // The title is held until the result is delivered here (SlackPort.deliver forgets it), or dropped in the finally
    // below when no job came of this request: no delivery would forget it.
    let titleHeld = false;
    let queued = false;
    try {
      // A job, or a request served without one (cache hit, joined flight): either way this delivery was handled.
      if (await core.requestOf(jobId)) return log.info({ jobId, dedupeKey }, 'duplicate delivery ignored (already handled)');
      const kind = input.command === 'ask' || input.command === 'describe' ? 'ask' : 'imagine';
      deps.titles.set(jobId, { kind, text: title });
      titleHeld = true;
      const first = statusMessage(jobId, headline(kind, title), { stage: 'queued', step: 0, total: 0 });
      // Private results (the channel's or the user's /blip3o-settings): the job lives in the bot's DM with the asker,
      // since an ephemeral message can neither carry a file nor be updated; the channel sees nothing of it.
      const here: SlackDestination = { platform: 'slack', teamId: origin.teamId, channelId: origin.channelId, userId: origin.userId };
      const privately = origin.dmChannelId === undefined && (await core.settings.effective(here)).private === true;
      let dmChannelId = origin.dmChannelId ?? (privately ? await privateDm(origin) : undefined);
      const postIn = dmChannelId ?? origin.channelId;
      let postThread = dmChannelId ? undefined : origin.threadTs;
      let statusTs: string;
      let notice = privately ? 'Private results are on here: I am working on it in our direct messages.' : undefined;
      try {
        statusTs = await deps.port.postStatus(postIn, postThread, jobId, first); // posted once, also when its reply is lost
      } catch (e) {
        const code = slackError(e);
        if (code === 'not_in_channel' || code === 'channel_not_found') {
          // A DM between other people (D…) takes no app, and /invite does nothing there.
          const where = postIn.startsWith('D')
            ? 'I can only post in channels I am in and in our own direct messages: use the command there (Apps → blip3o).'
            : 'I am not in this channel yet: invite me with `/invite @blip3o`, then try again.';
          await origin.tellPrivately(where);
          return;
        }
        if (code !== THREAD_ONLY || dmChannelId) throw e;
        // Members may post only in threads there, and a slash command comes with none: the job is the channel's still
        // (its limits, settings, buttons), its messages in the asker's DM, as private results are. Until 2026-12-08:
        // "Something went wrong (ref …)", and nothing started.
        dmChannelId = await dmForThreadOnly(origin);
        postThread = undefined;
        statusTs = await deps.port.postStatus(dmChannelId, undefined, jobId, first);
        notice = 'This channel takes posts only in threads, and a command has none to post in: I am working on it in our direct messages.';
      }
      const fromElsewhere = origin.askerTeamId !== undefined && origin.askerTeamId !== origin.teamId;
      const destination: SlackDestination = {
        ...here,
        ...(fromElsewhere ? { retentionSeconds: keptAnywaySeconds(config) } : {}),
        threadTs: postThread ?? statusTs,
        statusMessageTs: statusTs,
        ...(origin.responseUrl ? { responseUrl: origin.responseUrl } : {}),
        ...(dmChannelId ? { private: true, dmChannelId } : {}),
      };
      if (notice) await origin.tellPrivately(notice);
      const reply = await core.handle({ input, destination, dedupeKey, isAdmin: await isAdmin(origin) });
      queued = reply.kind === 'queued';
      await showReply(origin, reply, destination);
      // Stryker disable next-line BlockStatement: memory, the guard is for deliveries in flight; a later one finds the job
    } finally {
      inFlight.delete(dedupeKey);
      if (titleHeld && !queued) deps.titles.delete(jobId);
    }
  }

  async function showReply(origin: Origin, reply: Reply, destination: SlackDestination): Promise<void> {
    const statusTs = destination.statusMessageTs!;
    if (reply.kind === 'queued') {
      // Only while the result is not being delivered, by any bot instance (a very fast job): see Core.showBeforeResult.
      const position = await core.position(reply.jobId);
      if (position !== undefined) {
        const queued = { v: CONTRACT_VERSION, jobId: reply.jobId, stage: 'queued', step: 0, total: 0, queuePosition: position, noWorker: reply.noWorker } as const;
        await core.showBeforeResult(reply.jobId, () => deps.port.showProgress(destination, queued));
        return;
      }
      // No place in line: a worker has it (its progress takes over), or it has none to have: held in a channel an admin
      // paused, served from the cache, joined an identical run. Those are told what the core said.
      // Stryker disable next-line ConditionalExpression,LogicalOperator: a worker taking the job within this reply's round trip; no test can time that (the integration tests run workers)
      if (reply.position > 0 || reply.text === STARTED_TEXT) return;
      await core.showBeforeResult(reply.jobId, () => deps.port.showNote(destination, reply.jobId, reply.text));
      return;
    }
    // Refused (bad input, limits, not allowed): only the asker hears why; the public status message goes away.
    await origin.client.chat.delete({ channel: destination.dmChannelId ?? origin.channelId, ts: statusTs }).catch((e: unknown) => log.warn({ err: (e as Error).message }, 'status delete failed'));
    await origin.tellPrivately(reply.text);
  }

  /** Buttons and cancel: no status message of their own unless they start a job. */
  async function simpleCommand(origin: Origin, input: CommandInput, dedupeKey: string): Promise<void> {
    const reply = await core.handle({ input, destination: destinationOf(origin), dedupeKey, isAdmin: await isAdmin(origin) });
    const image = reply.kind === 'text' ? reply.image : undefined;
    if (image) {
      // Ephemeral messages cannot carry files: the picture (the usage chart) goes to the bot's DM with the asker. The
      // text is worth having without it (an install without im:write, a failed upload).
      const sent = await openDm(origin)
        .then((channel) => deps.port.uploadOnce(channel, image)) // shared once, also when its reply is lost
        .then(
          () => true,
          (e: unknown) => {
            log.warn({ err: slackError(e) ?? (e as Error).message, file: image.name }, 'the picture of a reply could not be sent by DM');
            return false;
          },
        );
      await origin.tellPrivately(`${reply.text}\n${sent ? '(The chart is in your direct messages with me.)' : '(I could not send you the chart in a direct message.)'}`);
      return;
    }
    await origin.tellPrivately(reply.text);
  }

  /**
   * Where a button on job `jobId`'s result starts a job: pressed in the DM that job was posted in (a private channel's
   * result), the job's own channel with that DM; anywhere else, where it was pressed.
   */
  async function fromResultOf(origin: Origin, jobId: string | undefined): Promise<Origin> {
    const original = jobId === undefined ? undefined : (await core.requestOf(jobId))?.destination;
    if (original?.platform !== 'slack' || original.dmChannelId !== origin.channelId) return origin;
    return { ...origin, channelId: original.channelId, dmChannelId: original.dmChannelId, threadTs: undefined };
  }

  /**
   * The DM a private job lives in. Slack may refuse to open one (a Slack Connect member of another organisation whose
   * org or ours allows no such DMs: `invalid_user_combination`, `user_not_visible`; an install without im:write,
   * `missing_scope`): the asker is told, and nothing is posted in the channel (until 2026-12-07: "Something went wrong
   * (ref …)"). Any other failure (Slack's `internal_error`, the network) is no refusal and goes to guarded as before.
   */
  async function privateDm(origin: Origin): Promise<string> {
    return openDm(origin).catch((e: unknown) => {
      const code = slackError(e);
      if (!NO_PRIVATE_DM.has(code ?? '')) throw e;
      log.warn({ err: code }, 'no DM for private results could be opened');
      throw new UserError('forbidden', 'Your results here are private: I send them in a direct message, but Slack would not let me open one with you. Nothing was started.', { cause: e });
    });
  }

  /** The DM a job goes to from a channel that takes posts only in threads; where Slack opens none, the asker is told why. */
  async function dmForThreadOnly(origin: Origin): Promise<string> {
    return openDm(origin).catch((e: unknown) => {
      if (!NO_PRIVATE_DM.has(slackError(e) ?? '')) throw e;
      throw new UserError('forbidden', 'This channel takes posts only in threads, and a command has none to post in; I would have worked on it in our direct messages, but Slack would not let me open one with you. Nothing was started.', { cause: e });
    });
  }

  /** The bot's direct-message channel with the asker (conversations.open, scope im:write). */
  async function openDm(origin: Origin): Promise<string> {
    const dm = await origin.client.conversations.open({ users: origin.userId });
    // Stryker disable next-line StringLiteral: Slack answers ok with a channel, or an error the client throws
    if (!dm.channel?.id) throw new Error('conversations.open returned no channel');
    return dm.channel.id;
  }

  function destinationOf(origin: Origin): SlackDestination {
    return { platform: 'slack', teamId: origin.teamId, channelId: origin.channelId, userId: origin.userId };
  }

  /** Run a listener body; anything unexpected is logged and the asker gets a reference, never a stack. */
  async function guarded(origin: Origin, what: keyof typeof COMMAND_OF, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (e) {
      if (isUserError(e)) return void (await origin.tellPrivately(e.message).catch(() => undefined));
      const ref = randomUUID().slice(0, 8);
      log.error({ ref, what, workspace: origin.teamId, channel: origin.channelId, err: (e as Error).message, stack: (e as Error).stack }, 'slack handler failed');
      core.commandFailed({ platform: 'slack', command: COMMAND_OF[what], error: e });
      await origin.tellPrivately(`Something went wrong (ref ${ref}).`).catch(() => undefined);
    }
  }

  /** Shown at most once (SlackPort.postEphemeral): Slack keeps no ephemeral message a retry could look for. */
  function ephemeralTo(channel: string, user: string, threadTs?: string): (text: string) => Promise<void> {
    return (text) => deps.port.postEphemeral(channel, user, text, threadTs);
  }

  /**
   * views.open with a trigger, which opens one window: the client sends it again when its reply is lost (or a 5xx), and
   * Slack refuses the repeat with `exchanged_trigger_id` when the first one opened the window. Only this bot is handed
   * the trigger, so that refusal means the window is open: taken as success (until 2026-12-07 the user, looking at the
   * open window, was told "Something went wrong"; found by an audit).
   */
  async function openView(client: WebClient, triggerId: string, view: Record<string, unknown>): Promise<void> {
    try {
      await client.views.open({ trigger_id: triggerId, view: view as never });
    } catch (e) {
      if (slackError(e) !== 'exchanged_trigger_id') throw e;
      log.info('views.open was refused as already done (exchanged_trigger_id): an earlier try, whose reply was lost, opened the window');
    }
  }

  /**
   * Tell the asker through a command's or button's response_url (`respond`: Bolt's respond(), which tries once). Until
   * 2026-12-07 its failure went to guarded: an answer whose reply was lost was followed by "Something went wrong", one
   * Slack refused (a 5xx) was replaced by it, and a job whose notice it was ("Private results are on here") was never
   * queued, its status message left at "Queued." for good (found by an audit). One Slack may have shown (sent, its reply
   * lost) counts as shown, as an ephemeral does (SlackPort.postEphemeral); one it did not show (an HTTP error: a 5xx,
   * the URL expired or used up; no connection made) is said with chat.postEphemeral instead.
   */
  function viaResponseUrl(respond: (text: string) => Promise<unknown>, channel: string, user: string, threadTs?: string): (text: string) => Promise<void> {
    return async (text) => {
      try {
        await respond(text);
      } catch (e) {
        if ((e as { code?: string }).code === ErrorCode.RespondError || thrownUnsent(e)) return deps.port.postEphemeral(channel, user, text, threadTs);
        log.warn({ channel, user, err: (e as Error).message }, 'the reply to a response_url post was lost: taken as shown, not sent again');
      }
    };
  }

  /**
   * `tell`, saying each text once per event (`dedupeKey`): Slack delivers an event again when its ack went missing
   * (Socket Mode after 3 s, HTTP mode with X-Slack-Retry-Num), and a hint that makes no job ("Ask me about an image")
   * leaves no job for the repeat to find; until 2026-12-07 it was shown twice (found by an audit). A marker in Redis,
   * set before telling and taken back if telling fails, lets only the first delivery say it.
   */
  function onceFor(dedupeKey: string, tell: (text: string) => Promise<void>): (text: string) => Promise<void> {
    return async (text) => {
      const key = `${config.queue.prefix}:slack:told:${createHash('sha1').update(`${dedupeKey}\n${text}`).digest('hex')}`;
      // Slack's retries of an event end within minutes (at most 3: nearly at once, after 1 and after 5 minutes)
      if ((await core.redis.set(key, '1', 'EX', TOLD_TTL_S, 'NX')) !== 'OK') return log.info({ dedupeKey }, 'duplicate delivery: already told');
      await tell(text).catch(async (e: unknown) => {
        await core.redis.del(key);
        throw e;
      });
    };
  }

  // ---- slash commands: parse before the ack (bad options are the ack's ephemeral answer), then work ----------

  function slashCommand<I extends CommandInput>(name: '/imagine' | '/blip3o-admin', parse: (text: string) => I, run: (origin: Origin, input: I, dedupeKey: string) => Promise<void>): void {
    app.command(name, async ({ command, ack, respond, client, context }) => {
      let input: I;
      try {
        input = parse(command.text);
      } catch (e) {
        if (!isUserError(e)) throw e;
        await ack({ response_type: 'ephemeral', text: e.message });
        return;
      }
      await ack();
      const origin: Origin = {
        client,
        teamId: command.team_id, // what Bolt's context.teamId is for a command, org-wide installation or not
        enterpriseId: context.enterpriseId,
        channelId: command.channel_id,
        userId: command.user_id,
        responseUrl: command.response_url,
        tellPrivately: viaResponseUrl((text) => respond({ response_type: 'ephemeral', text }), command.channel_id, command.user_id),
      };
      await guarded(origin, name, () => run(origin, input, `cmd:${command.trigger_id}`));
    });
  }

  slashCommand('/imagine', (text) => parseImagine(readSlackText(text), config.generation), (origin, input, dedupeKey) => startJob(origin, input, dedupeKey, input.prompt));
  // admins of the workspace (isAdmin: its Admins and Owners, its Grid org's; checked by the core through Invocation.isAdmin)
  slashCommand('/blip3o-admin', parseAdmin, simpleCommand);

  // ---- /blip3o-settings: saved defaults in a modal (bots/slack/settings.ts) ---------------------------------

  app.command('/blip3o-settings', async ({ command, ack, respond, client, context }) => {
    let parsed: ReturnType<typeof parseSettingsText>;
    try {
      parsed = parseSettingsText(command.text);
    } catch (e) {
      if (!isUserError(e)) throw e;
      return void (await ack({ response_type: 'ephemeral', text: e.message }));
    }
    await ack();
    const origin: Origin = {
      client, teamId: command.team_id, enterpriseId: context.enterpriseId, channelId: command.channel_id, userId: command.user_id, responseUrl: command.response_url,
      tellPrivately: viaResponseUrl((text) => respond({ response_type: 'ephemeral', text }), command.channel_id, command.user_id),
    };
    await guarded(origin, SETTINGS_COMMAND, async () => {
      const { scope, reset } = parsed;
      // Stryker disable next-line StringLiteral: equivalent, a settings command makes no job: its key names none
      if (reset) return simpleCommand(origin, { command: 'settings', scope, action: 'reset' }, `cmd:${command.trigger_id}`);
      if (scope === 'channel' && !(await isAdmin(origin))) return origin.tellPrivately("Only workspace admins can change this channel's defaults.");
      const { values: now, version } = await core.settings.read(scope, destinationOf(origin));
      const target: SettingsTarget = { scope, teamId: origin.teamId, channelId: origin.channelId, version };
      try {
        await openView(client, command.trigger_id, settingsModal(target, now, config));
      } catch (e) {
        // Slack lets a command open a window for 3 s; reading the saved values took longer (Redis failing over, or down)
        if (slackError(e) !== 'expired_trigger_id') throw e;
        log.warn({ user: origin.userId }, 'the settings window was not opened in time (Slack allows 3 s)');
        await origin.tellPrivately(`I took too long to open the settings window (Slack allows 3 seconds). Please run ${SETTINGS_COMMAND} again.`);
      }
    });
  });

  app.view(VIEW_SETTINGS, async ({ ack, view, body, client, context }) => {
    // Written by settingsModal and handed back by Slack: parsed again. The core checks who may change what.
    const target = parseMetadata(SettingsTarget, view.private_metadata);
    if (!target) return void (await ack(), log.warn({ view: view.id }, 'settings modal with unreadable metadata ignored'));
    const parsed = settingsFromView(target, view.state.values as never);
    if ('errors' in parsed) return void (await ack({ response_action: 'errors', errors: parsed.errors }));
    await ack();
    const user = body.user.id;
    const origin: Origin = { client, teamId: target.teamId, enterpriseId: context.enterpriseId, channelId: target.channelId, userId: user, tellPrivately: ephemeralTo(target.channelId, user) };
    // Stryker disable next-line StringLiteral: equivalent, a settings command makes no job: its key names none
    const dedupeKey = `view:${view.id}`;
    await guarded(origin, 'settings modal', () => simpleCommand(origin, parsed.input, dedupeKey));
  });

  // ---- @mention with a question -----------------------------------------------------------------------

  app.event('app_mention', async ({ event, client, context }) => {
    const threadTs = event.thread_ts ?? event.ts;
    // Stryker disable next-line StringLiteral: Bolt names the user of every app_mention; '' only types it
    const user = event.user ?? '';
    const origin: Origin = { client, ...installationOf(context), channelId: event.channel, userId: user, askerTeamId: event.user_team ?? event.team, threadTs, tellPrivately: onceFor(`msg:${event.channel}:${event.ts}`, ephemeralTo(event.channel, user, threadTs)) };
    await guarded(origin, 'app_mention', async () => {
      const question = stripMention(event.text, deps.botUserId);
      const thread = event.thread_ts ? await deps.port.thread(event.channel, event.thread_ts) : [];
      const own = await Promise.all(((event as { files?: ThreadFile[] }).files ?? []).map((f) => resolveFile(client, f)));
      const file = imageForQuestion(thread, event.ts, own.length ? own : undefined);
      if (!file) {
        await origin.tellPrivately('Ask me about an image: mention me in a message with an image attached, or in the thread of a message with one.');
        return;
      }
      if (!question) {
        await origin.tellPrivately('What would you like to know about the image? Mention me with a question.');
        return;
      }
      checkDeclared(slackFileRef(file), downloadPolicy); // refuse a PDF or a foreign link before posting anything
      // its own image: a new conversation (ts: nothing before it counts); else the turns since the image's message
      const since = own.length ? event.ts : messageWith(thread, file)?.ts;
      const history = historyBefore(thread, event.ts, deps.botUserId, config.understanding.maxHistoryTurns, since);
      await startJob(origin, { command: 'ask', question, image: imageRef(file), history }, `msg:${event.channel}:${event.ts}`, question);
    });
  });

  // ---- message shortcut: "Ask about this image" ----------------------------------------------------------

  app.shortcut({ callback_id: SHORTCUT_ASK, type: 'message_action' }, async ({ shortcut, ack, client, context }) => {
    await ack();
    const channel = shortcut.channel.id;
    const message = shortcut.message as { ts: string; thread_ts?: string; files?: ThreadFile[] };
    const user = shortcut.user.id;
    const origin: Origin = { client, ...installationOf(context), channelId: channel, userId: user, threadTs: message.thread_ts, tellPrivately: ephemeralTo(channel, user, message.thread_ts) };
    // Guarded: a window Slack would not open (a 5xx, the trigger expired) left the user with nothing (found by an audit, 2026-12-07)
    await guarded(origin, 'ask shortcut window', async () => {
      const file = firstFile(await filesOf(client, message));
      if (!file) return void (await origin.tellPrivately('That message has no image to ask about.'));
      checkDeclared(slackFileRef(file), downloadPolicy); // a UserError: told by guarded
      await openView(client, shortcut.trigger_id, askModal({ c: channel, t: message.thread_ts ?? message.ts, f: file }, config.understanding.maxQuestionChars));
    });
  });

  // ---- message shortcut: "Describe this image" → four prompts, each with "Imagine this" ----------------------

  app.shortcut({ callback_id: SHORTCUT_DESCRIBE, type: 'message_action' }, async ({ shortcut, ack, client, context }) => {
    await ack();
    const channel = shortcut.channel.id;
    const message = shortcut.message as { ts: string; thread_ts?: string; files?: ThreadFile[] };
    const user = shortcut.user.id;
    const threadTs = message.thread_ts ?? message.ts;
    const origin: Origin = { client, ...installationOf(context), channelId: channel, userId: user, askerTeamId: shortcut.user.team_id, threadTs, tellPrivately: ephemeralTo(channel, user, threadTs) };
    await guarded(origin, 'describe shortcut', async () => {
      const file = firstFile(await filesOf(client, message));
      if (!file) return void (await origin.tellPrivately('That message has no image to describe.'));
      checkDeclared(slackFileRef(file), downloadPolicy);
      await startJob(origin, { command: 'describe', image: imageRef(file) }, `shortcut:${shortcut.trigger_id}`, 'Describe this image');
    });
  });

  app.view(VIEW_ASK, async ({ ack, view, body, client, context }) => {
    await ack();
    // Written by askModal and handed back by Slack: parsed again.
    const meta = parseMetadata(AskTarget, view.private_metadata);
    if (!meta) return void log.warn({ view: view.id }, 'ask modal with unreadable metadata ignored');
    const question = String(view.state.values.question?.value?.value ?? '').trim();
    const user = body.user.id;
    // (Bolt's enterpriseId is the submitter's org for a Slack Connect member of another organisation; an ask asks
    // nothing of being an admin.)
    const origin: Origin = { client, ...installationOf(context), channelId: meta.c, userId: user, askerTeamId: body.user.team_id, threadTs: meta.t, tellPrivately: ephemeralTo(meta.c, user, meta.t) };
    await guarded(origin, 'ask shortcut', () => startJob(origin, { command: 'ask', question, image: imageRef(meta.f), history: [] }, `view:${view.id}`, question));
  });

  // ---- buttons ---------------------------------------------------------------------------------------------

  const buttonOrigin = (body: ButtonBody, client: WebClient, respond: (m: { response_type: 'ephemeral'; replace_original: false; text: string }) => Promise<unknown>, context: { teamId?: string; enterpriseId?: string }): Origin => ({
    client,
    ...installationOf(context),
    channelId: body.container.channel_id,
    userId: body.user.id,
    askerTeamId: body.user.team_id,
    threadTs: body.container.thread_ts ?? body.container.message_ts,
    responseUrl: body.response_url,
    tellPrivately: viaResponseUrl((text) => respond({ response_type: 'ephemeral', replace_original: false, text }), body.container.channel_id, body.user.id, body.container.thread_ts ?? body.container.message_ts),
  });

  app.action(ACTION.reroll, async ({ ack, body, action, client, respond, context }) => {
    await ack();
    const b = body as unknown as ButtonBody;
    const origin = buttonOrigin(b, client, respond, context);
    const jobId = (action as { value: string }).value;
    await guarded(origin, 're-roll', async () => startJob(await fromResultOf(origin, jobId), { command: 'reroll', jobId }, `btn:${b.user.id}:${b.actions[0]?.action_ts}`, (await deps.titleOf(jobId))?.text ?? 'Re-roll'));
  });

  app.action({ action_id: VARY_ACTION }, async ({ ack, body, action, client, respond, context }) => {
    await ack();
    const b = body as unknown as ButtonBody;
    const origin = buttonOrigin(b, client, respond, context);
    const { value: jobId, action_id } = action as { value: string; action_id: string };
    await guarded(origin, 'vary', async () => {
      const name = resultFileName(jobId, varyIndex(action_id)); // per-image Vary of a several-image result
      // The button is on the result's own message, which Slack sends whole (its files too): the thread is read only
      // for a payload without the file, as conversations.replies is Slack's scarcest call (once a minute for apps not
      // in the Marketplace).
      const pressed = (b.message?.files ?? []).find((f) => f.name === name);
      const file = pressed
        ? await resolveFile(client, pressed)
        : (await deps.port.thread(origin.channelId, origin.threadTs!)).flatMap((m) => m.files ?? []).find((f) => f.name === name);
      if (!file) return void (await origin.tellPrivately('I cannot find that image any more; run /imagine again.'));
      await startJob(await fromResultOf(origin, jobId), { command: 'vary', image: imageRef(file), from: jobId }, `btn:${b.user.id}:${b.actions[0]?.action_ts}`, `Variation of ${(await deps.titleOf(jobId))?.text ?? 'an image'}`);
    });
  });

  // "Imagine this" under a /describe answer: the button's value is the prompt.
  app.action(ACTION.imagineThis, async ({ ack, body, action, client, respond, context }) => {
    await ack();
    const b = body as unknown as ButtonBody;
    const origin = buttonOrigin(b, client, respond, context);
    const { value: prompt, block_id } = action as { value: string; block_id?: string };
    const from = describedJobOf(block_id);
    await guarded(origin, 'imagine this', async () => startJob(await fromResultOf(origin, from), { command: 'imagine', prompt, ...(from ? { from } : {}) }, `btn:${b.user.id}:${b.actions[0]?.action_ts}`, prompt));
  });

  app.action(ACTION.cancel, async ({ ack, body, action, client, respond, context }) => {
    await ack();
    const b = body as unknown as ButtonBody;
    const origin = buttonOrigin(b, client, respond, context);
    // Stryker disable next-line StringLiteral: equivalent, a cancel makes no job: its key names none
    const dedupeKey = `btn:${b.user.id}:${b.actions[0]?.action_ts}`;
    await guarded(origin, 'cancel', () => simpleCommand(origin, { command: 'cancel', jobId: (action as { value: string }).value }, dedupeKey));
  });

  // A button of another version of this bot (OUR_ACTION): acked and answered as Discord answers it (its adapter's
  // onButton), where before 2026-12-07 it went unacked and Slack showed the presser an error icon. Bolt runs every
  // listener whose constraint matches, so the ids this version knows are left to their own listener above.
  app.action(OUR_ACTION, async ({ ack, body, action, client, respond, context }) => {
    if (isKnownAction((action as { action_id: string }).action_id)) return;
    await ack();
    const origin = buttonOrigin(body as unknown as ButtonBody, client, respond, context);
    await guarded(origin, 'button of another version', () => origin.tellPrivately('This button no longer works here. Please run the command again.'));
  });
}

/** conversations.open's refusals to put the bot and the asker in a DM (its documented errors), for privateDm. */
const NO_PRIVATE_DM = new Set(['invalid_user_combination', 'user_not_visible', 'missing_scope']);

/**
 * The workspace a mention, shortcut, modal or button press belongs to: the installation Slack delivered it for, as
 * Bolt reads it into its context (bolt-js App.ts buildSource), never the payload's other team ids. An event's
 * envelope `team_id` is, in a Slack Connect channel, the workspace that created the channel (maybe the partner's);
 * `event.team` is the author's own; a modal's `team` is the submitter's (bolt-js #1614; Bolt reads
 * `view.app_installed_team_id`); a press or shortcut in an org-wide installation on Enterprise Grid has `team: null`
 * (Bolt reads `user.team_id`). Until 2026-12-07 those were read, and such requests fell outside this channel's
 * limits, settings (no-log, retention, private results), budgets and cache (slack-connect.redis.test.ts,
 * org-wide-install.redis.test.ts). Slash commands keep their `team_id`, which is what Bolt reads for them.
 */
function installationOf(context: { teamId?: string; enterpriseId?: string }): Pick<Origin, 'teamId' | 'enterpriseId'> {
  // Stryker disable next-line StringLiteral: Bolt names the team of everything it authorizes; '' only types it
  return { teamId: context.teamId ?? '', enterpriseId: context.enterpriseId };
}

interface ButtonBody {
  user: { id: string; team_id?: string };
  container: { channel_id: string; message_ts: string; thread_ts?: string };
  /** The message the button is on, whole (absent for an ephemeral one). */
  message?: { files?: ThreadFile[] };
  response_url: string;
  actions: { action_ts?: string }[];
}
