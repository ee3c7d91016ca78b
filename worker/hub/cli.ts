// `npm run model -- fetch [<repo-id>] [--revision <rev>] [--dir <snapshotDir>]`: download a snapshot with a
// progress bar. Defaults come from config (model.hubId, model.hubRevision, model.snapshotDir, model.hubUrl / HF_ENDPOINT);
// HF_TOKEN comes from the environment. Registered in worker/builder/cli.ts's subcommand table.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { loadConfig, loadSecrets, repoRoot } from '../../src/config/load.ts';
import { AppError } from '../../src/errors.ts';
import { fetchSnapshot, type FetchProgress } from './fetch.ts';

const USAGE = 'usage: npm run model -- fetch [<repo-id>, default model.hubId] [--revision <branch|tag|commit>] [--dir <snapshot dir>]';

export async function fetchCommand(args: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: { revision: { type: 'string' }, dir: { type: 'string' } },
  });
  const config = loadConfig();
  const secrets = loadSecrets();
  const repo = positionals[0] ?? config.model.hubId;
  if (!repo || positionals.length > 1) throw new AppError('config', USAGE);
  const dir = resolve(repoRoot, values.dir ?? config.model.snapshotDir);
  const result = await fetchSnapshot({
    repo,
    revision: values.revision ?? config.model.hubRevision,
    hubUrl: config.model.hubUrl,
    dir,
    token: secrets.HF_TOKEN,
    retries: config.model.downloadRetries,
    progress: progressBar(),
  });
  const skippedBytes = result.skipped.reduce((s, f) => s + f.size, 0);
  console.log(`${repo}: ${result.files.length} files in ${dir} (${mib(result.downloadedBytes)} downloaded now, ${result.reused.length} already verified)`);
  if (result.skipped.length > 0) {
    console.log(`skipped ${result.skipped.length} files (${mib(skippedBytes)}) inference does not use:`);
    for (const s of result.skipped) console.log(`  ${s.path}  ${mib(s.size)}  ${s.reason}`);
  }
}

/** One bar over all bytes; in a non-terminal (docker logs) it prints a line every 10 seconds instead. */
export function progressBar(): FetchProgress {
  const bar = new cliProgress.SingleBar(
    {
      format: '{bar} {percentage}% | {doneMiB}/{totalMiB} MiB | {speed} MiB/s | eta {eta_formatted} | {file}',
      noTTYOutput: true,
      notTTYSchedule: 10_000,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let value = 0;
  let total = 0;
  let startedAt = 0;
  let startValue = 0;
  let file = '';
  const payload = () => ({
    doneMiB: (value / 2 ** 20).toFixed(0),
    totalMiB: (total / 2 ** 20).toFixed(0),
    speed: ((value - startValue) / 2 ** 20 / Math.max(1e-3, (Date.now() - startedAt) / 1000)).toFixed(1),
    file,
  });
  return {
    start(totalBytes, doneBytes) {
      total = totalBytes;
      value = startValue = doneBytes;
      startedAt = Date.now();
      bar.start(totalBytes, doneBytes, payload());
    },
    file(path) {
      file = path;
      bar.update(value, payload());
    },
    bytes(n) {
      value += n;
      bar.update(value, payload());
    },
    stop() {
      bar.stop();
    },
  };
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
