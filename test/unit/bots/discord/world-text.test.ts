// Discord messages with text in any script (bots/discord/render.ts, model-text.ts, asked-image.ts). Every cut falls
// between whole characters: half an emoji (a lone surrogate) shows as U+FFFD, and an emoji cut from its ZWJ partner
// or skin tone, or a Thai or Devanagari letter from its marks, shows a broken glyph. The limits themselves are kept in
// UTF-16 code units, never fewer than the code points Discord counts.
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { askedImageFile } from '../../../../bots/discord/asked-image.ts';
import { modelTextWithin } from '../../../../bots/discord/model-text.ts';
import { contentChunks, MAX_ALT_TEXT_CHARS, MAX_CONTENT_CHARS, plainBody, progressText, resultMessage } from '../../../../bots/discord/render.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';
import { expectWholeGraphemes, WORLD } from '../../../doubles/world-text.ts';

const destination = { platform: 'discord', guildId: '1', channelId: '2', userId: '3', applicationId: '4' } as const;
const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } as const;
/** `x` then `text` repeated past `length` code units: the odd start puts two-unit characters across even limits. */
const long = (text: string, length: number) => `x${text.repeat(Math.ceil(length / text.length))}`;
const scripts = Object.entries(WORLD);

describe('cuts between whole characters', () => {
  it.each(scripts)('a text too long for a message (%s)', (_name, text) => {
    const typed = long(text, 2100);
    const { content } = plainBody(typed);
    expect(content.length).toBeLessThanOrEqual(MAX_CONTENT_CHARS);
    expectWholeGraphemes(content, typed);
  });

  it.each(scripts)('a line longer than a message, in chunks (%s)', (_name, text) => {
    const typed = long(text, 4100);
    const chunks = contentChunks(typed);
    expect(chunks.join('')).toBe(typed);
    let rest = typed;
    for (const c of chunks) {
      expect(c.length).toBeLessThanOrEqual(MAX_CONTENT_CHARS);
      expectWholeGraphemes(c, rest);
      rest = rest.slice(c.length);
    }
  });

  it.each(scripts)("the model's answer in an embed, and while it streams (%s)", (_name, text) => {
    const answer = long(text, 4200);
    expectWholeGraphemes(modelTextWithin(answer, 4000), answer);
    const result: JobResult = { v: 1, jobId: 'j', kind: 'ask', destination, status: 'succeeded', timingsMs: {}, finishedAt: 0, answer: { text: answer, tokenCount: 1 } };
    expectWholeGraphemes(resultMessage(result, undefined).body.embeds![0]!.description, answer);
    const line = progressText({ v: 1, jobId: 'j', stage: 'answering', step: 3, total: 0, partialText: answer });
    expect(line.length).toBeLessThanOrEqual(MAX_CONTENT_CHARS);
    expectWholeGraphemes(line, answer, '⏳ Writing the answer…\n');
  });

  it.each(scripts)("an image's alt text (%s)", (_name, text) => {
    const alt = long(text, 1100);
    const result: JobResult = {
      v: 1, jobId: 'j', kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: 0,
      image: { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: alt, prompt: 'p', options },
    };
    const description = resultMessage(result, new Uint8Array(8)).body.attachments![0]!.description!;
    expect(description.length).toBeLessThanOrEqual(MAX_ALT_TEXT_CHARS);
    expectWholeGraphemes(description, alt);
  });

  it("the alt text of an asked-about image's copy", async () => {
    const png = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#888' } }).png().toBuffer();
    for (const [, text] of scripts) {
      const question = long(text, 1100);
      const { description } = await askedImageFile(png, question, 10_000);
      expect(description.length).toBeLessThanOrEqual(MAX_ALT_TEXT_CHARS);
      expectWholeGraphemes(description, question, 'Image asked about: ');
    }
  });
});
