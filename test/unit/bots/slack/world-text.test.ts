// Slack messages with text in any script (bots/slack/blocks.ts, options.ts). Every cut falls between whole characters:
// half an emoji in a top-level argument (`text`) made @slack/web-api's form encoding throw "URI malformed" (nothing was
// sent), and in a section Slack shows U+FFFD; an emoji cut from its skin tone or a Thai or Devanagari letter from its
// marks shows a broken glyph. A paragraph in a script written without spaces (Thai, Chinese, a run of emoji) is cut
// at the section's limit, so that is where the cut must respect characters.
import { describe, expect, it } from 'vitest';
import { answerMessage, describedMessage, failureText, headline, imageResultMessage, statusMessage, type SlackMessage } from '../../../../bots/slack/blocks.ts';
import { checkDeclared } from '../../../../bots/slack/download.ts';
import { parseImagine } from '../../../../bots/slack/options.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';
import { expectWholeGraphemes, WORLD } from '../../../doubles/world-text.ts';

const sections = (m: SlackMessage): string[] => m.blocks.flatMap((b) => ((b as { text?: { text?: string } }).text?.text ? [(b as { text: { text: string } }).text.text] : []));

// odd offsets: an ASCII letter first puts every two-unit emoji across an even limit
const paragraphs = Object.entries(WORLD).map(([name, text]) => [name, `x${text.repeat(Math.ceil(7000 / text.length))}`] as const);

describe('an answer in sections', () => {
  it.each(paragraphs)('a paragraph of %s without spaces: every section and the notification text cut between whole characters', (_name, answer) => {
    const m = answerMessage(answer);
    expect(m.text.length).toBeLessThanOrEqual(3900);
    expectWholeGraphemes(m.text, answer);
    let rest: string = answer;
    for (const s of sections(m)) {
      expect(s.length).toBeLessThanOrEqual(3000);
      expectWholeGraphemes(s, rest);
      rest = rest.slice(s.length);
    }
    expect(rest).toBe('');
  });

  it.each(paragraphs)('while it streams (%s): the first section is cut between whole characters', (_name, partial) => {
    const [, answer] = sections(statusMessage('j', 'title', { stage: 'answering', step: 1, total: 0, partialText: partial }));
    expectWholeGraphemes(answer!, partial);
  });
});

describe('short texts', () => {
  const result = (prompt: string): JobResult => ({
    v: 1, jobId: 'j', kind: 'imagine', destination: { platform: 'slack', teamId: 'T', channelId: 'C', userId: 'U' }, status: 'succeeded', timingsMs: {}, finishedAt: 0,
    image: { blobKey: 'b', mime: 'image/png', width: 8, height: 8, altText: 'a', prompt, options: { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } },
  });

  it.each(paragraphs)('the headline, an image result\'s text and a failure quoting %s', (_name, text) => {
    expectWholeGraphemes(headline('imagine', text), text, ':art: ');
    expectWholeGraphemes(imageResultMessage(result(text)).text.replace(/”$/, ''), text, 'Here is “');
    const failed = { ...result(text), status: 'failed' as const, error: { code: 'bad_request', message: text, userFacing: true } };
    expectWholeGraphemes(failureText(failed), text);
  });
});

it("/describe's prompts: the notification text has no control characters either (a U+202E reversed its end)", () => {
  const m = describedMessage('j', ['a fox\u202E in snow', WORLD.arabic]);
  expect(m.text).toBe(`1. a fox in snow\n2. ${WORLD.arabic}`);
});

describe('/imagine counts the prompt in characters', () => {
  const limits = { maxPromptChars: 10, maxDitSteps: 50, maxDecoderSteps: 50, maxGuidance: 10 };
  it('ten emoji are ten characters; eleven are refused as eleven', () => {
    expect(parseImagine(WORLD.fox.repeat(10), limits).prompt).toBe(WORLD.fox.repeat(10));
    expect(() => parseImagine(WORLD.fox.repeat(11), limits)).toThrow('Your prompt is 11 characters; the limit is 10.');
  });
});

describe("a file's name quoted in a refusal", () => {
  // The message shortcut asks about anyone's file, so its name is someone else's text in the asker's message.
  const refusal = (name: string) => {
    try {
      checkDeclared({ url: 'https://files.slack.com/f', name, mimetype: 'application/pdf' }, { allowedHosts: ['files.slack.com'], maxBytes: 1 });
    } catch (e) {
      return (e as Error).message;
    }
  };

  it('shows no control characters, ends its code span only where we do, and escapes Slack markup', () => {
    expect(refusal('invoice\u202Egnp.exe')).toBe('`invoicegnp.exe` is a PDF, not an image. Try a PNG, JPEG, GIF or WebP.');
    expect(refusal('a` <!channel> <https://evil.example|b>.pdf')).toBe("`a' &lt;!channel&gt; &lt;https://evil.example|b&gt;.pdf` is a PDF, not an image. Try a PNG, JPEG, GIF or WebP.");
  });

  it('keeps a name in any script, cut between whole characters when very long', () => {
    expect(refusal(`${WORLD.arabic} ${WORLD.family}.pdf`)).toBe(`\`${WORLD.arabic} ${WORLD.family}.pdf\` is a PDF, not an image. Try a PNG, JPEG, GIF or WebP.`);
    const long = `x${WORLD.family.repeat(40)}.pdf`;
    const quoted = /^`(.*)` is a PDF/.exec(refusal(long)!)![1]!;
    expect(quoted.length).toBeLessThanOrEqual(100);
    expectWholeGraphemes(quoted, long);
  });
});
