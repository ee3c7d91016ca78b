// The note a delivered result carries when no model ran for it (docs/cost.md), the same on every platform.
import type { JobResult } from '../../src/jobs/contract.ts';

/** "from the cache, no GPU time used" / "shared with an identical request", or '' for a result computed for this request. */
export function servedNote(result: Pick<JobResult, 'servedFrom'>): string {
  if (result.servedFrom === 'cache') return 'from the cache, no GPU time used';
  if (result.servedFrom === 'shared') return 'shared with an identical request';
  return '';
}

/** Every note servedNote gives: a bot that reads its own answer back (a conversation's history) leaves it out. */
export const SERVED_NOTES: readonly string[] = [servedNote({ servedFrom: 'cache' }), servedNote({ servedFrom: 'shared' })];
