// `/imagine a red fox in snow --seed 7 --ar 16:9` → CommandInput. Slack slash commands carry one free-text
// string, so the options Discord has as typed fields are flags here, with the same names and bounds.
// Slack's clients "smarten" text: `--` may arrive as an em/en dash and quotes as curly quotes; both are undone.
import { AspectRatio } from '../../src/config/schema.ts';
import type { Config } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import { stripControlChars } from '../core/plain-text.ts';
import { MAX_IMAGES_PER_JOB } from '../../src/jobs/contract.ts';
import type { CommandInput } from '../core/port.ts';

export type ImagineInput = Extract<CommandInput, { command: 'imagine' }>;

interface Flag {
  key: 'seed' | 'ditSteps' | 'decoderSteps' | 'guidance' | 'aspect' | 'negative' | 'count';
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

/** Undo Slack's smart punctuation: "—seed" / "–seed" → "--seed", curly quotes → straight. */
export function normalizeSlackText(text: string): string {
  return text
    .replace(/(^|\s)[\u2014\u2013](?=[a-z])/gi, '$1--')
    .replace(/[\u201c\u201d]/g, '"')
    .replace(/[\u2018\u2019]/g, "'")
    .trim();
}

/** The message may quote what was typed: no control characters in what goes back to Slack. */
function bad(message: string): UserError {
  return new UserError('bad_request', `${stripControlChars(message)}\n${IMAGINE_USAGE}`);
}

function parseInteger(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw bad(`\`--${name}\` needs a whole number, not \`${raw}\`.`);
  const n = Number(raw);
  if (n < min || n > max) throw bad(`\`--${name}\` must be between ${min} and ${max}; you gave ${raw}.`);
  return n;
}

/** Parse the text after `/imagine`. Throws UserError (with the usage) for anything the user can fix. */
export function parseImagine(text: string, limits: GenerationLimits): ImagineInput {
  // Stryker disable next-line MethodExpression,Regex: equivalent, the filter and a single-space split each only remove empty tokens
  const tokens = normalizeSlackText(text).split(/\s+/).filter(Boolean);
  const words: string[] = [];
  const out: Partial<Omit<ImagineInput, 'command' | 'prompt'>> = {};
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (!token.startsWith('--')) {
      words.push(token);
      continue;
    }
    const [rawName, inlineValue] = token.slice(2).split('=', 2) as [string, string | undefined];
    const name = rawName.toLowerCase();
    if (name === 'help') throw new UserError('bad_request', IMAGINE_USAGE);
    const flag = FLAGS.find((f) => f.names.includes(name));
    if (!flag) throw bad(`Unknown option \`--${rawName}\`.`);
    if (out[flag.key] !== undefined) throw bad(`\`--${name}\` is given twice.`);
    if (flag.key === 'negative') {
      // Midjourney's `--no`: every word up to the next option (or the end).
      const words: string[] = inlineValue ? [inlineValue] : [];
      while (i + 1 < tokens.length && !tokens[i + 1]!.startsWith('--')) words.push(tokens[++i]!);
      if (words.length === 0) throw bad(`\`--${name}\` needs the words to keep out.`);
      out.negative = words.join(' ');
      continue;
    }
    const value = inlineValue ?? tokens[++i];
    if (value === undefined || value.startsWith('--')) throw bad(`\`--${name}\` needs a value.`);
    switch (flag.key) {
      case 'count':
        out.count = parseInteger(name, value, 1, limits.maxImagesPerRequest ?? MAX_IMAGES_PER_JOB);
        break;
      case 'seed':
        out.seed = parseInteger(name, value, 0, 2 ** 32 - 1);
        break;
      case 'ditSteps':
        out.ditSteps = parseInteger(name, value, 1, limits.maxDitSteps);
        break;
      case 'decoderSteps':
        out.decoderSteps = parseInteger(name, value, 1, limits.maxDecoderSteps);
        break;
      case 'guidance': {
        const g = Number(value);
        if (!Number.isFinite(g) || !/^\d+(\.\d+)?$/.test(value)) throw bad(`\`--${name}\` needs a number, not \`${value}\`.`);
        if (g > limits.maxGuidance) throw bad(`\`--${name}\` must be at most ${limits.maxGuidance}; you gave ${value}.`);
        out.guidance = g;
        break;
      }
      case 'aspect': {
        const parsed = AspectRatio.safeParse(value);
        if (!parsed.success) throw bad(`\`--${name} ${value}\` is not a supported aspect ratio.`);
        out.aspect = parsed.data;
        break;
      }
    }
  }
  // Stryker disable next-line MethodExpression: equivalent, the words hold no spaces to trim
  const prompt = words.join(' ').trim();
  if (!prompt) throw bad('Tell me what to draw.');
  if (prompt.length > limits.maxPromptChars) {
    throw new UserError('bad_request', `Your prompt is ${prompt.length} characters; the limit is ${limits.maxPromptChars}.`);
  }
  return { command: 'imagine', prompt, ...out };
}
