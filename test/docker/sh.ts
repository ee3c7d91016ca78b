// For the docker tests: running a command (its exit code and output, rejecting on failure unless told not to), and
// polling until a condition holds (the compose project's recent logs in the error when it never does).
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

/**
 * Polls `check` every `intervalMs` until it answers something other than undefined (a throw counts as not yet). On
 * timeout, throws naming `what`, the last error, and the end of `logs()` (the compose project's recent log lines).
 */
export async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, logs: () => Promise<string>, intervalMs = 1000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}\n${(await logs()).slice(-8000)}`);
}
