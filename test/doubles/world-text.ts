// Text as users around the world type it, for tests of every place text is cut, counted or shown: scripts whose
// characters take two UTF-16 code units (emoji, rare CJK), several code points per visible character (ZWJ sequences,
// skin tones, flags, keycaps, Devanagari and Thai with their combining marks) and right-to-left scripts.
import { expect } from 'vitest';

export const WORLD = {
  cjk: '雪の中の赤い狐、水墨画風',
  /** U+20BB7 𠮷: a CJK ideograph outside the BMP (two code units). */
  rareCjk: '𠮷野家の牛丼',
  arabic: 'ثعلب أحمر في الثلج',
  hebrew: 'שועל אדום בשלג',
  devanagari: 'बर्फ़ में लाल लोमड़ी',
  thai: 'สุนัขจิ้งจอกสีแดงในหิมะ',
  /** Man ZWJ woman ZWJ girl: one glyph, five code points, eight code units. */
  family: '👨‍👩‍👧',
  thumbsMedium: '👍🏽',
  flag: '🇯🇵',
  rainbowFlag: '🏳️‍🌈',
  /** England's flag: a tag sequence (black flag + tag characters, category Cf). */
  england: '🏴󠁧󠁢󠁥󠁮󠁧󠁿',
  keycap: '#️⃣',
  fox: '🦊',
} as const;

const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
export const graphemes = (text: string): string[] => [...GRAPHEMES.segment(text)].map((s) => s.segment);

/** No lone surrogate (String.prototype.isWellFormed, which this project's TypeScript lib does not declare yet). */
export const isWellFormed = (text: string): boolean => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);

/**
 * `shown` is a start of `original` (after `prefix`, before an optional trailing "…") made of whole graphemes: no half
 * of a surrogate pair (Slack and Discord show U+FFFD, or refuse the JSON) and no emoji or letter cut from its marks.
 */
export function expectWholeGraphemes(shown: string, original: string, prefix = ''): void {
  expect(isWellFormed(shown), `lone surrogate in …${JSON.stringify(shown.slice(-12))}`).toBe(true);
  expect(shown.startsWith(prefix)).toBe(true);
  const kept = shown.slice(prefix.length).replace(/…$/, '');
  expect(original.startsWith(kept), `not a start of the original: …${JSON.stringify(kept.slice(-12))}`).toBe(true);
  const whole = graphemes(original);
  graphemes(kept).forEach((g, i) => expect(g, `grapheme ${i} cut`).toBe(whole[i]));
}
