// Prompt, negative prompt and question limits as users around the world meet them: counted in characters as Discord
// counts an option's max_length (code points: its API is Python 3, discord-api-docs#1315), so a prompt Discord let
// through is not refused here as twice as long, and the refusal says the length the user typed. Emoji alone are a
// prompt: their joiners, variation selectors and tag characters are format characters, but the emoji themselves are not.
import { describe, expect, it } from 'vitest';
import { askRequest, checkQuestion, imagineRequest, varyRequest } from '../../../../bots/core/requests.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { WORLD } from '../../../doubles/world-text.ts';

const config = loadConfig({ env: {}, overrides: { generation: { maxPromptChars: 10, maxNegativeChars: 6 }, understanding: { maxQuestionChars: 8 } } });
const base = { id: 'jtest', destination: { platform: 'cli' as const, clientId: 'c', channelId: 'local', userId: 'u' }, submittedAt: 1 };
const imagine = (prompt: string, negative?: string) => imagineRequest(config, base, { command: 'imagine', prompt, ...(negative ? { negative } : {}) });

describe('limits count characters, not UTF-16 code units', () => {
  it('a prompt of exactly the limit in emoji or rare CJK is accepted (Discord counted it as 10)', () => {
    expect(imagine(WORLD.fox.repeat(10)).prompt).toBe(WORLD.fox.repeat(10));
    expect(imagine('𠮷'.repeat(10)).prompt).toBe('𠮷'.repeat(10));
    expect(varyRequest(config, base, 'k', { command: 'vary', image: {}, prompt: WORLD.fox.repeat(10) }).prompt).toBe(WORLD.fox.repeat(10));
  });

  it('one more is refused with the count the user typed', () => {
    expect(() => imagine(WORLD.fox.repeat(11))).toThrow('Your prompt is 11 characters; the limit is 10.');
  });

  it('the negative prompt and the question likewise', () => {
    expect(imagine('fox', WORLD.fox.repeat(6)).options.negative).toBe(WORLD.fox.repeat(6));
    expect(() => imagine('fox', WORLD.fox.repeat(7))).toThrow('Your negative prompt is 7 characters; the limit is 6.');
    expect(checkQuestion(config, '🤔'.repeat(8))).toBe('🤔'.repeat(8));
    expect(() => checkQuestion(config, '🤔'.repeat(9))).toThrow('Your question is 9 characters; the limit is 8.');
  });

  it('an earlier turn longer than the limit is cut to its first characters, never through an emoji', () => {
    const r = askRequest(config, base, 'k', { command: 'ask', question: 'why?', image: {}, history: [{ role: 'assistant', text: 'a' + WORLD.fox.repeat(20) }] });
    expect(r.history[0]!.text).toBe('a' + WORLD.fox.repeat(7));
  });
});

describe('emoji, RTL and combining scripts are prompts', () => {
  it.each(Object.entries(WORLD))('%s alone is accepted as typed', (_name, text) => {
    const wide = loadConfig({ env: {} });
    expect(imagineRequest(wide, base, { command: 'imagine', prompt: text }).prompt).toBe(text);
    expect(checkQuestion(wide, text)).toBe(text);
  });
});
