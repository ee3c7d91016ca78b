// The snapshot manifest: `<snapshotDir>/.blip3o-snapshot` (JSON), written after every verified file, so an
// interrupted fetch knows what is already done and a restarted worker can tell, offline, that the cache is whole.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AppError } from '../../src/errors.ts';

// No .json extension: the converter hashes the snapshot's *.json configs to detect staleness, and this file is ours.
export const MANIFEST_NAME = '.blip3o-snapshot';

const FileRecord = z.strictObject({
  size: z.number().int().nonnegative(),
  oid: z.string().min(1),
  hash: z.enum(['sha256', 'git-sha1']),
});

export const SnapshotManifest = z.strictObject({
  version: z.literal(1),
  repo: z.string(),
  revision: z.string(),
  hubUrl: z.string(),
  /** True once every selected file is present and verified. */
  complete: z.boolean(),
  /** Verified files, by repository path. */
  files: z.record(z.string(), FileRecord),
  skipped: z.array(z.strictObject({ path: z.string(), size: z.number(), reason: z.string() })),
});
export type SnapshotManifest = z.infer<typeof SnapshotManifest>;

export function readManifest(dir: string): SnapshotManifest | undefined {
  const path = join(dir, MANIFEST_NAME);
  if (!existsSync(path)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return undefined; // a torn write: treat as absent and re-verify
  }
  const parsed = SnapshotManifest.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/** Atomic: write a temp file and rename, so a crash never leaves half a manifest. */
export async function writeManifest(dir: string, manifest: SnapshotManifest): Promise<void> {
  const path = join(dir, MANIFEST_NAME);
  await writeFile(`${path}.tmp`, `${JSON.stringify(manifest, null, 1)}\n`);
  await rename(`${path}.tmp`, path);
}

/** Whether `dir` holds a complete verified snapshot of `repo`@`revision`: checked offline, sizes only. */
export function snapshotStatus(dir: string, repo: string, revision: string): { complete: boolean; why: string } {
  const m = readManifest(dir);
  if (!m) return { complete: false, why: `no ${MANIFEST_NAME} in ${dir}` };
  if (m.repo !== repo || m.revision !== revision) return { complete: false, why: `${dir} holds ${m.repo}@${m.revision}, not ${repo}@${revision}` };
  if (!m.complete) return { complete: false, why: 'the last download did not finish' };
  for (const [path, rec] of Object.entries(m.files)) {
    const full = join(dir, path);
    if (!existsSync(full)) return { complete: false, why: `${path} is missing` };
    if (statSync(full).size !== rec.size) return { complete: false, why: `${path} has the wrong size` };
  }
  return { complete: true, why: 'complete' };
}

export function assertComplete(dir: string, repo: string, revision: string): void {
  const s = snapshotStatus(dir, repo, revision);
  if (!s.complete) throw new AppError('model', `model snapshot in ${dir} is incomplete: ${s.why}; run \`npm run model -- fetch ${repo}\``);
}
