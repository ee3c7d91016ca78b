// npm run test:mutation: StrykerJS over every group of stryker.config.mjs, one after the other, then one table of
// scores per mutated file from the groups' JSON reports. Each group has its own report and incremental file
// (reports/mutation/<group>/), so a rerun retests only the mutants whose code or covering tests changed.
//
//   npm run test:mutation                      every group
//   npm run test:mutation -- jobs limits       those groups
//   MUTATION_GROUP=jobs npm run test:mutation  the same as `-- jobs`
//
// Extra Stryker flags go to every group after `--`, e.g. `npm run test:mutation -- jobs --concurrency 1`.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

import { groups as configured } from '../../stryker.config.mjs';

// Read from the config, not listed again here: a list kept here had fallen 9 groups behind (2026-12-08), and a group
// it lacked was passed to Stryker as a flag.
const GROUPS = Object.keys(configured);
type Group = string;

const isGroup = (s: string): s is Group => GROUPS.includes(s);
const args = process.argv.slice(2);
const named = args.filter(isGroup);
const strykerFlags = args.filter((a) => !isGroup(a));
const fromEnv = process.env.MUTATION_GROUP;
if (fromEnv !== undefined && !isGroup(fromEnv)) {
  console.error(`MUTATION_GROUP must be one of ${GROUPS.join(', ')}`);
  process.exit(2);
}
const groups: Group[] = named.length > 0 ? named : fromEnv ? [fromEnv] : [...GROUPS];

/** A file's counts, by Stryker's status names (mutation-testing-report-schema). */
interface Counts { Killed: number; Timeout: number; Survived: number; NoCoverage: number; Ignored: number; invalid: number }

/** Stryker's score: detected / (detected + undetected); ignored and invalid (compile/runtime error) mutants don't count. */
function score(c: Counts): number {
  const detected = c.Killed + c.Timeout;
  const valid = detected + c.Survived + c.NoCoverage;
  return valid === 0 ? NaN : (100 * detected) / valid;
}

function countsByFile(report: { files: Record<string, { mutants: { status: string }[] }> }): Map<string, Counts> {
  const out = new Map<string, Counts>();
  for (const [file, { mutants }] of Object.entries(report.files)) {
    const c: Counts = { Killed: 0, Timeout: 0, Survived: 0, NoCoverage: 0, Ignored: 0, invalid: 0 };
    for (const { status } of mutants) {
      if (status === 'Killed' || status === 'Timeout' || status === 'Survived' || status === 'NoCoverage' || status === 'Ignored') c[status]++;
      else c.invalid++; // CompileError, RuntimeError
    }
    out.set(file, c);
  }
  return out;
}

function main(): void {
  const timings: [Group, number, number][] = [];
  for (const group of groups) {
    const started = Date.now();
    console.log(`\n=== mutation group ${group} (${new Date(started).toISOString()}) ===`);
    const run = spawnSync('npx', ['stryker', 'run', ...strykerFlags], { stdio: 'inherit', env: { ...process.env, MUTATION_GROUP: group } });
    timings.push([group, (Date.now() - started) / 1000, run.status ?? 1]);
  }

  console.log('\n| group | file | score | killed | timed out | survived | no coverage | ignored | invalid |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const group of groups) {
    const path = `reports/mutation/${group}/mutation.json`;
    if (!existsSync(path)) continue;
    for (const [file, c] of countsByFile(JSON.parse(readFileSync(path, 'utf8')))) {
      console.log(`| ${group} | ${file} | ${score(c).toFixed(1)} % | ${c.Killed} | ${c.Timeout} | ${c.Survived} | ${c.NoCoverage} | ${c.Ignored} | ${c.invalid} |`);
    }
  }
  let total = 0;
  for (const [group, seconds, status] of timings) {
    total += seconds;
    console.log(`${group}: ${(seconds / 60).toFixed(1)} min${status === 0 ? '' : ` (stryker exited ${status})`}`);
  }
  console.log(`all: ${(total / 60).toFixed(1)} min, load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
  process.exit(timings.every(([, , status]) => status === 0) ? 0 : 1);
}

main();
