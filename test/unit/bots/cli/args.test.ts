// `npm run imagine` / `npm run ask` command lines (issue 15): usage on --help, --ar as --aspect, strict numbers,
// relative paths against the directory the user typed the command in.
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../../../bots/cli/args.ts';
import { UserError } from '../../../../src/errors.ts';

const cwd = '/home/me/pictures';
const refused = (argv: string[]) => {
  try {
    parseCommand(argv, cwd);
  } catch (e) {
    if (e instanceof UserError) return e.message;
    throw e;
  }
  throw new Error(`accepted ${argv.join(' ')}`);
};

describe('CLI arguments', () => {
  it('--help and -h give the usage, for both commands', () => {
    for (const argv of [['imagine', '--help'], ['ask', '-h'], ['imagine', 'a fox', '--help']]) expect(parseCommand(argv, cwd)).toEqual({ help: true });
  });

  it('--ar is the common alias of --aspect', () => {
    const p = parseCommand(['imagine', 'a fox', '--ar', '16:9'], cwd);
    expect(p.help === false && p.input.command === 'imagine' && p.input.aspect).toBe('16:9');
    expect(refused(['imagine', 'a fox', '--ar', '16:9', '--aspect', '1:1'])).toMatch(/same option/);
  });

  it('--seed takes only a decimal whole number in range', () => {
    const seed = (s: string) => {
      const p = parseCommand(['imagine', 'a fox', '--seed', s], cwd);
      return p.help === false && p.input.command === 'imagine' ? p.input.seed : undefined;
    };
    expect(seed('0')).toBe(0);
    expect(seed('4294967295')).toBe(4294967295);
    for (const bad of ['', '0x10', '1e3', '7.5', '-1', ' 7', '4294967296', 'seven']) expect(refused(['imagine', 'a fox', `--seed=${bad}`]), bad).toMatch(/--seed/);
    expect(refused(['imagine', 'a fox', '--steps', '0x10'])).toMatch(/--steps needs a whole number/);
    expect(refused(['imagine', 'a fox', '--guidance', ''])).toMatch(/--guidance needs a number/);
  });

  it('unknown options and wrong arity are refused with the usage, not a stack', () => {
    expect(refused(['imagine', 'a fox', '--bogus'])).toMatch(/Unknown option '--bogus'[\s\S]*usage:/);
    expect(refused(['imagine'])).toMatch(/prompt/);
    expect(refused(['ask', 'photo.jpg'])).toMatch(/image file and a question/);
  });

  it('relative paths resolve against the directory the command was typed in (INIT_CWD), absolute ones stay', () => {
    const ask = parseCommand(['ask', 'dog.jpg', 'what breed?'], cwd);
    expect(ask.help === false && ask.input.command === 'ask' && ask.input.image.name).toBe('/home/me/pictures/dog.jpg');
    const abs = parseCommand(['ask', '/tmp/dog.jpg', 'what breed?'], cwd);
    expect(abs.help === false && abs.input.command === 'ask' && abs.input.image.name).toBe('/tmp/dog.jpg');
    const img = parseCommand(['imagine', 'a fox', '-o', 'out/fox.png'], cwd);
    expect(img.help === false && img.out).toBe('/home/me/pictures/out/fox.png');
    // a PNG under another image's name is refused (it was written as given); .PNG and no extension are kept
    expect(() => parseCommand(['imagine', 'a fox', '--out', 'fox.jpg'], cwd)).toThrow(/^--out fox\.jpg: the image is a PNG; give a name ending in \.png, such as --out fox\.png\./);
    expect([['fox.PNG'], ['fox']].map(([o]) => { const c = parseCommand(['imagine', 'a fox', '--out', o!], cwd); return c.help === false && c.out; })).toEqual(['/home/me/pictures/fox.PNG', '/home/me/pictures/fox']);
  });
});
