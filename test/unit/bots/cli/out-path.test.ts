// --out checked before the job is queued (audit 2026-12-07): before, the GPU drew the image, the write failed, and the
// CLI retried its delivery for minutes, deaf to Ctrl-C.
import { chmodSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkOutputPath } from '../../../../bots/cli/out-path.ts';

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

});
