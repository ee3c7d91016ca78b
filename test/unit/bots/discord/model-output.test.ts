// What the model writes (/describe's prompts, /ask's answers, an answer while it streams) is shown as text under the
// bot's name: never a masked link (`[click here](https://evil.example)` reads as "click here" and leads elsewhere) nor a
// mention (`<@id>`, `<#channel>`, `@everyone`, a command `</x:id>`), pings aside (allowed_mentions parses none). The
// same holds for a prompt echoed back (echo), which "Imagine this" takes from the model. `liveMarkup` reads a content
// as Discord's markdown does for these rules: a backslash before any punctuation makes it plain text.
import { describe, expect, it } from 'vitest';
import { walkChain } from '../../../../bots/discord/conversation.ts';
import { describedPrompt, progressText, resultMessage } from '../../../../bots/discord/render.ts';
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
    const shown = resultMessage(answered({ text, tokenCount: 9 }), undefined).body.content;
    const message = (id: string, author: string, content: string, ref: string | null, image = false) => ({
      id, content, author: { id: author }, embeds: [], guildId: null, guild: null,
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
