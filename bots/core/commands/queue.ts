// /blip3o-admin queue (admins): queue depth and per-channel usage, pause/resume this channel, purge a user's jobs.
// Paused: the channel's jobs stay in line, in order, and wait (a job already released to the workers is parked
// again when a worker takes it); resume releases them in the same order. Both platforms name it /blip3o-admin queue
// (there is no /queue). Users cancel their own jobs with the Cancel button (bots/core/submit.ts), which goes through
// the same gate.removed() step as a purge.
import type { Redis } from '../../../src/redis.ts';
import { requestCancel } from '../../../src/jobs/cancel.ts';
import type { Job } from 'bullmq';
import { channelKey, workspaceOf, type JobRequest } from '../../../src/jobs/contract.ts';
import type { JobsQueue } from '../../../src/jobs/queue.ts';
import { UserError } from '../../../src/errors.ts';
import { userKeyOf } from '../../../src/scheduling/fair.ts';
import type { Invocation, Reply } from '../port.ts';
import { channelName, describeUsage, requireAdmin, type AdminDeps } from './limits.ts';

export interface QueueDeps extends AdminDeps {
  readonly queue: JobsQueue;
  readonly redis: Redis;
  /** Remove a job that has not started, its owner told `message` (bots/core/submit.ts). */
  removeQueued(job: Job<JobRequest>, message: string): Promise<boolean>;
  /** The workers that take jobs now (src/cache/results.ts: each publishes its model while it runs). */
  readonly cache?: { readyWorkers(): Promise<number> };
}

async function status(deps: QueueDeps, inv: Invocation): Promise<string> {
  const { limiter, scheduler } = deps.gate;
  const counts = await deps.queue.getJobCounts('active', 'delayed', 'prioritized', 'waiting');
  const channels = await scheduler.channels();
  const waiting = channels.reduce((n, c) => n + c.queued, 0);
  const d = inv.destination;
  const prefix = `${d.platform}:${workspaceOf(d)}:`;
  const own = channelKey(d);
  const mine = channels.filter((c) => c.channelKey.startsWith(prefix));
  if (!mine.some((c) => c.channelKey === own)) mine.unshift({ channelKey: own, queued: 0, paused: false });
  const lines = [`Queue: ${counts.active ?? 0} running, ${waiting} waiting in ${channels.filter((c) => c.queued > 0).length} channels.`];
  const workers = await deps.cache?.readyWorkers().catch(() => undefined);
  if (workers === 0) lines.push('No GPU worker is ready: jobs wait until one is (a worker\'s first start downloads and converts the model first).');
  else if (workers !== undefined) lines.push(`GPU workers ready: ${workers}.`);
  for (const c of mine) {
    const { limit } = await limiter.channelLimit(c.channelKey);
    const usage = await limiter.usage('channel', c.channelKey, limit);
    lines.push(`${channelName(inv, c.channelKey)}: ${c.queued} waiting${c.paused ? ' (paused)' : ''}; ${describeUsage(usage)}`);
  }
  return lines.join('\n');
}

/** Remove the user's waiting jobs in this workspace (their owners are told) and stop their running ones. */
async function purgeUser(deps: QueueDeps, inv: Invocation, targetUserId: string): Promise<string> {
  const d = inv.destination;
  const userKey = userKeyOf({ ...d, userId: targetUserId });
  const prefix = `${d.platform}:${workspaceOf(d)}:`;
  const waiting = (await deps.gate.scheduler.waitingJobs()).filter((j) => j.userKey === userKey && j.channelKey.startsWith(prefix));
  let removed = 0;
  // Jobs told to stop, once each: a job a worker has just taken (locked, its start not yet told to the scheduler) is
  // both in the scheduler's waiting list and among BullMQ's active jobs.
  const stopping = new Set<string>();
  for (const { jobId } of waiting) {
    const job = await deps.queue.getJob(jobId);
    if (!job) {
      await deps.gate.removed(jobId);
      continue;
    }
    await requestCancel(deps.redis, deps.config, jobId); // if a worker takes it meanwhile, it sees the flag
    if (await deps.removeQueued(job, 'Removed from the queue by an admin.')) removed++;
    else stopping.add(jobId);
  }
  for (const job of await deps.queue.getActive()) {
    // Stryker disable next-line OptionalChaining: equivalent, an active job has its data
    const dest = job.data?.destination;
    // The platform is part of the workspace prefix.
    // Stryker disable next-line OptionalChaining: equivalent, as above
    if (dest?.userId !== targetUserId || `${dest.platform}:${workspaceOf(dest)}:` !== prefix) continue;
    // Stryker disable next-line ConditionalExpression: equivalent, asking twice to cancel is asking once (the count is a set)
    if (stopping.has(job.id!)) continue;
    await requestCancel(deps.redis, deps.config, job.id!);
    stopping.add(job.id!);
  }
  return `Removed ${removed} waiting job${removed === 1 ? '' : 's'} of that user${stopping.size ? `; stopping ${stopping.size} running` : ''}.`;
}

export async function queueCommand(inv: Invocation, deps: QueueDeps): Promise<Reply> {
  const input = inv.input;
  if (input.command !== 'queue') throw new Error(`not a queue command: ${input.command}`);
  requireAdmin(inv, 'manage the queue');
  const ck = channelKey(inv.destination);
  const { scheduler } = deps.gate;
  switch (input.action) {
    case 'status':
      return { kind: 'text', text: await status(deps, inv), private: true };
    case 'pause':
      await scheduler.pause(ck);
      return { kind: 'text', text: 'Paused this channel: its jobs keep their place in line and wait; new requests queue behind them. Resume with `/blip3o-admin queue resume`.', private: true };
    case 'resume':
      await scheduler.resume(ck);
      return { kind: 'text', text: 'Resumed this channel: its jobs run again, in order.', private: true };
    case 'purge-user':
      if (!input.targetUserId) throw new UserError('bad_request', 'Name the user whose jobs to remove.');
      return { kind: 'text', text: await purgeUser(deps, inv, input.targetUserId), private: true };
  }
}
