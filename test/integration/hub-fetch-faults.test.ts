// fetchSnapshot against a fake hub (test/fakes/hub/server.ts) when something other than one dropped connection goes
// wrong: a full disk, a connection that goes silent, rate limiting and hub errors, a change of revision.
// Each case is what a self-hoster meets on a worker's first start, and what the error then tells them to do.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { fetchSnapshot, type FetchOptions } from '../../worker/hub/fetch.ts';
import { snapshotStatus } from '../../worker/hub/snapshot.ts';
import { startFakeHub, type FakeHub, type FakeHubFile } from '../fakes/hub/server.ts';

// A disk that fills up: while `diskFullAfter` is set, every file fetch.ts opens for writing takes that many bytes and
// then fails the next write with ENOSPC, as fs does on a full file system.
const disk = vi.hoisted(() => ({ diskFullAfter: undefined as number | undefined, refused: 0 }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const createWriteStream = ((path: string, options?: { flags?: string }) => {
    const limit = disk.diskFullAfter;
    if (limit === undefined) return fs.createWriteStream(path, options as never);
    let room = limit;
    return new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (chunk.byteLength > room) {
          room = 0;
          disk.refused++;
          return cb(Object.assign(new Error(`ENOSPC: no space left on device, write`), { code: 'ENOSPC', errno: -28, syscall: 'write' }));
        }
        room -= chunk.byteLength;
        fs.appendFileSync(path, chunk);
        cb();
      },
    });
  }) as typeof fs.createWriteStream;
  return { ...fs, default: { ...fs, createWriteStream }, createWriteStream };
});

const REPO = 'BLIP3o/BLIP3o-Model-4B';
const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v));
const SHARD = 'model.safetensors';
const files: FakeHubFile[] = [
  { path: 'config.json', bytes: json({ architectures: ['Blip3oQwenForInferenceLM'] }) },
  { path: SHARD, bytes: randomBytes(200_000) },
  { path: 'diffusion-decoder/unet/diffusion_pytorch_model.safetensors', bytes: randomBytes(120_000) },
];
const bytesOf = (p: string): Buffer => Buffer.from(files.find((f) => f.path === p)!.bytes);

let hub: FakeHub;
let dir: string;
const opts = (over: Partial<FetchOptions> = {}): FetchOptions => ({ repo: REPO, revision: 'main', hubUrl: hub.url, dir, retries: 0, retryDelayMs: 10, ...over });

beforeAll(async () => {
  hub = await startFakeHub({ repo: REPO, files, aliases: ['v1.1'] });
});
afterAll(async () => {
  await hub.close();
});
beforeEach(() => {
  hub.requests.length = 0;
  hub.clearFaults();
  disk.diskFullAfter = undefined;
  disk.refused = 0;
  dir = mkdtempSync(join(tmpdir(), 'hub-faults-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

describe('fetchSnapshot when things go wrong', () => {
  it('a disk that fills up mid-download: says the disk is full and what to do, without retrying or blaming the network', async () => {
    disk.diskFullAfter = 50_000;
    const failure = await fetchSnapshot(opts({ retries: 2 })).then(() => undefined, (e: Error) => e);
    expect(failure?.message).toMatch(/^Could not write BLIP3o\/BLIP3o-Model-4B\/\S+ into .*: the disk is full \(ENOSPC\)\. Free some space or point model\.snapshotDir at a larger disk, then run again: the download resumes where it stopped\.$/);
    expect(failure?.message).not.toMatch(/network/);
    expect(disk.refused).toBe(1); // a full disk stays full: no second try
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(false);
  });

  it('a connection that goes silent mid-file is given up after stallTimeoutMs and resumed', async () => {
    hub.stallOnce(SHARD, 70_000);
    await fetchSnapshot(opts({ retries: 1, stallTimeoutMs: 400 }));
    const ranges = hub.bodyRequests(SHARD).map((r) => r.range);
    expect(ranges).toHaveLength(2);
    expect(ranges[1]).toMatch(/^bytes=[1-9]\d*-199999$/); // resumed, not restarted
    expect(readFileSync(join(dir, SHARD)).equals(bytesOf(SHARD))).toBe(true);
  }, 10_000);

  it('a connection that stays silent says so, and that the download resumes', async () => {
    hub.stallOnce(SHARD, 70_000);
    await expect(fetchSnapshot(opts({ stallTimeoutMs: 400 }))).rejects.toThrow(
      /^Could not download BLIP3o\/BLIP3o-Model-4B\/model\.safetensors from .* \(no data for 0\.4 s: the connection stalled\)\. Check the network connection .*the download resumes where it stopped\.$/,
    );
  }, 10_000);

  it('rate limiting (HTTP 429) and a hub error (HTTP 503) are waited out and retried, for a file and for the listing', async () => {
    hub.failNext(SHARD, 429);
    hub.failNext('', 503);
    await fetchSnapshot(opts({ retries: 2 }));
    expect(readFileSync(join(dir, SHARD)).equals(bytesOf(SHARD))).toBe(true);
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(true);
  });

  it('rate limiting that does not stop says what it is and suggests HF_TOKEN', async () => {
    hub.failNext(SHARD, 429, 3);
    await expect(fetchSnapshot(opts({ retries: 2 }))).rejects.toThrow(
      /^Could not download BLIP3o\/BLIP3o-Model-4B\/model\.safetensors: the hub is rate-limiting this machine \(HTTP 429\)\. Wait a few minutes, or set HF_TOKEN \(signed-in downloads get higher limits\), then run again\.$/,
    );
  });

  it('a rate limit on the byte stream (after the file resolved) says HTTP 429, not the network', async () => {
    hub.failNext(SHARD, 429, 1, { bodyOnly: true });
    await expect(fetchSnapshot(opts())).rejects.toThrow(
      /^Could not download BLIP3o\/BLIP3o-Model-4B\/model\.safetensors: the hub is rate-limiting this machine \(HTTP 429\)\. Wait a few minutes, or set HF_TOKEN/,
    );
  });

  it('a changed model.hubRevision downloads only the files whose hash changed', async () => {
    await fetchSnapshot(opts());
    hub.requests.length = 0;
    const result = await fetchSnapshot(opts({ revision: 'v1.1' }));
    expect(result.downloadedBytes).toBe(0);
    expect(result.reused.sort()).toEqual(files.map((f) => f.path).sort());
    expect(snapshotStatus(dir, REPO, 'v1.1').complete).toBe(true);
  });
});

/** A clock whose sleeps return at once and are recorded: the hub's Retry-After of minutes takes no time here. */
function recordingClock(now = Date.parse('2026-03-02T10:00:00Z')): NonNullable<FetchOptions['clock']> & { waits: number[] } {
  const waits: number[] = [];
  return { waits, now: () => now, sleep: async (ms) => void waits.push(ms) };
}

describe("fetchSnapshot and the hub's Retry-After", () => {
  const DECODER = 'diffusion-decoder/unet/diffusion_pytorch_model.safetensors';

  it('waits what the hub asks: seconds or an HTTP date, on the listing, a file resolving and its byte stream', async () => {
    const clock = recordingClock();
    hub.failNext('', 503, 1, { retryAfter: new Date(clock.now() + 90_000).toUTCString() });
    hub.failNext(DECODER, 429, 1, { retryAfter: '20' }); // the resolving request: a HubApiError
    hub.failNext(SHARD, 429, 1, { retryAfter: '30', bodyOnly: true }); // the bytes: the library keeps only the message
    await fetchSnapshot(opts({ retries: 2, clock }));
    expect(clock.waits).toEqual([90_000, 20_000, 30_000]); // listing, then files smallest first
    expect(readFileSync(join(dir, SHARD)).equals(bytesOf(SHARD))).toBe(true);
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(true);
  });

  it('never waits less than its own back-off, whatever the hub asks', async () => {
    const clock = recordingClock();
    hub.failNext(SHARD, 429, 1, { retryAfter: '1' });
    hub.failNext(DECODER, 503, 1, { retryAfter: new Date(clock.now() - 60_000).toUTCString() }); // a date already past
    await fetchSnapshot(opts({ retries: 1, retryDelayMs: 3_000, clock }));
    expect(clock.waits).toEqual([3_000, 3_000]);
  });

  it('a wait longer than it is willing to make fails at once, saying how long the hub asked', async () => {
    const clock = recordingClock();
    hub.failNext(SHARD, 429, 1, { retryAfter: '7200', bodyOnly: true });
    await expect(fetchSnapshot(opts({ retries: 3, clock }))).rejects.toThrow(
      /^Could not download BLIP3o\/BLIP3o-Model-4B\/model\.safetensors: the hub is rate-limiting this machine \(HTTP 429\) and asks to wait 2 h 0 min \(longer than the 5 min a fetch waits on its own\)\. Wait that long, or set HF_TOKEN \(signed-in downloads get higher limits\), then run again\.$/,
    );
    expect(clock.waits).toEqual([]);
    expect(hub.bodyRequests(SHARD)).toHaveLength(0);
  });

  it('a hub error that asks for a long wait says so too, for the listing', async () => {
    const clock = recordingClock();
    hub.failNext('', 503, 1, { retryAfter: new Date(clock.now() + 45 * 60_000).toUTCString() });
    await expect(fetchSnapshot(opts({ retries: 3, clock }))).rejects.toThrow(
      /^Could not list the files of BLIP3o\/BLIP3o-Model-4B at revision main: the hub answered HTTP 503 and asks to wait 45 min \(longer than the 5 min a fetch waits on its own\)\. Wait that long, then run again; if it persists, check model\.hubUrl \(http:\/\/127\.0\.0\.1:\d+\)\.$/,
    );
    expect(clock.waits).toEqual([]);
  });

  it('a request timeout (HTTP 408) and a plain HTTP 500 are waited out and retried too', async () => {
    const clock = recordingClock();
    hub.failNext(SHARD, 408);
    hub.failNext(DECODER, 500);
    await fetchSnapshot(opts({ retries: 1, clock }));
    expect(clock.waits).toEqual([10, 10]);
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(true);
  });

  it('waits exactly the 5 minutes it is willing to, and doubles its own back-off up to a minute', async () => {
    const clock = recordingClock();
    hub.failNext('', 503, 1, { retryAfter: '300' });
    hub.failNext(SHARD, 503, 3);
    await fetchSnapshot(opts({ retries: 3, retryDelayMs: 40_000, clock }));
    expect(clock.waits).toEqual([300_000, 40_000, 60_000, 60_000]);
  });

  it('a hub error that outlasts the retries: the wait it asked for, or without one the old advice', async () => {
    const clock = recordingClock();
    hub.failNext(SHARD, 503, 2, { retryAfter: '40' });
    await expect(fetchSnapshot(opts({ retries: 1, clock }))).rejects.toThrow(
      /: the hub answered HTTP 503 and asks to wait 40 s\. Wait that long, then run again; if it persists, check model\.hubUrl \(http:\/\/127\.0\.0\.1:\d+\)\.$/,
    );
    hub.clearFaults();
    hub.failNext(SHARD, 502, 1, { bodyOnly: true });
    await expect(fetchSnapshot(opts({ clock }))).rejects.toThrow(/: the hub answered HTTP 502\. Check model\.hubUrl \(http:\/\/127\.0\.0\.1:\d+\) or try again later\.$/);
  });

  it('an answer that will not change (no token, a wrong one, no such repository) fails at once, without waiting', async () => {
    const clock = recordingClock();
    const gated = await startFakeHub({ repo: REPO, files, requireToken: 'hf_secret' });
    try {
      await expect(fetchSnapshot(opts({ hubUrl: gated.url, retries: 3, clock }))).rejects.toThrow(/: the repository needs authentication \(HTTP 401\)\. Set HF_TOKEN/);
      await expect(fetchSnapshot(opts({ hubUrl: gated.url, token: 'hf_wrong', retries: 3, clock }))).rejects.toThrow(/: the hub refused HF_TOKEN \(HTTP 40[13]\)/);
      await expect(fetchSnapshot(opts({ hubUrl: gated.url, token: 'hf_secret', repo: 'nobody/nothing', retries: 3, clock }))).rejects.toThrow(/: the hub has no such repository, revision or file \(HTTP 404\)\. Check model\.hubId \(nobody\/nothing\)/);
    } finally {
      await gated.close();
    }
    expect(clock.waits).toEqual([]);
  });

  it('a 403 (signed in, the licence not accepted) names HF_TOKEN and the licence; without a token it asks for one; neither is retried', async () => {
    const clock = recordingClock();
    const gated = await startFakeHub({ repo: REPO, files, requireToken: 'hf_secret', licenceNotAcceptedBy: ['hf_not_accepted'] });
    try {
      await expect(fetchSnapshot(opts({ hubUrl: gated.url, token: 'hf_not_accepted', retries: 3, clock }))).rejects.toThrow(
        /^Could not list the files of BLIP3o\/BLIP3o-Model-4B at revision main: the hub refused HF_TOKEN \(HTTP 403\)\. Check that the token is valid and that you accepted the model's licence on its hub page, then run again\.$/,
      );
      expect(gated.requests).toHaveLength(1);
    } finally {
      await gated.close();
    }
    // a 403 to a request with no token (a file the hub will not serve anonymously)
    hub.failNext(SHARD, 403, 4);
    await expect(fetchSnapshot(opts({ retries: 3, clock }))).rejects.toThrow(
      /^Could not download BLIP3o\/BLIP3o-Model-4B\/model\.safetensors: the repository needs authentication \(HTTP 403\)\. Set HF_TOKEN to a Hugging Face access token \(https:\/\/huggingface\.co\/settings\/tokens\), then run again\.$/,
    );
    expect(hub.requests.filter((r) => r.url.includes(`/resolve/main/${SHARD}`))).toHaveLength(1);
    expect(clock.waits).toEqual([]);
  });

  it('a last answer asking for exactly the 5 minutes it waits on its own: not called longer', async () => {
    hub.failNext(SHARD, 429, 1, { retryAfter: '300' });
    await expect(fetchSnapshot(opts({ clock: recordingClock() }))).rejects.toThrow(/\(HTTP 429\) and asks to wait 5 min\. Wait that long, or set HF_TOKEN/);
  });

  it('signed in, a rate limit does not suggest HF_TOKEN', async () => {
    hub.failNext(SHARD, 429, 1, { retryAfter: '40' });
    await expect(fetchSnapshot(opts({ token: 'hf_secret', clock: recordingClock() }))).rejects.toThrow(
      /: the hub is rate-limiting this machine \(HTTP 429\) and asks to wait 40 s\. Wait that long, then run again\.$/,
    );
  });

  it('a rate limit that outlasts the retries says how long the hub last asked to wait', async () => {
    const clock = recordingClock();
    hub.failNext(SHARD, 429, 3, { retryAfter: '40' });
    await expect(fetchSnapshot(opts({ retries: 2, clock }))).rejects.toThrow(
      /: the hub is rate-limiting this machine \(HTTP 429\) and asks to wait 40 s\. Wait that long, or set HF_TOKEN/,
    );
    expect(clock.waits).toEqual([40_000, 40_000]);
  });
});
