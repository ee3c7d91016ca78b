// A long answer goes to Slack as several sections (bots/slack/blocks.ts answerMessage), and Slack renders each
// section's mrkdwn on its own: a ``` opened in one section and closed in the next shows its backticks as text in the
// first and the rest of the code as mrkdwn in the second. So every section, the streaming answer's and the notification
// text hold whole code blocks: cut between lines outside code where one is near, else the block closed and reopened.
import { describe, expect, it } from 'vitest';
import { answerMessage, escapeMrkdwn, statusMessage, type SlackMessage } from '../../../../bots/slack/blocks.ts';

const texts = (m: SlackMessage): string[] => m.blocks.map((b) => String((b as { text?: { text?: string } }).text?.text ?? ''));
/** Slack opens or closes a code block at each ``` (a longer run counts once). */
const fences = (s: string): number => (s.match(/`{3,}/g) ?? []).length;
const prose = (lines: number, width = 99): string => Array.from({ length: lines }, (_, i) => `${i}`.padEnd(width, '.')).join('\n');
/** Code with nothing mrkdwn escapes, so lengths shown are lengths written. */
const plain = (lines: number): string => Array.from({ length: lines }, (_, i) => `x = f(${i})`.padEnd(99, ' ')).join('\n');
const code = (lines: number): string => Array.from({ length: lines }, (_, i) => `if (a[${i}] < b && c > d) x += ${i};`.padEnd(99, ' ')).join('\n');

describe('answers in sections: code blocks stay whole', () => {
  it('a code block across the 2,900th character: every section has balanced fences, none over 3,000', () => {
    const answer = `${prose(25)}\n\`\`\`ts\n${code(10)}\n\`\`\`\n${prose(5)}`; // the block runs from 2,500 to 3,510
    const sections = texts(answerMessage(answer));
    expect(sections.length).toBeGreaterThan(1);
    for (const s of sections) {
      expect(fences(s) % 2, s.slice(-200)).toBe(0);
      expect(s.length).toBeLessThanOrEqual(3000);
    }
  });

  it('cuts before a block that fits a section rather than through it', () => {
    const block = `\`\`\`ts\n${code(10)}\n\`\`\``;
    const sections = texts(answerMessage(`${prose(25)}\n${block}\n${prose(5)}`));
    expect(sections).toEqual([prose(25), escapeMrkdwn(`${block}\n${prose(5)}`)]); // the newline at the cut is the block break
  });

  it('a block longer than a section: closed at its end, reopened bare at the next (Slack shows a language as code)', () => {
    const body = code(70); // 7,000 characters
    const sections = texts(answerMessage(`Here:\n\`\`\`python\n${body}\n\`\`\`\nDone.`));
    expect(sections.length).toBeGreaterThan(2);
    for (const s of sections) expect(fences(s) % 2).toBe(0);
    expect(sections[0]!.startsWith('Here:\n```python\n')).toBe(true);
    for (const s of sections.slice(1)) expect(s.startsWith('```\n')).toBe(true);
    for (const s of sections.slice(0, -1)) expect(s.endsWith('\n```')).toBe(true);
    expect(sections.at(-1)!.endsWith('\n```\nDone.')).toBe(true);
    // only whole lines move: without the added fences, the sections are the escaped code, & < > as entities still
    const joined = sections.map((s, i) => (i > 0 ? s.slice(4) : s)).map((s, i, all) => (i < all.length - 1 ? s.slice(0, -4) : s)).join('\n');
    expect(joined).toBe(escapeMrkdwn(`Here:\n\`\`\`python\n${body}\n\`\`\`\nDone.`));
  });

  it('prose is cut between lines, not inside one', () => {
    const sections = texts(answerMessage(prose(60)));
    expect(sections.join('\n')).toBe(prose(60));
    for (const s of sections) expect(s.endsWith('.')).toBe(true);
  });

  it('a paragraph longer than a section is cut between two words, not through one', () => {
    const words = Array.from({ length: 700 }, (_, i) => `word${i}`).join(' '); // ≈ 5,000 characters, no line end
    const sections = texts(answerMessage(words));
    expect(sections.length).toBeGreaterThan(1);
    expect(sections.join('')).toBe(words);
    for (const s of sections.slice(0, -1)) expect(s.endsWith(' '), s.slice(-20)).toBe(true);
  });

  it('an answer cut short inside code has its block closed before the note', () => {
    const m = answerMessage('```\nx = 1', 'from the cache');
    expect(texts(m)).toEqual(['```\nx = 1\n```\n_from the cache_']);
    expect(m.text).toBe('```\nx = 1\n```\n_from the cache_');
  });

  it('the notification text, cut at 3,900 inside code, closes its block', () => {
    const m = answerMessage(`${prose(20)}\n\`\`\`\n${code(40)}\n\`\`\``);
    expect(m.text.endsWith('…')).toBe(true);
    expect(fences(m.text) % 2).toBe(0);
  });

  it('after an earlier block (closed by a bare fence, or opened with four backticks): still cut before a block that fits', () => {
    const second = `\`\`\`ts\n${plain(10)}\n\`\`\`\n${prose(3)}`;
    const first = `${prose(5)}\n\`\`\`ts\n${plain(3)}\n\`\`\`\n${prose(14)}`;
    expect(texts(answerMessage(`${first}\n${second}`))).toEqual([first, second]);
    const nested = `\`\`\`\`md\n${plain(12)}\n\`\`\`\`\n${prose(5)}`; // a block of markdown that shows a fence
    expect(texts(answerMessage(`${prose(20)}\n${nested}`))).toEqual([prose(20), nested]);
  });

  it('a line too long for a section is cut at the limit, but never through a run of backticks', () => {
    const sections = texts(answerMessage(`${'x'.repeat(2898)}\`\`\`${'y'.repeat(200)}\`\`\``));
    expect(sections).toEqual(['x'.repeat(2898), `\`\`\`${'y'.repeat(200)}\`\`\``]);
  });

  it('a stretch of nothing but spaces becomes no section (Slack refuses one)', () => {
    const sections = texts(answerMessage(`${prose(20)}\n${' '.repeat(3000)}\n${prose(3)}`));
    expect(sections.length).toBeGreaterThan(1);
    for (const s of sections) expect(s.trim()).not.toBe('');
  });

  it('exactly at the limits: 2,900 characters are one section, a 3,900-character notification is not cut', () => {
    expect(texts(answerMessage(prose(29, 100).slice(0, 2900)))).toHaveLength(1);
    const full = 'a'.repeat(3900);
    expect(answerMessage(full).text).toBe(full);
  });

  it('the notification cut at 3,900: every character up to the cut, and its open block closed within the 3,900', () => {
    const afterCode = `${prose(10)}\n\`\`\`\n${plain(5)}\n\`\`\`\n${prose(40)}`;
    expect(answerMessage(afterCode).text).toBe(`${afterCode.slice(0, 3899)}…`);
    const inCode = answerMessage(`${prose(20)}\n\`\`\`\n${plain(40)}\n\`\`\``).text;
    expect(inCode.length).toBe(3900);
    expect(inCode.endsWith('\n```…')).toBe(true);
  });

  it('a streaming answer: its open block is closed, and a long one is cut with whole blocks', () => {
    const partial = (p: string) => texts(statusMessage('j1', 't', { stage: 'answering', step: 1, total: 0, partialText: p }))[1]!;
    expect(partial('Try:\n```js\nlet a = b < c;')).toBe('Try:\n```js\nlet a = b &lt; c;\n```');
    expect(partial('Try:\n```js\nlet a = 1;\n``')).toBe('Try:\n```js\nlet a = 1;\n```'); // its own closing fence half-arrived
    expect(partial('Try:\n```')).toBe('Try:'); // no code yet
    expect(partial('Try:\n```js\n')).toBe('Try:'); // its first line ended, still no code
    expect(partial('Try:\n````md')).toBe('Try:'); // a longer fence goes whole
    // nothing but a newline so far (an answer's first token): the status shows no answer section (Slack refuses a blank one)
    expect(statusMessage('j1', 't', { stage: 'answering', step: 1, total: 0, partialText: '\n ' }).blocks.map((b) => b.type)).toEqual(['section', 'actions']);
    // longer than a section: its first, and "…" after it (on a line of its own after a closed block)
    expect(partial(prose(40))).toBe(`${prose(29)}…`);
    expect(partial(`Here:\n\`\`\`\n${plain(40)}`).endsWith(`${plain(28).slice(-99)}\n\`\`\`\n…`)).toBe(true);
    const long = partial(`${prose(20)}\n\`\`\`\n${code(40)}`);
    expect(fences(long) % 2).toBe(0);
    expect(long.length).toBeLessThanOrEqual(3000);
  });
});
