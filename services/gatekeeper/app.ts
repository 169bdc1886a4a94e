// The only public service: API key (constant time), per-client rate limit,
// body schema and size, the SQL policy; then the validated fields go to the
// trusted host with the gatekeeper's internal credential.

import type { GatekeeperConfig } from '../schemas.ts';
import { httpForwarder, type ForwardFn } from '../forward.ts';
import { HttpError, secretChecker } from '../http.ts';
import { RateLimiter } from '../ratelimit.ts';
import { buildRelay } from '../relay.ts';

export function buildGatekeeper(config: GatekeeperConfig, forward: ForwardFn = httpForwarder(config.upstream)) {
  const limiter = new RateLimiter(config.rateLimit.requests, config.rateLimit.perSeconds);
  const keyMatches = secretChecker(config.apiKeys);
  return buildRelay({
    hop: 'gatekeeper',
    maxBodyBytes: config.maxBodyBytes,
    policy: config.policy,
    forward,
    log: config.log ?? true,
    usesClientAddress: true,
    admit(request, path, address) {
      // Rate limit first: it also slows down key guessing.
      const retry = limiter.hit(address ?? 'unknown');
      if (retry > 0) return new HttpError(429, 'RATE_LIMITED', `too many requests; retry in ${retry} s`, { 'retry-after': String(retry) });
      if (path === '/health') return null;
      if (!keyMatches(request.headers.get('x-api-key'))) {
        return new HttpError(401, 'UNAUTHORIZED', 'a valid X-API-Key header is required');
      }
      return null;
    },
  });
}

export type GatekeeperApp = ReturnType<typeof buildGatekeeper>;
