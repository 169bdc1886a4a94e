// The cluster CA on the controller (core/tls.ts) and what the roles take from
// it (roles/lib/tls.ts): real openssl, in a temp folder.
import { afterAll, describe, expect, test } from 'bun:test';
import { X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dryRunTls, ensureCa, ensureServerCert, sanText } from '../../core/tls.ts';
import { FileSecretStore, teamApiKey } from '../../core/secrets.ts';
import { parseCluster } from '../../core/spec.ts';
import { certificateNames, publicKeyPin } from '../../roles/lib/tls.ts';

const dir = mkdtempSync(join(tmpdir(), 'rampart-tls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every file of a folder with its content (what a dry run must leave as it was). */
function snapshot(folder: string): Record<string, string> {
  return Object.fromEntries(readdirSync(folder).sort().map((f) => [f, readFileSync(join(folder, f), 'utf8')]));
}

/** Runs `f` in a new temp folder, removed after. */
function inTempDir(prefix: string, f: (d: string) => void): void {
  const d = mkdtempSync(join(tmpdir(), prefix));
  try {
    f(d);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

describe('apply --check stores nothing: certificates in a scratch copy, secrets for the run only', () => {
  test('a converged cluster: the same certificate when nothing changed, a new one where apply would issue one; .rampart/tls untouched', () => {
    inTempDir('rampart-tls-dry-', (d) => {
      const stored = ensureServerCert(d, 'gatekeeper', ['10.77.0.10', 'gatekeeper']);
      const before = snapshot(join(d, '.rampart', 'tls'));
      dryRunTls(d);
      expect(ensureServerCert(d, 'gatekeeper', ['10.77.0.10', 'gatekeeper'])).toEqual(stored);
      const moved = ensureServerCert(d, 'gatekeeper', ['10.77.0.20', 'gatekeeper']);
      expect(moved.cert).not.toBe(stored.cert);
      expect(moved.ca).toBe(stored.ca);
      expect(new X509Certificate(moved.cert).checkIP('10.77.0.20')).toBe('10.77.0.20');
      ensureServerCert(d, 'proxy', ['10.77.0.12', 'proxy']);
      expect(snapshot(join(d, '.rampart', 'tls'))).toEqual(before);
    });
  });

  test('a fresh folder: certificates are issued for the comparison, no CA or key is stored', () => {
    inTempDir('rampart-tls-dry-', (d) => {
      dryRunTls(d);
      const f = ensureServerCert(d, 'proxy', ['10.77.0.12', 'proxy']);
      expect(new X509Certificate(f.cert).verify(new X509Certificate(f.ca).publicKey)).toBe(true);
      expect(existsSync(join(d, '.rampart', 'tls'))).toBe(false);
    });
  });

  test("the scratch copy is private and beside the real folder; one left by a check that was killed is removed by the next", () => {
    inTempDir('rampart-tls-dry-', (d) => {
      const gone = spawnSync('true').pid!;
      const stale = join(d, '.rampart', `.check-tls-${gone}`);
      mkdirSync(stale, { recursive: true });
      writeFileSync(join(stale, 'ca.key'), 'left behind');
      dryRunTls(d);
      ensureServerCert(d, 'proxy', ['10.77.0.12', 'proxy']);
      expect(existsSync(stale)).toBe(false);
      const mine = join(d, '.rampart', `.check-tls-${process.pid}`);
      expect(statSync(mine).mode & 0o777).toBe(0o700);
      expect(statSync(join(mine, 'ca.key')).mode & 0o777).toBe(0o600);
    });
  });

  test('secrets: made once for the run, the same on every read, never written', () => {
    inTempDir('rampart-secrets-dry-', (d) => {
      const kept = new FileSecretStore(d);
      const old = kept.get('existing');
      const dry = new FileSecretStore(d, { persist: false });
      expect(dry.get('existing')).toBe(old);
      const fresh = dry.get('gatekeeper_api_key');
      expect(dry.get('gatekeeper_api_key')).toBe(fresh);
      expect(dry.values()).toContain(fresh); // masked in the run log like a stored one
      expect(Object.keys(JSON.parse(readFileSync(join(d, '.rampart', 'secrets.json'), 'utf8')))).toEqual(['existing']);
    });
  });
});

describe('cluster CA', () => {
  test('CA and a server certificate: keys 0600, SANs as asked, issued by the CA, not a CA itself', () => {
    const f = ensureServerCert(dir, 'proxy', ['10.77.0.12', 'proxy']);
    const ca = ensureCa(dir);
    expect(statSync(ca.keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, '.rampart', 'tls', 'proxy.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, '.rampart', 'tls')).mode & 0o777).toBe(0o700);
    const cert = new X509Certificate(f.cert);
    const caCert = new X509Certificate(f.ca);
    expect(cert.subjectAltName).toBe('IP Address:10.77.0.12, DNS:proxy');
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(caCert.ca).toBe(true);
    expect(cert.checkIP('10.77.0.12')).toBe('10.77.0.12');
    expect(cert.checkIP('10.77.0.13')).toBeUndefined();
    expect(f.key).toContain('PRIVATE KEY');
  });

  test('same SANs: the same certificate (no restart); a changed address: a new one from the same CA', () => {
    const a = ensureServerCert(dir, 'gatekeeper', ['10.77.0.10', 'gatekeeper']);
    const b = ensureServerCert(dir, 'gatekeeper', ['10.77.0.10', 'gatekeeper']);
    expect(b).toEqual(a);
    const c = ensureServerCert(dir, 'gatekeeper', ['10.77.0.10', '203.0.113.7', 'gatekeeper']);
    expect(c.cert).not.toBe(a.cert);
    expect(c.key).not.toBe(a.key);
    expect(c.ca).toBe(a.ca);
    expect(new X509Certificate(c.cert).checkIP('203.0.113.7')).toBe('203.0.113.7');
  });

  test('SAN text: IP for addresses, DNS for names, each once', () => {
    expect(sanText(['10.0.0.1', 'gk', '10.0.0.1', '', 'ec2-1-2-3-4.compute.amazonaws.com'])).toBe('IP:10.0.0.1,DNS:gk,DNS:ec2-1-2-3-4.compute.amazonaws.com');
  });

  test('a node reached directly names its public address; one behind the jump host only its private one', () => {
    const node = { name: 'gatekeeper', type: 't2.micro', roles: [] };
    const base = { port: 22, user: 'ubuntu', sshFrom: '0.0.0.0/0', node };
    expect(certificateNames({ ...base, name: 'gatekeeper', address: '203.0.113.7', privateAddress: '172.31.0.10' })).toEqual(['172.31.0.10', '203.0.113.7', 'gatekeeper']);
    expect(certificateNames({ ...base, name: 'proxy', address: '172.31.0.12', privateAddress: '172.31.0.12', jump: { address: '203.0.113.7', port: 22, user: 'ubuntu' } })).toEqual(['172.31.0.12', 'proxy']);
  });

  test('a node with a public DNS name (AWS PublicDnsName) gets it in its certificate, issued again when the name appears or changes', () => {
    const node = { name: 'gatekeeper', type: 't2.micro', roles: [] };
    const host = { port: 22, user: 'ubuntu', sshFrom: '0.0.0.0/0', node, name: 'gatekeeper', address: '203.0.113.7', privateAddress: '172.31.0.10' };
    const dns = 'ec2-203-0-113-7.compute-1.amazonaws.com';
    expect(certificateNames({ ...host, publicDns: dns })).toEqual(['172.31.0.10', '203.0.113.7', dns, 'gatekeeper']);
    // behind a jump host nothing public is named
    expect(certificateNames({ ...host, address: '172.31.0.10', publicDns: dns, jump: { address: '203.0.113.8', port: 22, user: 'ubuntu' } })).toEqual(['172.31.0.10', 'gatekeeper']);
    const before = ensureServerCert(dir, 'gk-dns', certificateNames(host));
    expect(new X509Certificate(before.cert).checkHost(dns)).toBeUndefined();
    const after = ensureServerCert(dir, 'gk-dns', certificateNames({ ...host, publicDns: dns }));
    expect(after.cert).not.toBe(before.cert);
    expect(new X509Certificate(after.cert).checkHost(dns)).toBe(dns);
    expect(new X509Certificate(after.cert).checkIP('203.0.113.7')).toBe('203.0.113.7');
    const moved = ensureServerCert(dir, 'gk-dns', certificateNames({ ...host, publicDns: 'ec2-203-0-113-9.compute-1.amazonaws.com' }));
    expect(new X509Certificate(moved.cert).checkHost(dns)).toBeUndefined();
    expect(ensureServerCert(dir, 'gk-dns', certificateNames({ ...host, publicDns: 'ec2-203-0-113-9.compute-1.amazonaws.com' })).cert).toBe(moved.cert);
  });

  test('public key pin: sha256 of the SubjectPublicKeyInfo, base64 (curl --pinnedpubkey)', () => {
    const f = ensureServerCert(dir, 'proxy', ['10.77.0.12', 'proxy']);
    expect(publicKeyPin(f.cert)).toMatch(/^sha256\/\/[A-Za-z0-9+/]{43}=$/);
  });
});

describe('services.gatekeeper.tls in cluster.yaml', () => {
  const yaml = (tls: string) => `name: t
adminUser: ubuntu
nodes:
  - { name: gatekeeper, public: true, service: gatekeeper, roles: [base, service] }
  - { name: trustedhost, service: trustedhost, roles: [base, service] }
  - { name: proxy, service: proxy, roles: [base, service] }
  - { name: manager, db: manager, roles: [base, mysql] }
  - { name: worker1, db: worker, roles: [base, mysql] }
security:
  flows:
    - { from: internet, to: gatekeeper, port: 443 }
    - { from: gatekeeper, to: trustedhost, port: 5000 }
    - { from: trustedhost, to: proxy, port: 5000 }
    - { from: proxy, to: [manager, worker1], port: 3306 }
    - { from: worker1, to: manager, port: 3306 }
services:
  gatekeeper:
${tls}
`;
  test('paths resolve against cluster.yaml; a missing file or one without PEM is an error at its field', () => {
    const f = ensureServerCert(dir, 'own', ['api.example.test']);
    writeFileSync(join(dir, 'own.pem'), f.cert);
    writeFileSync(join(dir, 'own.key'), f.key, { mode: 0o600 });
    const c = parseCluster(yaml('    tls: { cert: own.pem, key: own.key }'), join(dir, 'cluster.yaml'));
    expect(c.services.gatekeeper.tls).toEqual({ cert: join(dir, 'own.pem'), key: join(dir, 'own.key') });
    expect(parseCluster(yaml('    port: 443'), join(dir, 'cluster.yaml')).services.gatekeeper.tls).toBeUndefined();
    expect(() => parseCluster(yaml('    tls: { cert: nope.pem, key: own.key }'), join(dir, 'cluster.yaml'))).toThrow(/cluster\.yaml:\d+:\d+: services\.gatekeeper\.tls\.cert: cannot read .*nope\.pem \(ENOENT\)/);
    expect(() => parseCluster(yaml('    tls: { cert: own.key, key: own.pem }'), join(dir, 'cluster.yaml'))).toThrow(/services\.gatekeeper\.tls\.cert: .* holds no PEM certificate/);
  });

  test('services.gatekeeper.apiKeyFile: resolved against cluster.yaml; unreadable or a weak first line is an error at its field', () => {
    writeFileSync(join(dir, 'good.key'), 'team-key-0123456789abcdef\n', { mode: 0o600 });
    writeFileSync(join(dir, 'weak.key'), 'short\n', { mode: 0o600 });
    expect(parseCluster(yaml('    apiKeyFile: good.key'), join(dir, 'cluster.yaml')).services.gatekeeper.apiKeyFile).toBe(join(dir, 'good.key'));
    expect(() => parseCluster(yaml('    apiKeyFile: weak.key'), join(dir, 'cluster.yaml'))).toThrow(/cluster\.yaml:\d+:\d+: services\.gatekeeper\.apiKeyFile: the first line of .*weak\.key must be 16-256 characters/);
    expect(() => parseCluster(yaml('    apiKeyFile: none.key'), join(dir, 'cluster.yaml'))).toThrow(/services\.gatekeeper\.apiKeyFile: cannot read .*none\.key \(ENOENT\)/);
  });

  test('services.gatekeeper.apiKeyEnv: the key comes from the environment when a command runs; unset, short or both sources is an error at its field that never shows the value', () => {
    const file = join(dir, 'cluster.yaml');
    const saved = process.env.RPTEST_API_KEY;
    try {
      process.env.RPTEST_API_KEY = 'team-env-key-0123456789';
      const c = parseCluster(yaml('    apiKeyEnv: RPTEST_API_KEY'), file);
      expect(c.services.gatekeeper.apiKeyEnv).toBe('RPTEST_API_KEY');
      expect(teamApiKey(c.services.gatekeeper)).toBe('team-env-key-0123456789');
      expect(JSON.stringify(c)).not.toContain('team-env-key-0123456789');
      process.env.RPTEST_API_KEY = 'shortkey!';
      let err = '';
      try { parseCluster(yaml('    apiKeyEnv: RPTEST_API_KEY'), file); } catch (e) { err = (e as Error).message; }
      expect(err).toMatch(/cluster\.yaml:\d+:\d+: services\.gatekeeper\.apiKeyEnv: the value of RPTEST_API_KEY must be 16-256 characters/);
      expect(err).not.toContain('shortkey!');
      delete process.env.RPTEST_API_KEY;
      expect(() => parseCluster(yaml('    apiKeyEnv: RPTEST_API_KEY'), file)).toThrow(/cluster\.yaml:\d+:\d+: services\.gatekeeper\.apiKeyEnv: the environment variable RPTEST_API_KEY is not set/);
      process.env.RPTEST_API_KEY = 'team-env-key-0123456789';
      expect(() => parseCluster(yaml('    apiKeyFile: good.key\n    apiKeyEnv: RPTEST_API_KEY'), file)).toThrow(/services\.gatekeeper\.apiKeyEnv: set apiKeyFile or apiKeyEnv, not both/);
      expect(() => parseCluster(yaml('    apiKeyEnv: 1BAD-NAME'), file)).toThrow(/apiKeyEnv/);
      expect(teamApiKey({})).toBeNull();
    } finally {
      if (saved === undefined) delete process.env.RPTEST_API_KEY;
      else process.env.RPTEST_API_KEY = saved;
    }
  });
});
