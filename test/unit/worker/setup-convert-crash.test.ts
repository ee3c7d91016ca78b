// What the admin reads when the conversion child (`model convert`, started by ensureModel) crashes instead of failing
// with its own `error (…)` line: an uncaught exception, or V8 running out of heap. The converter is played by a script
// NODE_OPTIONS preloads into the child, as in setup.test.ts.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, loadSecrets } from '../../../src/config/load.ts';
import { ensureModel } from '../../../worker/setup.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** ensureModel's rejection with the converter replaced by `script`. */
async function convertingWith(script: string): Promise<{ snapshotDir: string; error: unknown }> {
  const d = mkdtempSync(join(tmpdir(), 'setup-crash-'));
  dirs.push(d);
  const snapshotDir = join(d, 'snapshot');
  mkdirSync(snapshotDir);
  writeFileSync(join(snapshotDir, 'config.json'), '{}');
  const config = loadConfig({
    env: {},
    overrides: { model: { hubId: '', snapshotDir, onnxDir: join(d, 'onnx'), dtype: 'fp32', quant: 'none', executionProvider: 'cpu', convertOnStart: true } },
  });
  const fake = join(d, 'crashing-converter.cjs');
  writeFileSync(fake, script);
  const before = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = `--require ${fake}`;
  try {
    const error = await ensureModel(config, loadSecrets({}), pino({ level: 'silent' }), { root: '/' }).catch((e: unknown) => e);
    return { snapshotDir, error };
  } finally {
    if (before === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = before;
  }
}

describe('a conversion child that crashes', () => {
  it('an uncaught exception: names the exception, not the Node.js version line printed after its stack', async () => {
    const { snapshotDir, error } = await convertingWith("setImmediate(() => { throw new TypeError('cannot read properties of undefined'); });");
    expect(error).toMatchObject({ message: `converting ${snapshotDir} to ONNX failed (exit 1): TypeError: cannot read properties of undefined` });
  });

  it('out of heap (V8 aborts): names the fatal error, not the last native stack frame', async () => {
    // what V8 prints on `--max-old-space-size` exhaustion, then its abort
    const oom = [
      '<--- Last few GCs --->',
      '[1:0x6f3c000]   912 ms: Mark-Compact 2041.2 (2082.3) -> 2039.9 (2082.6) MB, 1210.5 / 0.0 ms  (average mu = 0.1) allocation failure;',
      'FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory',
      ' 1: 0xb9c1f0 node::Abort() [node]',
      ' 2: 0xaa27ee  [node]',
      ' 3: 0xd73b40 v8::Utils::ReportOOMFailure(v8::internal::Isolate*, char const*, bool) [node]',
    ].join('\\n');
    const { snapshotDir, error } = await convertingWith(`process.stderr.write('${oom}\\n', () => process.kill(process.pid, 'SIGABRT'));`);
    expect(error).toMatchObject({ message: `converting ${snapshotDir} to ONNX failed (SIGABRT): FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory` });
  });
});
