import { defineConfig } from 'vitest/config';

// The tests StrykerJS runs against each mutant (npm run test:mutation, stryker.config.mjs): the fast unit tests
// of the modules it mutates, real Redis included, and none that start worker processes or load the tiny ONNX
// checkpoint (those take seconds to minutes each and run in `npm test`). With MUTATION_GROUP set, only that
// group's tests, so its initial run is short too.
const tests: Record<string, string[]> = {
  jobs: ['test/unit/src/jobs/*.test.ts', 'test/unit/bots/core/delivery-claim.redis.test.ts', 'test/integration/spine-processor.redis.test.ts'],
  limits: ['test/unit/src/limits/*.test.ts', 'test/unit/src/scheduling/*.test.ts', 'test/integration/scheduling.redis.test.ts'],
  bots: ['test/unit/bots/core/**/*.test.ts', 'test/unit/bots/slack/{download,adapter}.test.ts', 'test/unit/src/jobs/ledger.redis.test.ts'],
  pipeline: ['test/unit/worker/pipeline/{aspect,image,mrope,schedulers,guidance,diffusion-steps}*.test.ts'],
  processor: ['test/unit/worker/processor*.test.ts', 'test/integration/spine-processor.redis.test.ts'],
};
const group = process.env.MUTATION_GROUP;

export default defineConfig({
  test: {
    include: group && group in tests ? tests[group] : [...new Set(Object.values(tests).flat())],
    env: { MUTATION_RUN: '1' }, // property tests take fewer runs per mutant
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
