// `/imagine a red fox in snow --seed 7 --ar 16:9` → CommandInput. Slack slash commands carry one free-text
// string, so the options Discord has as typed fields are flags here, read by the parser both adapters share
// (bots/core/imagine-flags.ts).
import { checkLength } from '../core/requests.ts';
import { imagineUsageError, splitImagineFlags, type GenerationLimits, type ImagineInput } from '../core/imagine-flags.ts';

/** Parse the text after `/imagine`. Throws UserError (with the usage) for anything the user can fix. */
export function parseImagine(text: string, limits: GenerationLimits): ImagineInput {
  const { prompt, flags } = splitImagineFlags(text, limits);
  if (!prompt) throw imagineUsageError('Tell me what to draw.');
  checkLength('Your prompt', prompt, limits.maxPromptChars);
  return { command: 'imagine', prompt, ...flags };
}
