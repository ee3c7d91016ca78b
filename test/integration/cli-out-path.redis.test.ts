// `npm run imagine -- … --out <missing folder>/fox.png` (audit 2026-12-07): the job was queued and run, the write failed,
// and the CLI retried the delivery with backoff for about 17 minutes, ignoring Ctrl-C and SIGTERM (its job had ended).
// Now it refuses at once, exit 2, before anything is queued.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJobsQueue, type JobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis, type Redis } from '../../src/redis.ts';
import { cleanup, exitWithin, makeHarness, REDIS_URL, spawnTs } from '../doubles/spine-harness.ts';

const h = makeHarness({});
let redis: Redis;
let queue: JobsQueue;

beforeAll(() => {
  redis = createRedis(REDIS_URL);
  queue = createJobsQueue(h.config, redis);
});

afterAll(async () => {
  await queue?.close();
  await cleanup(redis, h.prefix);
  await closeRedis(redis);
});

describe('CLI --out', () => {
  it('into a folder that does not exist: refused at once with what to do, exit 2, nothing queued', async () => {
    const missing = join(h.dir, 'no-such-folder');
    const cli = spawnTs('bots/cli/main.ts', h, ['imagine', 'a fox', '--out', join(missing, 'fox.png')]);
    const code = await exitWithin(cli, 30_000);
    if (code === 'still running') cli.child.kill('SIGKILL');
    expect(code, cli.output()).toBe(2);
    expect(cli.output()).toContain(`The folder ${missing} does not exist: create it (mkdir -p ${missing})`);
    expect(await queue.getJobCounts('wait', 'active', 'prioritized', 'delayed')).toEqual({ wait: 0, active: 0, prioritized: 0, delayed: 0 });
  }, 60_000);
});
