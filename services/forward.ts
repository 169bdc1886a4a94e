// The client side of a hop: POST the validated request to the next service
// with this hop's credential. fetch keeps connections alive and pools them
// (Bun natively, undici on Node), so each hop reuses a few sockets.

import type { Upstream } from './config.ts';
import { CREDENTIAL_HEADER, HttpError, type QueryRequest } from './http.ts';

export interface Forwarded {
  status: number;
  /** The upstream body, passed through untouched (no re-encoding of rows). */
  body: string;
  node: string;
  mode: string;
  type: string;
}

/** Something that sends a validated request to the next hop (fetch in production, a fake in unit tests). */
export type ForwardFn = (req: QueryRequest) => Promise<Forwarded>;

export function httpForwarder(upstream: Upstream): ForwardFn {
  const url = `${upstream.url.replace(/\/+$/, '')}/query`;
  const timeoutMs = upstream.timeoutMs ?? 10_000;
  const headers = { 'content-type': 'application/json', [CREDENTIAL_HEADER]: upstream.credential };
  return async (req) => {
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify(req),
        keepalive: true,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      const timedOut = (e as Error).name === 'TimeoutError';
      throw new HttpError(503, 'UPSTREAM_UNAVAILABLE', timedOut ? `next hop did not answer within ${timeoutMs} ms` : 'next hop is unreachable');
    }
    const body = await res.text();
    return {
      status: res.status,
      body,
      node: res.headers.get('x-rampart-node') ?? '',
      mode: res.headers.get('x-rampart-mode') ?? '',
      type: res.headers.get('x-rampart-type') ?? '',
    };
  };
}
