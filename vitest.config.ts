import { defineConfig } from 'vitest/config';

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
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
