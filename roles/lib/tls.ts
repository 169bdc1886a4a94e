// Each node's TLS material, as the roles deploy it: the cluster CA
// (core/tls.ts) and the node's own certificate and key, or, on the
// gatekeeper, the certificate cluster.yaml names (services.gatekeeper.tls).
// The service role writes them for the hops, the mysql role for the servers;
// both through the managed-file operation, so a new certificate (an address
// changed) is written and the service restarted, and nothing else.
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { caCertPath, ensureServerCert, sanText, type TlsFiles } from '../../core/tls.ts';
import type { Cluster, Host } from '../../core/types.ts';

/** The names a node's certificate carries: its private address, its public address and DNS name (if reachable directly), its name. */
export function certificateNames(host: Host): string[] {
  const pub = host.jump ? [] : [host.address, host.publicDns ?? ''];
  return [...new Set([host.privateAddress, ...pub, host.name].filter(Boolean))];
}

const issued = new Map<string, TlsFiles>();

/** The CA, certificate and key `host` serves with (issued by the cluster CA unless the gatekeeper brings its own). */
export function nodeTls(cluster: Cluster, host: Host): TlsFiles & { own: boolean } {
  const names = certificateNames(host);
  const id = `${cluster.dir}|${host.name}|${sanText(names)}`;
  let files = issued.get(id);
  if (!files) {
    files = ensureServerCert(cluster.dir, host.name, names);
    issued.set(id, files);
  }
  const own = host.node.service === 'gatekeeper' ? cluster.services.gatekeeper.tls : undefined;
  if (!own) return { ...files, own: false };
  return { ca: files.ca, cert: readFileSync(own.cert, 'utf8'), key: readFileSync(own.key, 'utf8'), own: true };
}

/** `sha256//<base64>` of a certificate's public key (curl --pinnedpubkey): identifies a certificate that names no private address. */
export function publicKeyPin(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256//${createHash('sha256').update(spki).digest('base64')}`;
}

/** What a client needs: the gatekeeper's HTTPS URL and the CA file to trust (null: its own certificate, trusted as its issuer is). */
export interface Endpoint {
  url: string;
  ca: string | null;
}

export function gatekeeperEndpoint(cluster: Cluster, host: Host): Endpoint {
  const { port, tls } = cluster.services.gatekeeper;
  return { url: `https://${host.address}${port === 443 ? '' : `:${port}`}`, ca: tls ? null : caCertPath(cluster.dir) };
}
