// A Redis that speaks only TLS, in each REDIS_URL form: rediss:// (one server), rediss+sentinel:// (the sentinels and
// the primary they name) and rediss+cluster:// (every node; replication and the cluster bus too), with certificates
// from a throwaway CA that the services trust through Node's NODE_EXTRA_CA_CERTS, as a self-hoster with a private CA
// would. A real worker process and a real CLI process (`npm run imagine`), so nothing in this test process stands in
// for either: the CLI writes the PNG only if every connection of both (BullMQ's, the fence's, each node's) got through.
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHarness, spawnTs, startWorker, stopProcess, type Proc } from '../doubles/spine-harness.ts';
import { makeTlsFiles, startCluster, startRedisServer, startSentinelSet, type TlsFiles } from '../doubles/redis-processes.ts';

let tls: TlsFiles;

beforeAll(() => {
  tls = makeTlsFiles();
});

/** Each form, started speaking only TLS: its REDIS_URL and how to stop it. */
const forms: [string, () => Promise<{ url: string; stop(): Promise<void> }>][] = [
  [
    'rediss://',
    async () => {
      const server = await startRedisServer('', undefined, tls);
      return { url: `rediss://127.0.0.1:${server.port}`, stop: () => server.kill() };
    },
  ],
  ['rediss+sentinel://', () => startSentinelSet('tls', undefined, tls)],
  ['rediss+cluster://', () => startCluster({ tls })],
];

describe.each(forms)('a Redis that speaks only TLS: %s', (form, start) => {
  const h = makeHarness({ queue: { prefix: '{tls}', cliRedisWaitMs: 3_000 }, worker: { pipelineExtra: { stepDelayMs: 5 } } });
  let redis: { url: string; stop(): Promise<void> } | undefined;
  let worker: Proc | undefined;

  afterAll(async () => {
    await stopProcess(worker);
    await redis?.stop();
  }, 60_000);

  it('runs /imagine end to end: a worker process and the CLI, trusting a private CA through NODE_EXTRA_CA_CERTS', async () => {
    redis = await start();
    expect(redis.url.startsWith(form.replace('://', ''))).toBe(true);
    const env = { REDIS_URL: redis.url, NODE_EXTRA_CA_CERTS: tls.ca };
    worker = await startWorker(h, env);
    const out = join(h.dir, 'tls-fox.png');
    const cli = spawnTs('bots/cli/main.ts', h, ['imagine', 'a fox behind glass', '--seed', '3', '--out', out], env);
    await cli.waitFor(`wrote ${out} (64×64, seed 3)`, 90_000);
    expect(await new Promise((r) => cli.child.once('exit', r))).toBe(0);
    expect((await sharp(out).metadata()).format).toBe('png');
  }, 180_000);

  it('refuses a server whose certificate it does not trust (no NODE_EXTRA_CA_CERTS), saying what to do', async () => {
    const cli = spawnTs('bots/cli/main.ts', h, ['imagine', 'a fox', '--out', join(h.dir, 'never.png')], { REDIS_URL: redis!.url });
    const code = await new Promise((r) => cli.child.once('exit', r));
    expect(code).toBe(3); // the CLI's "Redis is not usable" exit
    // One server: at once, the reason named. Sentinel's and Cluster's connectors hide the reason ("Connection is
    // closed.", "Failed to refresh slots cache."): the CLI gives up after its wait (queue.cliRedisWaitMs) with the hint.
    if (form !== 'rediss://') expect(cli.output()).toMatch(/Cannot reach Redis at .+ If it runs, check that its TLS certificate is trusted here \(NODE_EXTRA_CA_CERTS\)\./);
    else expect(cli.output()).toMatch(/Redis at .+ presented a TLS certificate this process does not trust \(".*certificate.*"\)\. Give Node the CA that signed it \(NODE_EXTRA_CA_CERTS=/);
  }, 120_000);
});
