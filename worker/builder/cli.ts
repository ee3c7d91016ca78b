// `npm run model -- <subcommand> …`: the model toolchain's command line. An explicit table of subcommands; each
// entry is a function taking the remaining argv. Errors are caught here (one of the three catch sites).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { AppError, asAppError } from '../../src/errors.ts';
import { convertSnapshot, describeSkipped } from './convert.ts';
import { makeRandom, RANDOM_COMPONENTS, RANDOM_PRESETS, type RandomComponent } from './random/index.ts';
import { MANIFEST_FILE, PARTIAL_MANIFEST_FILE } from './manifest.ts';
import { formatPlan, memoryPlan } from './random/memory-plan.ts';
import { makeTiny } from './tiny/index.ts';

type Command = { usage: string; run(args: string[]): Promise<void> };

const COMMANDS: Record<string, Command> = {
  fetch: { usage: 'fetch [<repo-id>] [--revision r] [--dir d]   download a snapshot from the hub (resumable, verified)', run: (args) => import('../hub/cli.ts').then((m) => m.fetchCommand(args)) },
  convert: {
    usage: 'convert <snapshot-dir> <out-dir> [--dtype fp32|fp16] [--quant none|int4|int8] [--only text,vision,dit,unet,vae]   build the ONNX graphs + manifest.json',
    async run(args) {
      const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { dtype: { type: 'string', default: 'fp32' }, quant: { type: 'string', default: 'none' }, only: { type: 'string' } } });
      const [snapshot, out] = positionals;
      const quant = values.quant;
      if (!snapshot || !out || (values.dtype !== 'fp32' && values.dtype !== 'fp16') || (quant !== 'none' && quant !== 'int4' && quant !== 'int8'))
        throw new AppError('config', 'usage: npm run model -- convert <snapshot-dir> <out-dir> [--dtype fp32|fp16] [--quant none|int4|int8] [--only text,vision,dit,unet,vae]');
      const bar = new cliProgress.SingleBar({ format: 'convert [{bar}] {percentage}% {value}/{total} MiB  {file}', hideCursor: true }, cliProgress.Presets.shades_classic);
      let started = false;
      // per written file: wall time and the peak resident memory seen while writing it
      const stats: Record<string, { start: number; end: number; peakRss: number; bytes: number; base: number }> = {};
      let lastDone = 0;
      let lastT = performance.now();
      const t0 = performance.now();
      const manifest = await convertSnapshot(resolve(snapshot), resolve(out), {
        dtype: values.dtype,
        quant,
        ...(values.only === undefined ? {} : { only: values.only.split(',').map((c) => c.trim()).filter(Boolean) }),
        onProgress(p) {
          if (p.phase === 'build') return console.log(`building ${p.file}…`);
          const rss = process.memoryUsage.rss();
          const s = (stats[p.file] ??= { start: lastT, end: 0, peakRss: 0, bytes: 0, base: lastDone });
          s.end = performance.now();
          s.peakRss = Math.max(s.peakRss, rss);
          s.bytes = p.bytesDone - s.base;
          lastDone = p.bytesDone;
          lastT = s.end;
          const mib = (b: number) => Math.round(b / 2 ** 20);
          if (!started) bar.start(mib(p.bytesTotal), 0, { file: p.file });
          started = true;
          bar.update(mib(p.bytesDone), { file: p.file });
        },
      });
      if (started) bar.stop();
      const gb = (b: number) => (b / 1e9).toFixed(2);
      for (const [file, s] of Object.entries(stats))
        console.log(`  ${file.padEnd(36)} ${gb(s.bytes).padStart(6)} GB  ${((s.end - s.start) / 1000).toFixed(0).padStart(4)} s  peak RSS ${gb(s.peakRss)} GB`);
      console.log(`  total ${((performance.now() - t0) / 1000).toFixed(0)} s (including the build), peak RSS of this process ${gb(process.resourceUsage().maxRSS * 1024)} GB`);
      for (const line of describeSkipped(manifest.architecture, manifest.skipped)) console.log(line);
      const graphs = Object.values(manifest.components).flatMap((c) => Object.values(c.graphs));
      if (!existsSync(join(resolve(out), MANIFEST_FILE)))
        console.log(`${PARTIAL_MANIFEST_FILE} lists the components written so far (${Object.keys(manifest.components).join(', ')}); convert the rest with --only to finish`);
      console.log(`${manifest.architecture} → ${graphs.length} graphs (${manifest.dtype}${manifest.quant === 'none' ? '' : `, LLM ${manifest.quant}`}) in ${resolve(out)}: ${graphs.map((g) => g.file).join(', ')}`);
    },
  },
  'make-random': {
    usage: `make-random --preset ${Object.keys(RANDOM_PRESETS).join('|')} <dir> [--components text,vision,…] [--overwrite]   real-size random-weight snapshot (hub layout, deterministic)`,
    async run(args) {
      const { positionals, values } = parseArgs({
        args,
        allowPositionals: true,
        options: { preset: { type: 'string' }, components: { type: 'string' }, overwrite: { type: 'boolean', default: false } },
      });
      const [dir] = positionals;
      const usage = `usage: npm run model -- make-random --preset ${Object.keys(RANDOM_PRESETS).join('|')} <dir> [--components ${RANDOM_COMPONENTS.join(',')}] [--overwrite]`;
      if (!dir || !values.preset || !RANDOM_PRESETS[values.preset]) throw new AppError('config', usage);
      const components = values.components?.split(',').map((c) => c.trim()) ?? [...RANDOM_COMPONENTS];
      const bad = components.filter((c) => !RANDOM_COMPONENTS.includes(c as RandomComponent));
      if (bad.length) throw new AppError('config', `unknown component(s) ${bad.join(', ')}; ${usage}`);
      const bar = new cliProgress.SingleBar({ format: 'make-random [{bar}] {percentage}% {value}/{total} MiB  {file}  eta {eta_formatted}', hideCursor: true }, cliProgress.Presets.shades_classic);
      let started = false;
      const mib = (b: number) => Math.round(b / 2 ** 20);
      const t0 = performance.now();
      const summary = await makeRandom({
        preset: values.preset,
        dir: resolve(dir),
        components: components as RandomComponent[],
        overwrite: values.overwrite,
        onProgress(p) {
          if (!started) bar.start(mib(p.bytesTotal), 0, { file: p.file });
          started = true;
          bar.update(mib(p.bytesDone), { file: p.file });
        },
      });
      if (started) bar.stop();
      console.log(`${values.preset}: ${(summary.parameters / 1e9).toFixed(2)} B parameters, ${(summary.bytes / 1e9).toFixed(2)} GB of bf16 in ${summary.files.length} files, ${((performance.now() - t0) / 1000).toFixed(0)} s → ${summary.dir}`);
    },
  },
  'memory-plan': {
    usage: `memory-plan [--preset ${Object.keys(RANDOM_PRESETS).join('|')}]   weight bytes per graph at fp16 / int4 LLM, and what imagine and ask need`,
    async run(args) {
      const { values } = parseArgs({ args, options: { preset: { type: 'string' } } });
      for (const name of values.preset ? [values.preset] : Object.keys(RANDOM_PRESETS)) {
        if (!RANDOM_PRESETS[name]) throw new AppError('config', `unknown preset ${name}`);
        console.log(formatPlan(name, memoryPlan(name)));
      }
    },
  },
  'make-tiny': {
    usage: 'make-tiny <dir>            write the tiny synthetic BLIP3-o snapshot (deterministic)',
    async run([dir]) {
      if (!dir) throw new Error('usage: npm run model -- make-tiny <dir>');
      makeTiny(resolve(dir));
      console.log(`tiny BLIP3-o snapshot written to ${resolve(dir)}`);
    },
  },
};

const usage = () => `usage: npm run model -- <subcommand> [--help]\n${Object.values(COMMANDS).map((c) => `  ${c.usage}`).join('\n')}`;
const isHelp = (a: string) => a === '--help' || a === '-h';

async function main(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  if (name === undefined || isHelp(name) || name === 'help') {
    (name === undefined ? console.error : console.log)(usage());
    process.exitCode = name === undefined ? 2 : 0;
    return;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`Unknown subcommand "${name}".\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  if (args.some(isHelp)) {
    console.log(`usage: npm run model -- ${cmd.usage}`);
    return;
  }
  try {
    await cmd.run(args);
  } catch (e) {
    // node:util parseArgs: an option the subcommand does not have, or one missing its value
    if (typeof (e as { code?: unknown }).code === 'string' && (e as { code: string }).code.startsWith('ERR_PARSE_ARGS')) {
      console.error(`${(e as Error).message.split('\n')[0]}\nusage: npm run model -- ${cmd.usage}`);
      process.exitCode = 2;
      return;
    }
    const err = asAppError(e);
    console.error(`error (${err.code}): ${err.message}`);
    process.exitCode = 1;
  }
}

await main(process.argv.slice(2));
