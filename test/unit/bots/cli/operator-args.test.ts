// What an operator meets at the CLI's edges (audit 2026-12-07): a prompt that starts with "-", an --out that cannot be
// written, a PNG write that fails after the image was made.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCommand, USAGE } from '../../../../bots/cli/args.ts';
import { repoRoot } from '../../../../src/config/load.ts';
import { CliPort } from '../../../../bots/cli/port.ts';
import type { JobResult } from '../../../../src/jobs/contract.ts';
import { UserError } from '../../../../src/errors.ts';

const refused = (argv: string[]) => {
  try {
    parseCommand(argv, '/home/me');
  } catch (e) {
    if (e instanceof UserError) return e.message;
    throw e;
  }
  throw new Error(`accepted ${argv.join(' ')}`);
};

describe('CLI edges an operator meets', () => {
  // npm eats the first --, so Node's own hint (-- "--foo") did not work, and it was cut: the message said nothing to do.
  it('a prompt or question starting with "-" is refused with the way to pass it under npm', () => {
    expect(refused(['imagine', '--no-cats allowed'])).toMatch(/Unknown option '--no-cats allowed'\. A prompt that starts with "-" goes last, after a second --: npm run imagine -- \[options\] -- "--no-cats allowed"\./);
    expect(refused(['ask', 'dog.jpg', '--why?'])).toMatch(/npm run ask -- -- <image file> "--why\?"/);
    // …and what the hint says works
    const p = parseCommand(['imagine', '--seed', '7', '--', '--no-cats allowed'], '/home/me');
    expect(p.help === false && p.input.command === 'imagine' && p.input.prompt).toBe('--no-cats allowed');
  });

  // A write failing after the image was made threw out of deliver(): the delivery was retried with backoff for
  // minutes, and Ctrl-C could not end the CLI (its job had already finished).
  it('a PNG that cannot be written ends the wait with a message instead of throwing into the delivery retries', async () => {
    const port = new CliPort({ write: () => true } as unknown as NodeJS.WriteStream);
    const out = join(mkdtempSync(join(tmpdir(), 'cli-out-')), 'gone', 'fox.png');
    const waiting = port.waitFor('j1', out);
    const result = { v: 1, jobId: 'j1', status: 'succeeded' } as unknown as JobResult;
    await port.deliver(result, new Uint8Array([1, 2, 3]));
    const outcome = await waiting;
    expect(outcome.writeError).toMatch(/The image was made but could not be written: ENOENT.*Run the command again with a --out you can write to\./);
  });
});

describe('CLI usage', () => {
  // Scripts wrapping the CLI had to read bots/cli/main.ts to learn what its exit status meant.
  it('--help names every exit status main() returns', () => {
    const main = readFileSync(join(repoRoot, 'bots/cli/main.ts'), 'utf8');
    const codes = new Set([...main.matchAll(/return (\d+);|\? (\d+) : (\d+)/g)].flatMap((m) => m.slice(1).filter(Boolean)));
    expect([...codes].sort()).toEqual(['0', '1', '130', '2', '3']);
    for (const code of codes) expect(USAGE).toMatch(new RegExp(`Exit status:.*\\b${code} [A-Za-z]`));
  });
});
