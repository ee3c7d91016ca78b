// Cancellation across processes. A bot that receives /cancel sets a flag (so a worker that picks the job up
// later refuses it) and publishes the id; every worker process subscribes and aborts the job if it runs it, and
// reads the flags of its running jobs again every CANCEL_RECHECK_MS (a message published while its subscriber was
// disconnected is lost).
import type { Redis } from '../redis.ts';
import type { Config } from '../config/schema.ts';

export const cancelChannel = (config: Pick<Config, 'queue'>) => `${config.queue.prefix}:cancel`;
const flagKey = (config: Pick<Config, 'queue'>, jobId: string) => `${config.queue.prefix}:cancelled:${jobId}`;

export async function requestCancel(redis: Redis, config: Pick<Config, 'queue'>, jobId: string): Promise<void> {
  // Stryker disable next-line StringLiteral: equivalent, the flag's value is never read (isCancelRequested asks EXISTS)
  await redis.set(flagKey(config, jobId), '1', 'EX', config.queue.keepFailedSeconds);
  await redis.publish(cancelChannel(config), jobId);
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
