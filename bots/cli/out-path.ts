// Where `npm run imagine` writes its PNG, checked before the job is queued: a write that failed only after the GPU
// had drawn the image lost the image, and the delivery retries (minutes) kept the CLI from exiting, Ctrl-C included.
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { UserError } from '../../src/errors.ts';

/** Throws a UserError saying what to change when `out` (and, for --n, its siblings) cannot be written. */
export async function checkOutputPath(out: string): Promise<void> {
  const existing = await stat(out).catch(() => undefined);
  if (existing?.isDirectory()) throw new UserError('bad_request', `--out ${out} is a folder: give a file name, such as --out ${join(out, 'out.png')}.`);
  const folder = dirname(out);
  const folderStat = await stat(folder).catch(() => undefined);
  if (!folderStat) throw new UserError('bad_request', `The folder ${folder} does not exist: create it (mkdir -p ${folder}) or give --out a file in an existing folder.`);
  if (!folderStat.isDirectory()) throw new UserError('bad_request', `${folder} is not a folder: give --out a file in an existing folder.`);
  // Stryker disable next-line ArrowFunction: `() => undefined` for `() => false` is as falsy to the test below
  const writable = await access(folder, constants.W_OK).then(() => true, () => false);
  if (!writable) throw new UserError('bad_request', `Cannot write to the folder ${folder} (no permission): give --out a file in a folder you can write to.`);
}
