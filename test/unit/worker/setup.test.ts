// The setup lock that makes workers sharing one model volume take turns (worker/setup.ts withLock), and what
// ensureModel does around it: a model set up already is read without the lock, and a stop request (the worker's
// SIGTERM) ends a wait for the lock, a download or a conversion with SetupStopped, the lock released.
import { getEventListeners } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, loadSecrets } from '../../../src/config/load.ts';
import { BUILDER_VERSION, MANIFEST_FILE, sourceConfigHash } from '../../../worker/builder/manifest.ts';
import { MANIFEST_NAME } from '../../../worker/hub/snapshot.ts';
import { ensureModel, SetupStopped, withLock } from '../../../worker/setup.ts';
import { startFakeHub } from '../../fakes/hub/server.ts';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const lockIn = () => {
  const d = mkdtempSync(join(tmpdir(), 'setup-lock-'));
  dirs.push(d);
  return join(d, 'snapshot.setup-lock');
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** withLock's pause between looks at a held lock in the tests that do not test the pause itself (1 s unless set). */
const PAUSE_MS = 50;
/** A logger whose lines (info and up) are kept, parsed. */
const captured = (onLine?: (msg: string) => void) => {
  const lines: Record<string, unknown>[] = [];
  const write = (line: string) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    lines.push(parsed);
    onLine?.(parsed.msg as string);
  };
  return { lines, log: pino({ level: 'info', base: undefined }, { write }) };
};
/** A lock another worker holds and is alive in: its heartbeat keeps it fresh until `stop()`. */
const heldLock = (lock: string) => {
  mkdirSync(lock);
  const touching = setInterval(() => utimesSync(lock, new Date(), new Date()), 100);
  return { stop: () => clearInterval(touching) };
};

describe('withLock', () => {
  it('runs holders one at a time, and releases on failure too', async () => {
    const lock = lockIn();
    const events: string[] = [];
    const holder = (name: string, fail = false) =>
      withLock(lock, log, 60_000, async () => {
        events.push(`${name} in`);
        await sleep(150);
        events.push(`${name} out`);
        if (fail) throw new Error(`${name} failed`);
        return name;
      }, undefined, PAUSE_MS);
    const results = await Promise.allSettled([holder('a', true), holder('b'), holder('c')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace(' in', ' out')); // never interleaved
  });

  it('takes over a lock left by a process that died (not touched for staleMs), saying so', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const t = Date.now();
    const { log: watched, lines } = captured();
    expect(await withLock(lock, watched, 5_000, async () => 'mine')).toBe('mine');
    expect(Date.now() - t).toBeLessThan(3_000);
    expect(lines).toEqual([expect.objectContaining({ level: 40, lockDir: lock, ageMs: expect.any(Number), msg: 'taking over a stale model setup lock' })]);
    expect(lines[0]!.ageMs as number).toBeGreaterThanOrEqual(10_000);
    expect(existsSync(`${lock}.takeover`)).toBe(false); // the takeover lock is given back
  });

  it('several workers finding the same stale lock: each takes its turn, none fails on the lock another removed', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const events: string[] = [];
    const holder = (name: string) =>
      withLock(lock, log, 5_000, async () => {
        events.push(`${name} in`);
        await sleep(50);
        events.push(`${name} out`);
      }, undefined, PAUSE_MS);
    const results = await Promise.allSettled([holder('a'), holder('b'), holder('c')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(events).toHaveLength(6);
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace(' in', ' out'));
  });

  it('a stale lock another worker is taking over (its takeover lock fresh) is left to it; a takeover lock whose process died is cleared', async () => {
    const lock = lockIn();
    mkdirSync(lock);
    const old = new Date(Date.now() - 10_000);
    utimesSync(lock, old, old);
    const guard = `${lock}.takeover`;
    mkdirSync(guard);
    const touching = setInterval(() => utimesSync(guard, new Date(), new Date()), 100); // the other takeover, alive
    const t = Date.now();
    const held = withLock(lock, log, 500, async () => Date.now() - t, undefined, PAUSE_MS);
    await sleep(1_100); // many looks, each finding the takeover lock fresh
    clearInterval(touching); // it dies, its takeover lock left behind
    // Before: taken over at once, two holders. Now: after the takeover lock went stale (500 ms after its last touch, at
    // 0.9 s at the earliest) and was cleared.
    expect(await held).toBeGreaterThanOrEqual(1_400);
  });

  it('names its holder in the lock, and returns what it ran even if the lock was taken from it meanwhile', async () => {
    const lock = lockIn();
    const result = await withLock(lock, log, 60_000, async () => {
      expect(readFileSync(join(lock, 'owner'), 'utf8')).toBe(`${hostname()} ${process.pid}\n`);
      rmSync(lock, { recursive: true, force: true }); // another worker judged it stale and took it over
      return 'done';
    });
    expect(result).toBe('done');
  });

  it('refuses a lock, or a takeover lock, it cannot make for another reason than its being held (not waited on for ever)', async () => {
    const lock = join(lockIn(), '..', 'x'.repeat(300)); // longer than a file name may be: ENAMETOOLONG
    await expect(withLock(lock, log, 5_000, async () => 'never')).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    const held = join(lockIn(), '..', 'y'.repeat(250)); // a name that fits, whose `.takeover` does not
    mkdirSync(held);
    await expect(withLock(held, log, 5_000, async () => 'never')).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
  });

  it('waits for a live holder, whose heartbeat keeps the lock fresh past staleMs', async () => {
    const lock = lockIn();
    const order: string[] = [];
    const first = withLock(lock, log, 1_000, async () => {
      order.push('first in');
      await sleep(1_600); // longer than staleMs: only the heartbeat (every staleMs/4, 250 ms) keeps the second one out
      order.push('first out');
    });
    await sleep(100);
    const { log: watched, lines } = captured();
    const second = withLock(lock, watched, 1_000, async () => void order.push('second'), undefined, PAUSE_MS);
    await Promise.all([first, second]);
    expect(order).toEqual(['first in', 'first out', 'second']);
    expect(existsSync(`${lock}.takeover`)).toBe(false); // each look at the live lock gave its takeover lock back
    // said once, not on every look (~30) in the ~1.5 s it waited
    expect(lines).toEqual([expect.objectContaining({ level: 30, lockDir: lock, msg: 'another worker is setting up the model; waiting for it' })]);
  });
});

describe('withLock with a stop request', () => {
  it('asked to stop before it starts: SetupStopped, no lock made, nothing run', async () => {
    const lock = lockIn();
    let ran = false;
    const stopped = withLock(lock, log, 60_000, async () => void (ran = true), AbortSignal.abort());
    await expect(stopped).rejects.toBeInstanceOf(SetupStopped);
    await expect(stopped).rejects.toMatchObject({ name: 'SetupStopped', message: 'model setup stopped on request' });
    expect({ ran, lockMade: existsSync(lock) }).toEqual({ ran: false, lockMade: false });
  });

  it('a stop while it waits for a live holder ends the wait at once, the holder\'s lock left alone', async () => {
    const lock = lockIn();
    const other = heldLock(lock);
    try {
      const stop = new AbortController();
      const waiting = withLock(lock, log, 60_000, async () => 'never', stop.signal);
      await sleep(300); // in its first one-second pause
      const t = Date.now();
      stop.abort();
      await expect(waiting).rejects.toBeInstanceOf(SetupStopped);
      expect(Date.now() - t).toBeLessThan(900); // not at the end of the one-second pause (margin for a loaded CI machine)
      expect(readdirSync(lock)).toEqual([]); // not taken: no owner written
    } finally {
      other.stop();
    }
  });

  it('leaves no listener on the signal after each pause (a wait of an hour would have added 3,600)', async () => {
    const lock = lockIn();
    const other = heldLock(lock);
    const stop = new AbortController();
    const waiting = withLock(lock, log, 60_000, async () => getEventListeners(stop.signal, 'abort').length, stop.signal, 200);
    await sleep(500); // two 200 ms pauses ended, a third begun
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(1);
    other.stop();
    rmSync(lock, { recursive: true, force: true }); // the holder is done
    expect(await waiting).toBe(0);
  });
});

describe('ensureModel', () => {
  const REPO = 'BLIP3o/BLIP3o-Model-4B';
  /** A model folder whose snapshot (one config file) and conversion (a manifest with no graphs) are current. */
  const modelFolder = (opts: { hubId?: string; hubUrl?: string; converted?: boolean; convertOnStart?: boolean } = {}) => {
    const d = mkdtempSync(join(tmpdir(), 'setup-model-'));
    dirs.push(d);
    const snapshotDir = join(d, 'snapshot');
    const onnxDir = join(d, 'onnx');
    mkdirSync(snapshotDir);
    writeFileSync(join(snapshotDir, 'config.json'), '{}');
    const hubUrl = opts.hubUrl ?? 'http://127.0.0.1:9'; // the discard port: never asked
    if (opts.hubId) {
      const manifest = { version: 1, repo: opts.hubId, revision: 'main', hubUrl, complete: true, files: {}, skipped: [] };
      writeFileSync(join(snapshotDir, MANIFEST_NAME), JSON.stringify(manifest));
    }
    if (opts.converted ?? true) {
      mkdirSync(onnxDir);
      const manifest = { manifestVersion: 1, builderVersion: BUILDER_VERSION, architecture: 'tiny', dtype: 'fp32', quant: 'none', sourceConfigHash: sourceConfigHash(snapshotDir), components: {}, skipped: {} };
      writeFileSync(join(onnxDir, MANIFEST_FILE), JSON.stringify(manifest));
    }
    const config = loadConfig({
      env: {},
      overrides: { model: { hubId: opts.hubId ?? '', hubUrl, hubRevision: 'main', snapshotDir, onnxDir, dtype: 'fp32', quant: 'none', executionProvider: 'cpu', convertOnStart: opts.convertOnStart ?? false } },
    });
    return { config, snapshotDir, onnxDir, lock: `${snapshotDir}.setup-lock` };
  };
  /** ensureModel's outcome, or 'waited' if it has not settled within `ms` (it waits for a lock in one-second pauses). */
  const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, sleep(ms).then(() => 'waited' as const)]);
  const secrets = loadSecrets({});
  const messages = (lines: Record<string, unknown>[]) => lines.map((l) => l.msg).filter((m) => !/^execution provider/.test(m as string));

  it('a model set up already is read as it is, without waiting for the lock another worker holds', async () => {
    for (const hubId of ['', REPO]) {
      const { config, snapshotDir, onnxDir, lock } = modelFolder({ hubId });
      const other = heldLock(lock);
      try {
        const { log: watched, lines } = captured();
        const result = await within(ensureModel(config, secrets, watched, { root: '/', staleLockMs: 60_000 }), 3_000);
        expect(result, hubId).toEqual({ provider: 'cpu', adapter: 'host CPU', fetched: false, converted: false, snapshotDir, onnxDir });
        const current = ['ONNX graphs are current; not converting'];
        expect(messages(lines), hubId).toEqual(hubId === '' ? current : ['model snapshot already complete; not downloading', ...current]);
        if (hubId !== '') expect(lines).toContainEqual(expect.objectContaining({ msg: 'model snapshot already complete; not downloading', repo: REPO, dir: snapshotDir }));
        expect(lines).toContainEqual(expect.objectContaining({ msg: current[0], dir: onnxDir }));
        expect(readdirSync(lock), hubId).toEqual([]); // the other worker's lock, untouched
      } finally {
        other.stop();
      }
    }
  });

  it('a conversion that is not current, or whose graphs fail their hashes, is set up under the lock', async () => {
    const none = modelFolder({ converted: false });
    await expect(ensureModel(none.config, secrets, log, { root: '/' })).rejects.toThrow(/ONNX graphs in .+ are not usable \(no manifest\.json in /);
    // sizes as recorded (staleReason passes), bytes not: only verifyGraphFiles tells
    const damaged = modelFolder();
    writeFileSync(join(damaged.onnxDir, 'llm.onnx'), 'abcd');
    const graph = { file: 'llm.onnx', dtype: 'fp32', external: false, bytes: 4, inputs: [], outputs: [], files: { 'llm.onnx': { bytes: 4, sha256: '0'.repeat(64) } } };
    const manifest = JSON.parse(readFileSync(join(damaged.onnxDir, MANIFEST_FILE), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(damaged.onnxDir, MANIFEST_FILE), JSON.stringify({ ...manifest, components: { llm: { graphs: { llm: graph }, tensors: {}, info: {} } } }));
    await expect(ensureModel(damaged.config, secrets, log, { root: '/' })).rejects.toThrow(/are not usable \(llm\.onnx does not match the sha256/);
    expect(existsSync(damaged.lock)).toBe(false); // made, then released
  });

  it('a snapshot whose download did not finish is set up under the lock, even with a current conversion', async () => {
    const { config, snapshotDir } = modelFolder({ hubId: REPO });
    const manifest = JSON.parse(readFileSync(join(snapshotDir, MANIFEST_NAME), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(snapshotDir, MANIFEST_NAME), JSON.stringify({ ...manifest, complete: false }));
    await expect(ensureModel(config, secrets, log, { root: '/' })).rejects.toThrow(/model snapshot in .+ is not ready \(the last download did not finish\)/);
  });

  it('a conversion that fails (no stop asked for) names how the child ended and its last error line', async () => {
    const { config, snapshotDir, onnxDir } = modelFolder({ converted: false, convertOnStart: true });
    // The converter played by a script NODE_OPTIONS preloads into the child (it inherits this process's environment)
    const fake = join(onnxDir, '..', 'fake-converter.cjs');
    const failing = async (script: string) => {
      writeFileSync(fake, script);
      const before = process.env.NODE_OPTIONS;
      process.env.NODE_OPTIONS = `--require ${fake}`;
      try {
        return await ensureModel(config, secrets, log, { root: '/' }).catch((e: unknown) => e);
      } finally {
        if (before === undefined) delete process.env.NODE_OPTIONS;
        else process.env.NODE_OPTIONS = before;
      }
    };
    const said = await failing("process.stderr.write('error: first\\nerror: second\\nerror: the cause\\nafter it\\n'); process.exit(3);");
    expect(said).toMatchObject({ code: 'model', message: `converting ${snapshotDir} to ONNX failed (exit 3): error: the cause`, context: { tail: ['error: first', 'error: second', 'error: the cause', 'after it'] } });
    expect(await failing('process.exit(4);')).toMatchObject({ message: `converting ${snapshotDir} to ONNX failed (exit 4): no output` });
    expect(await failing("process.stdout.write('one\\ntwo\\nthree\\n'); process.kill(process.pid, 'SIGKILL');")).toMatchObject({ message: `converting ${snapshotDir} to ONNX failed (SIGKILL): three` });
    // exit 0 is no failure: what it left is read (here: nothing)
    expect(await failing('process.exit(0);')).toMatchObject({ message: `conversion into ${onnxDir} finished without a current manifest.json` });
  });

  it('a conversion child that outlives SIGTERM is killed convertStopMs (5 s unless set) later, then SetupStopped', async () => {
    const { config, onnxDir, lock } = modelFolder({ converted: false, convertOnStart: true });
    const fake = join(onnxDir, '..', 'deaf-converter.cjs');
    // deaf to SIGTERM, and alive past its failing main module (an uncaught error); gone by itself after 20 s
    writeFileSync(fake, "process.on('SIGTERM', () => {}); process.on('uncaughtException', () => {}); process.stdout.write('ready\\n'); setTimeout(() => process.exit(9), 20000);");
    const before = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `--require ${fake}`;
    try {
      const stop = new AbortController();
      let stoppedAt = 0;
      const { log: watched } = captured((msg) => msg === 'convert: ready' && ((stoppedAt = Date.now()), stop.abort()));
      const setup = ensureModel(config, secrets, watched, { root: '/', signal: stop.signal, convertStopMs: 1_000 });
      await expect(within(setup, 15_000)).rejects.toBeInstanceOf(SetupStopped);
      expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(950); // convertStopMs: the child ignored SIGTERM, SIGKILL ended it
      expect(existsSync(lock)).toBe(false);
    } finally {
      if (before === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = before;
    }
  });

  it('a stop while another worker holds the lock: SetupStopped at once, its lock left alone', async () => {
    const { config, lock } = modelFolder({ converted: false });
    const other = heldLock(lock);
    try {
      const stop = new AbortController();
      let waiting!: () => void;
      const waitingSaid = new Promise<void>((r) => (waiting = r));
      const { log: watched } = captured((msg) => msg === 'another worker is setting up the model; waiting for it' && waiting());
      const setup = ensureModel(config, secrets, watched, { root: '/', staleLockMs: 60_000, signal: stop.signal });
      await waitingSaid; // its first one-second pause begins
      await sleep(100);
      stop.abort();
      await expect(within(setup, 800)).rejects.toBeInstanceOf(SetupStopped); // before the one-second pause ends
      expect(readdirSync(lock)).toEqual([]);
    } finally {
      other.stop();
    }
  });

  it('a stop during the download: SetupStopped while it runs, the lock released (the download is left to resume)', async () => {
    const hub = await startFakeHub({ repo: REPO, files: [{ path: 'config.json', bytes: Buffer.from('{}') }] });
    try {
      const { config, snapshotDir, lock } = modelFolder({ hubId: REPO, hubUrl: hub.url, converted: false, convertOnStart: true });
      rmSync(join(snapshotDir, MANIFEST_NAME)); // nothing downloaded yet
      const stop = new AbortController();
      // stopped once the download has begun (a timer: after this line, fetchSnapshot is called and is on its way)
      const { log: watched, lines } = captured((msg) => msg === 'downloading the model snapshot' && void setTimeout(() => stop.abort(), 0));
      await expect(ensureModel(config, secrets, watched, { root: '/', signal: stop.signal })).rejects.toBeInstanceOf(SetupStopped);
      expect(messages(lines)).toContain('downloading the model snapshot');
      for (const later of ['model snapshot ready', 'converting the model to ONNX']) expect(messages(lines)).not.toContain(later);
      expect(existsSync(lock)).toBe(false);
      await sleep(300); // the download this process leaves running ends before its folder is removed
    } finally {
      await hub.close();
    }
  });

  it('a stop as the download starts: SetupStopped before it ends, the lock released', async () => {
    const hub = await startFakeHub({ repo: REPO, files: [{ path: 'config.json', bytes: Buffer.from('{}') }] });
    try {
      const { config, snapshotDir, lock } = modelFolder({ hubId: REPO, hubUrl: hub.url, converted: false, convertOnStart: true });
      rmSync(join(snapshotDir, MANIFEST_NAME));
      const stop = new AbortController();
      const { log: watched, lines } = captured((msg) => msg === 'downloading the model snapshot' && stop.abort());
      await expect(ensureModel(config, secrets, watched, { root: '/', signal: stop.signal })).rejects.toBeInstanceOf(SetupStopped);
      expect(messages(lines)).not.toContain('model snapshot ready');
      expect(existsSync(lock)).toBe(false);
      await sleep(300); // the download this process leaves running ends before its folder is removed
    } finally {
      await hub.close();
    }
  });

  it('logs the download\'s progress every progressLogMs (10 s unless set), not every chunk', async () => {
    const big = Buffer.alloc(4 * 2 ** 20, 7); // many chunks
    const hub = await startFakeHub({ repo: REPO, files: [{ path: 'config.json', bytes: Buffer.from('{}') }, { path: 'model.safetensors', bytes: big }] });
    try {
      const { config, snapshotDir } = modelFolder({ hubId: REPO, hubUrl: hub.url, converted: false, convertOnStart: true });
      rmSync(join(snapshotDir, MANIFEST_NAME));
      const stop = new AbortController(); // stopped at the conversion, once the download is done
      const { log: watched, lines } = captured((msg) => msg === 'converting the model to ONNX' && stop.abort());
      await expect(ensureModel(config, secrets, watched, { root: '/', signal: stop.signal })).rejects.toBeInstanceOf(SetupStopped);
      expect(messages(lines)).toContain('model snapshot ready');
      // the first chunk's line and the last one's, within the 10 s
      expect(lines.filter((l) => l.msg === 'downloading').map((l) => l.percent)).toEqual([expect.any(Number), 100]);
    } finally {
      await hub.close();
    }
  });

  it('a stop as the conversion starts: no child is started, SetupStopped, the lock released', async () => {
    const { config, lock } = modelFolder({ converted: false, convertOnStart: true });
    const stop = new AbortController();
    const { log: watched, lines } = captured((msg) => msg === 'converting the model to ONNX' && stop.abort());
    await expect(ensureModel(config, secrets, watched, { root: '/', signal: stop.signal })).rejects.toBeInstanceOf(SetupStopped);
    await sleep(300); // a child would have said something by now
    expect(messages(lines)).toEqual(['converting the model to ONNX']);
    expect(existsSync(lock)).toBe(false);
  });

  it('a stop during the conversion stops its child with SIGTERM, then SetupStopped once it has exited, the lock released', async () => {
    const { config, lock } = modelFolder({ converted: false, convertOnStart: true });
    const stop = new AbortController();
    // the child is spawned right after this line; the timer stops it while it is still starting
    let abortedAt = Number.POSITIVE_INFINITY;
    const { log: watched, lines } = captured((msg) => msg === 'converting the model to ONNX' && void setTimeout(() => ((abortedAt = Date.now()), stop.abort()), 0));
    await expect(ensureModel(config, secrets, watched, { root: '/', signal: stop.signal })).rejects.toBeInstanceOf(SetupStopped);
    expect(Date.now() - abortedAt).toBeLessThan(4_000); // SIGTERM, not the SIGKILL 5 s later
    const stopping = lines.find((l) => l.msg === 'stopping the conversion');
    expect(stopping).toMatchObject({ level: 30, pid: expect.any(Number) }); // the child's
    expect(stopping!.pid).not.toBe(process.pid);
    expect(existsSync(lock)).toBe(false);
  });
});
