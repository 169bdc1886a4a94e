// Pieces every hop shares: the error shape, body reading with a size cap,
// constant-time secret checks, the per-request log line and the server
// (Bun.serve natively, Node through Elysia's @elysiajs/node adapter). The
// request body's schema is in services/schemas.ts, the request skeleton in
// services/hop.ts.

import { randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Hop } from './hop.ts';

/**
 * An error with its HTTP status and a stable code; the message is safe to
 * show. `detail` is for the hop's log line only (e.g. the database's own
 * message), never sent.
 */
export class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly headers?: Record<string, string>, readonly detail?: string) {
    super(message);
    this.name = 'HttpError';
  }
}

/** The one error shape: `{ error: { code, message, request_id? } }` (the id when the request got one). */
export function errorResponse(status: number, code: string, message: string, headers?: Record<string, string>, requestId?: string): Response {
  const error = requestId ? { code, message, request_id: requestId } : { code, message };
  return new Response(JSON.stringify({ error }), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

export function jsonResponse(status: number, body: unknown, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

/**
 * Reads a JSON body, refusing a wrong content type (415), a body above
 * `maxBytes` (413, counted while streaming so a missing or lying
 * Content-Length does not help) and invalid JSON (400).
 */
export async function readJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  const type = (request.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'Content-Type must be application/json');
  const declared = Number(request.headers.get('content-length') ?? '0');
  if (declared > maxBytes) throw new HttpError(413, 'BODY_TOO_LARGE', `body exceeds ${maxBytes} bytes`);
  if (request.headers.has('content-length')) {
    // The HTTP parser delimits the body by Content-Length, checked above (and Bun caps what it buffers).
    if (declared === 0) throw new HttpError(400, 'EMPTY_BODY', 'a JSON body is required');
    try {
      return await request.json();
    } catch {
      throw new HttpError(400, 'INVALID_JSON', 'body is not valid JSON');
    }
  }
  const bytes = await readCapped(request, maxBytes);
  if (bytes.byteLength === 0) throw new HttpError(400, 'EMPTY_BODY', 'a JSON body is required');
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    throw new HttpError(400, 'INVALID_JSON', 'body is not valid JSON');
  }
}

const decoder = new TextDecoder();

/** Chunked body: count while streaming so an endless body stops at the limit. */
async function readCapped(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new HttpError(413, 'BODY_TOO_LARGE', `body exceeds ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return chunks.length === 1 ? chunks[0] : new Uint8Array(Buffer.concat(chunks));
}

/**
 * A constant-time check against any of `expected`: `given` is copied into a
 * buffer of each secret's length (truncated or zero-padded), so the
 * comparison takes the same time whatever was sent; the lengths are compared
 * apart. (A hash per request would cost more than the check.)
 */
export function secretChecker(expected: readonly string[]): (given: string | null) => boolean {
  const want = expected.map((e) => Buffer.from(e, 'utf8'));
  return (given) => {
    if (!given) return false;
    const length = Buffer.byteLength(given, 'utf8');
    let ok = false;
    for (const e of want) {
      const g = Buffer.alloc(e.length);
      g.write(given, 'utf8');
      const same = timingSafeEqual(g, e);
      ok = (same && length === e.length) || ok;
    }
    return ok;
  };
}

/** One-off form of secretChecker. */
export function secretMatches(given: string | null, expected: readonly string[]): boolean {
  return secretChecker(expected)(given);
}

export function newRequestId(): string {
  return randomUUID();
}

export interface LogFields {
  request_id: string;
  hop: string;
  mode?: string;
  type?: string;
  node?: string;
  status: number;
  code?: string;
  duration_ms: number;
  /** Why it failed, for the operator (a database error's own text); never in the answer. */
  detail?: string;
}

let pendingLog: string[] = [];
let flushTimer: ReturnType<typeof setTimeout> | undefined;
let lastMs = 0;
let lastIso = '';

/** Writes buffered log lines now (called on a short timer, on size, and before exit). */
export function flushLogs(): void {
  if (flushTimer) clearTimeout(flushTimer);
  flushTimer = undefined;
  if (pendingLog.length === 0) return;
  const out = pendingLog.join('');
  pendingLog = [];
  process.stdout.write(out);
}

/**
 * One JSON line on stdout per request (journald keeps it; the bench counts
 * them). Never SQL nor params. Lines are batched for up to 20 ms so a busy
 * hop makes one write per batch, not one per request.
 */
export function makeLogger(enabled: boolean): (f: LogFields) => void {
  if (!enabled) return () => undefined;
  return (f) => {
    const now = Date.now();
    if (now !== lastMs) {
      lastMs = now;
      lastIso = new Date(now).toISOString();
    }
    pendingLog.push(`{"ts":"${lastIso}",${JSON.stringify(f).slice(1)}\n`);
    if (pendingLog.length >= 512) flushLogs();
    else flushTimer ??= setTimeout(flushLogs, 20);
  };
}

export interface Server {
  stop(): Promise<void>;
}

/** The runtime's own body limit, out of the way of readJsonBody's (see listen). */
const RUNTIME_BODY_LIMIT = Number.MAX_SAFE_INTEGER;

/** How long a stopping service waits for the requests in flight (the hops' own timeout). */
export const DRAIN_MS = 10_000;

/**
 * Serves a hop: Bun.serve natively (the client address from the socket), on
 * Node through Elysia's node adapter (loaded only there).
 */
export async function listen(hop: Hop, host: string, port: number, tls?: { cert: string; key: string }): Promise<Server> {
  if (typeof Bun !== 'undefined') {
    const server = Bun.serve({
      hostname: host,
      port,
      // HTTPS: the files are read once, at start (a new certificate comes with a restart)
      ...(tls ? { tls: { cert: readFileSync(tls.cert, 'utf8'), key: readFileSync(tls.key, 'utf8') } } : {}),
      // No runtime cap: Bun would answer a larger body with an empty 413 before the app sees it.
      // readJsonBody refuses it in the JSON shape, from Content-Length before reading a byte or
      // while streaming a chunked body (nothing is buffered past maxBodyBytes).
      maxRequestBodySize: RUNTIME_BODY_LIMIT,
      fetch: hop.usesClientAddress
        ? (request, srv) => hop.handle(request, srv.requestIP(request)?.address ?? null)
        : (request) => hop.handle(request),
      error: () => errorResponse(500, 'INTERNAL', 'internal error'),
    });
    // drain: stop listening, let the requests in flight finish (a restart drops none of them),
    // close what is still open after the longest a request may take
    return {
      stop: async () => {
        const force = setTimeout(() => void server.stop(true), DRAIN_MS);
        await server.stop();
        clearTimeout(force);
      },
    };
  }
  if (tls) throw new Error('HTTPS needs the Bun runtime (the Node adapter serves plain HTTP only)');
  const [{ Elysia }, { node }] = await Promise.all([import('elysia'), import('@elysiajs/node')]);
  const app = new Elysia({ adapter: node(), serve: { maxRequestBodySize: RUNTIME_BODY_LIMIT } })
    .onError(({ code }) => code === 'NOT_FOUND'
      ? errorResponse(404, 'NOT_FOUND', 'no such route (POST /query, GET /health)')
      : errorResponse(500, 'INTERNAL', 'internal error'))
    .all('/*', ({ request }) => hop.handle(request), { parse: 'none' });
  app.listen({ hostname: host, port });
  return { stop: async () => void (await app.stop()) };
}

/** Milliseconds since `start` (performance.now()), rounded to 0.01. */
export function since(start: number): number {
  return Math.round((performance.now() - start) * 100) / 100;
}
