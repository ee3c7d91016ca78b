// Running a command for the docker tests: its exit code and output, rejecting on failure unless told not to.
import { execFile } from 'node:child_process';
import { repoRoot } from '../../src/config/load.ts';

export interface Exec {
  code: number;
  stdout: string;
  stderr: string;
}

export function sh(cmd: string, args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): Promise<Exec> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: repoRoot, env: { ...process.env, ...options.env }, maxBuffer: 64 * 1024 * 1024, timeout: options.timeoutMs ?? 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      const result = { code, stdout, stderr };
      if (code !== 0 && !options.allowFail) reject(new Error(`${cmd} ${args.join(' ')} → ${code}\n${stderr.slice(-4000)}\n${stdout.slice(-2000)}`));
      else resolve(result);
    });
  });
}
