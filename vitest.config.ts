import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The files that take minutes on CI's 2 cores (measured 2026-12-08, under load: relative only), slowest first. They
 * start first: with 2 workers, one started near the end runs on alone after the rest are done. vitest orders by the
 * durations in its cache (node_modules/.vite/vitest), and a clean clone has none, so it ordered by file size, which
 * started webgpu-latents, the slowest, 88th of 253. A file missing here only starts later; each path is checked below.
 */
const SLOW_FIRST = [
  'test/integration/webgpu-latents.test.ts',
  'test/unit/worker/pipeline/generate-pipeline.test.ts',
  'test/unit/worker/pipeline/decode-batch.test.ts',
  'test/integration/webgpu.redis.test.ts',
  'test/integration/checks.redis.test.ts',
  'test/integration/worker-lifecycle.redis.test.ts',
  'test/models/quant-fidelity.test.ts',
  'test/integration/cost.redis.test.ts',
  'test/unit/bots/discord/adapter.redis.test.ts',
  'test/integration/stop-redis-down.redis.test.ts',
  'test/integration/checks-cache.redis.test.ts',
  'test/integration/retention-paths.redis.test.ts',
  'test/integration/spine.redis.test.ts',
  'test/unit/worker/pipeline/understand.test.ts',
  'test/integration/redis-keys.redis.test.ts',
  'test/integration/budgets.redis.test.ts',
];

/** vitest's own order (cached durations, else size), with SLOW_FIRST's files moved to the front in its order. */
class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const root = this.ctx.config.root;
    const rank = (f: TestSpecification) => {
      const i = SLOW_FIRST.findIndex((p) => f.moduleId === `${root}/${p}`);
      return i < 0 ? SLOW_FIRST.length : i;
    };
    const missing = SLOW_FIRST.filter((p) => !files.some((f) => f.moduleId === `${root}/${p}`));
    // A renamed file would silently drop out of the list: say so (only on full runs, where every file is there)
    if (files.length > SLOW_FIRST.length * 4 && missing.length > 0) console.warn(`vitest.config.ts SLOW_FIRST names files that are gone: ${missing.join(', ')}`);
    return (await super.sort(files)).map((file, i) => ({ file, i })).sort((a, b) => rank(a.file) - rank(b.file) || a.i - b.i).map(({ file }) => file);
  }
}

// Plain *.test.ts run on CPU in seconds; *.redis.test.ts need Redis (127.0.0.1:6379 or REDIS_URL);
// *.gpu.test.ts are opt-in (CUDA + real weights) and excluded unless GPU_TESTS=1; *.docker.test.ts are opt-in (build
// the images and run the compose stack: `npm run test:docker`) and excluded unless DOCKER_TESTS=1.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [
      ...(process.env.GPU_TESTS === '1' ? [] : ['test/**/*.gpu.test.ts']),
      ...(process.env.DOCKER_TESTS === '1' ? [] : ['test/**/*.docker.test.ts']),
    ],
    pool: 'forks',
    maxWorkers: 2,
    sequence: { sequencer: SlowFirstSequencer },
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
