// A forwarding hop (gatekeeper, trusted host) on the hop skeleton
// (services/hop.ts): admit the caller, validate, then forward only the
// validated fields and pass the next hop's answer back.

import type { QueryRequest } from './schemas.ts';
import type { ForwardFn } from './forward.ts';
import { jsonResponse, HttpError } from './http.ts';
import { buildHop, type Hop, type HopOptions } from './hop.ts';

export interface RelayOptions extends Pick<HopOptions, 'maxBodyBytes' | 'policy' | 'log' | 'admit' | 'usesClientAddress'> {
  hop: 'gatekeeper' | 'trustedhost';
  forward: ForwardFn;
}

export function buildRelay(opts: RelayOptions): Hop {
  return buildHop({
    ...opts,
    health: () => jsonResponse(200, { status: 'ok', service: opts.hop }),
    async query(q, { requestId }) {
      const forwarded: QueryRequest = { sql: q.sql, request_id: requestId };
      if (q.params !== undefined) forwarded.params = q.params;
      if (q.mode !== undefined) forwarded.mode = q.mode;
      try {
        return await opts.forward(forwarded);
      } catch (e) {
        throw e instanceof HttpError ? e : new HttpError(503, 'UPSTREAM_UNAVAILABLE', 'next hop failed');
      }
    },
  });
}
