// The command line of `npm run imagine` and `npm run ask`: usage, strict numbers, paths relative to where the user
// typed the command (npm runs scripts in the package root and says where it was started in INIT_CWD).
import { extname, isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { AspectRatio } from '../../src/config/schema.ts';
import { UserError } from '../../src/errors.ts';
import type { CommandInput } from '../core/port.ts';

export const USAGE = `usage:
  npm run imagine -- "<prompt>" [options]      draw an image, write it to a PNG file
  npm run ask -- <image file> "<question>"     ask a question about an image

imagine options:
  --seed N            the random seed, a whole number from 0 to ${2 ** 32 - 1} (same seed + prompt = same image)
  --aspect W:H        aspect ratio (alias --ar): ${AspectRatio.options.join(', ')}
  --steps N           diffusion steps (more = slower, finer)
  --decoder-steps N   decoder steps
  --guidance X        how closely to follow the prompt
  --no "TEXT"         negative prompt: what to keep out of the image
  --n N               N images, seeds s, s+1, … (writes FILE-1.png … FILE-N.png)
  --out FILE, -o      where to write the PNG (default out.png; a name ending in .png; an existing file is replaced)
  --help, -h          this text

Paths are relative to the directory you run the command in; --out's folder must exist. Ctrl-C (or SIGTERM) cancels the job;
a second one quits without waiting for the cancel.
A prompt that starts with "-" goes last, after a second --: npm run imagine -- --seed 7 -- "-80s synthwave".
Exit status: 0 done, 1 the job failed (or the configuration is wrong), 2 a mistake in the command or a request refused, 3 Redis not reachable, 130 cancelled.`;

/**
 * --out with another image's extension (`fox.jpg`, `fox.webp`) is refused: the bot makes PNGs, and a .jpg holding PNG
 * bytes reads as a broken JPEG in some viewers (before 2026-12-07 it was written as given). A name without an
 * extension stays as given (a folder is refused by checkOutputPath, naming a file in it).
 */
function pngName(out: string): string {
  const ext = extname(out);
  if (ext !== '' && ext.toLowerCase() !== '.png') throw usageError(`--out ${out}: the image is a PNG; give a name ending in .png, such as --out ${out.slice(0, -ext.length)}.png.`);
  return out;
}

export type ParsedCommand = { help: true } | { help: false; input: CommandInput; out?: string };

const usageError = (message: string) => new UserError('bad_request', `${message}\n\n${USAGE}`);

/** A decimal whole number in [min, max]; anything else ("", "0x10", "1e3", "7.5", "-1") is refused. */
export function parseWholeNumber(name: string, raw: string | undefined, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw)) throw usageError(`--${name} needs a whole number from ${min} to ${max}, not "${raw}".`);
  const n = Number(raw);
  if (n < min || n > max) throw usageError(`--${name} must be from ${min} to ${max}; you gave ${raw}.`);
  return n;
}

/** A decimal number ("3", "4.5"); "", "0x10", "Infinity" and the like are refused. */
export function parseDecimal(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(raw)) throw usageError(`--${name} needs a number such as 3 or 4.5, not "${raw}".`);
  return Number(raw);
}

/**
 * argv after the script (`imagine …` / `ask …`) → a command, or `{ help: true }`. Throws UserError (with the usage)
 * for anything the user can fix. `cwd`: the directory relative paths are resolved against.
 */
export function parseCommand(argv: readonly string[], cwd: string): ParsedCommand {
  const [command, ...rest] = argv;
  const parse = () =>
    parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: {
        seed: { type: 'string' }, aspect: { type: 'string' }, ar: { type: 'string' }, steps: { type: 'string' },
        'decoder-steps': { type: 'string' }, guidance: { type: 'string' }, out: { type: 'string', short: 'o' },
        no: { type: 'string' }, n: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (e) {
    // Node's own hint (`-- "--foo"`) is wrong under npm, which eats the first `--`: say what to type there.
    const message = (e as Error).message.split('\n')[0]!;
    const unknown = /^Unknown option '([^']*)'/.exec(message)?.[1];
    const hint =
      unknown === undefined ? ''
      : command === 'ask' ? ` A question that starts with "-" goes after a second --: npm run ask -- -- <image file> "${unknown}".`
      : ` A prompt that starts with "-" goes last, after a second --: npm run imagine -- [options] -- "${unknown}".`;
    throw usageError(`${message.replace(/\. To specify a positional argument.*$/, '.')}${hint}`);
  }
  const { values, positionals } = parsed;
  if (values.help) return { help: true };
  const path = (p: string) => (isAbsolute(p) ? p : resolve(cwd, p));
  if (command === 'imagine') {
    if (positionals.length !== 1) throw usageError(positionals.length === 0 ? 'Please give a prompt in quotes.' : `Put the prompt in quotes: got ${positionals.length} words outside quotes.`);
    if (values.aspect !== undefined && values.ar !== undefined && values.aspect !== values.ar) throw usageError('--aspect and --ar are the same option; give it once.');
    return {
      help: false,
      input: {
        command: 'imagine', prompt: positionals[0]!,
        seed: parseWholeNumber('seed', values.seed, 0, 2 ** 32 - 1),
        aspect: values.aspect ?? values.ar,
        ditSteps: parseWholeNumber('steps', values.steps, 1, Number.MAX_SAFE_INTEGER),
        decoderSteps: parseWholeNumber('decoder-steps', values['decoder-steps'], 1, Number.MAX_SAFE_INTEGER),
        guidance: parseDecimal('guidance', values.guidance),
        negative: values.no,
        count: parseWholeNumber('n', values.n, 1, 8),
      },
      out: path(pngName(values.out ?? 'out.png')),
    };
  }
  if (command === 'ask') {
    if (positionals.length !== 2) throw usageError('ask needs an image file and a question in quotes.');
    return { help: false, input: { command: 'ask', question: positionals[1]!, image: { name: path(positionals[0]!) } } };
  }
  throw usageError(`Unknown command "${command ?? ''}".`);
}
