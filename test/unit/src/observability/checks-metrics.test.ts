// The prompt-match score and re-rolls a job's return value carries (worker/processor.ts ProcessOutcome) are exported
// as metrics when the job completes (issue 16).
import { EventEmitter } from 'node:events';
import type { Worker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { observeJobWorker } from '../../../../src/observability/hooks.ts';
import { createMetrics } from '../../../../src/observability/metrics.ts';

const destination = { platform: 'cli', clientId: 'c1', channelId: 'ch', userId: 'u' };
const data = { v: 1, id: 'j1', kind: 'imagine', destination, submittedAt: 1, prompt: 'a fox', options: { seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 3, aspect: '1:1' } };

describe('checks metrics', () => {
  it('observes the delivered image’s match score and counts its re-rolls', async () => {
    const metrics = createMetrics('worker', { defaultMetrics: false });
    const events = Object.assign(new EventEmitter(), { name: 'jobs' });
    const worker = events as unknown as Worker;
    observeJobWorker(metrics, worker, () => 'cpu');
    const job = { data, timestamp: 1, processedOn: 2, finishedOn: 3, opts: {} };
    events.emit('completed', job, { status: 'succeeded', matchScore: 0.83, tries: 3, timingsMs: { checking: 40 } });
    events.emit('completed', job, { status: 'succeeded', timingsMs: {} }); // no checks: nothing observed
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/prompt_match_score_count\{[^}]*kind="imagine"[^}]*\} 1$/m);
    expect(text).toMatch(/prompt_match_score_sum\{[^}]*kind="imagine"[^}]*\} 0\.83$/m);
    expect(text).toMatch(/rerolls_total\{[^}]*kind="imagine"[^}]*\} 2$/m);
    expect(text).toMatch(/job_stage_seconds_count\{[^}]*stage="checking"[^}]*\} 1$/m);
  });
});
