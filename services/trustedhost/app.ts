// The middle hop: accepts only the gatekeeper's credential, validates the
// request again with the same policy module, forwards to the proxy.

import { CREDENTIAL_HEADER } from '../contract.ts';
import type { TrustedHostConfig } from '../schemas.ts';
import { httpForwarder, type ForwardFn } from '../forward.ts';
import { HttpError, secretChecker } from '../http.ts';
import { buildRelay } from '../relay.ts';

export function buildTrustedHost(config: TrustedHostConfig, forward: ForwardFn = httpForwarder(config.upstream)) {
  const credentialMatches = secretChecker([config.credential, ...(config.previousCredentials ?? [])]);
  return buildRelay({
    hop: 'trustedhost',
    maxBodyBytes: config.maxBodyBytes,
    policy: config.policy,
    forward,
    log: config.log ?? true,
    admit(request) {
      if (!credentialMatches(request.headers.get(CREDENTIAL_HEADER))) {
        return new HttpError(401, 'UNAUTHORIZED', 'only the gatekeeper may call this service');
      }
      return null;
    },
  });
}

export type TrustedHostApp = ReturnType<typeof buildTrustedHost>;
