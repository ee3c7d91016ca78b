// The note a delivered result carries when no model ran for it (docs/cost.md), the same on every platform.
import type { JobResult } from '../../src/jobs/contract.ts';

/** "from the cache, no GPU time used" / "shared with an identical request", or '' for a result computed for this request. */
export function servedNote(result: Pick<JobResult, 'servedFrom'>): string {
  if (result.servedFrom === 'cache') return 'from the cache, no GPU time used';
  if (result.servedFrom === 'shared') return 'shared with an identical request';
  return '';
}

/** Every note servedNote gives. */
const SERVED_NOTES: readonly string[] = [servedNote({ servedFrom: 'cache' }), servedNote({ servedFrom: 'shared' })];

/**
 * An answer read back (a conversation's history) without the served note its platform put under it: `line(note)` is
 * how that platform writes the note's line ("\n-# …" on Discord, "\n_…_" on Slack).
 */
export function withoutServedNote(shown: string, line: (note: string) => string): string {
  const noted = SERVED_NOTES.map(line).find((l) => shown.endsWith(l));
  return noted ? shown.slice(0, -noted.length) : shown;
}
