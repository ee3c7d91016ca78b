// Slash-command options → the core's CommandInput. Only what Discord's own option types cannot express is
// checked here (blank prompt, an aspect ratio outside the list when a client sends a raw value, the flags typed into
// the prompt); ranges of the typed options are enforced by Discord while typing and again by the core.
import { AspectRatio } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import { MAX_PROMPT_CHARS } from '../../src/jobs/contract.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { joinNegatives, splitImagineFlags, type GenerationLimits, type ImagineInput } from '../core/imagine-flags.ts';

/** The part of discord.js's CommandInteractionOptionResolver this module reads (so tests can pass plain objects). */
export interface OptionReader {
  getString(name: string): string | null;
  getInteger(name: string): number | null;
  getNumber(name: string): number | null;
}

/**
 * /imagine's options. Midjourney users type flags into the prompt (`a red fox --n 4 --ar 16:9 --seed 7 --no snow`):
 * they are read as Slack's /imagine text is, refused with the same usage when wrong, and a typed option wins over
 * the same flag. The `negative` option and `--no` are joined (both are things to keep out).
 */
/** Flag values unbounded here, for a caller without the config (tests): the core checks them against the configured limits. */
const CHECKED_BY_THE_CORE: GenerationLimits = { maxPromptChars: MAX_PROMPT_CHARS, maxDitSteps: Infinity, maxDecoderSteps: Infinity, maxGuidance: Infinity };

export function imagineInput(o: OptionReader, limits: GenerationLimits = CHECKED_BY_THE_CORE): ImagineInput {
  const { prompt, flags } = splitImagineFlags(o.getString('prompt') ?? '', limits);
  if (!prompt) throw new UserError('bad_request', 'Please tell me what to draw: `/imagine prompt: a red fox in snow`.');
  const input: ImagineInput = { command: 'imagine', prompt, ...flags };
  const negative = joinNegatives(o.getString('negative'), flags.negative);
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

/** The question text of a mention: the message without the bot's mention(s), as its user or as one of its roles. */
export function questionFromMention(content: string, botId: string, botRoleIds: readonly string[] = []): string {
  const roles = botRoleIds.map((id) => `|<@&${id}>`).join('');
  return content.replaceAll(new RegExp(`<@!?${botId}>${roles}`, 'g'), ' ').replace(/\s+/g, ' ').trim();
}

export function requireQuestion(question: string | null | undefined): string {
  const q = (question ?? '').trim();
  if (!q) throw new UserError('bad_request', 'What would you like to know about the image? Mention me with a question, or use `/ask`.');
  return q;
}
