// Builders for what Slack sends a bot: slash commands, event_callback bodies (app_mention), interactive
// payloads (block_actions, message_action shortcuts, view_submission). Shapes: platform-fakes.md B2 and
// @slack/bolt's types (SlashCommand, EnvelopedEvent, AppMentionEvent, BlockAction, MessageShortcut). A workspace
// on Enterprise Grid (FakeSlack.enterpriseId) also names its org: `enterprise_id` (commands, the event envelope and
// its authorizations), `team.enterprise_id` and `enterprise` (interactive payloads); installed org-wide
// (FakeSlack.orgWideInstall), its interactive payloads have `team: null` and `is_enterprise_install: true`, and its
// events an authorization with `team_id: null`.
import { randomUUID } from 'node:crypto';
import type { FakeSlack } from './server.ts';
import { fileJson, messageJson, triggerId, type FakeFile, type FakeMessage } from './store.ts';

export type SlashCommandFields = Record<'token' | 'team_id' | 'team_domain' | 'channel_id' | 'channel_name' | 'user_id' | 'user_name' | 'command' | 'text' | 'api_app_id' | 'is_enterprise_install' | 'response_url' | 'trigger_id', string> &
  Partial<Record<'enterprise_id' | 'enterprise_name', string>>;

/** The user's own workspace (a Slack Connect member's is another than the fake's). */
const homeOf = (fake: FakeSlack, user: string): string => fake.store.users.get(user)?.team_id ?? fake.teamId;

/**
 * The org fields of an interactive payload: its team's, and `enterprise` (none outside Grid). In an org-wide
 * installation (FakeSlack.orgWideInstall) `team` is null and only `user.team_id` names the workspace.
 */
function orgOf(fake: FakeSlack): { team: Record<string, string> | null; enterprise?: { id: string; name: string }; is_enterprise_install: boolean } {
  const team = { id: fake.teamId, domain: 'fake' };
  if (!fake.enterpriseId) return { team, is_enterprise_install: false };
  const enterprise = { id: fake.enterpriseId, name: 'Fake Org' };
  if (fake.orgWideInstall) return { team: null, enterprise, is_enterprise_install: true };
  return { team: { ...team, enterprise_id: fake.enterpriseId, enterprise_name: 'Fake Org' }, enterprise, is_enterprise_install: false };
}

export function slashCommand(fake: FakeSlack, f: { command?: string; text: string; channel: string; user: string }): SlashCommandFields {
  return {
    token: 'legacy-verification-token',
    team_id: fake.teamId,
    team_domain: 'fake',
    channel_id: f.channel,
    channel_name: 'general',
    user_id: f.user,
    user_name: f.user.toLowerCase(),
    command: f.command ?? '/imagine',
    text: f.text,
    api_app_id: fake.appId,
    is_enterprise_install: String(fake.orgWideInstall), // a string in a command; team_id is the workspace's either way
    response_url: `${fake.origin}/response/${randomUUID()}`,
    trigger_id: triggerId(),
    ...(fake.enterpriseId ? { enterprise_id: fake.enterpriseId, enterprise_name: 'Fake Org' } : {}),
  };
}

/**
 * An Events API envelope. In a Slack Connect channel (FakeSlack.shareChannel) the top-level `team_id` is the workspace
 * that created the channel, which may be the partner's; `authorizations` names this installation either way. An
 * org-wide installation (FakeSlack.orgWideInstall) is the org's, not a workspace's: its authorization has `team_id: null`
 * and `is_enterprise_install: true` (Slack's "changes to APIs" for organization-wide apps; bolt-js App.ts buildSource
 * then reads the top-level `team_id`).
 */
export function eventCallback(fake: FakeSlack, event: Record<string, unknown>, eventId = `Ev${randomUUID().slice(0, 10)}`): Record<string, unknown> {
  const createdBy = typeof event.channel === 'string' ? fake.store.sharedChannels.get(event.channel) : undefined;
  const installedFor = fake.orgWideInstall ? { team_id: null, is_enterprise_install: true } : { team_id: fake.teamId, is_enterprise_install: false };
  return {
    token: 'legacy-verification-token',
    team_id: createdBy ?? fake.teamId,
    api_app_id: fake.appId,
    type: 'event_callback',
    event_id: eventId,
    event_time: Math.floor(Date.now() / 1000),
    ...(fake.enterpriseId ? { enterprise_id: fake.enterpriseId } : {}),
    authorizations: [{ enterprise_id: fake.enterpriseId ?? null, ...installedFor, user_id: fake.botUserId, is_bot: true }],
    is_ext_shared_channel: createdBy !== undefined,
    event,
  };
}

/** The app_mention event for a message already stored in the fake (so conversations.replies sees it too). */
export function appMention(fake: FakeSlack, m: FakeMessage): Record<string, unknown> {
  return {
    type: 'app_mention',
    user: m.user,
    text: m.text,
    ts: m.ts,
    channel: m.channel,
    event_ts: m.ts,
    team: m.user ? homeOf(fake, m.user) : fake.teamId, // the author's own workspace (a Slack Connect member's is theirs)
    client_msg_id: randomUUID(),
    ...(m.thread_ts ? { thread_ts: m.thread_ts } : {}),
    ...(m.files ? { files: m.files.map(fileJson) } : {}),
  };
}

export function blockAction(fake: FakeSlack, f: { user: string; message: FakeMessage; actionId: string; value: string }): Record<string, unknown> {
  return {
    type: 'block_actions',
    user: { id: f.user, username: f.user.toLowerCase(), team_id: homeOf(fake, f.user) },
    api_app_id: fake.appId,
    token: 'legacy-verification-token',
    container: { type: 'message', message_ts: f.message.ts, channel_id: f.message.channel, is_ephemeral: false, thread_ts: f.message.thread_ts },
    trigger_id: triggerId(),
    ...orgOf(fake),
    channel: { id: f.message.channel, name: 'general' },
    message: messageJson(f.message, false),
    response_url: `${fake.origin}/response/${randomUUID()}`,
    actions: [{ type: 'button', action_id: f.actionId, block_id: blockIdOf(f.message, f.actionId, f.value), value: f.value, action_ts: `${Date.now() / 1000}` }],
  };
}

/** The block_id of the block holding the button, as Slack sends it ('result' when the message has no such block). */
function blockIdOf(message: FakeMessage, actionId: string, value: string): string {
  type Button = { action_id?: string; value?: string };
  type Block = { block_id?: string; accessory?: Button; elements?: Button[] };
  const holds = (b: Button | undefined) => b?.action_id === actionId && b.value === value;
  const block = ((message.blocks ?? []) as Block[]).find((b) => holds(b.accessory) || (b.elements ?? []).some(holds));
  return block?.block_id ?? 'result';
}

/**
 * A message as a message shortcut's payload carries it. A file a Slack Connect member of another organisation shared
 * comes as a stub without its links (`file_access: "check_file_info"`): files.info has the rest (Slack's file object,
 * file_access; as Bolt apps see them in Slack Connect channels).
 */
function messageAsSent(fake: FakeSlack, m: FakeMessage): Record<string, unknown> {
  const json = messageJson(m, false);
  if (!m.files || !m.user || homeOf(fake, m.user) === fake.teamId) return json;
  return { ...json, files: m.files.map((file) => ({ id: file.id, mode: 'file_access', file_access: 'check_file_info', created: 0, timestamp: 0, user: '' })) };
}

export function messageShortcut(fake: FakeSlack, f: { user: string; message: FakeMessage; callbackId: string }): Record<string, unknown> {
  return {
    type: 'message_action',
    callback_id: f.callbackId,
    trigger_id: triggerId(),
    message_ts: f.message.ts,
    response_url: `${fake.origin}/response/${randomUUID()}`,
    ...orgOf(fake),
    channel: { id: f.message.channel, name: 'general' },
    user: { id: f.user, name: f.user.toLowerCase(), team_id: homeOf(fake, f.user) },
    message: messageAsSent(fake, f.message),
    token: 'legacy-verification-token',
  };
}

/**
 * A view_submission for a modal the bot opened (views.open), with the user's typed values. Submitted by a Slack Connect
 * member of another organisation, its `team` (and `enterprise`) are the submitter's own workspace and org, and only
 * `view.app_installed_team_id` names this installation (bolt-js issue #1614, confirmed by Slack's support as intended;
 * Bolt's context.teamId reads app_installed_team_id first for that reason).
 */
export function viewSubmission(fake: FakeSlack, f: { user: string; view: Record<string, unknown>; values: Record<string, Record<string, { type: string; value: string }>> }): Record<string, unknown> {
  const home = homeOf(fake, f.user);
  const theirOrg = fake.store.users.get(f.user)?.enterprise_user?.enterprise_id;
  const org = home === fake.teamId ? orgOf(fake) : { team: { id: home, domain: home.toLowerCase() }, ...(theirOrg ? { enterprise: { id: theirOrg, name: 'Another Org' } } : {}) };
  return {
    type: 'view_submission',
    ...org,
    user: { id: f.user, username: f.user.toLowerCase(), team_id: home },
    api_app_id: fake.appId,
    token: 'legacy-verification-token',
    trigger_id: triggerId(),
    view: { id: `V${randomUUID().slice(0, 8)}`, team_id: home, type: 'modal', ...f.view, state: { values: f.values }, hash: 'h', app_id: fake.appId, app_installed_team_id: fake.teamId, bot_id: fake.botId },
    response_urls: [],
  };
}

export type { FakeFile, FakeMessage };
