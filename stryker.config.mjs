// Mutation testing (npm run test:mutation; opt-in, not in CI). docs/mutation.md has the scores, the surviving
// mutants judged equivalent and how to run one group: MUTATION_GROUP=jobs npm run test:mutation (its own report
// and incremental file under reports/mutation/jobs/, so group runs and the full run never overwrite each other).
/** Group name → the files (and line ranges) it mutates. test/mutation/run.ts runs them one after the other. */
export const groups = {
  jobs: ['src/jobs/{ledger,cancel,contract,queue,position,progress}.ts'],
  limits: ['src/limits/*.ts', 'src/scheduling/*.ts'],
  bots: ['bots/core/{delivery,image-bytes,submit}.ts', 'bots/cli/out-path.ts', 'bots/slack/download.ts', 'bots/slack/adapter.ts:57-133', 'bots/slack/adapter.ts:140-155', 'bots/slack/adapter.ts:209-227'],
  // image checks (smartResize, readHeader, decodeResized) and the PIL-exact bicubic resize, the two samplers in generate, CFG and the batch layout of the diffusion
  // steps, schedulers, M-RoPE. Line ranges: update them when those files move.
  pipeline: ['worker/pipeline/image.ts:57-285', 'worker/pipeline/generate.ts:255-337', 'worker/pipeline/diffusion-steps.ts:119-360', 'worker/pipeline/{schedulers,mrope}.ts'],
  processor: ['worker/processor.ts'],
  // a Cluster URL's failover options, connection errors, batched socket writes (batchWrites, withBatchedWrites), the
  // replica fence, the refusals of REDIS_URL that end a start, REDIS_PASSWORD put into the URL. Line ranges: update them when src/redis.ts moves.
  redis: ['src/redis.ts:134-164', 'src/redis.ts:197-204', 'src/redis.ts:234-242', 'src/redis.ts:324-351', 'src/redis.ts:410-495', 'src/redis.ts:536-573'],
  // blobs released on delivery and shared with a flight's followers (leaderAddress: where a leader's flight lives, in
  // its content-check scope; notShared, handOverToFollowers, handOverEach and its sharedWith). Line ranges: update them
  // when fanout.ts moves (71-90 until 2026-12-07, which had drifted off handOverEach).
  blobs: ['src/blobs/{redis,index}.ts', 'src/cache/fanout.ts:66-75', 'src/cache/fanout.ts:88-132'],
  // the Discord adapter's modules but the gateway glue (adapter.ts: the `gateway` group) and the command
  // definitions (commands.ts: data)
  discord: ['bots/discord/{admin,attachments,conversation,custom-ids,delivery,identify-throttle,lost-replies,model-text,options,render,upload-size}.ts'],
  // the Slack adapter's text parsing and rendering, and its PlatformPort (port.redis.test.ts: against the fake Slack);
  // handlers.ts is the `handlers` group
  slack: ['bots/slack/{admin,blocks,conversation,options,settings,port}.ts'],
  // the Slack listeners: every command, event, shortcut, modal and button (handlers.redis.test.ts: real Bolt against
  // the fake Slack, the real core, no worker)
  handlers: ['bots/slack/handlers.ts'],
  // the Discord adapter's gateway glue: every slash command, context menu, modal, button and mention
  // (adapter.redis.test.ts: real discord.js against the fake Discord, the real core, no worker)
  gateway: ['bots/discord/adapter.ts'],
  // the progress relay: queue positions pushed while jobs wait, progress throttled per job, the progress leases
  // several bot instances share (progress-relay.redis.test.ts: the real relay on Redis, recording ports)
  progress: ['bots/core/progress.ts'],
  // the admin commands: /limits, /queue, budgets and the usage report, checks
  admin: ['bots/core/commands/*.ts'],
  // the result cache and single flight (and the content-check scope results are shared within: src/checks/policy.ts),
  // GPU-second accounting and budgets, saved /settings
  state: ['src/cache/{key,results}.ts', 'src/checks/policy.ts', 'src/accounting/usage.ts', 'bots/core/settings.ts'],
  // what a chat user typed, checked and turned into a job request (both adapters), and Midjourney's flags in a prompt
  requests: ['bots/core/{requests,imagine-flags}.ts'],
  // the worker's process around the pipeline: the model thread's host, the checks after a job, review, its limits, and
  // the model's setup (setup.ts: ensureModel and the lock workers sharing a model volume take turns with, run in the
  // test process by setup.test.ts; main.ts only runs in worker processes, which Stryker's runner cannot reach).
  worker: ['worker/{after-job,review,limits,thread-host,setup,job-clock}.ts'],
  // the model fetch's retries against the fake hub (Retry-After, back-off, the operator's error messages)
  hub: ['worker/hub/fetch.ts'],
  // the operator's config: its layers (default.yaml, BLIP3O_CONFIG's file, the environment) and errors naming where a value was set
  config: ['src/config/load.ts'],
  // counting and cutting text in any script (code points for users' limits, cuts between graphemes), since 2026-12-07
  text: ['src/text.ts'],
  // the copy of an Ask form's target following it (asked-copies.ts and where the adapter and the delivery use it) and
  // the mark of the bot's notices (NOTICE_FLAGS: noticeBody, turnText), since 2026-12-07. Line ranges: the adapter's
  // gateway listeners (MESSAGE_DELETE, MESSAGE_DELETE_BULK, MESSAGE_UPDATE), the attachment an Ask form asked about
  // (onAskModal's askedAttachments, fetchImageOf's id) and attachAskedImage to removeCopy (onDeleted, onEdited), the
  // delivery's copy on an answer posted anew (askedCopyOn, followedThere, withAskedCopy), render.ts's NOTICE_FLAGS and
  // noticeBody, conversation.ts's check of the mark. Update them when those files move (re-derived 2026-12-08).
  asked: ['bots/discord/asked-copies.ts', 'bots/discord/adapter.ts:271-273', 'bots/discord/adapter.ts:430-430', 'bots/discord/adapter.ts:556-628', 'bots/discord/adapter.ts:810-810', 'bots/discord/delivery.ts:262-263', 'bots/discord/delivery.ts:273-273', 'bots/discord/delivery.ts:292-316', 'bots/discord/delivery.ts:561-567', 'bots/discord/render.ts:141-146', 'bots/discord/conversation.ts:87-87'],
  // a job's time limit over all its model runs (worker/job-time-limit.ts), since 2026-12-07
  timelimit: ['worker/job-time-limit.ts'],
  // results whose place changed while the job waited (archived or locked threads, refusals by a workspace's settings)
  // and the deliveries' outcomes elsewhere / nowhere, since 2026-12-07. Line ranges: the lines of that change; update
  // them when those files move.
  places: ['bots/discord/delivery.ts:40-63', 'bots/discord/delivery.ts:175-184', 'bots/discord/delivery.ts:230-254', 'bots/discord/delivery.ts:278-283', 'bots/discord/delivery.ts:339-416', 'bots/slack/port.ts:63-78', 'bots/slack/port.ts:208-266', 'bots/core/delivery.ts:33-37', 'bots/core/delivery.ts:77-90', 'src/observability/hooks.ts:102-114'],
  // the retention purge's timing (the failed listener's mark, the failed-seen wait) and a cancel's flag set only while
  // the job exists (src/jobs/{retention,cancel}.ts), since 2026-12-07. Line ranges (of 2026-12-08): update them when
  // those files move.
  retention: ['src/jobs/retention.ts:42-70', 'src/jobs/retention.ts:142-195', 'src/jobs/cancel.ts:1-27'],
  // Redis's clock as every host reads it (src/server-clock.ts, a5cb746), since 2026-12-08
  clock: ['src/server-clock.ts'],
  // Slack channels that take posts only in threads (startJob's DM fallback, dmForThreadOnly, the port's THREAD_ONLY) and a
  // Slack Connect member's request outside the result cache (fromElsewhere, keptAnywaySeconds), f3d8571, since
  // 2026-12-08. Line ranges: update them when those files move.
  threadonly: ['bots/slack/handlers.ts:77-79', 'bots/slack/handlers.ts:165-170', 'bots/slack/handlers.ts:183-203', 'bots/slack/handlers.ts:282-287', 'bots/slack/handlers.ts:454-454', 'bots/slack/port.ts:53-53', 'bots/slack/port.ts:71-71'],
  // what a bot forgets per job (0ac6603, since 2026-12-08): the progress relay's look-up of a finished job, Slack's titles
  // held from a job's start to its delivery, and their sweep once delivered elsewhere or gone (sweepTitles; not its
  // minute timer). Line ranges: update them when those files move.
  memory: ['bots/core/progress.ts:231-245', 'bots/slack/adapter.ts:207-265', 'bots/slack/adapter.ts:283-283', 'bots/slack/port.ts:233-233', 'bots/slack/port.ts:239-239', 'bots/slack/handlers.ts:153-160', 'bots/slack/handlers.ts:203-208'],
  // the admin's side of a failure (128a41c, since 2026-12-08): failureReason's 'stalled', the worker's failure lines and
  // their levels, the delivery's 'failed for good' line, the core's onCommandFailed. Line ranges: update them when those
  // files move.
  failures: ['src/observability/hooks.ts:24-33', 'worker/processor.ts:151-151', 'worker/processor.ts:462-475', 'worker/processor.ts:493-503', 'bots/core/delivery.ts:121-129', 'bots/core/submit.ts:679-700'],
};
const group = process.env.MUTATION_GROUP;
if (group !== undefined && !(group in groups)) throw new Error(`MUTATION_GROUP must be one of ${Object.keys(groups).join(', ')}`);
const dir = `reports/mutation/${group ?? 'all'}`;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts', related: false },
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.mutation.json',
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  // MUTATION_COVERAGE=all: meant to run every test of the group against each mutant. With the vitest runner it does not:
  // the runner reports per-test coverage whatever this says, and Stryker then runs each mutant against the tests that
  // covered it (mutant-test-planner). What it does change: static mutants are run (ignoreStatic off). docs/mutation.md,
  // "Runs of 2026-12-07, 03:16".
  coverageAnalysis: process.env.MUTATION_COVERAGE === 'all' ? 'all' : 'perTest',
  // MUTATION_ALL_KILLERS=1: run every covering test of a mutant, not only up to the first that fails, so the report
  // names all the tests that kill each mutant (docs/mutation.md derives the score of the older tests from it).
  disableBail: process.env.MUTATION_ALL_KILLERS === '1',
  concurrency: Number(process.env.MUTATION_CONCURRENCY ?? 2),
  incremental: true,
  incrementalFile: `${dir}/incremental.json`,
  ignoreStatic: process.env.MUTATION_COVERAGE !== 'all', // Stryker allows it with perTest only
  timeoutMS: 20_000,
  dryRunTimeoutMinutes: 30, // the initial run on a loaded 2-core machine
  reporters: ['html', 'json', 'clear-text', 'progress'],
  htmlReporter: { fileName: `${dir}/index.html` },
  jsonReporter: { fileName: `${dir}/mutation.json` },
  clearTextReporter: { allowColor: false, logTests: false, reportScoreTable: true },
  tempDirName: `.stryker-tmp/${group ?? 'all'}`,
  // Not copied into a sandbox: other groups' sandboxes (group runs side by side copied each other's, nested),
  // reports, and converted models (gigabytes; no mutation test loads them).
  ignorePatterns: ['/.stryker-tmp', '/reports', '/models'],
  cleanTempDir: 'always',
  mutate: group ? groups[group] : Object.values(groups).flat(),
};
