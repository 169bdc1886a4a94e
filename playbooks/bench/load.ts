// The load generator: POST /query through the gatekeeper over keep-alive
// connections (one socket per concurrent worker, kept across phases; no
// process per request), `concurrency` requests in flight, optional rate cap,
// every response checked (status, request_id, type, mode, node).
import { Agent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Http1Connection } from './http1.ts';
import type { ProxyMode } from '../../core/types.ts';
import type { Phase, RequestRecord } from './types.ts';

export interface Expectation {
  type: 'read' | 'write';
  /** The mode the response must report (omit: any). */
  mode?: ProxyMode;
  /** Names the response's node must be one of (omit: any non-empty name). */
  nodes?: readonly string[];
}

export interface PhaseSpec {
  /** Base URL of the gatekeeper, e.g. https://10.77.0.10:443 */
  url: string;
  apiKey: string;
  /**
   * Reads the key again (e.g. from .rampart/secrets.json): on a 401 the request is
   * sent once more with it when it changed (a rotation ran: the 401 executed nothing).
   */
  refreshKey?(): string;
  phase: Phase;
  count: number;
  concurrency: number;
  /** Cap on requests started per second (open pacing); omit for as fast as possible. */
  rate?: number;
  /** The JSON body of request `i` (without request_id, which is added). */
  body(i: number): Record<string, unknown>;
  /** request_id of request `i`: 1-64 of [A-Za-z0-9._:-]. */
  requestId(i: number): string;
  expect: Expectation;
  timeoutMs?: number;
  /** Keep-alive connections shared across phases (at least `concurrency` of them). */
  client: LoadClient;
  onProgress?(done: number, errors: number): void;
}

export interface PhaseRun {
  records: RequestRecord[];
  wallMs: number;
}

/** `size` keep-alive connections to one server; worker k of a phase uses connection k. */
export class LoadClient {
  readonly conns: Http1Connection[];
  /** `ca`: the PEM the gatekeeper's certificate must chain to (https; undefined: the system's roots). */
  constructor(base: string, readonly size: number, ca?: string) {
    const url = new URL(base);
    const tls = url.protocol === 'https:' ? { ca } : undefined;
    this.conns = Array.from({ length: size }, () => new Http1Connection(url.hostname, Number(url.port || defaultPort(url)), tls));
  }
  close(): void {
    for (const c of this.conns) c.close();
  }
}

const defaultPort = (url: URL) => (url.protocol === 'https:' ? 443 : 80);

/** node:http(s) agent for the few requests outside the phases (health, preflight); `ca` verifies the gatekeeper (https). */
export function keepAliveAgent(concurrency: number, tls?: { ca?: string }): Agent {
  const opts = { keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency, keepAliveMsecs: 10_000 };
  return tls ? new HttpsAgent({ ...opts, ca: tls.ca, rejectUnauthorized: true }) : new Agent(opts);
}

/** http or https by the URL, on the given agent. */
function send(url: URL, opts: RequestOptions, onResponse: (res: IncomingMessage) => void) {
  const full = { ...opts, host: url.hostname, port: url.port || defaultPort(url) };
  return url.protocol === 'https:' ? httpsRequest(full, onResponse) : httpRequest(full, onResponse);
}

interface RawResponse {
  status: number;
  body: string;
}

function post(agent: Agent, url: URL, headers: Record<string, string>, payload: string, timeoutMs: number): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = send(
      url,
      {
        agent,
        path: '/query',
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(payload)) },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`TIMEOUT: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Judge one response: null when it is right, else why not. */
export function checkResponse(res: RawResponse, id: string, expect: Expectation): { node: string | null; error: string | null } {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(res.body) as Record<string, unknown>;
  } catch {
    return { node: null, error: `BAD_RESPONSE: HTTP ${res.status}, body is not JSON` };
  }
  if (res.status !== 200) {
    const err = json.error as { code?: string; message?: string } | undefined;
    return { node: null, error: `${err?.code ?? `HTTP_${res.status}`}: ${err?.message ?? `HTTP ${res.status}`}` };
  }
  const node = typeof json.node === 'string' && json.node ? json.node : null;
  if (json.request_id !== id) return { node, error: `BAD_RESPONSE: request_id ${String(json.request_id)} instead of ${id}` };
  if (json.type !== expect.type) return { node, error: `BAD_RESPONSE: type ${String(json.type)} instead of ${expect.type}` };
  if (expect.mode && json.mode !== expect.mode) return { node, error: `BAD_RESPONSE: mode ${String(json.mode)} instead of ${expect.mode}` };
  if (!node) return { node, error: 'BAD_RESPONSE: no node in the response' };
  if (expect.nodes && !expect.nodes.includes(node)) return { node, error: `BAD_RESPONSE: unknown node ${node}` };
  if (expect.type === 'read' && !Array.isArray(json.rows)) return { node, error: 'BAD_RESPONSE: a read without rows' };
  if (expect.type === 'write' && typeof json.affected_rows !== 'number') return { node, error: 'BAD_RESPONSE: a write without affected_rows' };
  return { node, error: null };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The load's default pace: 90% of the gatekeeper's per-client rate limit
 * (requests per second), so a client sending as fast as it can gets no 429: a
 * 429 is not a measurement.
 */
export function rateUnderLimit(limit: { requests: number; perSeconds: number }): number {
  return Math.floor((0.9 * limit.requests) / limit.perSeconds);
}

/** Run one phase: `count` requests, at most `concurrency` in flight; never throws for a failed request. */
export async function runPhase(spec: PhaseSpec): Promise<PhaseRun> {
  const headers = { 'content-type': 'application/json', 'x-api-key': spec.apiKey };
  const workers = Math.max(1, Math.min(spec.concurrency, spec.count));
  if (spec.client.size < workers) throw new Error(`LoadClient has ${spec.client.size} connections, the phase needs ${workers}`);
  const timeoutMs = spec.timeoutMs ?? 15_000;
  const records = new Array<RequestRecord>(spec.count);
  let next = 0;
  let done = 0;
  let errors = 0;
  const t0 = performance.now();

  async function worker(k: number): Promise<void> {
    const conn = spec.client.conns[k];
    for (;;) {
      const i = next++;
      if (i >= spec.count) return;
      if (spec.rate) {
        const due = t0 + (i * 1000) / spec.rate;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
      }
      const id = spec.requestId(i);
      const payload = JSON.stringify({ ...spec.body(i), request_id: id });
      const start = performance.now();
      let rec: RequestRecord;
      try {
        const sentKey = headers['x-api-key'];
        let res = await conn.request('POST', '/query', headers, payload, timeoutMs);
        if (res.status === 401 && spec.refreshKey) {
          const key = spec.refreshKey();
          if (key !== sentKey) {
            headers['x-api-key'] = key; // every worker sends the new key from now on
            res = await conn.request('POST', '/query', headers, payload, timeoutMs);
          }
        }
        const latencyMs = performance.now() - start;
        const { node, error } = checkResponse(res, id, spec.expect);
        rec = { id, phase: spec.phase, startMs: start - t0, latencyMs, status: res.status, node, ok: error === null };
        if (error) rec.error = error;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const msg = err.message.startsWith('TIMEOUT') ? err.message : `${err.code ?? 'NETWORK'}: ${err.message}`;
        rec = { id, phase: spec.phase, startMs: start - t0, latencyMs: performance.now() - start, status: 0, node: null, ok: false, error: msg };
      }
      records[i] = rec;
      done++;
      if (!rec.ok) errors++;
      spec.onProgress?.(done, errors);
    }
  }

  await Promise.all(Array.from({ length: workers }, (_, k) => worker(k)));
  return { records, wallMs: performance.now() - t0 };
}

/** GET /health on the gatekeeper: resolves with the status, rejects when nothing answers. */
export function health(agent: Agent, base: string, timeoutMs = 3000): Promise<number> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = send(url, { agent, path: '/health', method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** One request outside the phases (preflight): status and parsed body. */
export async function queryOnce(agent: Agent, base: string, apiKey: string, body: Record<string, unknown>, timeoutMs = 5000): Promise<{ status: number; json: Record<string, unknown> | null }> {
  const res = await post(agent, new URL(base), { 'content-type': 'application/json', 'x-api-key': apiKey }, JSON.stringify(body), timeoutMs);
  try {
    return { status: res.status, json: JSON.parse(res.body) as Record<string, unknown> };
  } catch {
    return { status: res.status, json: null };
  }
}
