// The title line of a Discord result (bots/discord/render.ts titleOf): the prompt, escaped, as one bold span. A long
// prompt full of characters escapeMarkdown doubles (`*` → `\*`) is cut inside the span, never through its closing
// `**` (the rest of the message rendered bold, or showed stray asterisks) nor after half an escape (`\` then `…`).
import { describe, expect, it } from 'vitest';
import { MAX_CONTENT_CHARS, resultMessage } from '../../../../bots/discord/render.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';

const destination = { platform: 'discord', guildId: '1', channelId: '2', userId: '3', applicationId: '4' } as const;
const options = { seed: 7, ditSteps: 30, decoderSteps: 50, guidance: 3, aspect: '1:1' } as const;
const image = (prompt: string) => ({ blobKey: 'k', mime: 'image/png' as const, width: 8, height: 8, altText: 'alt', prompt, options });
const result = (prompt: string, count = 1): JobResult => ({
  v: 1, jobId: 'jabc', kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: 0,
  image: image(prompt), ...(count > 1 ? { images: Array.from({ length: count }, () => image(prompt)) } : {}),
});

/** The title, less its mention, must be `**…**`, its body ending in a whole escape (an even run of backslashes). */
function expectClosedBold(content: string, budget: number, mention = ''): void {
  const title = content.split('\n')[0]!;
  expect(title.length).toBeLessThanOrEqual(budget);
  expect(title.startsWith(`${mention}**`)).toBe(true);
  expect(title.endsWith('…**')).toBe(true);
  const body = title.slice(mention.length + 2, -3);
  expect(/\\*$/.exec(body)![0].length % 2).toBe(0);
}

// Characters escapeMarkdown doubles (`~` → `\~`, `\` → `\\`): 1,000 of them escape to 2,000, past the budget, and a
// leading letter moves where the budget falls in them (both parities).
const prompts = ['~'.repeat(1000), `a${'~'.repeat(999)}`, '*_'.repeat(500), `a${'|'.repeat(999)}`, '\\'.repeat(1000), `a${'\\'.repeat(999)}`];

describe('a long escaped prompt keeps its bold title closed', () => {
  it.each(prompts)('one image (%#)', (prompt) => {
    const { content } = resultMessage(result(prompt), new Uint8Array([1])).body;
    expectClosedBold(content!, MAX_CONTENT_CHARS - 200);
    expect(content!.length).toBeLessThanOrEqual(MAX_CONTENT_CHARS);
  });

  it.each(prompts)('with a mention (%#)', (prompt) => {
    const { content } = resultMessage(result(prompt), new Uint8Array([1]), '123456789012345678').body;
    expectClosedBold(content!, MAX_CONTENT_CHARS - 200, '<@123456789012345678> ');
  });

  it.each(prompts)('a gallery (%#)', (prompt) => {
    const pngs = [new Uint8Array([1]), new Uint8Array([2])];
    const { content } = resultMessage(result(prompt, 2), pngs[0], undefined, pngs).body;
    expectClosedBold(content!, MAX_CONTENT_CHARS - 300);
  });

  it('a prompt that fits is whole', () => {
    expect(resultMessage(result('a *fox*'), new Uint8Array([1])).body.content!.split('\n')[0]).toBe('**a \\*fox\\***');
  });
});
