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

  it('a streaming answer: its open block is closed, and a long one is cut with whole blocks', () => {
    const partial = (p: string) => texts(statusMessage('j1', 't', { stage: 'answering', step: 1, total: 0, partialText: p }))[1]!;
    expect(partial('Try:\n```js\nlet a = b < c;')).toBe('Try:\n```js\nlet a = b &lt; c;\n```');
    expect(partial('Try:\n```js\nlet a = 1;\n``')).toBe('Try:\n```js\nlet a = 1;\n```'); // its own closing fence half-arrived
    expect(partial('Try:\n```')).toBe('Try:'); // no code yet
    const long = partial(`${prose(20)}\n\`\`\`\n${code(40)}`);
    expect(fences(long) % 2).toBe(0);
    expect(long.length).toBeLessThanOrEqual(3000);
  });
});
