// The Qwen tokenizer (the tiny snapshot's files hold the real Qwen2 vocabulary and merges) with text in any script:
// what a user typed reaches the model as they typed it (after Qwen's NFC normalizer), and the answer streams in
// whole characters only, emoji sequences included.
import { describe, expect, it } from 'vitest';
import { TOKENS } from '../../../../worker/pipeline/tokenizer.ts';
import { isWellFormed, WORLD } from '../../../doubles/world-text.ts';
import { useTinyTokenizer } from '../../../doubles/tiny-tokenizer.ts';

const tokenizer = useTinyTokenizer('tok-world-');

const all = Object.values(WORLD).join(' ');

describe('text in any script', () => {
  it.each(Object.entries(WORLD))('%s: plain ids that decode back to the text', (_name, text) => {
    const ids = tokenizer().encodeText(text);
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.every((id) => id < TOKENS.endOfText)).toBe(true);
    expect(tokenizer().decode(ids)).toBe(text.normalize('NFC'));
  });

  it('a question mixing them all, inside the chat template, decodes to itself', () => {
    const ids = tokenizer().encodeChat([{ role: 'user', content: all }]);
    expect(tokenizer().decode(ids)).toContain(`user\n${all.normalize('NFC')}\nassistant\n`);
  });

  it('streams whole characters: no chunk holds U+FFFD, and the chunks make the text', () => {
    const s = tokenizer().streamDecoder();
    const chunks = tokenizer().encodeText(all).map((id) => s.push(id));
    expect(chunks.some((c) => c.includes('\uFFFD'))).toBe(false);
    expect(chunks.every((c) => isWellFormed(c))).toBe(true);
    expect(chunks.join('') + s.flush()).toBe(all.normalize('NFC'));
  });
});

describe('the text of a finished answer', () => {
  // An answer stopped at maxNewTokens (or a caption at captionMaxTokens) can end inside a character's bytes: byte-level
  // BPE writes a rare emoji or ideograph as several ids. decode shows that half character as U+FFFD; the streamed
  // answer never did (streamDecoder waits), so the final message ended in "�" where the last edit had not.
  it.each(Object.entries(WORLD))('%s, stopped after any id: whole characters only, a start of the text', (_name, text) => {
    const ids = tokenizer().encodeText(text);
    const nfc = text.normalize('NFC');
    for (let k = 1; k <= ids.length; k++) {
      const shown = tokenizer().decodeText(ids.slice(0, k));
      expect(shown.includes('\uFFFD'), `after ${k} ids: ${JSON.stringify(shown)}`).toBe(false);
      expect(nfc.startsWith(shown)).toBe(true);
    }
    expect(tokenizer().decodeText(ids)).toBe(nfc);
  });

  it('an answer cut inside an emoji: decode shows U+FFFD, decodeText leaves the half character out', () => {
    const ids = tokenizer().encodeText('a fox 🦊');
    const cut = ids.slice(0, -1);
    expect(tokenizer().decode(cut)).toMatch(/\uFFFD$/);
    expect(tokenizer().decodeText(cut)).toBe('a fox ');
  });
});
