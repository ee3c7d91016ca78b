// The worker's own cuts of the model's text (a /describe prompt, an image's caption) fall between whole characters:
// half an emoji went into the result, where Slack's client refused to send the message that quoted it ("URI
// malformed") and Discord showed U+FFFD; an emoji cut from its ZWJ partner or skin tone showed a broken glyph.
import { describe, expect, it } from 'vitest';
import { MAX_DESCRIBED_PROMPT_CHARS } from '../../../src/jobs/contract.ts';
import { firstSentence } from '../../../worker/pipeline/checks.ts';
import { cleanDescribedPrompt } from '../../../worker/processor.ts';
import { expectWholeGraphemes, WORLD } from '../../doubles/world-text.ts';

/** Two letters first: the cuts at 399 and 99 then fall inside a two-unit character. */
const long = (text: string, length: number) => `xy${text.repeat(Math.ceil(length / text.length))}`;

describe('cuts of the model\'s text', () => {
  it.each(Object.entries(WORLD))('a /describe prompt and a caption of %s', (_name, text) => {
    const prompt = long(text, 500);
    const cleaned = cleanDescribedPrompt(prompt);
    expect(cleaned.length).toBeLessThanOrEqual(MAX_DESCRIBED_PROMPT_CHARS);
    expectWholeGraphemes(cleaned, prompt);
    const caption = firstSentence(prompt, 100);
    expect(caption.length).toBeLessThanOrEqual(100);
    expectWholeGraphemes(caption, prompt);
  });
});
