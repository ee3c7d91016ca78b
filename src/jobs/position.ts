// Queue position, in one place: the limits helper's fair scheduling uses BullMQ priorities, so this counts
// both lists BullMQ takes work from. A worker takes from `wait` (FIFO: LPUSH at the head, taken from the
// tail) before `prioritized` (a sorted set, lowest score first).
import type { Redis } from '../redis.ts';
import { createFairScheduler, type QueuePlace } from '../scheduling/fair.ts';
import type { JobsQueue } from './queue.ts';

/**
 * 1-based position among jobs not yet started, or undefined if the job is running, finished, unknown or held
 * (its channel is paused). Jobs the fair scheduler lines up (all submissions) get the position it predicts from
 * its dispatch order (src/scheduling/fair.ts); anything else is counted in BullMQ's own lists.
 */
export async function queuePosition(redis: Redis, queue: JobsQueue, jobId: string): Promise<number | undefined> {
  return positionOf(redis, queue, jobId, await schedulerOf(redis, queue).position(jobId));
}

/** queuePosition of each job: one round trip for all the scheduler lines up, one more per job it does not. */
export async function queuePositions(redis: Redis, queue: JobsQueue, jobIds: readonly string[]): Promise<(number | undefined)[]> {
  const places = await schedulerOf(redis, queue).positions(jobIds);
  return Promise.all(places.map((place, i) => positionOf(redis, queue, jobIds[i]!, place)));
}

/** What the relay shows of a waiting job: its place, HELD while its channel is paused, undefined if it waits nowhere. */
export type QueuePlaceShown = number | typeof HELD | undefined;
export const HELD = 'held';

/**
 * queuePositions, except that a job held in a paused channel is HELD rather than undefined: the relay tells its user
 * so, where "no place" left the last place shown ("Queued: 3rd in line.") for as long as the pause lasted.
 */
export async function queuePlaces(redis: Redis, queue: JobsQueue, jobIds: readonly string[]): Promise<QueuePlaceShown[]> {
  const places = await schedulerOf(redis, queue).positions(jobIds);
  return Promise.all(places.map((place, i) => (place.state === 'held' ? HELD : positionOf(redis, queue, jobIds[i]!, place))));
}

// The queue's own prefix, BullMQ's default included: its qualified name is "<prefix>:<name>".
const schedulerOf = (redis: Redis, queue: JobsQueue) =>
  createFairScheduler(redis, { queue: { prefix: queue.qualifiedName.slice(0, -`:${queue.name}`.length) } }, queue);

async function positionOf(redis: Redis, queue: JobsQueue, jobId: string, place: QueuePlace): Promise<number | undefined> {
  if (place.state === 'queued') return place.position;
  // Stryker disable next-line ConditionalExpression: equivalent, a held job is parked in BullMQ's delayed set, so the lists below give undefined too
  if (place.state === 'held') return undefined;
  // exec() answers null only for a transaction a WATCH aborted, and there is none here.
  const rows = (await redis.multi().llen(queue.keys.wait!).lpos(queue.keys.wait!, jobId).zrank(queue.keys.prioritized!, jobId).exec())!;
  const [waitLen, waitIdx, prioRank] = rows.map(([, v]) => v as number | null);
  if (typeof waitIdx === 'number') return (waitLen ?? 0) - waitIdx;
  if (typeof prioRank === 'number') return (waitLen ?? 0) + prioRank + 1;
  return undefined;
}
