// Cancellation across processes. A bot that receives /cancel sets a flag (so a worker that picks the job up
// later refuses it) and publishes the id; every worker process subscribes and aborts the job if it runs it.
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

/** Subscribe on a dedicated connection (it enters subscriber mode); returns a function that unsubscribes. */
export async function onCancel(subscriber: Redis, config: Pick<Config, 'queue'>, handler: (jobId: string) => void): Promise<() => Promise<void>> {
  const channel = cancelChannel(config);
  const listener = (ch: string, message: string) => {
    if (ch === channel) handler(message);
  };
  subscriber.on('message', listener);
  await subscriber.subscribe(channel);
  return async () => {
    subscriber.off('message', listener);
    await subscriber.unsubscribe(channel);
  };
}
