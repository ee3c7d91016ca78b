// What the model writes (/describe's prompts, /ask's answers, an answer while it streams) is shown as text under the
// bot's name: never a masked link (`[click here](https://evil.example)` reads as "click here" and leads elsewhere) nor a
// mention (`<@id>`, `<#channel>`, `@everyone`, a command `</x:id>`), pings aside (allowed_mentions parses none). The
// same holds for a prompt echoed back (echo), which "Imagine this" takes from the model. `liveMarkup` reads a content
// as Discord's markdown does for these rules: a backslash before any punctuation makes it plain text. It knows no
// code spans, so it is stricter than Discord: code the model wrote must be safe even were it read as plain text.
import fc from 'fast-check';
import { MessageFlagsBitField } from 'discord.js';
import { describe, expect, it } from 'vitest';
import { walkChain } from '../../../../bots/discord/conversation.ts';
import { describedPrompt, progressText, resultMessage } from '../../../../bots/discord/render.ts';
import { modelText, readModelText } from '../../../../bots/discord/model-text.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';

/** The links and mentions Discord would render live in `content`. */
function liveMarkup(content: string): string[] {
  const live: string[] = [];
  const rules = [
    /^\[[^\]\n]*\]\(\s*<?https?:\/\/[^\s)>]+>?\s*\)/, // masked link (discord-api-docs reference.mdx, "Message Formatting")
    /^<(?:@[!&]?|#)\d+>/, // user, role, channel
    /^<\/[\w -]+:\d+>/, // slash command
    /^@(?:everyone|here)/,
  ];
  for (let i = 0; i < content.length; i++) {
    if (content[i] === '\\' && /[^\p{L}\p{N}\s]/u.test(content[i + 1] ?? '')) {
      i++; // an escaped character: plain text, and starts nothing
      continue;
    }
    const rest = content.slice(i);
    for (const rule of rules) {
      const m = rule.exec(rest);
      if (m) live.push(m[0]);
    }
  }
  return live;
}

const HOSTILE = [
  '[click here](https://evil.example) to claim your prize',
  'a cat with @everyone and @here watching',
  'a portrait of <@123456789012345678> in <#223456789012345678> for <@&323456789012345678>',
  'run </ban:423456789012345678> now',
  '\\[escaped](https://evil.example) by the model itself',
  'two links [a](https://a.example) and [b](https://evil.example)',
];

const destination = { platform: 'discord', guildId: '1', channelId: '2', userId: '3', applicationId: '4' } as const;
const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } as const;
const answered = (answer: JobResult['answer']): JobResult => ({ v: 1, jobId: 'jabc', kind: 'ask', destination, status: 'succeeded', timingsMs: {}, finishedAt: 0, answer });
const imageOf = (prompt: string): JobResult => ({
  v: 1, jobId: 'jabc', kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: 0,
  image: { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: 'alt', prompt, options },
});

describe('the test\'s reading of Discord markdown', () => {
  it('finds each live link and mention of the hostile texts, and none once escaped', () => {
    expect(liveMarkup(HOSTILE.join('\n'))).toEqual([
      '[click here](https://evil.example)', '@everyone', '@here', '<@123456789012345678>', '<#223456789012345678>', '<@&323456789012345678>',
      '</ban:423456789012345678>', '[a](https://a.example)', '[b](https://evil.example)',
    ]);
    expect(liveMarkup('\\[click here](https://evil.example) \\<@1234> \\@everyone')).toEqual([]);
    expect(liveMarkup('\\\\[click here](https://evil.example)')).toEqual(['[click here](https://evil.example)']); // an escaped backslash escapes nothing
  });
});

describe("the model's words in the bot's messages", () => {
  it("/describe's prompts: no live link or mention, allowed_mentions parses none", () => {
    const r = resultMessage(answered({ text: '', tokenCount: 1, prompts: HOSTILE.slice(0, 4) }), undefined);
    expect(liveMarkup(r.body.content)).toEqual([]); // before: every link and mention live
    expect(r.body.allowed_mentions).toEqual({ parse: [] });
    const inChannel = resultMessage(answered({ text: '', tokenCount: 1, prompts: HOSTILE.slice(4) }), undefined, '9');
    expect(liveMarkup(inChannel.body.content)).toEqual(['<@9>']); // only the asker, whom allowed_mentions pings
    expect(inChannel.body.allowed_mentions).toEqual({ parse: [], users: ['9'] });
  });

  it('"Imagine this" reads each prompt back exactly as the model wrote it', () => {
    for (const mention of [undefined, '9']) {
      const r = resultMessage(answered({ text: '', tokenCount: 1, prompts: HOSTILE.slice(0, 4) }), undefined, mention);
      expect([0, 1, 2, 3].map((i) => describedPrompt(r.body.content, i))).toEqual(HOSTILE.slice(0, 4));
      const more = resultMessage(answered({ text: '', tokenCount: 1, prompts: HOSTILE.slice(4) }), undefined, mention);
      expect([0, 1].map((i) => describedPrompt(more.body.content, i))).toEqual(HOSTILE.slice(4));
    }
  });

  it("/ask's answer: no live link or mention, short (content) or long (embed)", () => {
    const short = resultMessage(answered({ text: HOSTILE.join('\n'), tokenCount: 9 }), undefined);
    expect(liveMarkup(short.body.content)).toEqual([]); // before: every link and mention live
    const long = resultMessage(answered({ text: `${HOSTILE.join('\n')}\n${'and so on. '.repeat(200)}`, tokenCount: 900 }), undefined);
    expect(long.body.embeds).toHaveLength(1);
    expect(liveMarkup(long.body.embeds![0]!.description)).toEqual([]);
    // its own markdown still reads as markdown: only links and mentions are made plain
    expect(resultMessage(answered({ text: 'A **red** fox.\n- ears\n- tail', tokenCount: 5 }), undefined).body.content).toBe('A **red** fox.\n- ears\n- tail');
  });

  it('an answer while it streams: no live link or mention', () => {
    const line = progressText({ v: 1, jobId: 'j', stage: 'answering', step: 3, total: 0, partialText: HOSTILE.join(' ') });
    expect(liveMarkup(line)).toEqual([]);
  });

  it('a prompt echoed back ("Imagine this" takes the model\'s): no live link, every one of several escaped', () => {
    for (const prompt of HOSTILE) {
      const r = resultMessage(imageOf(prompt), new Uint8Array([1]));
      expect(liveMarkup(r.body.content)).toEqual([]); // before: the second of two masked links stayed live
    }
  });

  it("the bot's earlier answer, read back as a turn of the conversation, is what the model wrote", async () => {
    const text = HOSTILE.join('\n');
    const { content: shown, flags } = resultMessage(answered({ text, tokenCount: 9 }), undefined).body;
    const message = (id: string, author: string, content: string, ref: string | null, image = false) => ({
      id, content, author: { id: author }, embeds: [], guildId: null, guild: null,
      flags: new MessageFlagsBitField(author === 'bot' ? flags : 0), // as discord.js reads the answer's flags back
      attachments: new Map(image ? [['a', { url: 'https://cdn/x.png', name: 'x.png', size: 1, contentType: 'image/png' }]] : []),
      mentions: { users: new Set<string>(), roles: new Set<string>() },
      reference: ref ? { messageId: ref } : null,
      fetchReference: async () => byId.get(ref!),
    });
    const byId = new Map([
      ['m0', message('m0', 'user', 'look', null, true)],
      ['m1', message('m1', 'user', 'what is it?', 'm0')],
      ['m2', message('m2', 'bot', shown, 'm1')],
    ]);
    const walked = await walkChain(message('m3', 'user', 'and then?', 'm2') as never, 'bot', 8);
    expect(walked.history).toEqual([{ role: 'user', text: 'look' }, { role: 'user', text: 'what is it?' }, { role: 'assistant', text }]); // a DM: every message of the user is a turn
  });
});

describe("the model's code in the bot's messages", () => {
  it('a code block answer shows no backslashes', () => {
    const text = 'Run this:\n```py\nrows = grid[0] + ["\\\\n", "<b>"]\nprint(f"@{user}")\n```\nthen `a[1] \\ b` and `<T>`.';
    expect(resultMessage(answered({ text, tokenCount: 9 }), undefined).body.content).toBe(text); // before: grid\[0], "\\\\n", \<b>
  });

  it('code a link or mention could start in is escaped as text is, even across the end of its span', () => {
    for (const text of [
      'see `[click](https://evil.example)`',
      '```\n<@123456789012345678> @everyone\n```',
      '`[`click](https://evil.example)', // the link's text starts in the span and ends after it
      '``` [click](https://evil.example)', // a fence nothing closes is text
      '`a` [b](https://evil.example) `c`',
    ]) {
      const shown = modelText(text);
      expect(liveMarkup(shown), text).toEqual([]);
      expect(readModelText(shown)).toBe(text);
    }
    expect(modelText('`[0]` and [docs](https://a.example)')).toBe('`\\[0]` and \\[docs](https://a.example)'); // a `[` in code, a link after it
  });

  it('code at the very start of an answer shows as written too', () => {
    expect(modelText('`grid[0]` comes first')).toBe('`grid[0]` comes first');
    expect(modelText('```py\nrows[0]\n```\nthen rows[1]')).toBe('```py\nrows[0]\n```\nthen rows\\[1]');
  });

  it("a ``` block ends at the next three backticks, even the first three of a longer run (Discord's code block rule)", () => {
    // Discord closes the block at "````"'s first three; the backtick left over opens nothing
    expect(modelText('```\nrows[0]\n````\nnext[1]')).toBe('```\nrows[0]\n````\nnext\\[1]');
    expect(modelText('```a[0]````')).toBe('```a[0]````');
    expect(modelText('```\n````a[0]`')).toBe('```\n````a\\[0]`'); // the block holds "`"; the last backtick closes nothing
  });

  it('an answer streaming after a lone backtick: the text goes on as text, not cut at the backtick as a fence would be', () => {
    const shown = (partial: string) => progressText({ v: 1, jobId: 'j', stage: 'answering', step: 3, total: 0, partialText: partial }).split('\n').slice(1).join('\n');
    expect(shown('Run `npm i x[0]')).toBe('Run `npm i x\\[0]');
    expect(shown('Run ``a[0]`')).toBe('Run ``a\\[0]`');
  });

  // The pieces that decide how Discord reads code and escapes, to be joined in any order.
  const TRICKY = ['`', '``', '```', '```py\n', '````', '\n', '\\', '\\`', '[', ']', '(', ')', '<', '>', '@', '@everyone', '@here', '<@123>',
    '</ban:42>', '[a](https://evil.example)', 'https://x.example/', ' ', 'a', '*', '_', '|', ':', 'print(x)'];
  const trickyText = fc.array(fc.constantFrom(...TRICKY), { maxLength: 40 }).map((parts) => parts.join(''));

  it('any text: read back exactly as written, and no live link or mention even were all code read as text', () => {
    fc.assert(
      fc.property(trickyText, (text) => {
        const shown = modelText(text);
        expect(readModelText(shown)).toBe(text);
        expect(liveMarkup(shown)).toEqual([]);
      }),
      { numRuns: 3000 },
    );
  });

  it('any answer and /describe prompt: the message reads back as written ("Imagine this", history)', () => {
    fc.assert(
      fc.property(trickyText, (raw) => {
        const text = raw.trim();
        const content = resultMessage(answered({ text, tokenCount: 9 }), undefined).body.content;
        expect(readModelText(content)).toBe(text || '(no answer)');
        const prompt = raw.replace(/\s+/g, ' ').trim();
        if (!prompt) return;
        const described = resultMessage(answered({ text: '', tokenCount: 1, prompts: [prompt] }), undefined).body.content;
        expect(describedPrompt(described, 0)).toBe(prompt);
        expect(liveMarkup(described)).toEqual([]);
      }),
      { numRuns: 1000 },
    );
  });

  it('an answer while it streams: an open fence shows as a closed code block, and the end is the text as written', () => {
    const text = 'Like this:\n```ts\nconst first = rows[0]; // <T> \\ a@b.c\nsend(`<b>${id}</b>`);\n```\nDone, see `rows[0]`.';
    const shown = (partial: string) => progressText({ v: 1, jobId: 'j', stage: 'answering', step: 3, total: 0, partialText: partial }).split('\n').slice(1).join('\n');
    for (let cut = 1; cut <= text.length; cut++) {
      const partial = text.slice(0, cut);
      expect(liveMarkup(shown(partial)), partial).toEqual([]);
      expect((shown(partial).match(/```/g) ?? []).length % 2, partial).toBe(0); // never a fence left open
    }
    expect(shown('Like this:\n```ts\nconst first = rows[0];')).toBe('Like this:\n```ts\nconst first = rows[0];\n```'); // before: rows\[0], no block
    expect(shown('Like this:\n```ts\nconst first = rows[0];\n``')).toBe('Like this:\n```ts\nconst first = rows[0];\n```');
    expect(shown('Like this:\n```t')).toBe('Like this:'); // the fence's language still coming
    expect(shown('Like this:\n```ts\n')).toBe('Like this:');
    expect(resultMessage(answered({ text, tokenCount: 9 }), undefined).body.content).toBe(text);
  });

  it('an answer too long for one message, cut inside a code block: the block is closed and nothing goes live', () => {
    const text = `Here:\n\`\`\`\n${'x = a[0] # [b](https://evil.example) <@123456789012345678>\n'.repeat(100)}\`\`\`\nend`;
    const description = resultMessage(answered({ text, tokenCount: 900 }), undefined).body.embeds![0]!.description;
    expect(description.length).toBeLessThanOrEqual(4096);
    expect(description).toMatch(/\n```…$/);
    expect(liveMarkup(description)).toEqual([]);
    const plainCode = `Here:\n\`\`\`\n${'x = a[0] \\ 2\n'.repeat(400)}\`\`\``;
    const cut = resultMessage(answered({ text: plainCode, tokenCount: 900 }), undefined).body.embeds![0]!.description;
    expect(cut).not.toContain('\\[');
    expect(cut.length).toBeLessThanOrEqual(4096);
  });
});
