// The /usage report's names in any script (bots/core/commands/usage.ts): Discord channel names often carry emoji
// ("🎨-art", "🇯🇵-japan"), and a name is cut to 24 characters in the table and again in the chart. Each cut falls
// between whole characters: a flag cut in two shows its first letter, half an emoji a U+FFFD in the chart.
import { describe, expect, it } from 'vitest';
import { cleanName, usageChartSvg } from '../../../../../bots/core/commands/usage.ts';
import { expectWholeGraphemes, isWellFormed, WORLD } from '../../../../doubles/world-text.ts';

describe('names in the usage report', () => {
  it.each(Object.entries(WORLD))('a long name of %s is cut between whole characters', (_name, text) => {
    const name = `#${text.repeat(30)}`;
    expectWholeGraphemes(cleanName(name), name);
  });

  it('a name of emoji is shown in the chart without half of one', () => {
    const label = `#${WORLD.fox.repeat(20)}`;
    const svg = usageChartSvg([{ label, value: 3 }], [{ label: `@${WORLD.flag.repeat(20)}`, value: 1 }], 'Usage');
    expect(isWellFormed(svg)).toBe(true);
    const shown = [...svg.matchAll(/<text x="24"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!);
    expectWholeGraphemes(shown[0]!, label);
    expectWholeGraphemes(shown[1]!, `@${WORLD.flag.repeat(20)}`);
  });
});
