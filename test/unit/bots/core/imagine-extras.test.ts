// Issue 20's option parsing: `--no` (negative prompts) and `--n` (several images) on every surface that takes them.
import { describe, expect, it } from 'vitest';
import { joinNegatives, splitImagineFlags } from '../../../../bots/core/imagine-flags.ts';
import { imagineRequest } from '../../../../bots/core/requests.ts';
import { imagineInput } from '../../../../bots/discord/options.ts';
import { parseImagine } from '../../../../bots/slack/options.ts';
import { loadConfig } from '../../../../src/config/load.ts';

const config = loadConfig({ env: {} });
const base = { id: 'jtest', destination: { platform: 'cli' as const, clientId: 'c', channelId: 'local', userId: 'u' }, submittedAt: 1 };
const reader = (v: Record<string, string | number>) => ({
  getString: (n: string) => (typeof v[n] === 'string' ? (v[n] as string) : null),
  getInteger: (n: string) => (typeof v[n] === 'number' ? (v[n] as number) : null),
  getNumber: (n: string) => (typeof v[n] === 'number' ? (v[n] as number) : null),
});

describe('negative prompts', () => {
  it('--no takes the words up to the next option (the one parser of both adapters); joinNegatives joins what is set', () => {
    const g = config.generation;
    expect(splitImagineFlags('a castle at dusk --no people, cars', g)).toEqual({ prompt: 'a castle at dusk', flags: { negative: 'people, cars' } });
    expect(splitImagineFlags('a cat --no dogs --ar 16:9', g)).toEqual({ prompt: 'a cat', flags: { negative: 'dogs', aspect: '16:9' } });
    expect(splitImagineFlags('x \u2014no blur', g)).toEqual({ prompt: 'x', flags: { negative: 'blur' } }); // a smartened dash
    expect(splitImagineFlags('a fox --no dogs   ', g)).toEqual({ prompt: 'a fox', flags: { negative: 'dogs' } });
    expect(() => splitImagineFlags('a fox --no ', g)).toThrow(/`--no` needs the words to keep out/);
    expect(() => splitImagineFlags('a cat --no dogs --no birds', g)).toThrow(/`--no` is given twice/);
    expect(() => splitImagineFlags('notable knot --nothing', g)).toThrow(/Unknown option `--nothing`/);
    expect(joinNegatives(' fog ', undefined, '', 'rain')).toBe('fog, rain');
    expect(joinNegatives(null, '  ')).toBeUndefined();
  });

  it('Discord: the negative option and --no in the prompt are joined; Slack: --no takes every word up to the next flag', () => {
    expect(imagineInput(reader({ prompt: 'a fox --no snow', negative: 'trees', images: 3 }))).toEqual({ command: 'imagine', prompt: 'a fox', negative: 'trees, snow', count: 3 });
    expect(parseImagine('a fox —no snow, trees --n 4 --seed 3', config.generation)).toEqual({ command: 'imagine', prompt: 'a fox', negative: 'snow, trees', count: 4, seed: 3 });
    expect(() => parseImagine('a fox --no', config.generation)).toThrow(/needs the words/);
    expect(() => parseImagine('a fox --n 99', config.generation)).toThrow(/between 1 and 4/);
  });

  it('the core keeps a trimmed negative, drops a blank one, and refuses one over the limit', () => {
    expect(imagineRequest(config, base, { command: 'imagine', prompt: 'fox', negative: '  blur ' }).options.negative).toBe('blur');
    expect(imagineRequest(config, base, { command: 'imagine', prompt: 'fox', negative: '  ' }).options).not.toHaveProperty('negative');
    expect(() => imagineRequest(config, base, { command: 'imagine', prompt: 'fox', negative: 'x'.repeat(config.generation.maxNegativeChars + 1) })).toThrow(/negative prompt is/);
  });
});

describe('several images', () => {
  it('count: default from config, bounded by maxImagesPerRequest; seeds s … s+count−1 must all be valid', () => {
    expect(imagineRequest(config, base, { command: 'imagine', prompt: 'fox' }).options).not.toHaveProperty('count');
    expect(imagineRequest(config, base, { command: 'imagine', prompt: 'fox', count: 4 }).options.count).toBe(4);
    const withDefault = loadConfig({ env: {}, overrides: { generation: { defaultImageCount: 2 } } });
    expect(imagineRequest(withDefault, base, { command: 'imagine', prompt: 'fox' }).options.count).toBe(2);
    expect(() => imagineRequest(config, base, { command: 'imagine', prompt: 'fox', count: 5 })).toThrow(/from 1 to 4/);
    expect(() => imagineRequest(config, base, { command: 'imagine', prompt: 'fox', count: 4, seed: 2 ** 32 - 2 })).toThrow(/seed can be at most/);
    for (let i = 0; i < 50; i++) {
      const o = imagineRequest(config, base, { command: 'imagine', prompt: 'fox', count: 4 }).options;
      expect(o.seed + 3).toBeLessThanOrEqual(2 ** 32 - 1);
    }
  });
});
