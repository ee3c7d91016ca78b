// Midjourney-style flags in an /imagine prompt: `a red fox in snow --seed 7 --ar 16:9 --n 4 --no people`. Slack's
// /imagine is one free-text string, and Discord users type the same flags into the `prompt` option, so both adapters
// read them here, with the names and bounds of Discord's typed options. Chat clients "smarten" text (Slack, iOS):
// `--` may arrive as an em/en dash and quotes as curly quotes; both are undone.
import { AspectRatio } from '../../src/config/schema.ts';
import type { Config } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import { MAX_IMAGES_PER_JOB } from '../../src/jobs/contract.ts';
import { stripControlChars } from './plain-text.ts';
import type { CommandInput } from './port.ts';

export type ImagineInput = Extract<CommandInput, { command: 'imagine' }>;
/** What the flags of a prompt set: only the flags that were typed. */
export type ImagineFlags = Partial<Omit<ImagineInput, 'command' | 'prompt'>>;

interface Flag {
  key: keyof ImagineFlags;
  names: string[];
  help: string;
}

const FLAGS: Flag[] = [
  { key: 'seed', names: ['seed'], help: '`--seed N` same seed + prompt = same picture (0–4294967295)' },
  { key: 'aspect', names: ['ar', 'aspect'], help: `\`--ar W:H\` aspect ratio: ${AspectRatio.options.join(' ')}` },
  { key: 'ditSteps', names: ['steps'], help: '`--steps N` diffusion steps (more = slower, finer)' },
  { key: 'decoderSteps', names: ['decoder-steps'], help: '`--decoder-steps N` decoder steps' },
  { key: 'guidance', names: ['guidance', 'cfg'], help: '`--guidance X` how closely to follow the prompt' },
  { key: 'negative', names: ['no', 'negative'], help: '`--no <words>` what to keep out of the picture (up to the next option)' },
  { key: 'count', names: ['n', 'images'], help: '`--n N` how many pictures (seeds s, s+1, …)' },
];

export const IMAGINE_USAGE = [
  'Usage: `/imagine <prompt> [options]`, e.g. `/imagine a red fox in snow --seed 7 --ar 16:9`',
  ...FLAGS.map((f) => `• ${f.help}`),
].join('\n');

export type GenerationLimits = Pick<Config['generation'], 'maxPromptChars' | 'maxDitSteps' | 'maxDecoderSteps' | 'maxGuidance'> &
  Partial<Pick<Config['generation'], 'maxImagesPerRequest'>>;

/** Undo smart punctuation: "—seed" / "–seed" → "--seed", curly quotes → straight. */
export function undoSmartPunctuation(text: string): string {
  return text
    .replace(/(^|\s)[\u2014\u2013](?=[a-z])/gi, '$1--')
    .replace(/[\u201c\u201d]/g, '"')
    .replace(/[\u2018\u2019]/g, "'")
    .trim();
}

/**
 * A token that is an option, read in its NFKC form: a Japanese, Chinese or Korean IME in full-width mode types
 * `－－ａｒ＝１６：９` (U+FF0D, U+FF41, U+FF1D…). Only the name is normalised here; the value after `=` is returned as
 * typed (a `--no` value is words for the model, as the prompt's). A full-width token counts only when a letter follows
 * its dashes (`－－ａｒ`, not `－－` or `－－１` in a prompt); an ASCII `--` is an option as it always was.
 */
function optionOf(token: string): { name: string; inline: string | undefined } | undefined {
  const sep = token.search(/[=\uff1d]/);
  const head = (sep < 0 ? token : token.slice(0, sep)).normalize('NFKC');
  if (!head.startsWith('--') || (!token.startsWith('--') && !/^--[a-z]/i.test(head))) return undefined;
  return { name: head.slice(2), inline: sep < 0 ? undefined : token.slice(sep + 1) };
}

/** A refusal that ends with the usage. The message may quote what was typed: no control characters go back to chat. */
export function imagineUsageError(message: string): UserError {
  return new UserError('bad_request', `${stripControlChars(message)}\n${IMAGINE_USAGE}`);
}

function parseInteger(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw imagineUsageError(`\`--${name}\` needs a whole number, not \`${raw}\`.`);
  const n = Number(raw);
  if (n < min || n > max) throw imagineUsageError(`\`--${name}\` must be between ${min} and ${max}; you gave ${raw}.`);
  return n;
}

/**
 * Split an /imagine text into the prompt (its words joined by one space, possibly empty: each adapter says what to
 * do about that) and the flags typed in it. Throws UserError (with the usage) for a flag the user can fix.
 */
export function splitImagineFlags(text: string, limits: GenerationLimits): { prompt: string; flags: ImagineFlags } {
  // Stryker disable next-line MethodExpression,Regex: equivalent, the filter and a single-space split each only remove empty tokens
  const tokens = undoSmartPunctuation(text).split(/\s+/).filter(Boolean);
  const words: string[] = [];
  const flags: ImagineFlags = {};
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const option = optionOf(token);
    if (!option) {
      words.push(token);
      continue;
    }
    const { name: rawName, inline: inlineValue } = option;
    const name = rawName.toLowerCase();
    if (name === 'help') throw new UserError('bad_request', IMAGINE_USAGE);
    const flag = FLAGS.find((f) => f.names.includes(name));
    if (!flag) throw imagineUsageError(`Unknown option \`--${rawName}\`.`);
    if (flags[flag.key] !== undefined) throw imagineUsageError(`\`--${name}\` is given twice.`);
    if (flag.key === 'negative') {
      // Midjourney's `--no`: every word up to the next option (or the end).
      const words: string[] = inlineValue ? [inlineValue] : [];
      while (i + 1 < tokens.length && !optionOf(tokens[i + 1]!)) words.push(tokens[++i]!);
      if (words.length === 0) throw imagineUsageError(`\`--${name}\` needs the words to keep out.`);
      flags.negative = words.join(' ');
      continue;
    }
    const typedValue = inlineValue ?? tokens[++i];
    if (typedValue === undefined || optionOf(typedValue)) throw imagineUsageError(`\`--${name}\` needs a value.`);
    // A number or ratio typed full-width (`１６：９`, `３．５`) is read as its ASCII form, as the option's name.
    const value = typedValue.normalize('NFKC');
    switch (flag.key) {
      case 'count':
        flags.count = parseInteger(name, value, 1, limits.maxImagesPerRequest ?? MAX_IMAGES_PER_JOB);
        break;
      case 'seed':
        flags.seed = parseInteger(name, value, 0, 2 ** 32 - 1);
        break;
      case 'ditSteps':
        flags.ditSteps = parseInteger(name, value, 1, limits.maxDitSteps);
        break;
      case 'decoderSteps':
        flags.decoderSteps = parseInteger(name, value, 1, limits.maxDecoderSteps);
        break;
      case 'guidance': {
        const g = Number(value);
        // ".5" and "-1" are numbers as a person writes them: only the range is wrong with -1
        if (!Number.isFinite(g) || !/^-?(\d+(\.\d+)?|\.\d+)$/.test(value)) throw imagineUsageError(`\`--${name}\` needs a number, not \`${value}\`.`);
        if (g < 0) throw imagineUsageError(`\`--${name}\` must be between 0 and ${limits.maxGuidance}; you gave ${value}.`);
        if (g > limits.maxGuidance) throw imagineUsageError(`\`--${name}\` must be at most ${limits.maxGuidance}; you gave ${value}.`);
        flags.guidance = g;
        break;
      }
      case 'aspect': {
        const parsed = AspectRatio.safeParse(value);
        if (!parsed.success) throw imagineUsageError(`\`--${name} ${value}\` is not a supported aspect ratio.`);
        flags.aspect = parsed.data;
        break;
      }
    }
  }
  // Stryker disable next-line MethodExpression: equivalent, the words hold no spaces to trim
  return { prompt: words.join(' ').trim(), flags };
}

/** The user's negative from an explicit option and/or `--no` in the prompt, joined; undefined when neither. */
export function joinNegatives(...parts: (string | null | undefined)[]): string | undefined {
  const kept = parts.map((p) => (p ?? '').trim()).filter(Boolean);
  return kept.length ? kept.join(', ') : undefined;
}
