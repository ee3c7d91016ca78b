// severalImagesProgress (worker/processor.ts) on its own: how a --n job's per-image reports become the job's counts
// where the images' totals differ (the first one computes the cached negative: 30 more DiT steps) and after a re-roll.
import { describe, expect, it } from 'vitest';
import type { ProgressReport } from '../../../worker/pipeline/types.ts';
import { severalImagesProgress } from '../../../worker/processor.ts';

function recorder(count: number) {
  const shown: string[] = [];
  const forImage = severalImagesProgress(count, (r) => shown.push(`${r.stage} ${r.step}/${r.total}`));
  const report = (image: number, stage: ProgressReport['stage'], step: number, total: number) => forImage(image)({ stage, step, total });
  return { shown, report };
}

describe('severalImagesProgress', () => {
  it('a first image with the negative\'s extra steps: images not yet drawing count as it does, then as their own', () => {
    const { shown, report } = recorder(2);
    report(0, 'features', 40, 40); // 10 + 30 negative steps
    report(1, 'features', 0, 10);
    report(1, 'features', 10, 10);
    expect(shown).toEqual(['features 40/80', 'features 40/50', 'features 50/50']); // the step never goes back
  });

  it('a re-rolled image counts its new drawing from 0, after "Retrying with a new seed"', () => {
    const { shown, report } = recorder(2);
    report(0, 'features', 10, 10);
    report(0, 'retrying', 1, 2);
    report(0, 'features', 3, 10);
    expect(shown).toEqual(['features 10/20', 'retrying 1/4', 'features 3/20']);
  });

  it('keeps the other fields of a report', () => {
    const seen: ProgressReport[] = [];
    severalImagesProgress(2, (r) => seen.push(r))(1)({ stage: 'answering', step: 1, total: 8, partialText: 'a c' });
    expect(seen).toEqual([{ stage: 'answering', step: 1, total: 16, partialText: 'a c' }]);
  });
});
