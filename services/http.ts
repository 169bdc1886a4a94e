// Pieces every hop shares: the request body schema, the error shape, body
// reading with a size cap, constant-time secret checks, the per-request log
// line and the runtime adapter (Bun natively, Node through @elysiajs/node).

import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { Elysia, t, type ElysiaConfig } from 'elysia';
import type { ProxyMode } from '../core/types.ts';

/** Header carrying the internal credential from one hop to the next. */
export const CREDENTIAL_HEADER = 'x-rampart-credential';

/** The request body, the same at every hop. */
export const QueryBody = t.Object(
  {
    sql: t.String({ minLength: 1, maxLength: 65536 }),
    params: t.Optional(t.Array(t.Union([t.String({ maxLength: 65536 }), t.Number(), t.Boolean(), t.Null()]), { maxItems: 1000 })),
    mode: t.Optional(t.Union([t.Literal('direct'), t.Literal('random'), t.Literal('customized')], { error: 'mode: must be direct, random or customized' })),
    request_id: t.Optional(t.String({ pattern: '^[A-Za-z0-9._:-]{1,64}$', error: 'request_id: 1-64 characters of A-Z a-z 0-9 . _ : -' })),
  },
  { additionalProperties: false },
);

export type SqlParam = string | number | boolean | null;

export interface QueryRequest {
  sql: string;
  params?: SqlParam[];
  mode?: ProxyMode;
  request_id?: string;
}

/** An error with its HTTP status and a stable code; the message is safe to show. */
export class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly headers?: Record<string, string>) {
    super(message);
    this.name = 'HttpError';
  }
}

export function errorResponse(status: number, code: string, message: string, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
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

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time comparison against any of `expected` (hashing first makes lengths equal). */
export function secretMatches(given: string | null, expected: readonly string[]): boolean {
  const g = digest(given ?? '');
  let ok = false;
  for (const e of expected) ok = timingSafeEqual(g, digest(e)) || ok;
  return ok && given !== null && given.length > 0;
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

/** Elysia options for this runtime: Bun natively, Node through @elysiajs/node. */
const adapter: ElysiaConfig<''>['adapter'] =
  typeof Bun === 'undefined' ? (await import('@elysiajs/node')).node() : undefined;

export function newElysia(name: string, maxBodyBytes: number) {
  return new Elysia({
    name,
    adapter,
    // Unknown body fields are an error (422), not silently dropped.
    normalize: false,
    // Bun refuses larger bodies before we see them; readJsonBody checks the exact limit.
    serve: { maxRequestBodySize: maxBodyBytes + 1024 },
  });
}

/** Milliseconds since `start` (performance.now()), rounded to 0.01. */
export function since(start: number): number {
  return Math.round((performance.now() - start) * 100) / 100;
}

/** Maps Elysia's own errors (validation, parse, not found) and ours to the JSON error shape. */
export function toErrorResponse(code: string | number, error: unknown): Response {
  const cause = (error as { cause?: unknown } | null)?.cause;
  const own = error instanceof HttpError ? error : cause instanceof HttpError ? cause : null;
  if (own) return errorResponse(own.status, own.code, own.message, own.headers);
  switch (code) {
    case 'VALIDATION': {
      const e = error as { all?: Array<{ path?: string; summary?: string; message?: string; schema?: { error?: unknown } }> };
      const first = e.all?.[0];
      if (typeof first?.schema?.error === 'string') return errorResponse(422, 'INVALID_BODY', first.schema.error);
      const where = first?.path ? `${first.path.replace(/^\//, '').replace(/\//g, '.')}: ` : '';
      return errorResponse(422, 'INVALID_BODY', `${where}${first?.summary ?? first?.message ?? 'body does not match the schema'}`);
    }
    case 'PARSE':
      return errorResponse(400, 'INVALID_JSON', 'body is not valid JSON');
    case 'NOT_FOUND':
      return errorResponse(404, 'NOT_FOUND', 'no such route (POST /query, GET /health)');
    default:
      return errorResponse(500, 'INTERNAL', 'internal error');
  }
}
