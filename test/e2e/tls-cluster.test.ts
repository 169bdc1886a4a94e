// TLS on a real LXC cluster of its own (rptls, 10.89.0.0/24, bridge rptls0),
// the smallest chain: gatekeeper -> trustedhost -> proxy -> manager + one
// worker (MariaDB on bookworm; RPTLS_ENGINE=mysql: Oracle MySQL 9 on sid
// nodes, the same checks with MySQL's column names and a per-connection
// Ssl_cipher from performance_schema).
//   - apply --json reports endpoint { url, ca }; the CA key is 0600 in .rampart/tls
//   - a query over HTTPS verified against the CA answers rows; the same with
//     another CA fails; plain HTTP answers no query (port 80 closed, and
//     plain text to 443 gets no answer)
//   - each hop serves a certificate from the cluster CA naming its address
//     (checked from the calling node), and answers nothing in plain HTTP
//   - the DB accounts REQUIRE SSL, the manager counts TLS handshakes, the
//     worker replicates over TLS with the manager's certificate verified
//   - npx zx rotate during a running load (the bench's own load engine: 8
//     keep-alive HTTPS connections, writes and reads, the key read again from
//     .rampart/secrets.json on a 401 as `zx bench` does): 0 failed requests; then the old API key gets 401, the old hop
//     credential 401, the old replication password is refused from the
//     worker, the old app/monitor passwords are gone on the manager; nothing
//     secret in its output or logs
//   - a second apply changes nothing (after the rotation: the stored secrets are the live ones)
// Traffic: only between this host (the bridge's .1) and the cluster's nodes.
// Needs Linux + root; skips elsewhere, fails when CI=true.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCa } from '../../core/tls.ts';
import type { RunReport } from '../../core/types.ts';
import { loadCluster } from '../../core/spec.ts';
import { nativePasswordHash } from '../../roles/lib/mysql-accounts.ts';
import { SECRETS } from '../../roles/lib/names.ts';
import { applyOrThrow, teardownSuite, e2eAvailable, onNode, testClusterFile, zx } from '../support/cluster.ts';
import { LoadClient, rateUnderLimit, runPhase } from '../../playbooks/bench/load.ts';

const RUN = e2eAvailable();
const NAME = 'rptls';
const SUBNET = '10.89.0.0/24';
const MYSQL = process.env.RPTLS_ENGINE === 'mysql';
const keep = process.env.RPTLS_DIR;
const dir = keep ?? mkdtempSync(join(tmpdir(), 'rptls-'));
const file = join(dir, 'cluster.yaml');
const ADDR = { gatekeeper: '10.89.0.10', trustedhost: '10.89.0.11', proxy: '10.89.0.12', manager: '10.89.0.13', worker1: '10.89.0.14' } as const;

let first: RunReport;
let apiKey = '';

const changed = (r: RunReport) => r.results.filter((x) => x.status === 'changed').map((x) => `${x.host}/${x.role}/${x.task}`);

function sh(node: keyof typeof ADDR, command: string): string {
  const r = onNode(file, ADDR[node], command);
  if (r.code !== 0) throw new Error(`${node}: ${command}: exit ${r.code}: ${r.stderr.slice(-500)}`);
  return r.stdout;
}

async function query(url: string, ca: string | undefined, sql = 'SELECT actor_id FROM sakila.actor ORDER BY actor_id LIMIT 3', mode?: string): Promise<Response> {
  return fetch(`${url}/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify(mode ? { sql, mode } : { sql }),
    signal: AbortSignal.timeout(10_000),
    ...(ca ? { tls: { ca } } : {}),
  } as RequestInit);
}

describe.skipIf(!RUN)(`TLS on every hop (LXC, ${MYSQL ? 'Oracle MySQL' : 'MariaDB'})`, () => {
  beforeAll(async () => {
    if (!keep || !existsSync(file)) {
      testClusterFile(dir, NAME, SUBNET, (doc) => {
        const nodes = (doc.toJS().nodes as { name: string; roles: string[] }[])
          .filter((n) => n.name !== 'worker2')
          .map((n) => ({ ...n, roles: n.roles.filter((r) => r !== 'sysbench') }));
        doc.set('nodes', nodes);
        doc.setIn(['security', 'flows'], [
          { from: ['internet'], to: ['gatekeeper'], port: 443 },
          { from: ['gatekeeper'], to: ['trustedhost'], port: 5000 },
          { from: ['trustedhost'], to: ['proxy'], port: 5000 },
          { from: ['proxy'], to: ['manager', 'worker1'], port: 3306 },
          { from: ['worker1'], to: ['manager'], port: 3306 },
        ]);
        if (MYSQL) {
          doc.setIn(['provider', 'local', 'suite'], 'sid');
          // this machine's mirror serves a sid snapshot whose Release file is past its Valid-Until
          doc.setIn(['provider', 'local', 'checkValidUntil'], false);
          doc.setIn(['database', 'engine'], 'mysql');
        }
      });
    }
    first = (await applyOrThrow<RunReport>(file)).json;
    apiKey = (JSON.parse(readFileSync(join(dir, '.rampart', 'secrets.json'), 'utf8')) as Record<string, string>)[SECRETS.apiKey];
  }, 1_500_000);

  afterAll(() => teardownSuite(file, { keep: Boolean(keep), dir }), 600_000);

  test('apply reports the endpoint: the gatekeeper over https and the CA file (key 0600 beside it)', () => {
    expect(first.endpoint).toEqual({ url: `https://${ADDR.gatekeeper}`, ca: join(dir, '.rampart', 'tls', 'ca.pem') });
    expect(statSync(join(dir, '.rampart', 'tls', 'ca.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, '.rampart', 'tls', 'gatekeeper.key')).mode & 0o777).toBe(0o600);
    // on the nodes: keys 0600 of the service user / mysql
    expect(sh('proxy', 'stat -c "%a %U" /etc/rampart/tls/server.key').trim()).toBe('600 rampart');
    expect(sh('manager', 'stat -c "%a %U" /etc/mysql/rampart-tls/server.key').trim()).toBe('600 mysql');
  });

  test('HTTPS verified against the CA answers rows; another CA fails; plain HTTP answers no query', async () => {
    const ca = readFileSync(first.endpoint!.ca!, 'utf8');
    const res = await query(first.endpoint!.url, ca);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { rows: { actor_id: number }[] };
    expect(body.rows.map((r) => r.actor_id)).toEqual([1, 2, 3]);

    // a CA of another cluster: the handshake fails, nothing is sent
    const otherDir = mkdtempSync(join(tmpdir(), 'rptls-other-'));
    try {
      const other = readFileSync(ensureCa(otherDir).certPath, 'utf8');
      await expect(query(first.endpoint!.url, other)).rejects.toThrow();
    } finally {
      rmSync(otherDir, { recursive: true, force: true });
    }
    // no CA given (the system's roots): refused too
    await expect(query(first.endpoint!.url, undefined)).rejects.toThrow();
    // port 80: closed by the firewall (no flow); plain text to 443: no HTTP answer
    await expect(query(`http://${ADDR.gatekeeper}:80`, undefined)).rejects.toThrow();
    const plain = await query(`http://${ADDR.gatekeeper}:443`, undefined).then((r) => r.status, () => 'no answer');
    expect(plain === 'no answer' || (typeof plain === 'number' && plain >= 400)).toBe(true);
  }, 60_000);

  test('each hop serves a certificate of the cluster CA naming its address, and no plain HTTP', () => {
    for (const [from, to] of [['gatekeeper', 'trustedhost'], ['trustedhost', 'proxy']] as const) {
      const out = sh(from, `echo | openssl s_client -connect ${ADDR[to]}:5000 -CAfile /etc/rampart/tls/ca.pem -verify_ip ${ADDR[to]} -verify_return_error 2>&1 | grep -E 'Verify return code|^subject='; true`);
      expect(out).toContain('Verify return code: 0 (ok)');
      expect(out).toMatch(new RegExp(`subject=.*CN ?= ?${to}\\b`));
      // the same port in plain HTTP: no answer with a status
      const code = sh(from, `curl -s -o /dev/null -w '%{http_code}' -m 3 http://${ADDR[to]}:5000/health; true`).trim();
      expect(code).toBe('000');
    }
  });

  test('proxy -> DB is TLS: accounts REQUIRE SSL, the manager counts TLS handshakes; replication uses TLS and verifies the manager', async () => {
    // a read on the manager, so the proxy's application pool has a session there now
    const direct = await query(first.endpoint!.url, readFileSync(first.endpoint!.ca!, 'utf8'), 'SELECT COUNT(*) AS n FROM sakila.film', 'direct');
    expect(direct.status).toBe(200);
    const users = sh('manager', `mysql -N -B -e "SELECT CONCAT(User,'@',Host,' ',ssl_type) FROM mysql.user WHERE User LIKE 'rampart%' ORDER BY User"`).trim().split('\n');
    expect(users).toEqual([`rampart_app@${ADDR.proxy} ANY`, `rampart_failover@${ADDR.proxy} ANY`, `rampart_monitor@${ADDR.proxy} ANY`, `rampart_repl@${ADDR.worker1} ANY`]);
    if (MYSQL) {
      // every session of the proxy's users, one by one: each has a cipher
      const ciphers = sh('manager', `mysql -N -B -e "SELECT t.PROCESSLIST_USER, s.VARIABLE_VALUE FROM performance_schema.threads t JOIN performance_schema.status_by_thread s USING (THREAD_ID) WHERE s.VARIABLE_NAME = 'Ssl_cipher' AND t.PROCESSLIST_USER IN ('rampart_app', 'rampart_monitor', 'rampart_repl')"`).trim().split('\n').map((l) => l.split('\t'));
      expect(new Set(ciphers.map(([u]) => u))).toEqual(new Set(['rampart_app', 'rampart_monitor', 'rampart_repl']));
      for (const [u, c] of ciphers) expect(`${u} ${c}`).toMatch(/ \S+/);
    } else {
      // the proxy's pooled connections and probes are TLS sessions (REQUIRE SSL lets no other in)
      const accepts = Number(sh('manager', `mysql -N -B -e "SHOW GLOBAL STATUS LIKE 'Ssl_finished_accepts'" | cut -f2`).trim());
      expect(accepts).toBeGreaterThan(0);
    }
    const status = sh('worker1', 'mysql -E -e "SHOW REPLICA STATUS"');
    const [src, rep] = MYSQL ? ['Source', 'Replica'] : ['Master', 'Slave'];
    expect(status).toMatch(new RegExp(`${src}_SSL_Allowed: Yes`));
    expect(status).toMatch(new RegExp(`${src}_SSL_Verify_Server_Cert: Yes`));
    expect(status).toMatch(new RegExp(`${rep}_IO_Running: Yes`));
    expect(status).toMatch(new RegExp(`${rep}_SQL_Running: Yes`));
    // the replication session is up on the manager (REQUIRE SSL: over TLS)
    const repl = sh('manager', `mysql -N -B -e "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE User='rampart_repl'"`).trim();
    expect(Number(repl)).toBeGreaterThan(0);
  });

  test('a write through the chain reaches the worker (TLS end to end)', async () => {
    const ca = readFileSync(first.endpoint!.ca!, 'utf8');
    const name = `TLS${Date.now() % 100000}`;
    const w = await query(first.endpoint!.url, ca, `INSERT INTO sakila.actor (first_name, last_name) VALUES ('${name}', 'E2E')`);
    expect(w.status).toBe(200);
    let n = 0;
    for (let i = 0; i < 50 && n === 0; i++) {
      n = Number(sh('worker1', `mysql -N -B -e "SELECT COUNT(*) FROM sakila.actor WHERE first_name='${name}'"`).trim());
      if (!n) await Bun.sleep(200);
    }
    expect(n).toBe(1);
  }, 60_000);

  test('rotate during a steady client loop: 0 failed requests; afterwards every old secret is refused', async () => {
    const ca = readFileSync(first.endpoint!.ca!, 'utf8');
    const secretsFile = join(dir, '.rampart', 'secrets.json');
    const old = JSON.parse(readFileSync(secretsFile, 'utf8')) as Record<string, string>;

    const check = await zx<{ rotate: string[]; skipped: string[] }>('rotate', file, ['--check']);
    expect(check.code).toBe(0);
    expect(check.json.rotate).toEqual([
      'gatekeeper API key (X-API-Key)', 'gatekeeper -> trustedhost credential', 'trustedhost -> proxy credential',
      'DB password of rampart_app (1 account, used by proxy)', 'DB password of rampart_monitor (1 account, used by proxy)',
      'DB password of rampart_failover (1 account, used by proxy)', 'DB password of rampart_repl (1 account, used by replication)',
    ]);

    // the bench's own load engine (playbooks/bench/load.ts), as `zx bench` drives it: 8 keep-alive
    // HTTPS connections verified against the CA, writes and random reads in turns, paced under the
    // gatekeeper's rate limit (unpaced, a quiet machine exceeds it: 429s); on a 401 it reads the key
    // again from .rampart/secrets.json, as the bench does
    let done = false;
    let ok = 0;
    let writes = 0;
    const failed: string[] = [];
    const tag = `ROT${Date.now() % 100000}`;
    const load = new LoadClient(first.endpoint!.url, 8, ca);
    const rate = rateUnderLimit(loadCluster(file).services.gatekeeper.rateLimit);
    const readKey = () => (JSON.parse(readFileSync(secretsFile, 'utf8')) as Record<string, string>)[SECRETS.apiKey]!;
    const loop = async (): Promise<void> => {
      for (let round = 0; !done; round++) {
        const write = round % 2 === 0;
        const run = await runPhase({
          url: first.endpoint!.url, apiKey: readKey(), refreshKey: readKey, phase: write ? 'write' : 'random', count: 80, concurrency: 8, client: load, rate,
          requestId: (i) => `${tag}-${round}-${i}`,
          body: (i) => (write
            ? { sql: 'INSERT INTO sakila.actor (first_name, last_name) VALUES (?, ?)', params: [tag, `C${i}`] }
            : { sql: 'SELECT actor_id FROM sakila.actor ORDER BY actor_id LIMIT 3', mode: 'random' }),
          expect: write ? { type: 'write' } : { type: 'read', mode: 'random' },
        });
        for (const rec of run.records) {
          if (rec.ok) { ok++; if (write) writes++; } else failed.push(`${rec.status} ${rec.error ?? ''}`);
        }
      }
    };
    const clients = [loop()];
    await Bun.sleep(1000);
    const before = ok;
    const r = await zx<{ rotated: string[]; durationMs: number; log: string }>('rotate', file, ['--grace', '3']);
    await Bun.sleep(1000);
    done = true;
    await Promise.all(clients);
    load.close();
    if (r.code !== 0) throw new Error(`rotate failed (${r.code}):\n${r.stdout}\n${r.stderr.slice(-3000)}`);
    process.stderr.write(`rotation: ${r.json.durationMs} ms; client loop: ${ok} ok (${writes} writes, ${ok - before} after the start), ${failed.length} failed\n`);
    expect(failed).toEqual([]);
    expect(ok - before).toBeGreaterThan(100);
    expect(r.json.rotated).toEqual(check.json.rotate);

    const now = JSON.parse(readFileSync(secretsFile, 'utf8')) as Record<string, string>;
    const rotated = [SECRETS.apiKey, SECRETS.gatekeeperToTrusted, SECRETS.trustedToProxy, SECRETS.mysqlApp, SECRETS.mysqlMonitor, SECRETS.mysqlFailover, SECRETS.mysqlRepl];
    for (const k of rotated) expect(now[k]).not.toBe(old[k]);
    expect(existsSync(join(dir, '.rampart', 'rotation.json'))).toBe(false);
    // nothing secret in its output or its logs
    const logs = readdirSync(join(dir, '.rampart', 'logs')).filter((f) => f.includes('-rotate-')).map((f) => readFileSync(join(dir, '.rampart', 'logs', f), 'utf8')).join('\n');
    for (const k of rotated) for (const v of [old[k], now[k]]) {
      expect(r.stdout + r.stderr).not.toContain(v);
      expect(logs).not.toContain(v);
    }

    // the old API key: 401; the new one works
    const withKey = (key: string) => fetch(`${first.endpoint!.url}/query`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: JSON.stringify({ sql: 'SELECT 1 AS one FROM sakila.actor LIMIT 1' }), tls: { ca },
    } as RequestInit);
    expect((await withKey(old[SECRETS.apiKey])).status).toBe(401);
    expect((await withKey(now[SECRETS.apiKey])).status).toBe(200);
    // the old hop credential: the trusted host answers 401 (revoked values only ever reach a command line here)
    const th = (cred: string) => sh('gatekeeper', `curl -s -o /dev/null -w '%{http_code}' -m 3 --cacert /etc/rampart/tls/ca.pem -H 'x-rampart-credential: ${cred}' https://${ADDR.trustedhost}:5000/health; true`).trim();
    expect(th(old[SECRETS.gatekeeperToTrusted])).toBe('401');
    // the old replication password: refused when the worker logs in with it; replication runs on the new one
    const tls = MYSQL ? '--ssl-mode=VERIFY_CA' : '--ssl --ssl-verify-server-cert';
    const login = onNode(file, ADDR.worker1, `umask 077; f=$(mktemp); printf '[client]\\npassword=%s\\n' '${old[SECRETS.mysqlRepl]}' > "$f"; mysql --defaults-extra-file="$f" -h ${ADDR.manager} -u rampart_repl ${tls} --ssl-ca=/etc/mysql/rampart-tls/ca.pem -N -B -e 'SELECT 1' 2>&1; rc=$?; rm -f "$f"; exit $rc`);
    expect(login.code).not.toBe(0);
    expect(login.stdout + login.stderr).toMatch(/Access denied/);
    const status = sh('worker1', 'mysql -E -e "SHOW REPLICA STATUS"');
    expect(status).toMatch(MYSQL ? /Replica_IO_Running: Yes/ : /Slave_IO_Running: Yes/);
    if (MYSQL) {
      // dual passwords: the retained old one was discarded
      const extra = sh('manager', `mysql -N -B -e "SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'rampart%' AND JSON_EXTRACT(User_attributes, '$.additional_password') IS NOT NULL"`).trim();
      expect(extra).toBe('0');
    } else {
      // the proxy's accounts hold the new password's hash, not the old one's
      const hashes = sh('manager', `mysql -N -B -e "SELECT User, authentication_string FROM mysql.user WHERE User IN ('rampart_app', 'rampart_failover', 'rampart_monitor') ORDER BY User"`).trim().split('\n').map((l) => l.split('\t'));
      expect(hashes).toEqual([
        ['rampart_app', nativePasswordHash(now[SECRETS.mysqlApp])],
        ['rampart_failover', nativePasswordHash(now[SECRETS.mysqlFailover])],
        ['rampart_monitor', nativePasswordHash(now[SECRETS.mysqlMonitor])],
      ]);
    }
    // the writes of the loop reached the worker
    expect(Number(sh('worker1', `mysql -N -B -e "SELECT COUNT(*) FROM sakila.actor WHERE first_name='${tag}'"`).trim())).toBeGreaterThan(0);
  }, 300_000);

  test('a second apply changes nothing', async () => {
    const r = await zx<RunReport>('apply', file, ['--json']);
    expect(r.code).toBe(0);
    expect(changed(r.json)).toEqual([]);
  }, 600_000);
});
