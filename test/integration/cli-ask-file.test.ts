// `npm run ask -- <file> "<question>"` with a file far past understanding.maxInputImageBytes (audit 2026-12-07): the
// CLI read it whole first (up to 2 GiB into memory), and past 2 GiB said only Node's "File size (…) is greater than 2 GiB".
// Now its size is checked before it is read, in the words the bots use for an upload past the limit.
import { closeSync, openSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exitWithin, makeHarness, spawnTs } from '../doubles/spine-harness.ts';

describe('CLI ask with a huge file', () => {
  it('is refused from its size, before it is read: exit 2 and the limit', async () => {
    const h = makeHarness({});
    const file = join(h.dir, 'huge.png');
    const fd = openSync(file, 'w');
    ftruncateSync(fd, 3 * 2 ** 30); // sparse: 3 GiB that take no disk
    closeSync(fd);
    const cli = spawnTs('bots/cli/main.ts', h, ['ask', file, 'what is this?']);
    const code = await exitWithin(cli, 30_000);
    if (code === 'still running') cli.child.kill('SIGKILL');
    expect(cli.output()).toContain(`${file} is 3072 MiB; the limit is 20 MiB.`);
    expect(code).toBe(2);
  }, 60_000);
});
