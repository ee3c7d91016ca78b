// A cached image that prompt-match re-rolls made (docs/checks.md: the best try is delivered "with its own seed in the
// settings line, so it can be reproduced"): served from the cache, it must still name the seed that drew it, and keep
// the model's caption as its alt text, not relabel it with the seed and prompt the later request asked for.
import { describe, expect, it } from 'vitest';
import { CACHED_TEXT } from '../../../../bots/core/submit.ts';
import { CONTRACT_VERSION, type JobRequest, type JobResult } from '../../../../src/jobs/contract.ts';
import { jobIdFor } from '../../../../src/jobs/queue.ts';
import { createAfterJob } from '../../../../worker/after-job.ts';
import { coreHarness, invocation as inv, SILENT_LOG } from '../../../doubles/core-harness.ts';

const h = coreHarness('t-rerolled');

describe('a cached image drawn by a re-roll', () => {
  it('is served with the seed that drew it and the caption the model wrote', async () => {
    const c = h.core({}, { checks: { altText: true, match: { enabled: true, threshold: 0.9, maxRerolls: 2 } } });
    await c.cache.publishModel('model-r', 'w');
    const first = (await c.handle(inv({ command: 'imagine', prompt: 'a wren', seed: 7 }))) as { jobId: string };
    const request = (await h.data(c, first.jobId)) as Extract<JobRequest, { kind: 'imagine' }>;
    // What the worker hands over when the third try (seed 7 + 2) scored best.
    const result: JobResult = {
      v: CONTRACT_VERSION, jobId: request.id, kind: 'imagine', destination: request.destination, status: 'succeeded', timingsMs: {}, finishedAt: Date.now(),
      image: {
        blobKey: await c.blobs.put(h.png, 'output'), mime: 'image/png', width: 32, height: 32, altText: 'A small brown bird on a branch.',
        caption: 'A small brown bird on a branch.', matchScore: 0.8, tries: 3, prompt: 'a wren', options: { ...request.options, seed: 9 },
      },
    };
    const after = createAfterJob({ config: c.config, redis: h.redis, blobs: c.blobs, log: SILENT_LOG, manifestHash: 'model-r' });
    try {
      await after.afterHandOver(request, result, 1_000, h.png);
    } finally {
      await after.close();
    }
    const again = inv({ command: 'imagine', prompt: 'a wren', seed: 7 });
    expect(await c.handle(again)).toMatchObject({ text: CACHED_TEXT });
    const served = await h.handedOver(c, jobIdFor('discord', again.dedupeKey));
    expect(served!.image).toMatchObject({ options: { seed: 9 }, altText: 'A small brown bird on a branch.', caption: 'A small brown bird on a branch.' });
  });
});
