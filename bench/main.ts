// npm run bench -- <name> [args]: runs bench/<name>.ts, whose run() prints ratios measured side by side
// in one run (never absolute timings compared against a fixed number).
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here).filter((f) => f.endsWith('.ts') && f !== 'main.ts' && !f.startsWith('_')).map((f) => f.slice(0, -3));
const [name, ...args] = process.argv.slice(2);
if (!name || !existsSync(join(here, `${name}.ts`))) {
  console.error(`usage: npm run bench -- <${available.join('|')}> [args]`);
  process.exit(2);
}
const bench = (await import(join(here, `${name}.ts`))) as { run(args: string[]): Promise<void> };
await bench.run(args);
