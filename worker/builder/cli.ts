// `npm run model -- <subcommand> …`: the model toolchain's command line. An explicit table of subcommands; each
// entry is a function taking the remaining argv. Errors are caught here (one of the three catch sites).
import { resolve } from 'node:path';
import { asAppError } from '../../src/errors.ts';
import { makeTiny } from './tiny/index.ts';

type Command = { usage: string; run(args: string[]): Promise<void> };

const COMMANDS: Record<string, Command> = {
  fetch: { usage: 'fetch <repo-id> [--revision r] [--dir d]   download a snapshot from the hub (resumable, verified)', run: (args) => import('../hub/cli.ts').then((m) => m.fetchCommand(args)) },
  'make-tiny': {
    usage: 'make-tiny <dir>            write the tiny synthetic BLIP3-o snapshot (deterministic)',
    async run([dir]) {
      if (!dir) throw new Error('usage: npm run model -- make-tiny <dir>');
      makeTiny(resolve(dir));
      console.log(`tiny BLIP3-o snapshot written to ${resolve(dir)}`);
    },
  },
};

async function main(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  const cmd = name ? COMMANDS[name] : undefined;
  if (!cmd) {
    console.error(`usage: npm run model -- <subcommand>\n${Object.values(COMMANDS).map((c) => `  ${c.usage}`).join('\n')}`);
    process.exitCode = 2;
    return;
  }
  try {
    await cmd.run(args);
  } catch (e) {
    const err = asAppError(e);
    console.error(`error (${err.code}): ${err.message}`);
    process.exitCode = 1;
  }
}

await main(process.argv.slice(2));
