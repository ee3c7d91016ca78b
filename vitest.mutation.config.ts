import { defineConfig } from 'vitest/config';

// The tests StrykerJS runs against each mutant (npm run test:mutation, stryker.config.mjs): the fast unit tests
// of the modules it mutates, real Redis included, and none that start worker processes or load the tiny ONNX
// checkpoint (those take seconds to minutes each and run in `npm test`). With MUTATION_GROUP set, only that
// group's tests, so its initial run is short too.
const tests: Record<string, string[]> = {
  // processor-handover: queue.ts's handOverTogether, driven by the processor as the worker runs it
  jobs: ['test/unit/src/jobs/*.test.ts', 'test/unit/bots/core/delivery-claim.redis.test.ts', 'test/integration/spine-processor.redis.test.ts', 'test/unit/worker/processor-handover.redis.test.ts'],
  // Not test/integration/scheduling.redis.test.ts: it runs a real Worker and waits for it to drain (seconds per
  // mutant, 20 s for one that stops a release); fair.redis.test.ts checks the same orders with the worker played by
  // the test, deterministically.
  limits: ['test/unit/src/limits/*.test.ts', 'test/unit/src/scheduling/*.test.ts'],
  bots: ['test/unit/bots/core/**/*.test.ts', 'test/unit/bots/cli/out-path.test.ts', 'test/unit/bots/slack/{download,adapter}.test.ts', 'test/unit/src/jobs/ledger.redis.test.ts'],
  pipeline: ['test/unit/worker/pipeline/{aspect,image,image-resample,mrope,schedulers,guidance,diffusion-steps,scheduler-graphs,generate}.test.ts'],
  // Not test/integration/spine-processor.redis.test.ts (the jobs group runs it): its re-run after a hand-over is
  // processor.redis.test.ts's too, and a second file costs each mutant another import of the whole worker.
  processor: ['test/unit/worker/processor*.test.ts'],
  redis: ['test/unit/src/redis.test.ts', 'test/unit/config/load.test.ts', 'test/unit/src/redis-batched-writes.redis.test.ts', 'test/unit/src/redis-fence.redis.test.ts', 'test/unit/bots/core/submit-flight.redis.test.ts'],
  // the result cache, GPU-second accounting and saved settings: state every bot and worker shares through Redis
  state: ['test/unit/src/cache/*.test.ts', 'test/unit/src/checks/*.test.ts', 'test/unit/src/accounting/*.test.ts', 'test/unit/src/limits/gate.redis.test.ts', 'test/unit/worker/after-job.redis.test.ts', 'test/unit/bots/core/settings.redis.test.ts', 'test/unit/bots/slack/settings.test.ts'],
  // the Slack adapter's own modules
  slack: ['test/unit/bots/slack/{admin,blocks,answer-sections,conversation,options,settings,inputs}.test.ts', 'test/unit/bots/slack/{port,lost-replies}.redis.test.ts'],
  // the Slack listeners through real Bolt and the fake Slack, no worker
  // (grid-admins: who is an admin of the workspace asked in, Enterprise Grid and Slack Connect; slack-connect: whose
  // workspace a shared channel's request is, a partner's file stubs, a DM Slack will not open)
  handlers: ['test/unit/bots/slack/{handlers,lost-replies,grid-admins,slack-connect}.redis.test.ts'],
  // the progress relay on Redis with recording ports (not progress-takeover/-multi: bot and worker processes)
  progress: ['test/unit/bots/core/progress-relay.redis.test.ts'],
  // the Discord gateway glue through real discord.js and the fake Discord, no worker
  gateway: ['test/unit/bots/discord/adapter.redis.test.ts'],
  // what users type, checked: on its own and through the core's submit paths
  // (the flags' parser is both adapters': their inputs tests too)
  requests: ['test/unit/bots/core/{requests,imagine-extras}.test.ts', 'test/unit/bots/core/submit-paths.redis.test.ts', 'test/unit/bots/{discord,slack}/{options,inputs}.test.ts'],
  // the worker process's own modules around the pipeline (no ONNX session: the thread host's tests use a test thread)
  worker: ['test/unit/worker/{thread-host,thread-host-bystanders,thread-host-deadline,setup,job-clock}.test.ts', 'test/unit/worker/after-job.redis.test.ts', 'test/unit/worker/review.test.ts', 'test/unit/worker/limits.test.ts'],
  // the Discord adapter's own modules, against the fake Discord in the test process (no worker)
  discord: ['test/unit/bots/discord/{attachments,delivery,inputs,register-commands,render,lost-replies,model-output}.test.ts', 'test/unit/bots/discord/identify-throttle.redis.test.ts'],
  // the admin commands, driven through the real core (no worker) and on their own
  admin: ['test/integration/limits-admin.redis.test.ts', 'test/unit/bots/core/commands/*.test.ts', 'test/unit/bots/core/checks-command.redis.test.ts'],
  // the model fetch against the fake hub (test/fakes/hub), no model loaded. Not hub-fetch.test.ts: sharing one module
  // graph (isolate: false), its import of fetch.ts comes before the faults file's vi.mock('node:fs') of a full disk
  hub: ['test/integration/hub-fetch-faults.test.ts'],
  // the config loader's layers and errors
  config: ['test/unit/config/{load,operator-config}.test.ts'],
  // src/text.ts's own tests: counting in code points, cutting between graphemes
  text: ['test/unit/src/text.test.ts'],
  // the copy of an Ask form's target and the notices' mark: real discord.js against the fake Discord, no worker
  asked: ['test/unit/bots/discord/{asked-copies,asked-image-follow}.redis.test.ts', 'test/unit/bots/discord/{inputs,render,delivery}.test.ts'],
  blobs: ['test/unit/src/blobs/*.test.ts', 'test/unit/src/cache/fanout.redis.test.ts', 'test/unit/worker/after-job.redis.test.ts', 'test/unit/bots/core/delivery.redis.test.ts', 'test/unit/bots/core/submit.redis.test.ts'],
  // a job's time limit: on its own, through the thread host's deadlines and through the processor on Redis
  timelimit: ['test/unit/worker/{job-time-limit,thread-host-deadline}.test.ts', 'test/unit/worker/processor-time-limit.redis.test.ts'],
  // deliveries whose place changed: real discord.js and Bolt against the fakes, the core's delivery on Redis, the metrics
  places: ['test/unit/bots/discord/delivery.test.ts', 'test/unit/bots/slack/port.redis.test.ts', 'test/unit/bots/core/delivery.redis.test.ts', 'test/unit/src/observability/hooks.test.ts'],
  // the retention purge and cancel on Redis (real BullMQ; the failed listener's wait as the worker runs it)
  retention: ['test/unit/src/jobs/{retention,retention-bystanders,retention-clock-skew,cancel}.redis.test.ts', 'test/unit/worker/retention-failed-listener.redis.test.ts'],
  // Redis's clock on its own (a fake TIME, host clocks ahead and behind) and through the retention sweep
  clock: ['test/unit/src/server-clock.test.ts', 'test/unit/src/jobs/retention-clock-skew.redis.test.ts'],
  // thread-only channels and Slack Connect members through real Bolt and the fake Slack; the port's refusals
  threadonly: ['test/unit/bots/slack/{thread-only-channel,slack-connect,port}.redis.test.ts'],
  // what a bot holds per job, and forgets: the progress relay, Slack's titles
  memory: ['test/unit/bots/core/progress-memory.redis.test.ts', 'test/unit/bots/slack/titles-memory.redis.test.ts'],
  // the failure lines and counts: the worker's, the delivery's, the core's, the metrics' reason
  failures: ['test/unit/worker/processor-failure-log.redis.test.ts', 'test/unit/bots/core/{delivery,submit}-failure-log.redis.test.ts', 'test/unit/src/observability/hooks.test.ts'],
};
const group = process.env.MUTATION_GROUP;

export default defineConfig({
  test: {
    include: group && group in tests ? tests[group] : [...new Set(Object.values(tests).flat())],
    env: { MUTATION_RUN: '1' }, // property tests take fewer runs per mutant
    pool: 'forks',
    // One module graph for all the files of a run: StrykerJS starts a run per mutant, and on this loaded machine
    // importing the worker or BullMQ again for each file was most of a mutant's time (the runs keep mutants apart by
    // a global switch, not by reloading).
    isolate: false,
    maxWorkers: 1,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
