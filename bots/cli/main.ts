// The local adapter: `npm run imagine -- "a red fox in snow" --seed 7 --out fox.png` and
// `npm run ask -- photo.jpg "what breed is this dog?"`. It goes through exactly the same core, jobs queue,
// worker and delivery path as Discord and Slack; its results come back on a delivery queue of its own
// (delivery-cli-<clientId>), which it deletes when done.
import { randomUUID } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import { createDeliveryQueue, deliveryQueueName, expireQueueKeys } from '../../src/jobs/queue.ts';
import type { CliDestination } from '../../src/jobs/contract.ts';
import { createLogger } from '../../src/log.ts';
import { isUserError, UserError } from '../../src/errors.ts';
import { closeRedis, createRedis, disconnectRedis, setRedisLogger, waitForRedis } from '../../src/redis.ts';
import { tooLargeText } from '../core/requests.ts';
import { NO_WORKER_NOTE } from '../core/stage-labels.ts';
import { createCore } from '../core/submit.ts';
import { parseCommand, USAGE } from './args.ts';
import { checkOutputPath } from './out-path.ts';
import { CliPort } from './port.ts';

/** The image `npm run ask` names, its size checked first: a file of gigabytes was read whole before the limit refused it. */
async function readImage(file: string, maxBytes: number): Promise<Uint8Array> {
  const unreadable = (e: NodeJS.ErrnoException) => new UserError('bad_image', e.code === 'ENOENT' ? `There is no file ${file}.` : `Cannot read ${file}: ${e.message}`);
  const { size } = await stat(file).catch((e: NodeJS.ErrnoException) => {
    throw unreadable(e);
  });
  if (size > maxBytes) throw new UserError('bad_image', tooLargeText(file, size, maxBytes));
  return new Uint8Array(
    await readFile(file).catch((e: NodeJS.ErrnoException) => {
      throw unreadable(e);
    }),
  );
}

async function main(): Promise<number> {
  const parsed = parseCommand(process.argv.slice(2), process.env.INIT_CWD ?? process.cwd());
  if (parsed.help) {
    console.log(USAGE);
    return 0;
  }
  const { input, out } = parsed;
  if (out !== undefined) await checkOutputPath(out);
  const config = loadConfig();
  if (input.command === 'ask') input.image.bytes = await readImage(input.image.name!, config.understanding.maxInputImageBytes);
  const secrets = loadSecrets();
  const log = createLogger('cli', process.env.LOG_LEVEL ? config.logLevel : 'warn');
  setRedisLogger(log);
  // An interactive command must not hang on a Redis that is not there: give up after a bounded wait.
  const probe = createRedis(secrets.REDIS_URL, 'cli-probe');
  try {
    await waitForRedis(probe, secrets.REDIS_URL, config.queue.cliRedisWaitMs);
  } catch (e) {
    disconnectRedis(probe);
    console.error((e as Error).message);
    return 3;
  }
  disconnectRedis(probe);
  const clientId = randomUUID();
  const destination: CliDestination = { platform: 'cli', clientId, channelId: 'local', userId: userInfo().username || 'local' };
  const port = new CliPort();
  const core = createCore({ config, secrets, ports: [port], cliClientId: clientId, log });
  await core.start();
  let jobId: string | undefined;
  let stopRequested = false;
  const cancel = () => void core.handle({ input: { command: 'cancel', jobId: jobId! }, destination, dedupeKey: `${clientId}-cancel`, isAdmin: false });
  // Ctrl-C and SIGTERM (a terminal closed, `kill`, a supervisor) both cancel the job; the result then says so.
  // A second signal quits at once: the cancel itself can hang (Redis gone after the job was queued), and the
  // terminal then had no way out but `kill -9`.
  const onStop = () => {
    if (stopRequested) {
      console.error(`Stopped without waiting for the cancel${jobId ? ` (job ${jobId} may still run)` : ''}.`);
      process.exit(130);
    }
    stopRequested = true;
    console.error('Cancelling… (Ctrl-C again to quit without waiting)');
    if (jobId) cancel();
  };
  process.on('SIGINT', onStop);
  process.on('SIGTERM', onStop);
  try {
    const reply = await core.handle({ input, destination, dedupeKey: clientId, isAdmin: false });
    if (reply.kind !== 'queued') {
      console.error(reply.text);
      return 2;
    }
    jobId = reply.jobId;
    if (stopRequested) cancel(); // the signal came while the job was being submitted
    if (reply.position > 0) await port.showProgress(destination, { v: 1, jobId, stage: 'queued', step: 0, total: 0, queuePosition: reply.position });
    if (reply.noWorker) console.error(NO_WORKER_NOTE); // no worker running: `npm run worker`
    const { result, path, writeError } = await port.waitFor(reply.jobId, out);
    if (writeError) {
      console.error(writeError);
      return 1;
    }
    if (result.status === 'succeeded') {
      if (result.answer) console.log(result.answer.text);
      const images = result.images ?? (result.image ? [result.image] : []);
      if (path) for (const [i, p] of (Array.isArray(path) ? path : [path]).entries()) console.log(`wrote ${p} (${images[i]?.width}×${images[i]?.height}, seed ${images[i]?.options.seed})`);
      return 0;
    }
    console.error(result.error?.userFacing ? result.error.message : `failed (ref ${result.jobId}): ${result.error?.message ?? 'unknown error'}`);
    return result.status === 'cancelled' ? 130 : 1;
  } finally {
    process.off('SIGINT', onStop);
    process.off('SIGTERM', onStop);
    port.stop();
    await core.stop();
    // This invocation's delivery queue is never used again.
    const redis = createRedis(secrets.REDIS_URL, 'cli-cleanup');
    const q = createDeliveryQueue(config, redis, deliveryQueueName(destination));
    await q.obliterate({ force: true }).catch(() => undefined);
    // A write that raced the deletion (the worker handing over our cancelled result, a late event) re-creates keys:
    // whatever is left gets the blobs' lifetime, so nothing of this invocation stays in Redis for good.
    await expireQueueKeys(redis, q, config.blobs.ttlSeconds).catch(() => undefined);
    await q.close();
    await closeRedis(redis);
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(isUserError(e) ? 2 : 1);
  },
);
