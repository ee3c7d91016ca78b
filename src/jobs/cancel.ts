// Cancellation across processes. A bot that receives /cancel sets a flag while the job is in the queue (so a worker
// that picks the job up later refuses it) and publishes the id; every worker process subscribes and aborts the job
// if it runs it, and reads the flags of its running jobs again every CANCEL_RECHECK_MS (a message published while
// its subscriber was disconnected is lost).
import { runScript, type Redis } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import { QueueNames } from './contract.ts';

export const cancelChannel = (config: Pick<Config, 'queue'>) => `${config.queue.prefix}:cancel`;
const flagKey = (config: Pick<Config, 'queue'>, jobId: string) => `${config.queue.prefix}:cancelled:${jobId}`;

/**
 * KEYS flag, the job's BullMQ hash · ARGV ttlSeconds → 1 flagged, 0 the job is gone. A job no longer in the queue
 * will not run, and its flag would outlive it: a cancel that found the job just before a retention purge deleted it
 * (src/jobs/retention.ts) left the flag a day after the purge.
 */
const FLAG_WHILE_QUEUED = `if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1`;

/** Flag the job (while it is in the queue: true if it was) and tell every worker. */
export async function requestCancel(redis: Redis, config: Pick<Config, 'queue'>, jobId: string): Promise<boolean> {
  const jobKey = `${config.queue.prefix}:${QueueNames.jobs}:${jobId}`;
  // Stryker disable next-line StringLiteral: equivalent, any name no other script on the connection uses defines the same command
  const flagged = Number(await runScript(redis, 'blip3oCancelFlag', FLAG_WHILE_QUEUED, [flagKey(config, jobId), jobKey], [config.queue.keepFailedSeconds])) === 1;
  await redis.publish(cancelChannel(config), jobId);
  return flagged;
}

export async function isCancelRequested(redis: Redis, config: Pick<Config, 'queue'>, jobId: string): Promise<boolean> {
  return (await redis.exists(flagKey(config, jobId))) === 1;
}

/** How often a worker reads the cancel flags of the jobs it runs again (onCancel's `recheck`). */
export const CANCEL_RECHECK_MS = 2_000;

/**
 * Subscribe on a dedicated connection (it enters subscriber mode); returns a function that unsubscribes.
 *
 * Pub/sub is not a queue: a cancel published while `subscriber` is disconnected (a dropped connection, a failover) is
 * never heard, although its flag is set. With `recheck`, the flags of the jobs `running()` names are read again on
 * `redis` every `recheckMs` (CANCEL_RECHECK_MS), so such a cancel stops its job at most that much later. `handler` is
 * told each job once, whichever way it was heard.
 */
export async function onCancel(
  subscriber: Redis,
  config: Pick<Config, 'queue'>,
  handler: (jobId: string) => void,
  recheck?: { redis: Redis; running: () => Iterable<string>; recheckMs?: number },
): Promise<() => Promise<void>> {
  const channel = cancelChannel(config);
  const told = new Set<string>();
  const tell = (jobId: string) => {
    if (told.has(jobId)) return;
    if (recheck) told.add(jobId); // emptied of the jobs no longer running at each re-check (every cancel reaches every worker)
    handler(jobId);
  };
  const listener = (ch: string, message: string) => {
    if (ch === channel) tell(message);
  };
  subscriber.on('message', listener);
  await subscriber.subscribe(channel);
  let timer: NodeJS.Timeout | undefined;
  if (recheck) {
    let reading = false;
    const readAgain = async () => {
      const running = [...recheck.running()];
      for (const id of told) if (!running.includes(id)) told.delete(id); // bounded by the jobs running
      const fresh = running.filter((id) => !told.has(id));
      const flagged = await Promise.all(fresh.map((id) => isCancelRequested(recheck.redis, config, id)));
      if (timer) fresh.forEach((id, i) => flagged[i] && tell(id)); // not after unsubscribing
    };
    timer = setInterval(() => {
      if (reading) return;
      reading = true;
      void readAgain().catch(() => undefined).finally(() => (reading = false)); // Redis unreachable: the next tick
    }, recheck.recheckMs ?? CANCEL_RECHECK_MS);
    timer.unref();
  }
  return async () => {
    clearInterval(timer);
    timer = undefined;
    subscriber.off('message', listener);
    await subscriber.unsubscribe(channel);
  };
}
