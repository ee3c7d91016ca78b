// A fake Hugging Face hub on loopback, serving one in-memory snapshot to the real @huggingface/hub client.
//
// Endpoints (what @huggingface/hub 2.17 calls; see its list-files.ts, file-download-info.ts, WebBlob.ts):
//   GET /api/models/<owner>/<name>/tree/<rev>?recursive=true  → JSON entries {type, oid, size, path, lfs?}
//   GET /<owner>/<name>/resolve/<rev>/<path>                  → small files: 200/206 with ETag (git blob sha1)
//                                                               LFS files: 302 to /_lfs/<sha256> with X-Linked-ETag
//                                                               and X-Linked-Size, like the real hub's CDN redirect
//   GET /_lfs/<sha256>                                          → the bytes, honouring `Range: bytes=a-b`
// Fault injection: `cutOnce(path, afterBytes)` drops the connection mid-body on the next body request for that
// file; `corrupt(path)` serves different bytes of the same size (so only a hash check can notice); `stallOnce(path,
// afterBytes)` sends that many body bytes and then nothing, the connection left open (a hung CDN); `failNext(path,
// status, times, how)` answers the next `times` requests for that file (or '' for the listing) with `status` (429,
// 503…), with a `Retry-After` header when `how.retryAfter` is set, and when `how.bodyOnly` only the requests for the
// file's bytes, not the 1-byte `bytes=0-0` probes that resolve it first. A gated repo (`requireToken`) answers 401
// without its token, and 403 to the tokens in `licenceNotAcceptedBy` (signed in, licence not accepted).
// Every request is recorded, so tests can assert what was (not) downloaded.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeHubFile {
  path: string;
  bytes: Uint8Array;
  /** Stored with Git LFS (listing carries lfs.oid = sha256); default: files over 1 KiB. */
  lfs?: boolean;
}

export interface RecordedRequest {
  method: string;
  url: string;
  /** Repository path of the file the request was about ('' for API calls). */
  file: string;
  range: string | undefined;
  authorization: string | undefined;
  /** Body bytes actually written. */
  bytesSent: number;
}

export interface FakeHub {
  url: string;
  requests: RecordedRequest[];
  /** Requests that transferred file content (not the 1-byte `bytes=0-0` probes). */
  bodyRequests(path: string): RecordedRequest[];
  cutOnce(path: string, afterBytes: number): void;
  corrupt(path: string): void;
  heal(path: string): void;
  stallOnce(path: string, afterBytes: number): void;
  /** `path` '' is the tree listing. */
  failNext(path: string, status: number, times?: number, how?: FailureOptions): void;
  /** Forgets every cut, stall and failure not yet served. */
  clearFaults(): void;
  close(): Promise<void>;
}

export interface FailureOptions {
  /** Sent as the `Retry-After` header: seconds (`'30'`) or an HTTP date, as the real hub and its CDN do. */
  retryAfter?: string;
  /** Fail only the requests for the file's bytes, so the resolving probe passes and the byte stream is refused. */
  bodyOnly?: boolean;
}

export interface FakeHubOptions {
  repo: string;
  revision?: string;
  files: FakeHubFile[];
  /** When set, every request must carry `Authorization: Bearer <token>` (a gated repo). */
  requireToken?: string;
  /**
   * Valid tokens whose users have not accepted the gated repo's licence: the real hub answers them HTTP 403
   * (X-Error-Code GatedRepo), where a missing or unknown token gets 401.
   */
  licenceNotAcceptedBy?: string[];
  /** Further names the same snapshot is served under (a tag or commit next to `revision`). */
  aliases?: string[];
}

interface Stored {
  path: string;
  bytes: Uint8Array;
  lfs: boolean;
  sha256: string;
  gitOid: string;
}

export const sha256Hex = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
/** Git's blob id: sha1("blob <size>\0" + content); the hub's `oid` for files not in LFS. */
export const gitBlobOid = (b: Uint8Array): string =>
  createHash('sha1').update(`blob ${b.byteLength}\0`).update(b).digest('hex');

export async function startFakeHub(options: FakeHubOptions): Promise<FakeHub> {
  const revision = options.revision ?? 'main';
  const stored = new Map<string, Stored>();
  for (const f of options.files) {
    stored.set(f.path, {
      path: f.path,
      bytes: f.bytes,
      lfs: f.lfs ?? f.bytes.byteLength > 1024,
      sha256: sha256Hex(f.bytes),
      gitOid: gitBlobOid(f.bytes),
    });
  }
  const bySha = new Map([...stored.values()].filter((s) => s.lfs).map((s) => [s.sha256, s]));
  const cuts = new Map<string, number>();
  const stalls = new Map<string, number>();
  const failures = new Map<string, { status: number; left: number } & FailureOptions>();
  const corrupted = new Set<string>();
  const requests: RecordedRequest[] = [];

  const revisions = [revision, ...(options.aliases ?? [])];
  const treePrefixes = revisions.map((r) => `/api/models/${options.repo}/tree/${r}`);
  const resolvePrefixes = revisions.map((r) => `/${options.repo}/resolve/${encodeURIComponent(r)}/`);

  function listing(): unknown[] {
    const dirs = new Set<string>();
    for (const p of stored.keys()) {
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    const entries: unknown[] = [...dirs].map((d) => ({ type: 'directory', oid: gitBlobOid(Buffer.from(d)), size: 0, path: d }));
    for (const s of stored.values()) {
      entries.push({
        type: 'file',
        oid: s.gitOid,
        size: s.bytes.byteLength,
        path: s.path,
        ...(s.lfs ? { lfs: { oid: s.sha256, size: s.bytes.byteLength, pointerSize: 134 } } : {}),
      });
    }
    return entries;
  }

  function sendBytes(req: IncomingMessage, res: ServerResponse, rec: RecordedRequest, s: Stored, extra: Record<string, string>): void {
    let body = s.bytes;
    if (corrupted.has(s.path)) body = body.map((b) => b ^ 0xff);
    const total = body.byteLength;
    let start = 0;
    let end = total - 1;
    let status = 200;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      end = m[2] === '' ? total - 1 : Math.min(Number(m[2]), total - 1);
      if (start >= total) {
        res.writeHead(416, { 'Content-Range': `bytes */${total}` }).end();
        return;
      }
      status = 206;
    }
    const chunk = body.subarray(start, end + 1);
    const headers: Record<string, string> = {
      ...extra,
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(chunk.byteLength),
      'Accept-Ranges': 'bytes',
      ...(status === 206 ? { 'Content-Range': `bytes ${start}-${end}/${total}` } : {}),
    };
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const isProbe = chunk.byteLength <= 1;
    const stall = isProbe ? undefined : stalls.get(s.path);
    if (stall !== undefined) {
      stalls.delete(s.path);
      const part = chunk.subarray(0, Math.min(stall, chunk.byteLength - 1));
      res.write(part, () => void (rec.bytesSent = part.byteLength)); // and then nothing: the response never ends
      return;
    }
    const cut = isProbe ? undefined : cuts.get(s.path);
    if (cut !== undefined) {
      cuts.delete(s.path);
      const part = chunk.subarray(0, Math.max(0, Math.min(cut, chunk.byteLength - 1)));
      res.write(part, () => {
        rec.bytesSent = part.byteLength;
        // The connection drops mid-body, a moment after the bytes went out: a reset arriving together with the data
        // can make the client discard bytes it had not yet read, and then there is nothing to resume from.
        setTimeout(() => res.socket?.destroy(), 100);
      });
      return;
    }
    rec.bytesSent = chunk.byteLength;
    res.end(chunk);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      url: url.pathname + url.search,
      file: '',
      range: req.headers.range,
      authorization: req.headers.authorization,
      bytesSent: 0,
    };
    requests.push(rec);
    if (options.licenceNotAcceptedBy?.some((t) => req.headers.authorization === `Bearer ${t}`)) {
      res.writeHead(403, { 'Content-Type': 'application/json', 'X-Error-Code': 'GatedRepo' });
      res.end(JSON.stringify({ error: `Access to model ${options.repo} is restricted and you are not in the authorized list.` }));
      return;
    }
    if (options.requireToken && req.headers.authorization !== `Bearer ${options.requireToken}`) {
      res.writeHead(401, { 'Content-Type': 'application/json', 'X-Error-Code': 'GatedRepo' });
      res.end(JSON.stringify({ error: 'Access to this repository is restricted. You must be authenticated.' }));
      return;
    }
    const path = decodeURIComponent(url.pathname);
    const treePrefix = treePrefixes.find((t) => path === t || path.startsWith(`${t}/`));
    const resolvePrefix = resolvePrefixes.find((r) => path.startsWith(r));
    const failing = failures.get(treePrefix ? '' : (resolvePrefix ? path.slice(resolvePrefix.length) : (bySha.get(path.slice('/_lfs/'.length))?.path ?? path)));
    const isProbe = req.headers.range === 'bytes=0-0';
    if (failing && failing.left > 0 && !(failing.bodyOnly && isProbe)) {
      failing.left--;
      const retryAfter = failing.retryAfter === undefined ? {} : { 'Retry-After': failing.retryAfter };
      res.writeHead(failing.status, { 'Content-Type': 'application/json', ...retryAfter }).end(JSON.stringify({ error: `injected HTTP ${failing.status}` }));
      return;
    }
    if (treePrefix) {
      if (url.searchParams.get('recursive') !== 'true') {
        res.writeHead(400).end('the fake hub only serves recursive listings');
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(listing()));
      return;
    }
    if (resolvePrefix) {
      const s = stored.get(path.slice(resolvePrefix.length));
      if (!s) {
        res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end('Entry not found');
        return;
      }
      rec.file = s.path;
      if (s.lfs) {
        // The real hub answers LFS resolves with a redirect to its CDN, carrying the LFS facts in X-Linked-*.
        res.writeHead(302, {
          Location: `/_lfs/${s.sha256}`,
          'X-Linked-ETag': `"${s.sha256}"`,
          'X-Linked-Size': String(s.bytes.byteLength),
          ETag: `W/"${s.gitOid}"`,
        });
        res.end();
        return;
      }
      sendBytes(req, res, rec, s, { ETag: `"${s.gitOid}"` });
      return;
    }
    if (path.startsWith('/_lfs/')) {
      const s = bySha.get(path.slice('/_lfs/'.length));
      if (!s) {
        res.writeHead(404).end();
        return;
      }
      rec.file = s.path;
      sendBytes(req, res, rec, s, { ETag: `"${s.sha256}"` });
      return;
    }
    res.writeHead(404, { 'X-Error-Code': 'RepoNotFound' }).end('Repository not found');
  }

  const server: Server = createServer(handle);
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    bodyRequests: (p) => requests.filter((r) => r.file === p && r.method === 'GET' && r.bytesSent > 1),
    cutOnce: (p, afterBytes) => void cuts.set(p, afterBytes),
    corrupt: (p) => void corrupted.add(p),
    stallOnce: (p, afterBytes) => void stalls.set(p, afterBytes),
    failNext: (p, status, times = 1, how = {}) => void failures.set(p, { status, left: times, ...how }),
    clearFaults: () => {
      cuts.clear();
      stalls.clear();
      failures.clear();
    },
    heal: (p) => void corrupted.delete(p),
    close: () =>
      new Promise<void>((resolveClose, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolveClose()));
      }),
  };
}
