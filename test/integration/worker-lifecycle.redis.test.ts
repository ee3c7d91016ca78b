// The worker process's start and stop around its long steps (worker/main.ts, worker/setup.ts):
//   - Redis is checked before the model is set up: a refused password ends the start before the hub is asked
//     (docs/self-hosting.md: "ends a worker's start at once"), not after a first start's download and conversion;
//   - SIGTERM during a first start's conversion stops the `model convert` child and releases the setup lock (before, the
//     orphaned child kept writing onnxDir and the next start took the lock over after 120 s beside it);
//   - SIGTERM with a job running longer than worker.stopGraceMs hands the job back: another worker runs it at once
//     (before, the worker waited for the job with no deadline and compose's SIGKILL left its lock to expire).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { createJobsQueue } from '../../src/jobs/queue.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { startRedisServer } from '../doubles/redis-processes.ts';
import { cleanup, exitWithin, makeHarness, REDIS_URL, runs, spawnTs, spawnWithConfig, startWorker, startWorkerProcess, stopProcess, until, type Proc } from '../doubles/spine-harness.ts';
import { startFakeHub } from '../fakes/hub/server.ts';

const procs: Proc[] = [];
afterAll(async () => {
  for (const p of procs) await stopProcess(p);
}, 60_000);

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The shipped pipeline's config (the worker sets the model up, worker/setup.ts), its model in the harness's folder. */
function shipped(model: Record<string, unknown>): { configFile: string; snapshotDir: string } {
  const h = makeHarness({ worker: { pipelineModule: 'worker/pipeline/blip3o.ts' } });
  const snapshotDir = join(h.dir, 'snapshot');
  const tree = parse(readFileSync(h.configFile, 'utf8')) as Record<string, unknown>;
  const configFile = join(h.dir, 'shipped.yaml');
  writeFileSync(configFile, stringify({ ...tree, model: { dtype: 'fp32', executionProvider: 'cpu', convertOnStart: true, snapshotDir, onnxDir: join(h.dir, 'onnx'), ...model } }));
  return { configFile, snapshotDir };
}

describe('worker start-up', () => {
  it('a Redis password the server refuses ends the start before the model is set up: the hub is never asked', async () => {
    const redis = await startRedisServer('requirepass the-password\n');
    const hub = await startFakeHub({ repo: 'BLIP3o/BLIP3o-Model-4B', files: [{ path: 'config.json', bytes: Buffer.from('{}') }] });
    try {
      const { configFile } = shipped({ hubId: 'BLIP3o/BLIP3o-Model-4B', hubUrl: hub.url });
      const worker = spawnWithConfig('worker/main.ts', configFile, [], { REDIS_URL: `redis://:not-the-password@127.0.0.1:${redis.port}` });
      procs.push(worker);
      expect(await exitWithin(worker, 60_000)).toBe(1);
      expect(worker.output()).toMatch(/worker failed to start: Redis at .+ refused the user name or password it was given/);
      expect(hub.requests.map((r) => r.url)).toEqual([]);
    } finally {
      await hub.close();
      await redis.kill();
    }
  }, 90_000);

  it('SIGTERM during the first start\'s conversion stops the convert child, releases the setup lock and exits 0', async () => {
    const { configFile, snapshotDir } = shipped({ hubId: '' });
    makeTiny(snapshotDir);
    const worker = spawnWithConfig('worker/main.ts', configFile);
    procs.push(worker);
    await worker.waitFor('converting the model to ONNX', 60_000);
    const children = await until(() => {
      const pids = execFileSync('pgrep', ['-P', String(worker.child.pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
      return pids.length > 0 && pids;
    }, 10_000, 'the convert child');
    try {
      worker.child.kill('SIGTERM');
      const exit = await exitWithin(worker, 20_000);
      // the worker exits only once its child has: nothing writes onnxDir after the lock is gone
      expect({ exit, childrenRunning: children.filter(alive), lockLeft: existsSync(`${snapshotDir}.setup-lock`) }).toEqual({ exit: 0, childrenRunning: [], lockLeft: false });
      expect(worker.output()).toMatch(/stopping the conversion/);
    } finally {
      for (const pid of children.filter(alive)) process.kill(pid, 'SIGKILL');
    }
  }, 120_000);
});

describe('worker stop', () => {
  // Before: the host retried the thread for ever and the worker stayed ready, holding the job's retry (waiting for room
  // on the dead thread) for good: no other worker could run it.
  it('a model thread that cannot be restarted (the GPU lost): the worker hands its jobs back and exits 1; another worker delivers', async () => {
    // threadRestartMs: the same five failed restarts, 0.2 s to 1.6 s apart (≈ 3 s) instead of 2 s to 16 s (≈ 30 s)
    const h = makeHarness({ queue: { backoffMs: 200 }, worker: { threadRestartMs: 100, pipelineExtra: { failures: { '[boom]': 'crash' } } } });
    const flag = join(h.dir, 'gpu-gone');
    const tree = parse(readFileSync(h.configFile, 'utf8')) as { worker: { pipelineExtra: Record<string, unknown> } };
    writeFileSync(h.configFile, stringify({ ...tree, worker: { ...tree.worker, pipelineExtra: { ...tree.worker.pipelineExtra, load: `fail-while:${flag}` } } }));
    const configB = join(h.dir, 'b.yaml');
    writeFileSync(configB, stringify({ ...tree, worker: { ...tree.worker, pipelineExtra: { ...tree.worker.pipelineExtra, failures: {} } } })); // B's threads load
    const a = await startWorker(h);
    procs.push(a);
    writeFileSync(flag, ''); // from now on no model thread of A loads
    const out = join(h.dir, 'fox.png');
    const cli = spawnTs('bots/cli/main.ts', h, ['imagine', '[boom] a fox', '--seed', '7', '--out', out]);
    procs.push(cli);

    expect(await exitWithin(a, 90_000)).toBe(1); // five restarts fail over ≈ 3 s
    expect(a.output()).toMatch(/"msg":"a model thread could not be restarted: handing the jobs back and exiting so that the worker is restarted"/);
    const b = await startWorkerProcess(configB);
    procs.push(b);
    await cli.waitFor(`wrote ${out}`, 30_000);
    expect(cli.output().match(/wrote /g)).toHaveLength(1);
    expect(runs(h).filter((r) => r.kind === 'generate').map((r) => r.pid === b.child.pid).at(-1)).toBe(true);
  }, 180_000);

  it('SIGTERM with a job running past worker.stopGraceMs: the job goes back to the queue, not failed, and another worker delivers it at once', async () => {
    // A's steps take 20 s each (and ignore an abort until the step ends: abortGraceMs terminates the thread); B's are quick.
    const h = makeHarness({ worker: { stopGraceMs: 1_000, abortGraceMs: 1_000, pipelineExtra: { slowStepMs: 20_000, failures: { '[slow]': 'slow' } } } });
    const tree = parse(readFileSync(h.configFile, 'utf8')) as { worker: { pipelineExtra: Record<string, unknown> } };
    const configB = join(h.dir, 'b.yaml');
    writeFileSync(configB, stringify({ ...tree, worker: { ...tree.worker, pipelineExtra: { ...tree.worker.pipelineExtra, failures: {} } } }));
    const redis = createRedis(REDIS_URL);
    const queue = createJobsQueue(h.config, redis);
    try {
      const a = await startWorker(h);
      procs.push(a);
      const out = join(h.dir, 'fox.png');
      const cli = spawnTs('bots/cli/main.ts', h, ['imagine', '[slow] a fox', '--seed', '7', '--out', out]);
      procs.push(cli);
      const job = await until(async () => (await queue.getJobs(['active']))[0], 60_000, 'the job running on A');
      const b = await startWorkerProcess(configB);
      procs.push(b);

      a.child.kill('SIGTERM');
      const stoppedAt = Date.now();
      expect(await exitWithin(a, 15_000)).toBe(0);
      expect(a.output()).toMatch(/handed the job back to the queue/);
      // B takes it from the wait list at once: no lock expiry (queue.lockDurationMs 30 s) and stall check first
      await cli.waitFor(`wrote ${out}`, 20_000);
      expect(Date.now() - stoppedAt).toBeLessThan(20_000);
      expect(cli.output()).not.toMatch(/Cancelled/);
      const done = (await queue.getJob(job.id!))!;
      expect({ state: await done.getState(), stalledCounter: done.stalledCounter, failedReason: done.failedReason }).toEqual({ state: 'completed', stalledCounter: 0, failedReason: undefined });
      expect(runs(h).filter((r) => r.kind === 'generate').map((r) => r.pid)).toContain(b.child.pid);
    } finally {
      await queue.close();
      await cleanup(redis, h.prefix);
      await closeRedis(redis);
    }
  }, 180_000);
});
