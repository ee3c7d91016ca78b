// `npm run bots`: starts every enabled platform adapter around one core (bots/core/submit.ts).
// To add a platform: one line in ADAPTERS (its module exports an AdapterFactory). Nothing is discovered
// by scanning folders, so "go to definition" always works.
import { QueueNames, type Destination } from '../src/jobs/contract.ts';
import { createDeliveryQueue } from '../src/jobs/queue.ts';
import { watchFetchLoop } from '../src/jobs/fetch-watchdog.ts';
import { observeDeliveryWorker, trackQueue } from '../src/observability/hooks.ts';
import { serveHealth } from '../src/observability/http.ts';
import { createMetrics } from '../src/observability/metrics.ts';
import { loadConfig, loadSecrets } from '../src/config/load.ts';
import { UserError } from '../src/errors.ts';
import { createLogger } from '../src/log.ts';
import { setRedisLogger, stopDeadline } from '../src/redis.ts';
import { handleUsage } from '../src/usage.ts';
import type { Adapter, AdapterFactory } from './core/adapter.ts';
import type { ImageRef } from './core/port.ts';
import { createCore, type Core, type CoreOptions } from './core/submit.ts';

/** Platform → how to load its adapter. Each is started when `config.<platform>.enabled` is true. */
const ADAPTERS: Partial<Record<'discord' | 'slack', () => Promise<AdapterFactory>>> = {
  discord: () => import('./discord/adapter.ts').then((m) => m.createDiscordAdapter),
  slack: () => import('./slack/adapter.ts').then((m) => m.createSlackAdapter),
};

/** How long a bot whose delivery worker is stuck may take to stop as SIGTERM stops it, before it exits anyway. */
const STUCK_STOP_MS = 5_000;

const USAGE = `usage: npm run bots [-- --help]

Starts the Discord and Slack bots enabled in config (discord.enabled, slack.enabled) around one core. Tokens come
from the environment: DISCORD_TOKEN + DISCORD_APPLICATION_ID, SLACK_BOT_TOKEN + SLACK_APP_TOKEN (socket mode) or
SLACK_SIGNING_SECRET (http mode); REDIS_URL names the shared Redis, REDIS_PASSWORD its password if it asks for one.
See config/.env.example.`;

async function main(): Promise<void> {
  handleUsage(process.argv.slice(2), USAGE);
  const config = loadConfig();
  const secrets = loadSecrets();
  const log = createLogger('bots', config.logLevel);
  setRedisLogger(log);
  // Health first, as the worker does: /healthz answers while the start waits for Redis and logs in to the platforms
  // (compose's healthcheck read a refused connection as unhealthy); /readyz says what it waits for.
  const metrics = createMetrics('bot');
  let started = false;
  const health = await serveHealth(
    { host: config.http.host, port: config.http.botPort, registry: metrics.registry, readiness: { started: () => started || 'starting: connecting to Redis and the platforms' } },
    log,
  );

  const adapters: Adapter[] = [];
  const skipped: string[] = [];
  // What shutdown() stops, as far as the start got: an adapter can fail for good while the others start.
  let core: Core | undefined;
  let watchdogs: ReturnType<typeof watchFetchLoop>[] = [];
  const deliveryQueues: ReturnType<typeof createDeliveryQueue>[] = [];
  let stopping = false;
  const shutdown = async (reason: string, code: 0 | 1 = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'shutting down');
    // The core's stop speaks to Redis and waits for it (maxRetriesPerRequest: null): with Redis down or failing over
    // it would never end, silent until compose's SIGKILL. Past bots.stopMs it says what it waited for and exits 1; the
    // results it was delivering wait in Redis and are delivered once by the bot started again.
    const stop = stopDeadline(log, config.bots.stopMs, () => core?.redis, () => ({ reason }));
    stop.waitingFor = 'the platform adapters to stop';
    for (const w of watchdogs) w.stop();
    for (const adapter of adapters) await adapter.stop().catch((e: unknown) => log.error({ err: (e as Error).message }, 'adapter stop failed'));
    await health?.close();
    stop.waitingFor = 'the delivery queues to close';
    await Promise.all(deliveryQueues.map((q) => q.close()));
    stop.waitingFor = 'the core to stop: its deliveries in flight, progress leases, Redis connections';
    await core?.stop();
    process.exit(code);
  };
  // SIGTERM/SIGINT from the start. Before the core has started (waiting for Redis, logging in) nothing is delivered yet:
  // exit 0 at once. Then a graceful stop; asked again while it runs (a second Ctrl-C, Redis down), exit 1 at once: the
  // results it was delivering wait in Redis and are delivered once by the bot started again.
  let coreStarted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.fatal({ signal }, 'asked again to stop: exiting now');
      process.exit(1);
    }
    if (coreStarted) return void shutdown(signal);
    log.info({ signal }, 'stopping during start-up');
    process.exit(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  /** Stop as SIGTERM stops the bot, for STUCK_STOP_MS at most (what is stuck may never close), then exit 1 for compose's restart: on-failure. */
  const exitForRestart = (reason: string) => {
    setTimeout(() => process.exit(1), STUCK_STOP_MS).unref();
    void shutdown(reason, 1);
  };
  // A platform whose connection is gone for good (its adapter could not log in again): restarted, the bot logs in
  // afresh, or says at start what is wrong (a reset token).
  const onFatal = (e: Error) => {
    log.fatal({ err: e.message }, 'a platform connection is lost for good: exiting so that it is restarted');
    exitForRestart('a platform connection lost');
  };
  for (const [platform, load] of Object.entries(ADAPTERS)) {
    if (!config[platform as 'discord' | 'slack'].enabled || !load) continue;
    // An enabled platform with no token at all is one the operator has not set up (both are enabled by default):
    // skip it with a warning. A platform that is half set up fails in its factory with the missing secret named.
    const token = platform === 'discord' ? 'DISCORD_TOKEN' : 'SLACK_BOT_TOKEN';
    if (!secrets[token]) {
      log.warn({ platform }, `${platform} is enabled but ${token} is not set: not starting it`);
      skipped.push(`${platform} (set ${token})`);
      continue;
    }
    const factory = await load();
    adapters.push(await factory({ config, secrets, log: log.child({ platform }), onFatal }));
  }
  if (adapters.length === 0)
    throw new Error(`no platform adapter can start: ${skipped.length ? skipped.join(', ') : 'enable discord.enabled or slack.enabled in config'} (see config/.env.example)`);

  const fetchers = new Map(adapters.flatMap((a) => (a.coreOptions?.fetchImage ? [[a.port.platform, a.coreOptions.fetchImage] as const] : [])));
  const fetchImage: CoreOptions['fetchImage'] = (ref: ImageRef, destination: Destination) => {
    const fetcher = fetchers.get(destination.platform);
    if (!fetcher) throw new UserError('bad_image', 'Please attach the image itself.');
    return fetcher(ref, destination);
  };
  // /metrics: each "Something went wrong (ref …)" and each refusal because Redis is away or full
  const onCommandFailed: CoreOptions['onCommandFailed'] = (failure) => metrics.commandFailures.inc(failure);
  core = createCore({ config, secrets, ports: adapters.map((a) => a.port), fetchImage, log, onCommandFailed });
  await core.start();
  coreStarted = true;
  for (const adapter of adapters) await adapter.start(core);
  // Discord's slash commands register themselves (only when their definition changed): no separate step after
  // `docker compose up`. A failure here is logged, not fatal: the commands registered before keep working.
  if (adapters.some((a) => a.port.platform === 'discord') && config.discord.registerCommandsOnStart) {
    const { syncCommands } = await import('./discord/register-commands.ts');
    await syncCommands(config, secrets, log.child({ platform: 'discord' })).catch((e: unknown) =>
      log.error({ err: (e as Error).message }, 'registering the Discord slash commands failed; run `npm run discord:register` to retry'),
    );
  }

  // /metrics: deliveries and failures by reason, queue depths.
  for (const w of core.deliveryWorkers) observeDeliveryWorker(metrics, w);
  trackQueue(metrics, core.queue);
  core.cache.observer = (outcome) => metrics.cacheLookups.inc({ outcome });
  metrics.trackCache(() => core.cache.stats());
  for (const a of adapters) deliveryQueues.push(createDeliveryQueue(config, core.redis, QueueNames.delivery(a.port.platform)));
  for (const q of deliveryQueues) trackQueue(metrics, q);
  const redis = core.redis;
  // ready: Redis answers, and every platform's connection is up (a gateway logging in again after Discord closed it)
  health?.setCheck('redis', async () => (await redis.ping()) === 'PONG' || 'Redis did not answer PING');
  for (const a of adapters) health?.setCheck(a.port.platform, () => a.connected());

  // A delivery worker that stops taking results while they wait (a library's bug has done it twice): exit, and let the
  // supervisor start this process again; the results wait in Redis and are delivered once.
  watchdogs = core.deliveryWorkers.map((w) =>
    watchFetchLoop(w, {
      redis: core.redis,
      stallMs: config.queue.fetchStallMs,
      onStuck: (waitedMs, ready) => {
        log.fatal({ queue: w.name, waitedMs, ready }, `the delivery worker of ${w.name} has taken no result for ${Math.round(waitedMs / 1000)} s while ${ready} waited and it had room: exiting so that it is restarted`);
        // Stopped as SIGTERM stops it (the platforms first, then the core, whose progress leases go back so the bot
        // started again shows its jobs' progress at once): the stuck worker's close may never end.
        exitForRestart('a stuck delivery worker');
      },
    }),
  );

  started = true;
  log.info({ platforms: adapters.map((a) => a.port.platform) }, 'bots ready');
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? `bots failed to start: ${e.message}` : e);
  process.exit(1);
});
