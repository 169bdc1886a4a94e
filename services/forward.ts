// The client side of a hop: POST the validated request to the next service
// with this hop's credential. fetch keeps connections alive and pools them
// (Bun natively, undici on Node), so each hop reuses a few sockets: the TLS
// handshake is paid once per socket, not per request.

import { readFileSync } from 'node:fs';
import { CREDENTIAL_HEADER, parseRoute, ROUTE_HEADER } from './contract.ts';
import type { QueryRequest, Upstream } from './schemas.ts';
import type { Answer } from './hop.ts';
import { HttpError } from './http.ts';

/** The next hop's answer (its body passed through untouched). */
export type Forwarded = Answer;

/** Something that sends a validated request to the next hop (fetch in production, a fake in unit tests). */
export type ForwardFn = (req: QueryRequest) => Promise<Forwarded>;

/** Requests started within this many ms share one deadline signal. */
const SLICE_MS = 100;

/**
 * A deadline of at least `timeoutMs` (at most SLICE_MS more) for each
 * request, from one AbortSignal per slice: a timer per request would keep
 * rate x timeout signals alive (100k at 10k req/s and 10 s), which is most of
 * what a busy hop's memory grows by.
 */
export function deadlines(timeoutMs: number, now: () => number = performance.now.bind(performance)): () => AbortSignal {
  let signal: AbortSignal | undefined;
  let until = 0;
  return () => {
    const t = now();
    if (!signal || t >= until) {
      signal = AbortSignal.timeout(timeoutMs + SLICE_MS);
      until = t + SLICE_MS;
    }
    return signal;
  };
}

export function httpForwarder(upstream: Upstream): ForwardFn {
  const url = `${upstream.url.replace(/\/+$/, '')}/query`;
  const timeoutMs = upstream.timeoutMs ?? 10_000;
  const deadline = deadlines(timeoutMs);
  const headers = { 'content-type': 'application/json', [CREDENTIAL_HEADER]: upstream.credential };
  // https: the next hop's certificate must chain to the cluster CA and name its address (Bun's fetch `tls`)
  const tls = upstream.ca ? { tls: { ca: readFileSync(upstream.ca, 'utf8') } } : {};
  return async (req) => {
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify(req),
        keepalive: true,
        signal: deadline(),
        ...tls,
      } as RequestInit);
    } catch (e) {
      const timedOut = (e as Error).name === 'TimeoutError';
      throw new HttpError(503, 'UPSTREAM_UNAVAILABLE', timedOut ? `next hop did not answer within ${timeoutMs} ms` : 'next hop is unreachable');
    }
    const body = await res.text();
    return { status: res.status, body, ...parseRoute(res.headers.get(ROUTE_HEADER)) };
  };
}
