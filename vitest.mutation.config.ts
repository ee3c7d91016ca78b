import { defineConfig } from 'vitest/config';

// The tests StrykerJS runs against each mutant (npm run test:mutation, stryker.config.mjs): the fast unit tests
// of the modules it mutates, real Redis included, and none that start worker processes or load the tiny ONNX
// checkpoint (those take seconds to minutes each and run in `npm test`).
export default defineConfig({
  test: {
    include: [
      'test/unit/src/**/*.test.ts',
      'test/unit/bots/core/**/*.test.ts',
      'test/unit/bots/slack/{download,adapter}.test.ts',
      'test/unit/bots/slack/verification.test.ts',
      'test/unit/worker/processor*.test.ts',
      'test/unit/worker/pipeline/{aspect,image,mrope,schedulers,guidance}*.test.ts',
      // in-process, seconds each: the processor's crash points and fair dispatch with a real BullMQ Worker
      'test/integration/spine-processor.redis.test.ts',
      'test/integration/scheduling.redis.test.ts',
    ],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
