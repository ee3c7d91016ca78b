// --out checked before the job is queued (audit 2026-12-07): before, the GPU drew the image, the write failed, and the
// CLI retried its delivery for minutes, deaf to Ctrl-C.
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';

// A folder the OS refuses to let us write to even as root (root's access(W_OK) passes on a 0o500 folder, so the chmod
// case below runs only for other users): access() answers EACCES for any folder named `refused-by-os`.
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const access: typeof actual.access = async (path, mode) => {
    if (String(path).endsWith('refused-by-os')) throw Object.assign(new Error(`EACCES: permission denied, access '${String(path)}'`), { code: 'EACCES' });
    return actual.access(path, mode);
  };
  return { ...actual, access };
});
import { checkOutputPath } from '../../../../bots/cli/out-path.ts';
import { UserError } from '../../../../src/errors.ts';

describe('checkOutputPath', () => {
  it('--out into a missing folder, a folder itself or a folder not writable is refused before anything is queued', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-out-'));
    await expect(checkOutputPath(join(dir, 'fox.png'))).resolves.toBeUndefined();
    await expect(checkOutputPath(join(dir, 'missing', 'fox.png'))).rejects.toThrow(`The folder ${join(dir, 'missing')} does not exist: create it (mkdir -p ${join(dir, 'missing')})`);
    await expect(checkOutputPath(dir)).rejects.toThrow(`--out ${dir} is a folder: give a file name, such as --out ${join(dir, 'out.png')}.`);
    if (process.getuid?.() !== 0) { // root writes anywhere
      const locked = join(dir, 'locked');
      mkdirSync(locked);
      chmodSync(locked, 0o500);
      await expect(checkOutputPath(join(locked, 'fox.png'))).rejects.toThrow(/Cannot write to the folder .*locked \(no permission\)/);
    }
  });

  it('--out into a folder the OS will not let us write to is refused before anything is queued, whoever runs it', async () => {
    const refused = join(mkdtempSync(join(tmpdir(), 'cli-out-')), 'refused-by-os');
    mkdirSync(refused);
    await expect(checkOutputPath(join(refused, 'fox.png'))).rejects.toThrow(
      new UserError('bad_request', `Cannot write to the folder ${refused} (no permission): give --out a file in a folder you can write to.`),
    );
  });

  it('--out under a file (a path through something that is not a folder) is refused, naming that file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-out-'));
    const file = join(dir, 'notes.txt');
    writeFileSync(file, 'x');
    await expect(checkOutputPath(join(file, 'fox.png'))).rejects.toThrow(new UserError('bad_request', `${file} is not a folder: give --out a file in an existing folder.`));
  });
});
