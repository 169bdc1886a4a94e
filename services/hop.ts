// The request skeleton every hop shares (gatekeeper, trusted host, proxy):
// admit the caller before reading anything, route (POST /query, GET
// /health), read the body with its size cap, check it against the contract's
// schema, apply the SQL policy, hand the validated query to the hop, answer,
// log one line. A plain fetch handler (Request -> Response): Bun serves it
// directly (services/http.ts), tests call handle() without a socket.

import { TypeCompiler } from '@sinclair/typebox/compiler';
import { callerOf, formatRoute, ROUTE_HEADER, type Route, type ServiceName } from './contract.ts';
import { QueryBody } from './schemas.ts';
import { errorResponse, HttpError, makeLogger, newRequestId, readJsonBody, since } from './http.ts';
import { policyChecker, type SqlPolicy } from './sql/policy.ts';
import { validateQuery, type ValidQuery } from './validate.ts';

/** What a hop answers for a valid query (the next hop's answer, or the proxy's own). */
export interface Answer extends Route {
  status: number;
  /** JSON text, passed through untouched (no re-encoding of rows). */
  body: string;
}

/** What the hop learnt before failing: logged, and sent in the route header. */
export interface Note {
  mode?: string;
  type?: string;
}

export interface HopOptions {
  hop: ServiceName;
  maxBodyBytes: number;
  policy: SqlPolicy;
  log: boolean;
  /** admit() reads the client's address (the gatekeeper's rate limit); others do not pay for the lookup. */
  usesClientAddress?: boolean;
  /**
   * Decides whether the caller may go on, before the body is read. Returns
   * an HttpError to refuse (401/403/429). `clientAddress` is null when the
   * runtime cannot tell (Node, handle() in tests) or the hop does not
   * ask for it (`usesClientAddress`).
   */
  admit(request: Request, path: string, clientAddress: string | null): HttpError | null;
  /** GET /health (after admit). */
  health(): Response;
  /** Serves a query that passed the schema and the policy; throws HttpError to refuse. */
  query(q: ValidQuery, ctx: { requestId: string; start: number; note: Note }): Promise<Answer>;
}

export interface Hop {
  readonly name: ServiceName;
  readonly maxBodyBytes: number;
  readonly usesClientAddress: boolean;
  handle(request: Request, clientAddress?: string | null): Promise<Response>;
}

const checkBody = TypeCompiler.Compile(QueryBody);

/** 422 with the field and what is wrong (the contract's own message when it gives one). */
function bodyError(body: unknown): HttpError {
  const e = checkBody.Errors(body).First();
  const own = (e?.schema as { error?: unknown } | undefined)?.error;
  if (typeof own === 'string') return new HttpError(422, 'INVALID_BODY', own);
  const where = e?.path ? `${e.path.replace(/^\//, '').replace(/\//g, '.')}: ` : '';
  return new HttpError(422, 'INVALID_BODY', `${where}${e?.message ?? 'body does not match the schema'}`);
}

const NOT_FOUND = new HttpError(404, 'NOT_FOUND', 'no such route (POST /query, GET /health)');

function pathOf(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  if (start < 0) return '/';
  const q = url.indexOf('?', start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

export function buildHop(opts: HopOptions): Hop {
  const log = makeLogger(opts.log);
  const check = policyChecker(opts.policy);
  const { hop } = opts;
  // Only the public side tells the client its request id; the hops behind it know it already.
  const isPublic = callerOf(hop) === null;

  const refuse = (e: HttpError, requestId: string, start: number, note: Note = {}, withId = false): Response => {
    log({ request_id: requestId, hop, mode: note.mode, type: note.type, status: e.status, code: e.code, duration_ms: since(start), detail: e.detail });
    const headers: Record<string, string> = { ...e.headers };
    if (withId) headers['x-request-id'] = requestId;
    if (note.mode || note.type) headers[ROUTE_HEADER] = formatRoute(note);
    return errorResponse(e.status, e.code, e.message, headers, withId ? requestId : undefined);
  };

  async function handle(request: Request, clientAddress: string | null = null): Promise<Response> {
    const start = performance.now();
    const path = pathOf(request.url);
    const refused = opts.admit(request, path, clientAddress);
    if (refused) return refuse(refused, newRequestId(), start);
    if (path === '/health' && request.method === 'GET') return opts.health();
    if (path !== '/query' || request.method !== 'POST') return refuse(NOT_FOUND, newRequestId(), start);
    let body: unknown;
    try {
      body = await readJsonBody(request, opts.maxBodyBytes);
    } catch (e) {
      return refuse(e instanceof HttpError ? e : new HttpError(400, 'INVALID_JSON', 'body is not valid JSON'), newRequestId(), start);
    }
    if (!checkBody.Check(body)) return refuse(bodyError(body), newRequestId(), start);
    const requestId = body.request_id ?? newRequestId();
    const note: Note = { mode: body.mode };
    let answer: Answer;
    try {
      const q = validateQuery(body, check);
      note.type = q.type;
      answer = await opts.query(q, { requestId, start, note });
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(500, 'INTERNAL', 'internal error', undefined, String((e as Error)?.message ?? e).slice(0, 500));
      return refuse(err, requestId, start, note, true);
    }
    const mode = answer.mode || note.mode;
    const type = answer.type || note.type;
    log({ request_id: requestId, hop, mode, type, node: answer.node || undefined, status: answer.status, duration_ms: since(start) });
    const route = formatRoute({ node: answer.node, mode, type });
    const headers: Record<string, string> = isPublic
      ? { 'content-type': 'application/json', 'x-request-id': requestId, [ROUTE_HEADER]: route }
      : { 'content-type': 'application/json', [ROUTE_HEADER]: route };
    return new Response(answer.body, { status: answer.status, headers });
  }

  return { name: hop, maxBodyBytes: opts.maxBodyBytes, usesClientAddress: opts.usesClientAddress ?? false, handle };
}
