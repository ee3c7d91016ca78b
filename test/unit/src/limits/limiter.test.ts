import { describe, expect, it } from 'vitest';
import { denialMessage, durationPhrase, windowPhrase } from '../../../../src/limits/limiter.ts';
import { IN_DM, IN_SERVER, IN_SLACK } from '../../../doubles/refusal-places.ts';

const limit = { requestsPerWindow: 5, windowSeconds: 60, burst: 5, maxConcurrent: 2 };

describe('denial messages', () => {
  it('name the limit that was hit and when to retry', () => {
    expect(denialMessage({ admitted: false, scope: 'channel', kind: 'rate', limit, retryAfterMs: 41_200 }, IN_SERVER)).toBe(
      'This channel allows 5 requests per minute; try again in 42 s.',
    );
    expect(denialMessage({ admitted: false, scope: 'user', kind: 'rate', limit: { ...limit, requestsPerWindow: 1 }, retryAfterMs: 1 }, IN_SLACK)).toBe(
      'You can make 1 request per minute; try again in 1 s.',
    );
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'concurrency', limit, retryAfterMs: 0 }, IN_SERVER)).toBe(
      'This server already has 2 jobs queued or running, the most allowed; try again when one finishes.',
    );
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'rate', limit, retryAfterMs: 300_000 }, IN_SLACK)).toMatch(/^This workspace allows .* 5 min\.$/);
  });

  // Every Discord DM with the bot is one workspace scope ('dm'): before 2026-12-07 its refusal said "This server".
  it('name Discord\'s DMs, all together, as what the workspace limit holds there', () => {
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'rate', limit, retryAfterMs: 41_200 }, IN_DM)).toBe(
      'Direct messages with this bot allow 5 requests per minute; try again in 42 s.',
    );
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'concurrency', limit, retryAfterMs: 0 }, IN_DM)).toBe(
      'Direct messages with this bot already have 2 jobs queued or running, the most allowed; try again when one finishes.',
    );
    expect(denialMessage({ admitted: false, scope: 'channel', kind: 'rate', limit, retryAfterMs: 41_200 }, IN_DM)).toBe('This channel allows 5 requests per minute; try again in 42 s.');
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

describe('a full cap refused together with a rate', () => {
  it('says to wait for a job and for the longest rate wait; alone, only for a job', () => {
    expect(denialMessage({ admitted: false, scope: 'user', kind: 'concurrency', limit, retryAfterMs: 3_599_200 }, IN_SERVER)).toBe(
      'You already have 2 jobs queued or running, the most allowed; try again when one finishes, and not before 60 min from now.',
    );
    expect(denialMessage({ admitted: false, scope: 'channel', kind: 'concurrency', limit, retryAfterMs: 0 }, IN_SLACK)).toBe(
      'This channel already has 2 jobs queued or running, the most allowed; try again when one finishes.',
    );
  });
});

describe('denial messages at the unit boundaries', () => {
  it('name days, and switch from seconds to minutes at 120 s and from minutes to hours at 120 min', () => {
    expect(windowPhrase(86_400)).toBe('per day');
    expect(windowPhrase(2 * 86_400)).toBe('per 2 days');
    expect(windowPhrase(7200)).toBe('per 2 hours');
    expect(windowPhrase(1)).toBe('per second');
    expect(durationPhrase(1)).toBe('1 s');
    expect(durationPhrase(1001)).toBe('2 s'); // rounded up
    expect(durationPhrase(119_000)).toBe('119 s');
    expect(durationPhrase(120_000)).toBe('2 min');
    expect(durationPhrase(119 * 60_000)).toBe('119 min');
    expect(durationPhrase(120 * 60_000)).toBe('2 h 0 min');
    expect(durationPhrase(125 * 60_000 + 1)).toBe('2 h 6 min');
  });

  it('word each scope and kind', () => {
    const one = { ...limit, requestsPerWindow: 1, maxConcurrent: 1 };
    expect(denialMessage({ admitted: false, scope: 'channel', kind: 'concurrency', limit: one, retryAfterMs: 0 }, IN_SLACK)).toBe(
      'This channel already has 1 job queued or running, the most allowed; try again when one finishes.',
    );
    expect(denialMessage({ admitted: false, scope: 'user', kind: 'concurrency', limit, retryAfterMs: 0 }, IN_SERVER)).toBe(
      'You already have 2 jobs queued or running, the most allowed; try again when one finishes.',
    );
    expect(denialMessage({ admitted: false, scope: 'workspace', kind: 'rate', limit: one, retryAfterMs: 500 }, IN_SERVER)).toBe(
      'This server allows 1 request per minute; try again in 1 s.',
    );
  });
});
