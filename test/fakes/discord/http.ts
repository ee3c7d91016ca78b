// HTTP plumbing of the fake Discord: what a recorded request holds, parsing JSON and multipart bodies with no
// dependency (WHATWG Request.formData(), platform-fakes.md A3), and how injected faults answer (or, a lost reply,
// do not: the request is carried out, then the connection dropped).
import type { IncomingMessage } from 'node:http';

export interface RecordedFile {
  field: string;
  filename: string;
  contentType: string;
  bytes: Uint8Array;
}

export interface RecordedRequest {
  at: number;
  method: string;
  /** Decoded path without the query (`/api/v10/webhooks/…/messages/@original`). */
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
  /** JSON body, or multipart's payload_json. */
  body: unknown;
  files: RecordedFile[];
  status: number;
  /** The fake carried the request out, then dropped the connection instead of answering (a `lostReply` fault). */
  lost?: boolean;
}

export interface Fault {
  method?: string;
  path: RegExp;
  /** What the fake answers instead of carrying the request out; unused with `lostReply`. @defaultValue 500 */
  status?: number;
  /** Seconds, sent as Retry-After (429). */
  retryAfterS?: number;
  code?: number;
  message?: string;
  /** How many matching requests get this fault. @defaultValue 1 */
  times?: number;
  /** Only requests this accepts (e.g. `(r) => r.files.length > 0` for the final edit). */
  when?: (request: RecordedRequest) => boolean;
  /**
   * The request is carried out as Discord would (a message posted), then the connection is dropped without an answer,
   * as when it breaks after Discord acted: `'closed'` ends it cleanly (undici: "other side closed", which discord.js
   * does not retry), `'reset'` resets it (ECONNRESET, which discord.js sends again, as it does a timeout or a 5xx).
   */
  lostReply?: 'closed' | 'reset';
}

export type Reply = (status: number, body?: unknown, headers?: Record<string, string>) => void;

/** A recorded request: method, decoded path, auth header and parsed body; status filled in when answered. */
export async function recordRequest(req: IncomingMessage, origin: string): Promise<RecordedRequest> {
  const url = new URL(req.url ?? '/', origin);
  const record: RecordedRequest = {
    at: Date.now(),
    method: req.method ?? 'GET',
    // discord-api-types percent-encodes route params (`@original` arrives as `%40original`).
    path: decodeURIComponent(url.pathname),
    query: url.searchParams,
    authorization: req.headers.authorization,
    body: undefined,
    files: [],
    status: 0,
  };
  try {
    await parseInto(record, String(req.headers['content-type'] ?? ''), await readBody(req));
  } catch (e) {
    record.body = { unparsable: String(e) };
  }
  return record;
}

/** Answer an injected fault: 429s carry Retry-After and X-RateLimit-* like Discord's; others a JSON error body. */
export function replyFault(fault: Fault, reply: Reply): void {
  if (fault.status === 429) {
    const retryAfter = fault.retryAfterS ?? 0.2;
    return reply(
      429,
      { message: 'You are being rate limited.', retry_after: retryAfter, global: false },
      {
        'retry-after': String(retryAfter),
        'x-ratelimit-limit': '5',
        'x-ratelimit-remaining': '0',
        'x-ratelimit-reset-after': String(retryAfter),
        'x-ratelimit-bucket': 'fake-bucket',
        'x-ratelimit-scope': 'user',
      },
    );
  }
  const status = fault.status ?? 500;
  reply(status, { code: fault.code ?? 0, message: fault.message ?? `injected ${status}` });
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function parseInto(record: RecordedRequest, contentType: string, raw: Buffer): Promise<void> {
  if (raw.byteLength === 0) return;
  if (contentType.startsWith('application/json')) {
    record.body = JSON.parse(raw.toString('utf8'));
    return;
  }
  if (contentType.startsWith('multipart/form-data')) {
    // WHATWG Request parses multipart with no dependency (platform-fakes.md A3).
    const form = await new Request('http://fake.invalid/', { method: 'POST', headers: { 'content-type': contentType }, body: raw }).formData();
    for (const [field, value] of form.entries()) {
      if (typeof value === 'string') {
        if (field === 'payload_json') record.body = JSON.parse(value);
        continue;
      }
      record.files.push({
        field,
        filename: value.name,
        contentType: value.type,
        bytes: new Uint8Array(await value.arrayBuffer()),
      });
    }
  }
}
