// Issue 20 on Slack: /blip3o-settings (saved defaults per user, per channel for admins, in a Block Kit modal) and
// private results (the job lives in the asker's DM with the bot; the channel gets nothing). Real @slack/bolt ↔ fake
// Slack (Socket Mode), real core on real Redis, a real worker process with the test double pipeline.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SlackDestination } from '../../src/jobs/contract.ts';
import { startSlackHarness, type SlackHarness } from '../fakes/slack/bot-harness.ts';
import sharp from 'sharp';
import { blockAction, eventCallback, messageShortcut, slashCommand, viewSubmission } from '../fakes/slack/payloads.ts';
import type { RecordedCall } from '../fakes/slack/server.ts';
import { SettingsStore } from '../../bots/core/settings.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';

const CHANNEL = 'C0GENERAL';
const USER = 'U0ALICE';
const ADMIN = 'U0ADMIN';
let h: SlackHarness;

beforeAll(async () => {
  h = await startSlackHarness({ mode: 'socket', pipelineExtra: { stepDelayMs: 5, maxSteps: 2 } });
  h.fake.addUser(USER);
  h.fake.addUser(ADMIN, { isAdmin: true });
}, 60_000);
afterAll(async () => h?.stop(), 30_000);

const here = (userId = USER): SlackDestination => ({ platform: 'slack', teamId: h.fake.teamId, channelId: CHANNEL, userId });
const argsOf = (c: RecordedCall) => c.args as Record<string, unknown>;

async function command(text: string, user = USER, name = '/blip3o-settings'): Promise<void> {
  await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', slashCommand(h.fake, { command: name, text, channel: CHANNEL, user })));
}

/** The modal the bot opened last (views.open), after `before` calls. */
async function modal(before: number): Promise<Record<string, unknown>> {
  const call = await h.fake.waitFor(() => h.fake.apiCalls('views.open')[before], 10_000, 'views.open');
  return argsOf(call).view as Record<string, unknown>;
}

/** The last ephemeral text the user was told (postEphemeral or response_url). */
const ephemerals = () =>
  h.fake.calls.filter((c) => (c.kind === 'api' && c.method === 'chat.postEphemeral') || c.kind === 'response_url').map((c) => String(argsOf(c).text ?? ''));

async function submit(view: Record<string, unknown>, values: Record<string, Record<string, unknown>>, user = USER): Promise<Record<string, unknown> | undefined> {
  const envelope = h.fake.sendEnvelope('interactive', viewSubmission(h.fake, { user, view, values: values as never }));
  return (await h.fake.link.ack(envelope)) as Record<string, unknown> | undefined;
}

const blockIds = (view: Record<string, unknown>) => (view.blocks as { block_id: string }[]).map((b) => b.block_id);

describe('Slack: /blip3o-settings', () => {
  it('opens a modal with the saved values; saving it stores exactly what it shows; /imagine uses them and its own options win', async () => {
    await h.core.settings.set('user', here(), { steps: 9, guidance: 3 });
    const before = h.fake.apiCalls('views.open').length;
    await command('');
    const view = await modal(before);
    expect(view.callback_id).toBe('blip3o_settings');
    expect(blockIds(view)).toEqual(['aspect', 'steps', 'guidance', 'count', 'negative', 'private']); // no retention for a user
    const steps = (view.blocks as { block_id: string; element: { initial_value?: string } }[]).find((b) => b.block_id === 'steps')!;
    expect(steps.element.initial_value).toBe('9');

    const told = ephemerals().length;
    await submit(view, {
      aspect: { value: { type: 'static_select', selected_option: { value: '16:9' } } },
      steps: { value: { type: 'number_input', value: '7' } },
      guidance: { value: { type: 'number_input', value: '' } }, // emptied: no longer saved
      count: { value: { type: 'number_input', value: null } },
      negative: { value: { type: 'plain_text_input', value: 'watermark' } },
      private: { value: { type: 'checkboxes', selected_options: [] } },
    });
    await h.fake.waitFor(() => ephemerals().slice(told).find((t) => t.includes('Your defaults are now')), 10_000, 'the confirmation');
    expect(await h.core.settings.get('user', here())).toEqual({ aspect: '16:9', steps: 7, negative: 'watermark' });

    const statusBefore = h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status').length;
    await command('a harbour --ar 1:1', USER, '/imagine');
    const status = await h.fake.waitFor(() => h.fake.botMessages(CHANNEL).filter((m) => m.metadata?.event_type === 'blip3o_status')[statusBefore], 10_000, 'status');
    const jobId = String(status.metadata!.event_payload.job_id);
    const job = await waitJob(jobId); // the status message is posted before the job is submitted
    expect(job.kind === 'imagine' && job.options).toMatchObject({ aspect: '1:1', ditSteps: 7, negative: 'watermark' });
    await command('reset');
    await h.fake.waitFor(() => ephemerals().some((t) => t.includes('Your defaults are cleared')), 10_000, 'reset');
    expect(await h.core.settings.get('user', here())).toEqual({});
  }, 90_000);

  it('channel defaults are for workspace admins; the channel modal has the retention TTL, and a bad duration is a field error', async () => {
    const told = ephemerals().length;
    await command('channel', USER);
    await h.fake.waitFor(() => ephemerals().slice(told).find((t) => t.includes('Only workspace admins')), 10_000, 'the refusal');

    const before = h.fake.apiCalls('views.open').length;
    await command('channel', ADMIN);
    const view = await modal(before);
    expect(blockIds(view)).toContain('retention');
    const ack = await submit(view, { retention: { value: { type: 'plain_text_input', value: 'soon' } } }, ADMIN);
    expect(ack).toMatchObject({ response_action: 'errors', errors: { retention: expect.stringContaining('not a duration') } });
    expect(await h.core.settings.get('channel', here(ADMIN))).toEqual({});

    await submit(view, { retention: { value: { type: 'plain_text_input', value: '2h' } }, private: { value: { type: 'checkboxes', selected_options: [{ value: 'private' }, { value: 'nolog' }] } } }, ADMIN);
    const saved = await waitFor(async () => {
      const s = await h.core.settings.get('channel', here(ADMIN));
      return s.retentionSeconds ? s : undefined;
    });
    expect(saved).toEqual({ retentionSeconds: 7200, private: true, noLog: true });
    await h.core.settings.reset('channel', here(ADMIN));
  }, 60_000);

  it('a settings window opened before another admin changed the channel (on any bot instance) does not undo that change', async () => {
    // The modal holds a copy of the saved values from when it opened; its submit used to save exactly that copy, so a
    // window left open while another admin turned no-log mode on (another window, another bot instance: one Redis)
    // turned it off again, silently, and the channel's prompts reached the logs.
    const before = h.fake.apiCalls('views.open').length;
    await command('channel', ADMIN);
    const stale = await modal(before); // shows nothing saved
    const otherRedis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'test-other-instance');
    // another bot instance's /settings: its own connection, the same key
    await new SettingsStore(otherRedis, h.config).set('channel', here(ADMIN), { noLog: true, retentionSeconds: 900 }).finally(() => closeRedis(otherRedis));
    const told = ephemerals().length;
    await submit(stale, { aspect: { value: { type: 'static_select', selected_option: { value: '16:9' } } }, private: { value: { type: 'checkboxes', selected_options: [] } } }, ADMIN);
    const reply = await h.fake.waitFor(() => ephemerals().slice(told).find((t) => t.includes('defaults')), 10_000, 'the answer');
    expect(await h.core.settings.get('channel', here(ADMIN))).toEqual({ noLog: true, retentionSeconds: 900 });
    expect(reply).toContain('changed while this window was open');
    // A window opened now shows them, and saves
    const again = h.fake.apiCalls('views.open').length;
    await command('channel', ADMIN);
    const fresh = await modal(again);
    await submit(fresh, { aspect: { value: { type: 'static_select', selected_option: { value: '16:9' } } }, private: { value: { type: 'checkboxes', selected_options: [{ value: 'nolog' }] } }, retention: { value: { type: 'plain_text_input', value: '15m' } } }, ADMIN);
    const saved = await waitFor(async () => {
      const s = await h.core.settings.get('channel', here(ADMIN));
      return s.aspect ? s : undefined;
    });
    expect(saved).toEqual({ aspect: '16:9', noLog: true, retentionSeconds: 900 });
    await h.core.settings.reset('channel', here(ADMIN));
  }, 60_000);
});

describe('Slack: private results', () => {
  it('in a private channel the status, the image and the answer go to the asker’s DM; the channel receives no post about the job', async () => {
    await h.core.settings.set('channel', here(), { private: true });
    try {
      const channelCallsBefore = h.fake.calls.length;
      await command('a secret orchard --seed 3', USER, '/imagine');
      const dm = `D${USER}`;
      const result = await h.fake.waitFor(() => h.fake.botMessages(dm).find((m) => (m.files?.length ?? 0) > 0), 45_000, 'the image in the DM');
      expect(result.files![0]!.mimetype).toBe('image/png');
      // A question by mention: the question was public (the user typed it there), the answer is not.
      const png = new Uint8Array(await sharp({ create: { width: 16, height: 16, channels: 3, background: '#c33' } }).png().toBuffer());
      const file = h.fake.seedFile(png, 'red.png', 'image/png');
      const m = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: `<@${h.fake.botUserId}> is this a secret orchard?`, files: [file] });
      await h.fake.link.ack(h.fake.sendEnvelope('events_api', eventCallback(h.fake, { type: 'app_mention', user: USER, text: m.text, ts: m.ts, channel: CHANNEL, files: m.files })));
      const answer = await h.fake.waitFor(() => h.fake.botMessages(dm).find((x) => x.metadata?.event_type === 'blip3o_answer'), 45_000, 'the answer in the DM');
      expect(answer.text).toContain('secret orchard');
      await h.fake.waitFor(() => ephemerals().some((t) => t.includes('direct messages')), 10_000, 'the private note');
      // Nothing public: no message in the channel, and no Web API call that posts or uploads into it.
      expect(h.fake.botMessages(CHANNEL).some((m) => m.text.includes('secret orchard') || JSON.stringify(m.blocks ?? []).includes('secret orchard'))).toBe(false);
      // (The first test's job may still be finishing in the channel: only calls about these two jobs count.)
      const jobIds = h.fake.botMessages(dm).map((m) => String(m.metadata?.event_payload?.job_id ?? '')).filter(Boolean);
      expect(jobIds.length).toBeGreaterThan(0);
      const publicCalls = h.fake.calls.slice(channelCallsBefore).filter((c) => {
        const a = argsOf(c);
        const posts = c.kind === 'api' && ['chat.postMessage', 'chat.update', 'files.completeUploadExternal'].includes(c.method);
        const about = JSON.stringify(a).includes('orchard') || jobIds.some((id) => JSON.stringify(a).includes(id));
        return posts && about && (a.channel === CHANNEL || a.channel_id === CHANNEL);
      });
      expect(publicCalls).toEqual([]);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 90_000);

  it('Re-roll and "Imagine this" pressed in the DM keep the private channel\'s no-log and retention', async () => {
    await h.core.settings.set('channel', here(), { private: true, noLog: true, retentionSeconds: 600 });
    try {
      const dm = `D${USER}`;
      await command('a hidden greenhouse --seed 4', USER, '/imagine');
      const result = await h.fake.waitFor(() => h.fake.botMessages(dm).find((m) => (m.files?.length ?? 0) > 0 && JSON.stringify(m.blocks ?? []).includes('hidden greenhouse')), 45_000, 'the image in the DM');
      const reroll = JSON.stringify(result.blocks).match(/"action_id":"blip3o_reroll"[^}]*"value":"(j[0-9a-f]+)"/)?.[1];
      expect(reroll).toBeDefined();
      expect((await waitJob(reroll!)).destination).toMatchObject({ channelId: CHANNEL, dmChannelId: dm, noLog: true, retentionSeconds: 600 });
      const before = h.fake.botMessages(dm).length;
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: USER, message: result, actionId: 'blip3o_reroll', value: reroll! })));
      const again = await h.fake.waitFor(() => h.fake.botMessages(dm).slice(before).find((m) => m.metadata?.event_type === 'blip3o_status'), 15_000, 'the Re-roll\'s status in the DM');
      const rerolled = await waitJob(String(again.metadata!.event_payload.job_id));
      // pressed in the DM: the channel's job (its limits, settings, fair share), posted in the DM
      expect(rerolled.destination).toMatchObject({ channelId: CHANNEL, dmChannelId: dm, private: true, noLog: true, retentionSeconds: 600 });

      // A /describe answer in the DM (its prompts' sections name the job): "Imagine this" keeps them too
      const png = new Uint8Array(await sharp({ create: { width: 16, height: 16, channels: 3, background: '#3c3' } }).png().toBuffer());
      const file = h.fake.seedFile(png, 'green.png', 'image/png');
      const shared = h.fake.postUserMessage({ channel: CHANNEL, user: USER, text: 'this one', files: [file] });
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', messageShortcut(h.fake, { user: USER, message: shared, callbackId: 'blip3o_describe_image' })));
      const described = await h.fake.waitFor(() => h.fake.botMessages(dm).find((m) => JSON.stringify(m.blocks ?? []).includes('blip3o_imagine_this')), 45_000, 'the prompts in the DM');
      const first = (described.blocks as { accessory?: { value: string } }[])[0]!.accessory!.value;
      const count = h.fake.botMessages(dm).length;
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: USER, message: described, actionId: 'blip3o_imagine_this', value: first })));
      const status = await h.fake.waitFor(() => h.fake.botMessages(dm).slice(count).find((m) => m.metadata?.event_type === 'blip3o_status'), 15_000, 'the new job\'s status in the DM');
      expect((await waitJob(String(status.metadata!.event_payload.job_id))).destination).toMatchObject({ channelId: CHANNEL, dmChannelId: dm, noLog: true, retentionSeconds: 600 });

      // The admin makes the channel public again: a Re-roll pressed in the DM still answers in the DM, not the channel
      await h.core.settings.set('channel', here(), {});
      const inDm = h.fake.botMessages(dm).length;
      const inChannel = h.fake.botMessages(CHANNEL).length;
      await h.fake.link.ack(h.fake.sendEnvelope('interactive', blockAction(h.fake, { user: USER, message: result, actionId: 'blip3o_reroll', value: reroll! })));
      const later = await h.fake.waitFor(() => h.fake.botMessages(dm).slice(inDm).find((m) => m.metadata?.event_type === 'blip3o_status'), 15_000, 'the later Re-roll in the DM');
      expect((await waitJob(String(later.metadata!.event_payload.job_id))).destination).toMatchObject({ channelId: CHANNEL, dmChannelId: dm, noLog: true, retentionSeconds: 600 });
      expect(h.fake.botMessages(CHANNEL).length).toBe(inChannel);
    } finally {
      await h.core.settings.reset('channel', here());
    }
  }, 120_000);

  it('without the setting the same request posts in the channel (so the test above can fail)', async () => {
    await command('an open orchard --seed 3', USER, '/imagine');
    await h.fake.waitFor(() => h.fake.botMessages(CHANNEL).find((m) => (m.files?.length ?? 0) > 0 && JSON.stringify(m.blocks ?? []).includes('open orchard')), 45_000, 'the image in the channel');
  }, 90_000);
});

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitJob(jobId: string) {
  return waitFor(async () => (await h.core.queue.getJob(jobId))?.data);
}
