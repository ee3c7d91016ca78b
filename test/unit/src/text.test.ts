// src/text.ts: characters counted as Discord and the job format count them, and cuts a reader never sees through.
import { describe, expect, it } from 'vitest';
import { charCount, clipText, cutPoint, firstChars, lengthRefusal, withOpenBlockClosed } from '../../../src/text.ts';
import { expectWholeGraphemes, graphemes, WORLD } from '../../doubles/world-text.ts';

describe('charCount and firstChars: code points', () => {
  it('counts an emoji or a rare ideograph as one, a ZWJ sequence as its code points', () => {
    expect(charCount('')).toBe(0);
    expect(charCount('fox')).toBe(3);
    expect(charCount(WORLD.fox.repeat(3))).toBe(3);
    expect(charCount('𠮷')).toBe(1);
    expect(charCount(WORLD.family)).toBe(5);
    expect(charCount(WORLD.cjk)).toBe(WORLD.cjk.length);
  });

  it('keeps the first n code points, never half a pair', () => {
    expect(firstChars('a🦊🦊b', 2)).toBe('a🦊');
    expect(firstChars('a🦊🦊b', 0)).toBe('');
    expect(firstChars('a🦊🦊b', 4)).toBe('a🦊🦊b');
    expect(firstChars('abc', 5)).toBe('abc');
  });
});

describe('lengthRefusal: the one sentence for a text past its limit, bots and worker alike', () => {
  it('says nothing within or at the limit, and the count and the limit past it', () => {
    expect(lengthRefusal('Your prompt', 'x'.repeat(10), 10)).toBeUndefined();
    expect(lengthRefusal('Your prompt', '', 1)).toBeUndefined();
    expect(lengthRefusal('Your prompt', 'x'.repeat(11), 10)).toBe('Your prompt is 11 characters; the limit is 10.');
    expect(lengthRefusal('An earlier turn', 'b'.repeat(16), 15)).toBe('An earlier turn is 16 characters; the limit is 15.');
  });

  it('counts code points, as charCount does: ten foxes are 10 characters, a family emoji 5', () => {
    expect(lengthRefusal('Your question', WORLD.fox.repeat(10), 10)).toBeUndefined();
    expect(lengthRefusal('Your question', WORLD.fox.repeat(11), 10)).toBe('Your question is 11 characters; the limit is 10.');
    expect(lengthRefusal('Your negative prompt', WORLD.family, 4)).toBe('Your negative prompt is 5 characters; the limit is 4.');
  });
});

describe('cutPoint and clipText: between graphemes', () => {
  it.each(Object.entries(WORLD))('%s, repeated, is cut between whole graphemes at every room', (_name, text) => {
    const long = text.repeat(4);
    for (let max = graphemes(long)[0]!.length + 1; max <= long.length; max++) {
      const clipped = clipText(long, max);
      expect(clipped.length).toBeLessThanOrEqual(max);
      expectWholeGraphemes(clipped, long);
    }
  });

  it('leaves text that fits as it is, and cuts ASCII exactly at the room', () => {
    expect(clipText('abc', 3)).toBe('abc');
    expect(clipText('abcdef', 4)).toBe('abc…');
    expect(clipText('abcdef', 4, '')).toBe('abcd');
    expect(cutPoint('abcdef', 4)).toBe(4);
    expect(cutPoint('abc', 9)).toBe(3);
  });

  it('a family emoji is kept whole or left out, never shown as its first person', () => {
    const text = `ok ${WORLD.family}`;
    for (let at = 4; at < text.length; at++) expect(cutPoint(text, at)).toBe(3);
  });

  it('one grapheme longer than the room (a letter under many marks) is cut between code points, after `from`', () => {
    const zalgo = `a${'\u0301'.repeat(50)}`;
    expect(clipText(zalgo, 10)).toBe(`a${'\u0301'.repeat(8)}…`);
    expect(cutPoint(`🦊${'\u{1F3FD}'.repeat(9)}`, 5)).toBe(4); // a fox with skin tones: between two code points
    // the grapheme began at `from`: at the code point boundary at or before the room (👨 ZWJ 👩 from 2: 2, 4, 5, 7)
    expect(cutPoint(`xy${WORLD.family}`, 6, 2)).toBe(5);
    expect(cutPoint(`xy${WORLD.family}`, 4, 2)).toBe(4);
    expect(cutPoint(`xy${WORLD.family}`, 3, 2)).toBe(2);
  });

  it('at `from` itself, or past the end, the cut is there; never inside a pair at the edges of the low surrogates', () => {
    expect(cutPoint('abc', 3)).toBe(3); // the room is the whole text: no grapheme to look up at the end
    expect(cutPoint('🦊🦊', 1, 1)).toBe(1); // no room past `from`: `from`, even inside a pair
    // U+10000 and U+10FFFF end in the first and the last low surrogate (0xDC00, 0xDFFF): cut before the pair
    expect(cutPoint('\u{10000}\u{10000}', 1)).toBe(0);
    expect(cutPoint('\u{10FFFF}\u{10FFFF}', 1)).toBe(0);
    expect(cutPoint('a\uFE0F\uFE0F', 2)).toBe(2); // variation selectors (0xFE0F, above the surrogates): between them
    expect(clipText('abcdef', 0)).toBe('…'); // no room but for the mark
  });
});

describe('withOpenBlockClosed: a code block still open, closed (Discord and Slack alike)', () => {
  const open = 'Here:\n```ts\nconst a = 1;';
  it('adds a closing fence on its own line, or finishes one whose first backticks have arrived', () => {
    expect(withOpenBlockClosed(open, 6)).toBe('Here:\n```ts\nconst a = 1;\n```');
    expect(withOpenBlockClosed(`${open}\n`, 6)).toBe('Here:\n```ts\nconst a = 1;\n```'); // no blank line in the code (Slack added one until 2026-12-08)
    expect(withOpenBlockClosed(`${open}\n\``, 6)).toBe('Here:\n```ts\nconst a = 1;\n```');
    expect(withOpenBlockClosed(`${open}\n\`\``, 6)).toBe('Here:\n```ts\nconst a = 1;\n```');
  });
  it('leaves out a block with no code yet: its language may still be coming', () => {
    expect(withOpenBlockClosed('Here:\n```ty', 6)).toBe('Here:');
    expect(withOpenBlockClosed('Here:\n```ts\n  ', 6)).toBe('Here:');
  });
});
