// What the model's self-check says next to a delivered image, the same words on every platform (issue 16):
// "matches the prompt: 0.91" and, after re-rolls, "best of 3 tries".
import type { ImageResult } from '../../src/jobs/contract.ts';

export function checkLine(image: Pick<ImageResult, 'matchScore' | 'tries'>): string | undefined {
  const parts: string[] = [];
  if (image.matchScore !== undefined) parts.push(`matches the prompt: ${image.matchScore.toFixed(2)}`);
  if (image.tries !== undefined && image.tries > 1) parts.push(`best of ${image.tries} tries`);
  return parts.length ? parts.join(' · ') : undefined;
}
