// The cluster's own certificate authority, on the controller: one CA (kept in
// .rampart/tls/, key 0600) signs a server certificate per service node whose
// SAN names the node's addresses (private, and public where it has one) and
// its name. Every hop verifies the next against this CA; clients of the
// gatekeeper trust it through the CA file (`endpoint.ca` of apply --json),
// unless cluster.yaml names the gatekeeper's own certificate. Made with
// openssl: keys are written by openssl to 0600 files, never passed on a
// command line. A certificate is issued again when its SANs change (a node's
// address changed) or it nears its end.

import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ensureStateDir, pidAlive } from './state.ts';

export interface TlsFiles {
  /** PEM texts. */
  cert: string;
  key: string;
  ca: string;
}

const CA_DAYS = 3650;
const CERT_DAYS = 825;
/** Issue again when a certificate ends within this many seconds (30 days). */
const RENEW_BEFORE_S = 30 * 86400;

/** Where the cluster's TLS material is kept (.rampart/tls). */
function storedTlsDir(clusterDir: string): string {
  return join(ensureStateDir(clusterDir).dir, 'tls');
}

/** --check: per cluster folder, the scratch copy of .rampart/tls that certificates are issued into. */
const scratch = new Map<string, string>();

/**
 * For a dry run (apply --check): from now on this process reads and issues the
 * cluster's certificates in a scratch copy of .rampart/tls (.rampart/.check-tls-<pid>,
 * beside the real one, 0700: the CA key is never copied anywhere else; removed
 * at exit, or by the next check when its process is gone), so a check compares
 * the nodes with what apply would deploy (a certificate apply would issue again
 * shows as a change) and stores nothing.
 */
export function dryRunTls(clusterDir: string): void {
  if (scratch.has(clusterDir)) return;
  const state = ensureStateDir(clusterDir).dir;
  for (const n of readdirSync(state)) {
    const m = /^\.check-tls-(\d+)$/.exec(n);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(state, n), { recursive: true, force: true });
  }
  const dir = join(state, `.check-tls-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  const stored = storedTlsDir(clusterDir);
  if (existsSync(stored)) cpSync(stored, dir, { recursive: true });
  scratch.set(clusterDir, dir);
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
}

export function tlsDir(clusterDir: string): string {
  const dry = scratch.get(clusterDir);
  if (dry) return dry;
  const dir = storedTlsDir(clusterDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  return dir;
}

/** The CA file clients trust (`endpoint.ca`), whether or not it is made yet. */
export function caCertPath(clusterDir: string): string {
  return join(storedTlsDir(clusterDir), 'ca.pem');
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Does the certificate end within `seconds`? (openssl x509 -checkend) */
function endsWithin(certPath: string, seconds: number): boolean {
  try {
    execFileSync('openssl', ['x509', '-checkend', String(seconds), '-noout', '-in', certPath], { stdio: 'ignore' });
    return false;
  } catch {
    return true;
  }
}

/** The CA file path (made on first use: EC P-256 key 0600, self-signed, 10 years). */
export function ensureCa(clusterDir: string): { certPath: string; keyPath: string } {
  const dir = tlsDir(clusterDir);
  const certPath = join(dir, 'ca.pem');
  const keyPath = join(dir, 'ca.key');
  if (!existsSync(certPath) || !existsSync(keyPath) || endsWithin(certPath, RENEW_BEFORE_S)) {
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ca.key'], dir);
    chmodSync(keyPath, 0o600);
    openssl(['req', '-x509', '-new', '-key', 'ca.key', '-sha256', '-days', String(CA_DAYS), '-subj', '/CN=rampart cluster CA',
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', 'ca.pem'], dir);
    chmodSync(certPath, 0o644);
  }
  return { certPath, keyPath };
}

/** subjectAltName text for names and addresses (IP: for addresses, DNS: else), deduplicated, in order. */
export function sanText(names: readonly string[]): string {
  const unique = [...new Set(names.filter(Boolean))];
  return unique.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
}

/**
 * The server certificate of `name` for these SANs, issued by the cluster CA
 * (again when the SANs differ from the stored ones, the CA changed, or it
 * nears its end). Returns the PEM texts.
 */
export function ensureServerCert(clusterDir: string, name: string, sans: readonly string[]): TlsFiles {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`tls: bad certificate name ${name}`);
  const ca = ensureCa(clusterDir);
  const dir = tlsDir(clusterDir);
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key`);
  const sanPath = join(dir, `${name}.san`);
  const caText = readFileSync(ca.certPath, 'utf8');
  const san = sanText(sans);
  const current = existsSync(certPath) && existsSync(keyPath) && existsSync(sanPath)
    && readFileSync(sanPath, 'utf8') === san && !endsWithin(certPath, RENEW_BEFORE_S) && issuedBy(certPath, ca.certPath, dir);
  if (!current) {
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`], dir);
    chmodSync(keyPath, 0o600);
    const ext = join(dir, `${name}.ext`);
    writeFileSync(ext, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`);
    openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-sha256',
      '-days', String(CERT_DAYS), '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
    chmodSync(certPath, 0o644);
    writeFileSync(sanPath, san);
  }
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'), ca: caText };
}

function issuedBy(certPath: string, caPath: string, cwd: string): boolean {
  try {
    execFileSync('openssl', ['verify', '-CAfile', caPath, certPath], { cwd, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
