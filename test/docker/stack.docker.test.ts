// The real images and the real compose files, end to end (opt-in: DOCKER_TESTS=1, `npm run test:docker`, which runs
// test/docker/setup.sh first). Builds the bot image and the worker's `cpu` target from docker/Dockerfile.*, with the
// base images swapped by build args for the local stand-ins setup.sh makes (no registry here), and starts
// docker-compose.yml + docker-compose.cpu.yml + an override written below: host networking so every container reaches
// the fake Discord and the fake hub on loopback, its own Redis port, the test's config/local.yaml, short healthcheck
// intervals. The worker downloads the tiny checkpoint from the fake hub into the shared model-cache volume, converts
// it and serves jobs with the shipped pipeline. Then: every healthcheck healthy; /imagine → one PNG; a reply-with-
// mention question → one answer; `docker compose restart redis` with jobs queued → none lost; `docker compose kill
// worker` mid-job, `up` again → the image arrives exactly once; a restarted bot does not register its unchanged
// commands again; every container runs as non-root; Redis asks for the password in .env, which every service gives;
// stop is a clean SIGTERM exit. Everything it made (containers, network, volumes, the images it built) is removed at
// the end, also when a step fails.
import { randomUUID } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { freePort } from '../doubles/free-port.ts';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import sharp from 'sharp';
import { Document, stringify, type Node as YamlNode } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/config/load.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { samplePng } from '../conformance/platform-adapter.case.ts';
import { FakeDiscord, type FakeInteraction, type FakeMessage } from '../fakes/discord/server.ts';
import { sh, until as untilDone } from './sh.ts';
import { startFakeHub, type FakeHub, type FakeHubFile } from '../fakes/hub/server.ts';

const REPO = 'BLIP3o/BLIP3o-Model-4B';
const NODE_BASE = process.env.DOCKER_TEST_NODE_IMAGE ?? 'blip3o-standin/node:20';
const REDIS_BASE = process.env.DOCKER_TEST_REDIS_IMAGE ?? 'blip3o-standin/redis:7';
/** Keep the built images (and reuse them when present) between runs while developing; the default removes them. */
const KEEP_IMAGES = process.env.DOCKER_TEST_KEEP_IMAGES === '1';
const run = randomUUID().slice(0, 8);
const project = `blip3o-dockertest-${run}`;
const tag = KEEP_IMAGES ? 'dev' : run;
const BOT_IMAGE = `blip3o-test-bot:${tag}`;
const WORKER_IMAGE = `blip3o-test-worker-cpu:${tag}`;
const BOT_LIMIT_BYTES = 350 * 1000 * 1000;
const REDIS_PASSWORD = randomUUID().replaceAll('-', '');

let work: string;
let hub: FakeHub | undefined;
let fake: FakeDiscord | undefined;
let composeArgs: string[] = [];
let ports: { redis: number; bot: number; worker: number };
let started = false;
const timings: Record<string, number> = {};

const compose = (args: string[], options: { timeoutMs?: number; allowFail?: boolean } = {}) => sh('docker', [...composeArgs, ...args], options);

function filesUnder(dir: string): FakeHubFile[] {
  const out: FakeHubFile[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push({ path: relative(dir, p), bytes: readFileSync(p) });
    }
  };
  walk(dir);
  return out;
}

interface PsEntry {
  Service: string;
  State: string;
  Health: string;
  ExitCode: number;
}

async function ps(): Promise<PsEntry[]> {
  const out = (await compose(['ps', '--all', '--format', 'json'])).stdout.trim();
  if (!out) return [];
  // compose 2.21+ prints one JSON object per line
  return out.split('\n').map((l) => JSON.parse(l) as PsEntry);
}

/** `until` of ./sh.ts, with this project's last 60 log lines when it times out. */
const until = <T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>) =>
  untilDone(what, timeoutMs, check, async () => (await compose(['logs', '--no-color', '--tail', '60'], { allowFail: true })).stdout);

async function waitHealthy(services: string[], timeoutMs: number): Promise<void> {
  await until(`${services.join(', ')} healthy`, timeoutMs, async () => {
    const entries = await ps();
    return services.every((s) => entries.some((e) => e.Service === s && e.State === 'running' && e.Health === 'healthy')) ? true : undefined;
  });
}

const isPng = (b: Uint8Array) => b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
/** The successful final edits of an interaction's original message that carried an image. */
const imageEdits = (i: FakeInteraction) =>
  fake!.requestsTo('PATCH', new RegExp(`/webhooks/\\d+/${i.token}/messages/@original$`)).filter((r) => r.files.length > 0 && r.status === 200);
const imagine = (prompt: string) => fake!.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: prompt }, { name: 'steps', type: 4, value: 4 }] });

async function waitForImage(i: FakeInteraction, timeoutMs: number): Promise<FakeMessage> {
  return fake!.waitFor(() => {
    const m = fake!.original(i);
    return m && m.attachments.length > 0 ? m : undefined;
  }, timeoutMs, `the image of interaction ${i.id}`);
}

async function expectOnePng(i: FakeInteraction): Promise<void> {
  const m = await waitForImage(i, 240_000);
  // a moment for a duplicate to show up, were there one
  await new Promise((r) => setTimeout(r, 1500));
  expect(imageEdits(i)).toHaveLength(1);
  expect(fake!.channelMessages().filter((x) => x.interactionId === i.id && x.attachments.length > 0)).toHaveLength(1);
  const bytes = new Uint8Array(await (await fetch(m.attachments[0]!.url)).arrayBuffer());
  expect(isPng(bytes)).toBe(true);
  const meta = await sharp(bytes).metadata();
  expect(meta.width).toBeGreaterThan(0);
}

beforeAll(async () => {
  const t0 = Date.now();
  work = mkdtempSync(join(tmpdir(), 'dockertest-'));
  chmodSync(work, 0o755); // the containers' users (uid 1000) read the config mounted from here
  makeTiny(join(work, 'published'));
  hub = await startFakeHub({ repo: REPO, files: filesUnder(join(work, 'published')) });
  fake = await FakeDiscord.start({ heartbeatIntervalMs: 5_000, callbackWindowMs: 10_000 });
  ports = { redis: await freePort(), bot: await freePort(), worker: await freePort() };

  // The operator's way in: config/local.yaml next to default.yaml, mounted read-only at /app/config.
  const config = join(work, 'config');
  mkdirSync(config);
  copyFileSync(join(repoRoot, 'config/default.yaml'), join(config, 'default.yaml'));
  const off = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 };
  writeFileSync(
    join(config, 'local.yaml'),
    stringify({
      queue: { prefix: `dockertest-${run}`, lockDurationMs: 6000, stalledIntervalMs: 3000, backoffMs: 500, deliveryBackoffMs: 500 },
      http: { host: '127.0.0.1', botPort: ports.bot },
      worker: { healthPort: ports.worker },
      model: { hubId: REPO },
      discord: { downloadHosts: [new URL(fake.origin).host], progressEditIntervalMs: 200, restRetries: 1 },
      limits: { channel: off, user: off, workspace: off },
      understanding: { maxNewTokens: 8 },
    }),
  );
  for (const f of ['default.yaml', 'local.yaml']) chmodSync(join(config, f), 0o644);
  chmodSync(config, 0o755);

  // .env as an operator writes it from config/.env.example (Slack left empty: that bot must stay down, saying why).
  const env = join(work, '.env');
  writeFileSync(
    env,
    [
      `REDIS_URL=redis://127.0.0.1:${ports.redis}`,
      `REDIS_PASSWORD=${REDIS_PASSWORD}`, // Redis asks for it; every service puts it into REDIS_URL
      `DISCORD_TOKEN=${fake.token}`,
      `DISCORD_APPLICATION_ID=${fake.appId}`,
      `DISCORD_API_BASE_URL=${fake.apiBase}`,
      'SLACK_BOT_TOKEN=',
      'SLACK_APP_TOKEN=',
      'HF_TOKEN=hf_dockertest_only',
      `HF_ENDPOINT=${hub.url}`,
      'LOG_LEVEL=info',
      '',
    ].join('\n'),
  );

  const health = (port: number) => ({ test: ['CMD', 'docker/healthcheck.sh', String(port), '/healthz'], interval: '2s', start_period: '120s' });
  const override = {
    services: {
      redis: {
        image: REDIS_BASE,
        network_mode: 'host',
        command: ['--bind', '127.0.0.1', '--port', String(ports.redis), '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '300 10', '--dir', '/data'], // redis-server's options (the entrypoint adds its config file)
        // the shipped healthcheck, on this port
        healthcheck: { test: ['CMD-SHELL', `export REDISCLI_AUTH="$$REDIS_PASSWORD"; redis-cli -p ${ports.redis} ping | grep -q PONG`], interval: '1s', start_period: '20s' },
      },
      discord: {
        build: { args: { NODE_IMAGE: NODE_BASE } },
        image: BOT_IMAGE,
        network_mode: 'host',
        volumes: [`${config}:/app/config:ro`],
        healthcheck: health(ports.bot),
      },
      slack: {
        build: { args: { NODE_IMAGE: NODE_BASE } },
        image: BOT_IMAGE,
        network_mode: 'host',
        volumes: [`${config}:/app/config:ro`],
      },
      worker: {
        build: { args: { NODE_IMAGE: NODE_BASE } },
        image: WORKER_IMAGE,
        network_mode: 'host',
        volumes: [`${config}:/app/config:ro`, 'model-cache:/app/models'],
        healthcheck: health(ports.worker),
      },
    },
  };
  // `!override` (compose ≥ 2.24) replaces the base file's volume list (./config) instead of adding to it.
  const doc = new Document(override);
  for (const service of ['discord', 'slack', 'worker']) (doc.getIn(['services', service, 'volumes'], true) as YamlNode).tag = '!override';
  writeFileSync(join(work, 'docker-compose.test.yml'), doc.toString());
  composeArgs = [
    'compose', '--project-name', project, '--project-directory', repoRoot, '--env-file', env,
    '-f', join(repoRoot, 'docker-compose.yml'), '-f', join(repoRoot, 'docker-compose.cpu.yml'), '-f', join(work, 'docker-compose.test.yml'),
  ];
  timings.prepare = Date.now() - t0;
}, 120_000);

afterAll(async () => {
  try {
    if (composeArgs.length > 0) {
      if (process.env.DOCKER_TEST_LOGS === '1') console.log((await compose(['logs', '--no-color'], { allowFail: true })).stdout);
      await compose(['down', '--volumes', '--remove-orphans', '--timeout', '10'], { allowFail: true, timeoutMs: 180_000 });
    }
    if (!KEEP_IMAGES) await sh('docker', ['image', 'rm', '--force', BOT_IMAGE, WORKER_IMAGE], { allowFail: true });
  } finally {
    rmSync(join(repoRoot, 'docker/build-ca/dockertest-host-ca.crt'), { force: true });
    await fake?.close();
    await hub?.close();
    if (work) rmSync(work, { recursive: true, force: true });
    console.log(`docker test timings (ms): ${JSON.stringify(timings)}`);
  }
}, 300_000);

describe('docker compose stack (real images, CPU worker)', () => {
  it('builds the bot image and the CPU worker target from the real Dockerfiles; the bot image stays small', async () => {
    const t0 = Date.now();
    // This machine's network intercepts TLS: npm in the build needs its CA (used in the dependency stages only).
    if (existsSync('/etc/ssl/certs/ca-certificates.crt')) copyFileSync('/etc/ssl/certs/ca-certificates.crt', join(repoRoot, 'docker/build-ca/dockertest-host-ca.crt'));
    const have = async (image: string) => (await sh('docker', ['image', 'inspect', image], { allowFail: true })).code === 0;
    if (!(KEEP_IMAGES && (await have(BOT_IMAGE)) && (await have(WORKER_IMAGE)))) {
      await compose(['build', 'discord', 'worker'], { timeoutMs: 1_500_000 });
    }
    rmSync(join(repoRoot, 'docker/build-ca/dockertest-host-ca.crt'), { force: true });
    timings.build = Date.now() - t0;

    const size = async (image: string) => Number((await sh('docker', ['image', 'inspect', '--format', '{{.Size}}', image])).stdout.trim());
    const sizes = { bot: await size(BOT_IMAGE), worker: await size(WORKER_IMAGE), nodeBase: await size(NODE_BASE) };
    console.log(`image sizes (MB): bot ${(sizes.bot / 1e6).toFixed(1)}, cpu worker ${(sizes.worker / 1e6).toFixed(1)}, node base ${(sizes.nodeBase / 1e6).toFixed(1)}`);
    expect(sizes.bot).toBeLessThanOrEqual(BOT_LIMIT_BYTES);
    // the CA used for the build is not in either image
    for (const image of [BOT_IMAGE, WORKER_IMAGE]) {
      const r = await sh('docker', ['run', '--rm', '--entrypoint', 'sh', image, '-c', 'ls /tmp/build-ca /tmp/build-ca.pem 2>&1; true']);
      expect(r.stdout).toMatch(/No such file/);
      expect(r.stdout).not.toMatch(/\.crt|\.pem$/m);
    }
  }, 1_600_000);

  it('starts; every healthcheck turns healthy; the worker fetches and converts the model; the Discord bot registers its commands', async () => {
    const t0 = Date.now();
    await compose(['up', '--detach', '--no-build'], { timeoutMs: 300_000 });
    started = true;
    await waitHealthy(['redis', 'discord', 'worker'], 300_000);
    timings.healthy = Date.now() - t0;
    // the slack bot has no tokens in .env: it says so and stays down (exit 0, restart on-failure)
    const slack = (await ps()).find((e) => e.Service === 'slack');
    expect(slack?.State).toBe('exited');
    expect(slack?.ExitCode).toBe(0);
    expect((await compose(['logs', '--no-color', 'slack'])).stdout).toMatch(/slack bot not started: set SLACK_BOT_TOKEN/);

    // worker readiness: fetch + convert into the model-cache volume, then the model is loaded
    await until('the worker ready', 600_000, async () => ((await fetch(`http://127.0.0.1:${ports.worker}/readyz`)).status === 200 ? true : undefined));
    timings.workerReady = Date.now() - t0;
    expect(hub!.requests.length).toBeGreaterThan(0);
    expect(hub!.requests.every((r) => r.authorization === 'Bearer hf_dockertest_only')).toBe(true);
    expect((await compose(['exec', '-T', 'worker', 'ls', '/app/models/onnx/manifest.json'])).code).toBe(0);

    // slash commands registered at bot start, without a separate step
    expect(fake!.commands.global.map((c) => c.name)).toEqual(expect.arrayContaining(['imagine', 'ask', 'blip3o-admin']));
    expect(fake!.requestsTo('PUT', new RegExp(`/applications/${fake!.appId}/commands$`))).toHaveLength(1);
  }, 1_000_000);

  it('each service sees only its own secrets, and every container runs as non-root', async () => {
    expect(started).toBe(true);
    const env = async (service: string) => (await compose(['exec', '-T', service, 'sh', '-c', 'env'])).stdout;
    const worker = await env('worker');
    expect(worker).toMatch(/^HF_TOKEN=hf_dockertest_only$/m);
    expect(worker).not.toMatch(/DISCORD_TOKEN|SLACK_/);
    const discord = await env('discord');
    expect(discord).toMatch(/^DISCORD_TOKEN=/m);
    expect(discord).not.toMatch(/HF_TOKEN|SLACK_/);
    // Redis asks for REDIS_PASSWORD (.env), which the bots and the worker, connected above, put into REDIS_URL
    const anonymous = await compose(['exec', '-T', 'redis', 'redis-cli', '-p', String(ports.redis), 'ping'], { allowFail: true });
    expect(anonymous.stdout + anonymous.stderr).toMatch(/NOAUTH/);
    for (const service of ['discord', 'worker']) expect(await env(service), service).toContain(`REDIS_PASSWORD=${REDIS_PASSWORD}`);
    for (const service of ['redis', 'discord', 'worker']) {
      const uid = (await compose(['exec', '-T', service, 'id', '-u'])).stdout.trim();
      expect(uid, service).toMatch(/^\d+$/);
      expect(uid, `${service} runs as root`).not.toBe('0');
      // and the main process too, not only what exec starts
      const top = (await sh('docker', ['top', (await compose(['ps', '-q', service])).stdout.trim(), '-o', 'pid,uid,args'])).stdout;
      const rows = top.trim().split('\n').slice(1);
      expect(rows.length, service).toBeGreaterThan(0);
      for (const row of rows) expect(row.trim().split(/\s+/)[1], `${service}: ${row}`).not.toBe('0');
    }
  }, 120_000);

  it('/imagine through the fake Discord → one PNG', async () => {
    expect(started).toBe(true);
    const t0 = Date.now();
    await expectOnePng(imagine('a red fox in the snow'));
    timings.imagine = Date.now() - t0;
  }, 300_000);

  it('a reply mentioning the bot on an image → one answer', async () => {
    expect(started).toBe(true);
    const image = fake!.postUserMessage({ content: 'look', attachments: [fake!.addAttachment({ bytes: await samplePng(64), filename: 'garden.png', contentType: 'image/png' })] });
    const question = fake!.postUserMessage({ content: 'what is in this picture?', mentionBot: true, replyTo: image.id });
    const answers = () => fake!.channelMessages().filter((x) => x.author.id === fake!.appId && x.referenceId === question.id);
    const answer = await fake!.waitFor(() => {
      const m = answers()[0];
      return m && !m.content.startsWith('⏳') && !/Looking|Queued|Writing|Loading/.test(m.content) ? m : undefined;
    }, 240_000, 'the answer');
    expect(answer.content.length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 1500));
    expect(answers()).toHaveLength(1);
  }, 300_000);

  it('docker compose restart redis with jobs queued → none lost', async () => {
    expect(started).toBe(true);
    // the worker is stopped, so the jobs wait in Redis while it restarts
    const stop0 = Date.now();
    await compose(['stop', 'worker'], { timeoutMs: 120_000 });
    timings.stopWorker = Date.now() - stop0;
    // SIGTERM reached node through init (tini) and the worker shut down cleanly, well inside stop_grace_period (60 s)
    expect((await ps()).find((e) => e.Service === 'worker')).toMatchObject({ State: 'exited', ExitCode: 0 });
    const queued = ['a lighthouse at dusk', 'a bowl of ramen', 'a paper boat'].map((p) => imagine(p));
    for (const i of queued) {
      await fake!.waitFor(() => fake!.original(i)?.content.includes('Queued') || undefined, 60_000, 'the Queued reply');
    }
    await new Promise((r) => setTimeout(r, 1500)); // past appendfsync everysec
    await compose(['restart', 'redis'], { timeoutMs: 120_000 });
    await waitHealthy(['redis'], 120_000);
    await compose(['start', 'worker'], { timeoutMs: 120_000 });
    for (const i of queued) await expectOnePng(i);
  }, 900_000);

  it('docker compose kill worker mid-job, then up again → the image arrives exactly once', async () => {
    expect(started).toBe(true);
    await waitHealthy(['worker'], 300_000);
    await until('the worker ready', 300_000, async () => ((await fetch(`http://127.0.0.1:${ports.worker}/readyz`)).status === 200 ? true : undefined));
    const i = imagine('a clock tower in the rain');
    // mid-job: the worker has reported a stage past Queued
    await fake!.waitFor(() => /Reading the prompt|Drawing|Decoding|Loading/.test(fake!.original(i)?.content ?? '') || undefined, 240_000, 'the job running');
    expect(imageEdits(i)).toHaveLength(0);
    await compose(['kill', 'worker'], { timeoutMs: 60_000 });
    await compose(['up', '--detach', '--no-build', 'worker'], { timeoutMs: 120_000 });
    await expectOnePng(i);
  }, 900_000);

  it('docker compose restart discord: the bot comes back and does not register its unchanged commands again', async () => {
    expect(started).toBe(true);
    const commandsRoute = new RegExp(`/applications/${fake!.appId}/commands$`);
    const gets = fake!.requestsTo('GET', commandsRoute).length;
    await compose(['restart', 'discord'], { timeoutMs: 120_000 });
    await until('the restarted bot compared its commands', 180_000, async () => (fake!.requestsTo('GET', commandsRoute).length > gets ? true : undefined));
    await waitHealthy(['discord'], 180_000);
    expect(fake!.requestsTo('PUT', commandsRoute)).toHaveLength(1);
    // and it serves again
    await expectOnePng(imagine('a kite over the sea'));
  }, 500_000);

  it('docker compose stop: the bot and Redis exit cleanly on SIGTERM', async () => {
    expect(started).toBe(true);
    const t0 = Date.now();
    await compose(['stop', 'discord', 'worker', 'redis'], { timeoutMs: 180_000 });
    timings.stopAll = Date.now() - t0;
    const entries = await ps();
    for (const service of ['discord', 'worker', 'redis']) expect(entries.find((e) => e.Service === service), service).toMatchObject({ State: 'exited', ExitCode: 0 });
  }, 200_000);
});
