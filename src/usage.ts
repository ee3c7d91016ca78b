// Command lines of the long-running processes (`npm run worker`, `npm run bots`): they take no arguments but
// --help, so anything else is refused with the usage text instead of being ignored (a typo must not start a worker).

/** Prints `usage` and exits 0 on --help/-h; prints the problem and the usage and exits 2 on any other argument. */
export function handleUsage(argv: readonly string[], usage: string): void {
  if (argv.length === 0) return;
  if (argv.some((a) => a === '--help' || a === '-h')) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  process.stderr.write(`Unknown argument "${argv[0]}": this command takes no arguments (settings live in config/ and the environment).\n${usage}\n`);
  process.exit(2);
}
