import { describe, expect, it } from 'vitest';
import type { JobResult } from '../../../../src/jobs/contract.ts';
import { ACTION, answerMessage, escapeMrkdwn, failureText, finalStatusMessage, imageResultMessage, progressText, statusMessage } from '../../../../bots/slack/blocks.ts';

const result: JobResult = {
  v: 1,
  jobId: 'job-1',
  kind: 'imagine',
  destination: { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' },
  status: 'succeeded',
  image: { blobKey: 'b', mime: 'image/png', width: 64, height: 64, altText: 'a fox', prompt: 'a <fox>', options: { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '16:9' } },
  timingsMs: {},
  finishedAt: 0,
};

const buttons = (m: { blocks: Record<string, unknown>[] }) =>
  m.blocks.flatMap((b) => (b.type === 'actions' ? (b.elements as { action_id: string; value: string; text: { text: string } }[]) : []));

describe('Block Kit rendering', () => {
  it('shows queue position, then stage and step with a bar, with a Cancel button', () => {
    expect(progressText({ stage: 'queued', step: 0, total: 0, queuePosition: 3 })).toBe('Queued: 3rd in line.');
    expect(progressText({ stage: 'queued', step: 0, total: 0, queuePosition: 3, noWorker: true })).toBe('Queued: 3rd in line. No GPU worker is running right now; your request starts as soon as one is.');
    const running = statusMessage('job-1', ':art: a fox', { stage: 'features', step: 6, total: 12 });
    expect(running.text).toBe('Drawing 6/12');
    expect(JSON.stringify(running.blocks)).toContain('▓▓▓▓▓▓░░░░░░');
    expect(buttons(running)).toEqual([expect.objectContaining({ action_id: ACTION.cancel, value: 'job-1', text: expect.objectContaining({ text: 'Cancel' }) })]);
  });

  it('renders the result with Re-roll and Vary carrying the job id, escaping mrkdwn', () => {
    const m = imageResultMessage(result);
    expect(buttons(m).map((b) => [b.text.text, b.action_id, b.value])).toEqual([
      ['Re-roll', ACTION.reroll, 'job-1'],
      ['Vary', ACTION.vary, 'job-1'],
    ]);
    expect(JSON.stringify(m.blocks)).toContain('a &lt;fox&gt;');
    expect(JSON.stringify(m.blocks)).toContain('seed 7 · 16:9');
    expect(escapeMrkdwn('a & b')).toBe('a &amp; b');
  });

  it('ends the status message without Cancel, and hides internal errors behind a reference', () => {
    expect(finalStatusMessage('t', result)).toMatchObject({ text: 'Done: the image is in the thread' });
    expect(buttons(finalStatusMessage('t', result))).toEqual([]);
    const failed = { ...result, status: 'failed' as const, error: { code: 'model', message: 'onnx exploded at /x/y', userFacing: false } };
    expect(failureText(failed)).toBe('Something went wrong on our side (ref job-1).');
    expect(failureText({ ...failed, error: { code: 'bad_image', message: 'That image is too small.', userFacing: true } })).toBe('That image is too small.');
  });

  it('splits long answers into sections under the 3000-character limit', () => {
    const m = answerMessage('y'.repeat(7000));
    expect(m.blocks).toHaveLength(3);
    for (const b of m.blocks) expect(((b.text as { text: string }).text).length).toBeLessThanOrEqual(3000);
  });
});
