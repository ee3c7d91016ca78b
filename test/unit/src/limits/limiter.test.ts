import { describe, expect, it } from 'vitest';
import { denialMessage, durationPhrase, windowPhrase } from '../../../../src/limits/limiter.ts';

const limit = { requestsPerWindow: 5, windowSeconds: 60, burst: 5, maxConcurrent: 2 };

describe('denial messages', () => {
  it('name the limit that was hit and when to retry', () => {
    expect(denialMessage({ admitted: false, scope: 'channel', kind: 'rate', limit, retryAfterMs: 41_200 }, 'discord')).toBe(
      'This channel allows 5 requests per minute; try again in 42 s.',
    );
    expect(denialMessage({ admitted: false, scope: 'user', kind: 'rate', limit: { ...limit, requestsPerWindow: 1 }, retryAfterMs: 1 }, 'slack')).toBe(
      'You can make 1 request per minute; try again in 1 s.',
    );
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'concurrency', limit, retryAfterMs: 0 }, 'discord')).toBe(
      'This server already has 2 jobs queued or running, the most allowed; try again when one finishes.',
    );
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'rate', limit, retryAfterMs: 300_000 }, 'slack')).toMatch(/^This workspace allows .* 5 min\.$/);
  });

  it('phrase windows and waits in words', () => {
    expect(windowPhrase(60)).toBe('per minute');
    expect(windowPhrase(3600)).toBe('per hour');
    expect(windowPhrase(120)).toBe('per 2 minutes');
    expect(windowPhrase(90)).toBe('per 90 seconds');
    expect(durationPhrase(0)).toBe('1 s');
    expect(durationPhrase(118_500)).toBe('119 s');
    expect(durationPhrase(119_500)).toBe('2 min');
    expect(durationPhrase(3 * 3600_000)).toBe('3 h 0 min');
  });
});
