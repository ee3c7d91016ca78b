// The offline GPU benchmark's entry point (bench/bundle/build.ts bundles it with esbuild into app/bench.mjs):
// the same `run` as `npm run bench -- gpu`, with the same flags.
import { run } from '../gpu.ts';

try {
  await run(process.argv.slice(2));
} catch (e) {
  console.error(`gpu bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
}
