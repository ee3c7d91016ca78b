// What observeJobWorker (src/observability/hooks.ts) makes of BullMQ's local job events: the outcome a job ends with,
// and which values reach the labels (bounded, and nothing that names a user, a channel or quotes a request).
import { EventEmitter } from 'node:events';
import { UnrecoverableError, type Worker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { CONTRACT_VERSION, type Destination, type JobRequest } from '../../../../src/jobs/contract.ts';
import { observeDeliveryWorker, observeJobWorker } from '../../../../src/observability/hooks.ts';
import { createMetrics } from '../../../../src/observability/metrics.ts';

function imagine(id: string, destination: Destination, prompt = 'a red fox'): JobRequest {
  return { v: CONTRACT_VERSION, id, kind: 'imagine', submittedAt: 1, destination, prompt, options: { seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 3, aspect: '1:1' } };
}

function jobsWorker() {
  const metrics = createMetrics('worker', { defaultMetrics: false });
  const events = Object.assign(new EventEmitter(), { name: 'jobs' });
  observeJobWorker(metrics, events as unknown as Worker, () => 'cpu');
  return { metrics, events };
}

const job = (data: JobRequest, attemptsMade = 1, attempts = 3) => ({ id: data.id, data, timestamp: 1000, processedOn: 2000, finishedOn: 3500, attemptsMade, opts: { attempts } });

describe('observeJobWorker', () => {
  it('records a cancelled job as outcome="cancelled", not as a failure of the job', async () => {
    const { metrics, events } = jobsWorker();
    const d: Destination = { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'a1' };
    // what worker/processor.ts throws for a cancel: UnrecoverableError tagged with the classified code
    events.emit('failed', job(imagine('j1', d)), Object.assign(new UnrecoverableError('Cancelled.'), { code: 'cancelled' }));
    events.emit('failed', job(imagine('j2', d)), Object.assign(new UnrecoverableError('too long'), { code: 'timeout' }));
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^blip3o_job_seconds_count\{[^}]*outcome="cancelled"[^}]*\} 1$/m);
    expect(text).toMatch(/^blip3o_job_seconds_count\{[^}]*outcome="failed"[^}]*\} 1$/m);
  });

  it('counts a job BullMQ failed for stalling too often as reason="stalled", not as any UnrecoverableError', async () => {
    const { metrics, events } = jobsWorker();
    const d: Destination = { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'a1' };
    // what the worker that next takes the job emits (BullMQ's deferred failure, set by moveStalledJobsToWait)
    events.emit('failed', job(imagine('j1', d)), new UnrecoverableError('job stalled more than allowable limit'));
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^blip3o_failures_total\{[^}]*reason="stalled"[^}]*\} 1$/m);
  });

  it('puts no user, channel, workspace or message id in a label: one series per platform however many DMs and channels', async () => {
    const { metrics, events } = jobsWorker();
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) {
      const dm: Destination = { platform: 'discord', guildId: null, channelId: `80000000000000${i}`, userId: `90000000000000${i}`, applicationId: 'a1' };
      const slack: Destination = { platform: 'slack', teamId: `T0${i}X`, channelId: `C0${i}SECRET`, userId: `U0${i}USER`, private: true, dmChannelId: `D0${i}DM`, noLog: true };
      ids.push(dm.channelId, dm.userId, slack.teamId, slack.channelId, slack.userId, slack.dmChannelId!);
      events.emit('completed', job(imagine(`d${i}`, dm)), { status: 'succeeded', timingsMs: { features: 100, decoding: 50 } });
      events.emit('failed', job(imagine(`s${i}`, slack, 'a secret prompt'), 3, 3), new Error('boom'));
    }
    const text = await metrics.registry.metrics();
    for (const id of ids) expect(text, id).not.toContain(id);
    expect(text).not.toContain('secret prompt');
    expect(text.split('\n').filter((l) => l.startsWith('blip3o_gpu_seconds_total{'))).toHaveLength(2); // discord, slack
  });
});

describe('observeDeliveryWorker', () => {
  it("counts a result sent to the requester's DM, or dropped with nowhere to post it, apart from one posted as asked (before: all 'delivered')", async () => {
    const metrics = createMetrics('bot', { defaultMetrics: false });
    const events = Object.assign(new EventEmitter(), { name: 'delivery-slack' });
    observeDeliveryWorker(metrics, events as unknown as Worker);
    const destination: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
    for (const returned of ['delivered', 'duplicate', 'elsewhere', 'nowhere', 'nowhere']) events.emit('completed', { id: 'r', data: { destination } }, returned);
    const text = await metrics.registry.metrics();
    const count = (outcome: string) => Number(new RegExp(`^blip3o_deliveries_total\\{platform="slack",outcome="${outcome}",component="bot"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    expect([count('delivered'), count('duplicate'), count('elsewhere'), count('nowhere')]).toEqual([1, 1, 1, 2]);
  });
});
