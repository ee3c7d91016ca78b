// Saved settings with text that is not ASCII (bots/core/settings.ts): a saved negative prompt is measured and cut in
// characters as a typed one is (code points, src/text.ts), and what /settings shows of it is cut between whole
// characters, as is a mistyped duration it quotes.
import { describe, expect, it } from 'vitest';
import { describeInForce, parseDuration, withDefaults } from '../../../../bots/core/settings.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { expectWholeGraphemes, WORLD } from '../../../doubles/world-text.ts';

const config = loadConfig({ env: {}, overrides: { generation: { maxNegativeChars: 6 } } });

describe('a saved negative prompt', () => {
  it('of emoji at the limit is used whole: 6 characters, not 12 code units', () => {
    const negative = '🚫'.repeat(6);
    expect(withDefaults<{ negative?: string }>({}, { negative }, config.generation).negative).toBe(negative);
    expect(describeInForce({ channel: {}, user: { negative } }, config)).toContain(`no: ${negative} (yours)`);
  });

  it('over a lowered limit is cut to its first characters, never through an emoji', () => {
    expect(withDefaults<{ negative?: string }>({}, { negative: 'a' + '🚫'.repeat(9) }, config.generation).negative).toBe('a' + '🚫'.repeat(5));
  });

  it('is shown cut between whole graphemes', () => {
    const wide = loadConfig({ env: {} });
    for (const text of [WORLD.family, WORLD.devanagari, WORLD.flag, WORLD.thai]) {
      const negative = ('x' + text.repeat(80)).slice(0, 200);
      const shown = /no: (.*) \(yours\)/.exec(describeInForce({ channel: {}, user: { negative } }, wide))![1]!;
      expectWholeGraphemes(shown, negative);
    }
  });
});

it('a mistyped duration is quoted cut between whole characters', () => {
  const typed = 'x' + WORLD.fox.repeat(30);
  const quoted = (() => {
    try {
      parseDuration(typed);
    } catch (e) {
      return /^"(.*)" is not a duration/.exec((e as Error).message)![1]!;
    }
  })()!;
  expectWholeGraphemes(quoted, typed);
});
