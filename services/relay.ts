// The shape of a forwarding hop (gatekeeper, trusted host): admit the caller,
// read and validate the body, apply the SQL policy, forward only the
// validated fields, pass the answer back, log one line.

import type { SqlPolicy } from './sql/policy.ts';
import type { ForwardFn } from './forward.ts';
import {
  errorResponse, HttpError, jsonResponse, makeLogger, newElysia, newRequestId, QueryBody, readJsonBody, since,
  toErrorResponse, type QueryRequest,
} from './http.ts';
import { validateQuery } from './validate.ts';

export interface RelayOptions {
  hop: 'gatekeeper' | 'trustedhost';
  maxBodyBytes: number;
  policy: SqlPolicy;
  forward: ForwardFn;
  log: boolean;
  /**
   * Decides whether the caller may go on, before the body is read. Returns
   * an HttpError to refuse (401/403/429). `clientAddress` is null when the
   * runtime cannot tell (Node adapter, app.handle in tests).
   */
  admit(request: Request, path: string, clientAddress: string | null): HttpError | null;
}

interface Pending {
  start: number;
  id: string;
}

function errorCode(error: unknown, code: string | number): string {
  const cause = (error as { cause?: unknown } | null)?.cause;
  if (error instanceof HttpError) return error.code;
  if (cause instanceof HttpError) return cause.code;
  return String(code);
}

export function buildRelay(opts: RelayOptions) {
  const log = makeLogger(opts.log);
  const pending = new WeakMap<Request, Pending>();
  const started = (request: Request): Pending => pending.get(request) ?? { start: performance.now(), id: newRequestId() };

  return newElysia(opts.hop, opts.maxBodyBytes)
    .onRequest(({ request, server }) => {
      const p: Pending = { start: performance.now(), id: newRequestId() };
      pending.set(request, p);
      let address: string | null = null;
      try {
        address = server?.requestIP(request)?.address ?? null;
      } catch {
        address = null; // the Node adapter does not expose it
      }
      const path = request.url.slice(request.url.indexOf('/', 8)).split('?')[0];
      const refused = opts.admit(request, path, address);
      if (refused) {
        log({ request_id: p.id, hop: opts.hop, status: refused.status, code: refused.code, duration_ms: since(p.start) });
        return errorResponse(refused.status, refused.code, refused.message, refused.headers);
      }
    })
    .onError(({ code, error, request }) => {
      const p = started(request);
      const res = toErrorResponse(code, error);
      log({ request_id: p.id, hop: opts.hop, status: res.status, code: errorCode(error, code), duration_ms: since(p.start) });
      return res;
    })
    .get('/health', () => jsonResponse(200, { status: 'ok', service: opts.hop }))
    .post(
      '/query',
      async ({ body, request }) => {
        const p = started(request);
        const requestId = body.request_id ?? p.id;
        let q;
        try {
          q = validateQuery(body as QueryRequest, opts.policy);
        } catch (e) {
          if (!(e instanceof HttpError)) throw e;
          log({ request_id: requestId, hop: opts.hop, mode: body.mode, status: e.status, code: e.code, duration_ms: since(p.start) });
          return errorResponse(e.status, e.code, e.message, { 'x-request-id': requestId });
        }
        const forwarded: QueryRequest = { sql: q.sql, request_id: requestId };
        if (q.params !== undefined) forwarded.params = q.params;
        if (q.mode !== undefined) forwarded.mode = q.mode;
        let up;
        try {
          up = await opts.forward(forwarded);
        } catch (e) {
          const err = e instanceof HttpError ? e : new HttpError(503, 'UPSTREAM_UNAVAILABLE', 'next hop failed');
          log({ request_id: requestId, hop: opts.hop, mode: q.mode, type: q.type, status: err.status, code: err.code, duration_ms: since(p.start) });
          return errorResponse(err.status, err.code, err.message);
        }
        const duration = since(p.start);
        log({ request_id: requestId, hop: opts.hop, mode: up.mode || q.mode, type: up.type || q.type, node: up.node || undefined, status: up.status, duration_ms: duration });
        return new Response(up.body, {
          status: up.status,
          headers: {
            'content-type': 'application/json',
            'x-request-id': requestId,
            'x-rampart-node': up.node,
            'x-rampart-mode': up.mode,
            'x-rampart-type': up.type,
          },
        });
      },
      {
        parse: ({ request }) => readJsonBody(request, opts.maxBodyBytes),
        body: QueryBody,
      },
    );
}
