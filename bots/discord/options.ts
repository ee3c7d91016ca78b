// Slash-command options → the core's CommandInput. Only what Discord's own option types cannot express is
// checked here (blank prompt, an aspect ratio outside the list when a client sends a raw value); ranges are
// enforced by Discord while typing and again by the core.
import { AspectRatio } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { joinNegatives, splitNegative } from '../core/negative.ts';
import type { CommandInput } from '../core/port.ts';

/** The part of discord.js's CommandInteractionOptionResolver this module reads (so tests can pass plain objects). */
export interface OptionReader {
  getString(name: string): string | null;
  getInteger(name: string): number | null;
  getNumber(name: string): number | null;
}

export function imagineInput(o: OptionReader): Extract<CommandInput, { command: 'imagine' }> {
  const split = splitNegative(o.getString('prompt') ?? ''); // Midjourney's `--no …` inside the prompt
  const prompt = split.prompt;
  if (!prompt) throw new UserError('bad_request', 'Please tell me what to draw: `/imagine prompt: a red fox in snow`.');
  const input: Extract<CommandInput, { command: 'imagine' }> = { command: 'imagine', prompt };
  const negative = joinNegatives(o.getString('negative'), split.negative);
  if (negative) input.negative = negative;
  const count = o.getInteger('images');
  if (count !== null) input.count = count;
  const seed = o.getInteger('seed');
  const steps = o.getInteger('steps');
  const guidance = o.getNumber('guidance');
  const aspect = o.getString('aspect');
  if (seed !== null) input.seed = seed;
  if (steps !== null) input.ditSteps = steps;
  if (guidance !== null) input.guidance = guidance;
  if (aspect !== null) {
    if (!AspectRatio.safeParse(aspect).success) {
      throw new UserError('bad_request', `Unknown aspect ratio "${stripControlChars(aspect)}". Choose one of ${AspectRatio.options.join(', ')}.`);
    }
    input.aspect = aspect;
  }
  return input;
}

/** The question text of a mention: the message without the bot's mention(s). */
export function questionFromMention(content: string, botId: string): string {
  return content.replaceAll(new RegExp(`<@!?${botId}>`, 'g'), ' ').replace(/\s+/g, ' ').trim();
}

export function requireQuestion(question: string | null | undefined): string {
  const q = (question ?? '').trim();
  if (!q) throw new UserError('bad_request', 'What would you like to know about the image? Mention me with a question, or use `/ask`.');
  return q;
}
