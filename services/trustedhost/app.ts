// The middle hop: accepts only the gatekeeper's credential, validates the
// request again with the same policy module, forwards to the proxy.

import type { TrustedHostConfig } from '../config.ts';
import { httpForwarder, type ForwardFn } from '../forward.ts';
import { CREDENTIAL_HEADER, HttpError, secretMatches } from '../http.ts';
import { buildRelay } from '../relay.ts';

export function buildTrustedHost(config: TrustedHostConfig, forward: ForwardFn = httpForwarder(config.upstream)) {
  const expected = [config.credential];
  return buildRelay({
    hop: 'trustedhost',
    maxBodyBytes: config.maxBodyBytes,
    policy: config.policy,
    forward,
    log: config.log ?? true,
    admit(request) {
      if (!secretMatches(request.headers.get(CREDENTIAL_HEADER), expected)) {
        return new HttpError(401, 'UNAUTHORIZED', 'only the gatekeeper may call this service');
      }
      return null;
    },
  });
}

export type TrustedHostApp = ReturnType<typeof buildTrustedHost>;
