// An upgrade from 6005a95 (the last release) as a self-hoster does it: what that version left in Redis (its own code
// wrote it: test/fixtures/upgrade/6005a95/README.md) is put back, and this version's worker process and bots take
// over. Every record must be used: the jobs it queued or was running are run, the results it handed over are posted
// once, saved settings, admins' overrides, budgets, usage, cached results and single-flight followers are read back,
// and the buttons and settings window on messages it posted still work. The other way round (old and new side by
// side): what this version writes must pass the old version's contract schemas.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Reply } from '../../bots/core/port.ts';
import { SettingsStore } from '../../bots/core/settings.ts';
import { createCore, type Core } from '../../bots/core/submit.ts';
import { isOurButtonId, parseButtonId, parseSettingsButton } from '../../bots/discord/custom-ids.ts';
import { describedPrompt, resultMessage } from '../../bots/discord/render.ts';
import { ACTION, describedJobOf, failureText, isKnownAction, parseMetadata, varyIndex } from '../../bots/slack/blocks.ts';
import { SettingsTarget, settingsFromView } from '../../bots/slack/settings.ts';
import { Usage } from '../../src/accounting/usage.ts';
import { CheckOverrides } from '../../src/checks/policy.ts';
import { JobProgress, JobRequest, JobResult, QueueNames, parseContract, type Destination } from '../../src/jobs/contract.ts';
import { createDeliveryQueue, createJobsQueue, type JobsQueue } from '../../src/jobs/queue.ts';
import { createLimiter } from '../../src/limits/limiter.ts';
import { createLogger } from '../../src/log.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, makeHarness, RecordingPort, REDIS_URL, startWorker, stopProcess, until, type Proc } from '../doubles/spine-harness.ts';
import { restoreFixture, type RedisFixture } from '../doubles/upgrade-fixture.ts';

const DIR = 'test/fixtures/upgrade/6005a95';
const read = <T>(file: string): T => JSON.parse(readFileSync(join(DIR, file), 'utf8')) as T;
const fixture = read<RedisFixture>('redis.json');
type Scenario = { cliClientId: string; jobs: Record<string, string>; delivered: Record<string, JobResult>; settings: Record<'discordUser' | 'discordChannel' | 'slackUser' | 'slackChannel', Record<string, unknown>>; progressOfRunning: unknown };
const scenario = read<Scenario>('scenario.json');
type SlackAction = { actionId: string; value: string; blockId?: string };
type Modal = { private_metadata: string; blocks: { type: string; block_id?: string; element?: Record<string, unknown> }[] };
const components = read<{
  discord: Record<string, string[]>;
  discordContent: Record<string, string>;
  slack: Record<string, SlackAction[]>;
  failureTexts: Record<string, string>;
  slackSettingsModals: Record<'user' | 'channel', Modal>;
  discordSettingsRows: Record<'user' | 'channel', string[]>;
}>('components.json');
const oldSchemas = read<Record<'JobRequest' | 'JobResult' | 'JobProgress', object>>('contract-schemas.json');

const LIMIT = { requestsPerWindow: 100, windowSeconds: 3600, burst: 100, maxConcurrent: 20 };
// The old deployment's settings (make-fixtures.ts), except how long the double's slow steps take here.
const h = makeHarness({
  queue: { stalledIntervalMs: 1000, lockDurationMs: 3000 },
  limits: { channel: LIMIT, user: LIMIT, workspace: LIMIT },
  cache: { enabled: true, singleFlight: true, manifestRefreshMs: 60_000 },
  usage: { budgets: { channel: 100_000, user: 100_000, workspace: 100_000 } },
  worker: { pipelineExtra: { failures: { 'please-fail': 'user', 'slow-run': 'slow' }, slowStepMs: 20 } },
});
const log = createLogger('test', 'silent');
const discord = (userId: string, channelId: string): Destination => ({ platform: 'discord', guildId: 'g1', channelId, userId, applicationId: 'app1' });
const slack = (userId: string, channelId: string): Destination => ({ platform: 'slack', teamId: 'T1', channelId, userId });
const job = (name: string): string => scenario.jobs[name] ?? expect.fail(`no job ${name} in scenario.json`);

let redis: Redis;
let jobs: JobsQueue;
let worker: Proc | undefined;
let bots: Core;
let cliBot: Core;
const ports = { discord: new RecordingPort('discord'), slack: new RecordingPort('slack'), cli: new RecordingPort('cli') };
let dedupe = 0;
const handle = (c: Core, destination: Destination, input: Parameters<Core['handle']>[0]['input'], isAdmin = false): Promise<Reply> =>
  c.handle({ input, destination, dedupeKey: `upgrade-${++dedupe}`, isAdmin });

beforeAll(async () => {
  redis = createRedis(REDIS_URL);
  await restoreFixture(redis, fixture, h.prefix);
  jobs = createJobsQueue(h.config, redis);
  bots = createCore({ config: h.config, secrets: { REDIS_URL }, ports: [ports.discord, ports.slack], redis, log });
  cliBot = createCore({ config: h.config, secrets: { REDIS_URL }, ports: [ports.cli], cliClientId: scenario.cliClientId, redis, log });
});

afterAll(async () => {
  await stopProcess(worker);
  await bots?.stop();
  await cliBot?.stop();
  await jobs?.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('upgrading a deployment of 6005a95', () => {
  it('reads every job, result and progress record it left through the current contract', async () => {
    const requests = new Map<string, JobRequest>();
    for (const state of ['wait', 'active', 'prioritized', 'delayed', 'completed', 'failed'] as const) {
      for (const j of await jobs.getJobs([state])) requests.set(j.id!, parseContract(JobRequest, j.data, `job ${j.id} (${state})`));
    }
    // each job the old bots queued, but the one cancelled while it waited (the cancel removed it) and the follower that
    // joined an identical job (no job of its own: its request is kept with the flight and in its served record)
    for (const [name, id] of Object.entries(scenario.jobs)) if (!['a-cancelled', 'b-follower'].includes(name)) expect(requests.has(id), name).toBe(true);
    expect(await bots.requestOf(job('b-follower'))).toMatchObject({ kind: 'imagine', prompt: 'a blue heron' });
    expect(await jobs.getJobState(job('b-running'))).toBe('active');
    // its queued and running jobs hold rate-limit slots and scheduling turns (released once they end: a test below)
    const old = Object.values(scenario.jobs);
    expect((await redis.zrange(`${h.prefix}:limits:leases`, '0', '-1')).filter((id) => old.includes(id))).toContain(job('b-running'));
    expect((await redis.hkeys(`${h.prefix}:sched:jobs`)).filter((id) => old.includes(id))).toContain(job('b-imagine'));
    expect(parseContract(JobProgress, (await jobs.getJob(job('b-running')))?.progress, 'progress')).toEqual(scenario.progressOfRunning);

    const handedOver: string[] = [];
    for (const name of [QueueNames.delivery('discord'), QueueNames.delivery('slack'), `${QueueNames.delivery('cli')}-${scenario.cliClientId}`]) {
      const q = createDeliveryQueue(h.config, redis, name);
      for (const d of await q.getJobs(['wait'])) handedOver.push(parseContract(JobResult, d.data, `delivery ${d.id}`).jobId);
      await q.close();
    }
    expect(handedOver.sort()).toEqual(Object.entries(scenario.jobs).filter(([n]) => n.startsWith('a-')).map(([, id]) => id).sort());
  });

  it('keeps saved settings, check and limit overrides, budgets and usage counters', async () => {
    const settings = new SettingsStore(redis, h.config);
    expect(await settings.get('user', discord('du1', 'dc1'))).toEqual(scenario.settings.discordUser);
    expect(await settings.get('channel', discord('dadmin', 'dc1'))).toEqual(scenario.settings.discordChannel);
    expect(await settings.get('user', slack('su1', 'sc1'))).toEqual(scenario.settings.slackUser);
    expect(await settings.get('channel', slack('sadmin', 'sc1'))).toEqual(scenario.settings.slackChannel);
    expect(await new CheckOverrides(redis, h.prefix).get('discord:g1:dc1')).toEqual({ match: true, matchThreshold: 0.4 });
    expect(await createLimiter(redis, h.config).channelLimit('slack:T1:sc1')).toEqual({ limit: { ...LIMIT, requestsPerWindow: 40, burst: 40 }, source: 'redis' });
    const usage = new Usage(redis, h.config);
    expect((await usage.budgets(discord('dadmin', 'dc1'))).channel).toEqual({ seconds: 5000, source: 'redis' });
    expect((await usage.today(discord('du2', 'dc3'))).channel.used).toBeGreaterThan(0);

    // what an admin or user sees asking for them
    const shown = [
      await handle(bots, discord('du1', 'dc1'), { command: 'settings', scope: 'user', action: 'show' }),
      await handle(bots, discord('dadmin', 'dc1'), { command: 'checks', action: 'show' }, true),
      await handle(bots, slack('sadmin', 'sc1'), { command: 'limits', action: 'show' }, true),
      await handle(bots, discord('dadmin', 'dc1'), { command: 'budget', action: 'show' }, true),
      await handle(bots, discord('dadmin', 'dc3'), { command: 'usage', days: 1 }, true),
    ];
    for (const r of shown) expect(r.kind, r.text).toBe('text');
    expect(shown.map((r) => r.text)).toEqual([
      expect.stringMatching(/16:9.*12 steps.*guidance 4\.5.*2 images.*blurry/),
      expect.stringMatching(/re-roll below 0\.4/),
      expect.stringMatching(/40 requests per hour/),
      expect.stringMatching(/this channel: 5,000 \(set by an admin\)/),
      expect.stringMatching(/#dc1 .*\n(.|\n)*@du2 /),
    ]);
  });

  it('a new worker runs the jobs it queued or was running, and new bots post every result once', async () => {
    worker = await startWorker(h);
    await bots.start();
    await cliBot.start();
    const port = (name: string) => (name.includes('cli') ? ports.cli : ['a-vary', 'a-describe', 'a-cancelled', 'b-ask', 'b-slack-private'].includes(name) ? ports.slack : ports.discord);
    const results = Object.fromEntries(await Promise.all(Object.keys(scenario.jobs).map(async (name) => [name, await port(name).waitFor(job(name), 60_000)] as const)));
    for (const name of Object.keys(scenario.jobs)) expect(port(name).count(job(name)), name).toBe(1);

    const failedOrCancelled = new Set(['a-fail', 'a-cancelled']);
    for (const [name, r] of Object.entries(results)) if (!failedOrCancelled.has(name)) expect(r.status, `${name}: ${JSON.stringify(r.error)}`).toBe('succeeded');
    expect(results['a-fail']).toMatchObject({ status: 'failed', error: { userFacing: true, message: expect.stringContaining('please-fail') } });
    expect(results['a-cancelled']?.status).toBe('cancelled');
    // the saved user defaults the old bot applied (2 images), the joined flight, the channel's saved no-log mode
    expect(results['a-imagine-two']?.images).toHaveLength(2);
    expect(results['b-follower']?.servedFrom).toBe('shared');
    expect(results['b-slack-private']?.destination).toMatchObject({ noLog: true });
    // every image posted with its bytes: the blobs the old version stored are read under this one
    for (const [name, r] of Object.entries(results)) {
      const posted = port(name).deliveries.find((d) => d.result.jobId === r.jobId);
      if (r.image) expect(Buffer.from(posted?.image ?? []).subarray(1, 4).toString(), name).toBe('PNG');
    }
  }, 180_000);

  it("leaves none of the old jobs' rate-limit slots, GPU-second reservations or scheduling turns held", async () => {
    // a slot kept for ever would count against its channel's maxConcurrent, a reservation against its budget
    const old = Object.values(scenario.jobs);
    const held = async () => {
      const [leases, reserved, scheduled] = await Promise.all([
        redis.zrange(`${h.prefix}:limits:leases`, '0', '-1'),
        redis.hkeys(`${h.prefix}:{usage}:resv`),
        redis.hkeys(`${h.prefix}:sched:jobs`),
      ]);
      return [...leases, ...reserved, ...scheduled].filter((id) => old.includes(id));
    };
    await until(async () => (await held()).length === 0 || undefined, 20_000, 'the old jobs released').catch(() => undefined);
    expect(await held()).toEqual([]);
  });

  it('an identical request is served from what the old worker cached', async () => {
    const reply = await handle(bots, discord('du9', 'dc3'), { command: 'imagine', prompt: 'a green owl', seed: 11, ditSteps: 2, decoderSteps: 2 });
    expect(reply).toMatchObject({ kind: 'queued', text: expect.stringMatching(/^Found in the cache/) });
  });

  it('buttons on the results it posted still act on their jobs', async () => {
    // A press is answered for the job's own place (the adapters' fromResultOf): its request, read from the jobs queue.
    const placeOf = async (jobId: string, platform: Destination['platform']) => {
      const request = await bots.requestOf(jobId);
      expect(request, jobId).toBeDefined();
      return request?.destination.platform === platform ? request.destination : undefined;
    };
    const acted: string[] = [];
    const act = async (d: Destination | undefined, input: Parameters<Core['handle']>[0]['input'], what: string) => {
      if (!d) return;
      const reply = await handle(bots, d, input);
      expect(reply.kind, `${what}: ${reply.text}`).toBe('queued');
      acted.push(what);
    };
    const imagesOf = (jobId: string) => scenario.delivered[jobId]?.images?.length ?? 1;
    // The fixture renders every result with both old renderers, so each kind of button is there on either platform;
    // a press acts only on a job of the renderer's platform (a Discord button is never on a Slack job's message).

    for (const [jobId, ids] of Object.entries(components.discord)) {
      for (const customId of ids) {
        const parsed = parseButtonId(customId);
        expect(parsed, customId).toMatchObject({ jobId });
        expect(isOurButtonId(customId)).toBe(true);
        const where = await placeOf(jobId, 'discord');
        if (parsed?.action === 'reroll') await act(where, { command: 'reroll', jobId }, customId);
        if (parsed?.action === 'vary') expect(parsed.index ?? 0, customId).toBeLessThan(imagesOf(jobId)); // the image is the message's attachment
        if (parsed?.action === 'imagine') {
          const prompt = describedPrompt(components.discordContent[jobId] ?? '', parsed.index ?? 0);
          expect(prompt, customId).toBeTruthy();
          await act(where ?? discord('du2', 'dc3'), { command: 'imagine', prompt: prompt ?? '' }, customId);
        }
      }
    }
    for (const ids of Object.values(components.discordSettingsRows)) for (const id of ids) expect(parseSettingsButton(id), id).toBeDefined();

    for (const [jobId, actions] of Object.entries(components.slack)) {
      for (const a of actions) {
        expect(isKnownAction(a.actionId), a.actionId).toBe(true);
        const where = await placeOf(jobId, 'slack');
        if (a.actionId === ACTION.imagineThis) {
          expect(describedJobOf(a.blockId)).toBe(jobId);
          await act(where, { command: 'imagine', prompt: a.value, from: jobId }, `${a.actionId} ${a.blockId}`);
          continue;
        }
        expect(a.value).toBe(jobId);
        if (a.actionId === ACTION.reroll) await act(where, { command: 'reroll', jobId }, `${a.actionId} ${jobId}`);
        else expect(varyIndex(a.actionId) ?? 0, a.actionId).toBeLessThan(imagesOf(jobId));
      }
    }
    expect(acted).toEqual(expect.arrayContaining([expect.stringMatching(/^b3:reroll:/), expect.stringMatching(/^b3:imagine:/), expect.stringMatching(/^blip3o_reroll/), expect.stringMatching(/^blip3o_imagine_this/)]));
    // what old bots show for a failure: the user-facing message, also for a code they do not know
    expect(components.failureTexts[job('a-fail')]).toContain('please-fail');
    expect(components.failureTexts.futureCode).toBe('Told by a newer worker.');
  });

  it("the Slack settings window it opened saves what it shows when submitted to this version", async () => {
    for (const [scope, modal] of Object.entries(components.slackSettingsModals) as ['user' | 'channel', Modal][]) {
      const target = parseMetadata(SettingsTarget, modal.private_metadata);
      expect(target, scope).toBeDefined();
      const submitted = settingsFromView(target!, submittedState(modal));
      expect('input' in submitted, JSON.stringify(submitted)).toBe(true);
      if (!('input' in submitted)) continue;
      const who = scope === 'user' ? slack('su1', 'sc1') : slack('sadmin', 'sc1');
      const reply = await handle(bots, who, submitted.input, scope === 'channel');
      expect(reply.kind, reply.text).toBe('text');
      expect(await new SettingsStore(redis, h.config).get(scope, who)).toEqual(scope === 'user' ? scenario.settings.slackUser : scenario.settings.slackChannel);
    }
  });

  it('what this version writes passes the old contract (old bots and workers still running beside it)', async () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true }).addFormat('uri', (s: string) => URL.canParse(s)); // zod's z.url()
    // what the old version's schema says against a value: [] when it takes it, else one line per problem
    const checker = (schema: object) => {
      const validate = ajv.compile(schema);
      return (value: unknown) => (validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message} ${JSON.stringify(e.params)}`));
    };
    const oldRequest = checker(oldSchemas.JobRequest);
    const oldResult = checker(oldSchemas.JobResult);
    const oldProgress = checker(oldSchemas.JobProgress);
    const png = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));
    const image = { bytes: png, name: 'x.png', contentType: 'image/png' };
    const queued = [
      await handle(bots, discord('du5', 'dc5'), { command: 'imagine', prompt: 'a new kite', seed: 1, count: 2, negative: 'fog' }),
      await handle(bots, slack('su5', 'sc5'), { command: 'vary', image, prompt: 'brighter', seed: 2 }),
      await handle(bots, discord('du5', 'dc5'), { command: 'ask', question: 'What is it?', image, history: [{ role: 'user', text: 'hi' }] }),
      await handle(bots, slack('su5', 'sc5'), { command: 'describe', image }),
    ];
    for (const r of queued) {
      expect(r.kind, r.text).toBe('queued');
      const data = (await jobs.getJob((r as { jobId: string }).jobId))?.data;
      expect(oldRequest(data), JSON.stringify(data)).toEqual([]);
    }
    const byOldWorker = new Set(Object.keys(scenario.delivered));
    const byNewWorker = [...ports.discord.deliveries, ...ports.slack.deliveries, ...ports.cli.deliveries].map((d) => d.result).filter((r) => !byOldWorker.has(r.jobId));
    expect(byNewWorker.length).toBeGreaterThan(8);
    for (const r of byNewWorker) expect(oldResult(r), r.jobId).toEqual([]);
    // the progress the new worker wrote on the job the old one was killed in, and any the bots showed
    const written = (await jobs.getJob(job('b-running')))?.progress;
    expect(written).toMatchObject({ jobId: job('b-running') });
    for (const p of [written, ...ports.discord.progress, ...ports.slack.progress, ...ports.cli.progress]) expect(oldProgress(p), JSON.stringify(p)).toEqual([]);

    // an error code added since: the old schema takes any string, and this version shows what it does not know by its message
    const future: JobResult = { ...byNewWorker[0]!, status: 'failed', image: undefined, images: undefined, answer: undefined, servedFrom: undefined, error: { code: 'a_code_added_later', message: 'Told by a newer worker.', userFacing: true } };
    const clean = JSON.parse(JSON.stringify(future)) as JobResult;
    expect(oldResult(clean)).toEqual([]);
    expect(parseContract(JobResult, clean, 'result')).toEqual(clean);
    expect(failureText(clean)).toBe('Told by a newer worker.');
    expect(resultMessage(clean, undefined).body.content).toBe('Told by a newer worker.');
  });
});

/** What Slack sends back on submit for a modal nobody edited: each input's initial value, by block and action id. */
function submittedState(modal: Modal): Parameters<typeof settingsFromView>[1] {
  const values: Parameters<typeof settingsFromView>[1] = {};
  for (const block of modal.blocks) {
    const e = block.element;
    if (block.type !== 'input' || !block.block_id || !e) continue;
    const actionId = String(e.action_id);
    if (e.type === 'static_select') values[block.block_id] = { [actionId]: { type: 'static_select', selected_option: (e.initial_option as { value: string } | undefined) ?? null } };
    else if (e.type === 'checkboxes') values[block.block_id] = { [actionId]: { type: 'checkboxes', selected_options: (e.initial_options as { value: string }[] | undefined) ?? [] } };
    else values[block.block_id] = { [actionId]: { type: String(e.type), value: typeof e.initial_value === 'string' ? e.initial_value : null } };
  }
  return values;
}
