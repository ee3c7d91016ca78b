// A Redis that asks for a password (requirepass), in each REDIS_URL form: one server, Sentinel (the primary and its
// replica ask; the sentinels do not) and Cluster. A real worker process and a CLI core on the URL with the password:
// every connection the services open (BullMQ's duplicates, the blocking ones, QueueEvents, the replica fence's, each
// Cluster node's) must AUTH, or the job is never taken or never delivered. The worker gets the password as compose
// hands it over (REDIS_PASSWORD beside a REDIS_URL without one). A wrong password is refused at start with
// a message that says what to fix, not retried for ever.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createCore } from '../../bots/core/submit.ts';
import { loadSecrets } from '../../src/config/load.ts';
import { makeHarness, spawnWithConfig, startWorker, type Proc } from '../doubles/spine-harness.ts';
import { startCluster, startRedisServer, startSentinelSet } from '../doubles/redis-processes.ts';
import { expectDeliveredOnce, startClients, stopAll, submit, type LoadClient } from '../doubles/failover-load.ts';

const password = `p-${randomUUID().slice(0, 8)}`;

/** Each form, started with the password: its REDIS_URL (with the password) and how to stop it. */
const forms: [string, () => Promise<{ url: string; stop(): Promise<void> }>][] = [
  [
    'one server',
    async () => {
      const server = await startRedisServer(`requirepass ${password}\n`);
      return { url: `redis://:${password}@127.0.0.1:${server.port}`, stop: () => server.kill() };
    },
  ],
  ['Sentinel', () => startSentinelSet(`a${randomUUID().slice(0, 6)}`, password)],
  ['Cluster', () => startCluster({ password })],
];

describe.each(forms)('a Redis with a password: %s', (_, start) => {
  const h = makeHarness({
    redis: { acceptReplicas: 0 },
    queue: { prefix: `{auth-${randomUUID().slice(0, 8)}}` },
    worker: { concurrency: 2, pipelineExtra: { stepDelayMs: 5 } },
  });
  let redis: { url: string; stop(): Promise<void> } | undefined;
  let worker: Proc | undefined;
  let clients: LoadClient[] = [];

  afterAll(() => stopAll(clients, worker, redis), 60_000);

  it('runs and delivers jobs through every connection, with the password in REDIS_URL (the cores) or REDIS_PASSWORD (the worker)', async () => {
    redis = await start();
    // as compose hands it over: the address in REDIS_URL, the password in REDIS_PASSWORD
    worker = await startWorker(h, { REDIS_URL: redis.url.replace(`:${password}@`, ''), REDIS_PASSWORD: password });
    clients = await startClients(h, redis.url, 2);
    const replies = await Promise.all([0, 1, 2, 3].map((i) => submit(clients, i)));
    expect(replies.map((r) => r.reply.kind)).toEqual(['queued', 'queued', 'queued', 'queued']);
    await expectDeliveredOnce({ label: `auth (${_})`, h, url: redis.url, clients, worker }, replies, Date.now());
  }, 180_000);

  it('refuses a wrong password at start, saying so: a bot core and a worker process', async () => {
    const wrong = redis!.url.replace(`:${password}@`, ':not-the-password@');
    const said = /^Redis at .+ refused the user name or password it was given \("(WRONGPASS|ERR|NOAUTH).*"\)\. Put the password Redis asks for in REDIS_PASSWORD, or in REDIS_URL \(redis:\/\/\[user\]:<password>@host:port\), not both\.$/;
    const core = createCore({ config: h.config, secrets: loadSecrets({ REDIS_URL: wrong }), ports: [], cliClientId: randomUUID() });
    // Before: start() never settled, ioredis logging a WRONGPASS a second per connection, and stop() hung after it.
    await expect(core.start()).rejects.toThrow(said);
    await core.stop();
    const failed = spawnWithConfig('worker/main.ts', h.configFile, [], { REDIS_URL: wrong });
    const code = await new Promise<number | null>((resolve) => failed.child.once('exit', resolve));
    expect(code).toBe(1);
    expect(failed.output()).toMatch(/worker failed to start: Redis at .+ refused the user name or password it was given/);
  }, 120_000);
});
