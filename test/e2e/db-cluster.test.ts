// The database roles on real LXC nodes (own cluster rpdb, 10.80.0.0/24):
// an apply killed at three points (during the MariaDB install, between the
// replication steps, during the Sakila load) is completed by the next apply
// with nothing lost or doubled; a second apply changes nothing; replication
// carries a row to both workers (GTID wait); Sakila counts on every DB node;
// drift (a stopped replica, an edited config) is reported and repaired exactly
// where it is.
// Layout: the DB nodes of cluster.yaml only (default, fast), or the full
// default layout with RAMPART_E2E_DB_FULL=1. Keep the cluster afterwards with
// RAMPART_E2E_KEEP=1. Needs Linux + root; skips elsewhere, fails when CI=true.
// Traffic: only to the cluster's own nodes on its bridge.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCluster } from '../../core/spec.ts';
import type { Host, RunReport } from '../../core/types.ts';
import { LocalProvider } from '../../providers/local.ts';
import { teardownSuite, e2eAvailable, onNode, ROOT, testClusterFile, zx } from '../support/cluster.ts';

const NAME = 'rpdb';
const SUBNET = '10.80.0.0/24';
const DIR = '/tmp/rampart-e2e-db';
const FULL = process.env.RAMPART_E2E_DB_FULL === '1';
const available = e2eAvailable();

let file = '';
let hosts: Host[] = [];
const addr = (name: string) => hosts.find((h) => h.name === name)!.address;
const dbHosts = () => hosts.filter((h) => h.node.db);
const workers = () => hosts.filter((h) => h.node.db === 'worker');

function sql(node: string, query: string): string {
  const r = onNode(file, addr(node), `mysql -N -B -e ${JSON.stringify(query).replace(/\$/g, '\\$')}`);
  if (r.code !== 0) throw new Error(`${node}: ${query}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Run `zx apply` with human progress (no --json) and SIGKILL it when `trigger` appears on stderr (plus `delayMs`). */
function applyKilledAt(trigger: string, delayMs: number): Promise<{ killed: boolean; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(join(ROOT, 'node_modules/.bin/zx'), ['apply', '-f', file], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let killed = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!killed && stderr.includes(trigger)) {
        killed = true;
        setTimeout(() => child.kill('SIGKILL'), delayMs);
      }
    });
    child.on('close', () => resolve({ killed, stderr }));
  });
}

const changedTasks = (r: RunReport) => r.results.filter((x) => x.status === 'changed').map((x) => `${x.host} | ${x.role} | ${x.task}`).sort();
const failures = (r: RunReport) => r.results.filter((x) => x.status === 'failed').map((x) => `${x.host} | ${x.task}: ${x.message}`);

describe.skipIf(!available)('DB roles on LXC', () => {
  beforeAll(async () => {
    file = testClusterFile(DIR, NAME, SUBNET, (doc) => {
      if (FULL) return;
      const nodes = (doc.toJS().nodes as { db?: string; roles: string[] }[]).filter((n) => n.db);
      for (const n of nodes) n.roles = n.roles.filter((r) => r !== 'iptables');
      doc.set('nodes', nodes);
      doc.setIn(['security', 'flows'], [{ from: workers0(nodes), to: ['manager'], port: 3306 }]);
      doc.setIn(['security', 'egress'], []);
    });
    // start from nothing: the first apply must install MariaDB
    await zx('teardown', file);
  }, 300_000);

  afterAll(() => teardownSuite(file), 300_000);

  test('an apply killed during the install, between replication steps and during the Sakila load is completed by the next apply', async () => {
    const points: [string, number][] = [
      ['❯ role base', 12_000],         // apt is installing mariadb-server
      ['✔ role mysql', 400],           // replication role: CHANGE MASTER done or under way, catch-up not yet
      ['✔ role replication', 1_500],   // sakila role: tarball uploaded, schema/data loading
    ];
    for (const [trigger, delay] of points) {
      const r = await applyKilledAt(trigger, delay);
      // killed at the wanted point, with nothing failed before it
      const bad = !r.killed || r.stderr.includes('✖');
      expect({ trigger, killed: r.killed, tail: bad ? r.stderr.slice(-2000) : '' }).toEqual({ trigger, killed: true, tail: '' });
      // where the kill landed (for the log): package state, running dpkg/mysql loads, replica threads, Sakila rows
      hosts = await new LocalProvider(loadCluster(file)).describe();
      const probe = onNode(file, addr('manager'), `dpkg-query -W -f='\${Status}' mariadb-server 2>/dev/null; echo; pgrep -c dpkg; pgrep -fc 'rampart-sakila[.]lock'; mysql -N -e 'SELECT COUNT(*) FROM sakila.rental' 2>/dev/null || echo no-sakila`);
      const w1 = onNode(file, addr('worker1'), "mysql -e 'SHOW SLAVE STATUS\\G' 2>/dev/null | grep -E 'Running:|Master_Host' | tr -s ' ' | tr '\\n' ' '");
      console.error(`killed ${delay} ms after "${trigger}": manager [${probe.stdout.trim().split('\n').join(' | ')}] worker1 [${w1.stdout.trim()}]`);
    }
    const done = await zx<RunReport>('apply', file);
    expect(failures(done.json)).toEqual([]);
    expect(done.code).toBe(0);
    hosts = await new LocalProvider(loadCluster(file)).describe();
    expect(dbHosts().length).toBeGreaterThanOrEqual(2);
  }, 900_000);

  test('a second apply changes nothing on any host', async () => {
    const r = await zx<RunReport>('apply', file);
    expect(r.code).toBe(0);
    expect(changedTasks(r.json)).toEqual([]);
    for (const [h, recap] of Object.entries(r.json.hosts)) expect({ h, changed: recap.changed, failed: recap.failed }).toEqual({ h, changed: 0, failed: 0 });
  }, 300_000);

  test('nothing lost or doubled: exact Sakila and sysbench content, one marker each, identical checksums on every DB node', async () => {
    const cluster = loadCluster(file);
    const { tables, tableSize } = cluster.database.sysbench;
    const sums = new Set<string>();
    for (const h of dbHosts()) {
      expect(sql(h.name, 'SELECT COUNT(*) FROM sakila.actor; SELECT COUNT(*) FROM sakila.film; SELECT COUNT(*) FROM sakila.rental').split('\n')).toEqual(['200', '1000', '16044']);
      expect(sql(h.name, "SELECT k FROM rampart.meta ORDER BY k").split('\n')).toEqual(['sakila', 'sysbench']);
      const sb = Array.from({ length: tables }, (_, i) => `(SELECT COUNT(*) FROM sbtest.sbtest${i + 1})`).join(' + ');
      expect(sql(h.name, `SELECT ${sb}`)).toBe(String(tables * tableSize));
      sums.add(sql(h.name, 'CHECKSUM TABLE sakila.rental, sakila.payment, sakila.film_text, sbtest.sbtest1'));
    }
    expect(sums.size).toBe(1);
  }, 120_000);

  test('replication: a row written on the manager is on every worker after a GTID wait; workers are read-only', () => {
    const token = randomBytes(8).toString('hex');
    sql('manager', `CREATE TABLE IF NOT EXISTS rampart.e2e_probe (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(32)); INSERT INTO rampart.e2e_probe (token) VALUES ('${token}')`);
    const pos = sql('manager', 'SELECT @@gtid_binlog_pos');
    expect(pos).toMatch(/^\d+-\d+-\d+/);
    for (const w of workers()) {
      expect(sql(w.name, `SELECT MASTER_GTID_WAIT('${pos}', 30)`)).toBe('0');
      expect(sql(w.name, `SELECT COUNT(*) FROM rampart.e2e_probe WHERE token='${token}'`)).toBe('1');
      expect(sql(w.name, 'SELECT @@read_only, @@gtid_strict_mode')).toBe('1\t1');
    }
    expect(sql('manager', 'SELECT @@read_only, @@log_bin, @@binlog_format')).toBe('0\t1\tROW');
    const ids = new Set(dbHosts().map((h) => sql(h.name, 'SELECT @@server_id')));
    expect(ids.size).toBe(dbHosts().length);
    sql('manager', 'DROP TABLE rampart.e2e_probe');
  });

  test('users: least privilege, no anonymous user, no remote root, no test database', () => {
    const users = sql('manager', "SELECT CONCAT(user, '@', host) FROM mysql.user ORDER BY 1").split('\n');
    expect(users.filter((u) => u.startsWith('@'))).toEqual([]);
    expect(users.filter((u) => u.startsWith('root@') && !/^root@(localhost|127\.0\.0\.1|::1)$/.test(u))).toEqual([]);
    expect(users.filter((u) => u.startsWith('rampart_repl@')).sort()).toEqual(workers().map((w) => `rampart_repl@${w.privateAddress}`).sort());
    expect(users).toContain('sbtest@localhost');
    expect(sql('manager', "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='test'")).toBe('0');
    expect(sql('manager', "SHOW GRANTS FOR 'sbtest'@'localhost'")).not.toMatch(/ON \*\.\*.*(SELECT|INSERT|ALL)/);
    const proxy = hosts.find((h) => h.node.service === 'proxy');
    if (proxy) {
      const g = sql('manager', `SHOW GRANTS FOR 'rampart_app'@'${proxy.privateAddress}'`);
      expect(g).toContain('GRANT SELECT, INSERT, UPDATE, DELETE ON `sakila`.*');
    }
  });

  test('drift: a stopped replica on worker1 and an edited config on worker2 are reported exactly, and repaired exactly', async () => {
    sql('worker1', 'STOP SLAVE');
    const w2 = onNode(file, addr('worker2'), "sed -i 's/^binlog_format = ROW/binlog_format = MIXED/' /etc/mysql/mariadb.conf.d/60-rampart.cnf");
    expect(w2.code).toBe(0);
    const expected = [
      'worker1 | replication | replica of the manager (GTID)',
      'worker2 | mysql | server config',
    ];
    const check = await zx<RunReport>('apply', file, ['--check']);
    expect(check.code).toBe(0);
    expect(changedTasks(check.json)).toEqual(expected);
    const fix = await zx<RunReport>('apply', file);
    expect(failures(fix.json)).toEqual([]);
    expect(changedTasks(fix.json)).toEqual(expected);
    expect(onNode(file, addr('worker1'), "mysql -e 'SHOW SLAVE STATUS\\G'").stdout.match(/Slave_(IO|SQL)_Running: Yes/g)).toHaveLength(2);
    const again = await zx<RunReport>('apply', file);
    expect(changedTasks(again.json)).toEqual([]);
  }, 300_000);

  test('a superuser created by hand on the manager is reported by --check and removed by apply (on the workers too)', async () => {
    sql('manager', "CREATE USER 'rogue'@'%' IDENTIFIED BY 'rogue-password-1'; GRANT ALL ON *.* TO 'rogue'@'%'");
    const check = await zx<RunReport>('apply', file, ['--check']);
    expect(changedTasks(check.json)).toEqual(['manager | mysql | users, grants and schemas']);
    expect(check.json.results.find((x) => x.task === 'users, grants and schemas' && x.host === 'manager')!.message).toMatch(/drop rogue@% \(not managed by rampart, network access/);
    expect(sql('manager', "SELECT COUNT(*) FROM mysql.user WHERE user='rogue'")).toBe('1');
    const fix = await zx<RunReport>('apply', file);
    expect(failures(fix.json)).toEqual([]);
    for (const h of dbHosts()) {
      const pos = sql('manager', 'SELECT @@gtid_binlog_pos');
      if (h.node.db === 'worker') expect(sql(h.name, `SELECT MASTER_GTID_WAIT('${pos}', 30)`)).toBe('0');
      expect(sql(h.name, "SELECT COUNT(*) FROM mysql.user WHERE user='rogue'")).toBe('0');
    }
    expect(changedTasks((await zx<RunReport>('apply', file)).json)).toEqual([]);
  }, 300_000);

  test('a partial Sakila load (rows missing, no completion marker) is dropped and reloaded on the manager and the workers follow', async () => {
    // what a load killed on the node leaves behind: some tables filled, no marker
    sql('manager', "DELETE FROM rampart.meta WHERE k='sakila'; SET FOREIGN_KEY_CHECKS=0; DELETE FROM sakila.rental WHERE rental_id > 9000");
    const check = await zx<RunReport>('apply', file, ['--check']);
    expect(changedTasks(check.json)).toEqual(['manager | sakila | sakila loaded on the manager (actor>=200, film=1000, rental=16044)', ...workers().map((w) => `${w.name} | sakila | sakila replicated (actor>=200, film=1000, rental=16044)`)].sort());
    const r = await zx<RunReport>('apply', file);
    expect(failures(r.json)).toEqual([]);
    for (const h of dbHosts()) {
      expect(sql(h.name, 'SELECT COUNT(*) FROM sakila.actor; SELECT COUNT(*) FROM sakila.film; SELECT COUNT(*) FROM sakila.rental').split('\n')).toEqual(['200', '1000', '16044']);
      expect(sql(h.name, "SELECT COUNT(*) FROM rampart.meta WHERE k='sakila'")).toBe('1');
    }
    expect(changedTasks((await zx<RunReport>('apply', file)).json)).toEqual([]);
  }, 300_000);

  test('a DB server held back one version on every DB node is reported under mysql and upgraded one node at a time, workers first, each back in replication before the next', async () => {
    // the MariaDB binaries installed (one source package), and the version below the candidate, which the security archive serves
    const binaries = onNode(file, addr('manager'), "dpkg-query -W -f='${Package} ${source:Package} ${Status}\\n' | awk '$2 == \"mariadb\" && / installed$/ {print $1}'").stdout.trim().split('\n');
    expect(binaries).toContain('mariadb-server');
    const pick = onNode(file, addr('manager'), "apt-cache madison mariadb-server | awk 'NR==1 && $0 ~ /security/ {top=$3} NR>1 && top != \"\" && $3 != top {print top, $3; exit}'").stdout.trim();
    if (!pick) throw new Error('mariadb-server has no security update on this mirror right now: cannot hold it back');
    const [candidate, older] = pick.split(' ');
    // on every DB node at once (zx exec: in parallel, as root)
    const down = await zx<{ hosts: Record<string, { stdout: string }> }>('exec', file, ['--limit', 'db', '--', `DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades -o Dpkg::Options::=--force-confold ${binaries.map((b) => `${b}=${older}`).join(' ')} >/tmp/downgrade.log 2>&1 || tail -n 20 /tmp/downgrade.log; dpkg-query -W -f='\${Version}' mariadb-server`]);
    for (const h of dbHosts()) expect({ h: h.name, v: down.json.hosts[h.name]?.stdout.trim().split('\n').pop() }).toEqual({ h: h.name, v: older });
    // the held-back server is drift of the mysql role (not base), with old -> new
    const check = await zx<RunReport>('apply', file, ['--check', '--diff', '--detailed-exitcode']);
    expect(check.code).toBe(2);
    for (const h of dbHosts()) {
      const up = check.json.results.find((x) => x.host === h.name && x.task === 'server package upgrades')!;
      expect(up).toMatchObject({ role: 'mysql', status: 'changed' });
      expect(up.diff).toContain(`mariadb-server: ${older} -> ${candidate}`);
      const base = check.json.results.find((x) => x.host === h.name && x.task === 'package lists and pending updates')!;
      expect(base.message).not.toContain('mariadb');
    }
    const logs = join(DIR, '.rampart/logs');
    const before = new Set(readdirSync(logs));
    const r = await zx<RunReport>('apply', file);
    expect(failures(r.json)).toEqual([]);
    expect(r.code).toBe(0);
    // from the run log (every command with its end time and duration): the upgrades did not overlap, in the rolling order,
    // and each worker was back in replication and caught up before the next node's upgrade began
    const log = readdirSync(logs).filter((f) => !before.has(f) && f.includes('-apply-'));
    expect(log).toHaveLength(1);
    const recs = readFileSync(join(logs, log[0]), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { ts: string; host: string; kind: string; command: string; durationMs: number });
    const span = (x: { ts: string; durationMs: number }) => [Date.parse(x.ts) - x.durationMs, Date.parse(x.ts)] as const;
    const upgrades = recs.filter((x) => x.kind === 'exec' && x.command.includes('--only-upgrade') && x.command.includes('mariadb-server')).map((x) => ({ host: x.host, at: span(x) }));
    expect(upgrades.map((u) => u.host).sort()).toEqual(dbHosts().map((h) => h.name).sort());
    upgrades.sort((a, b) => a.at[0] - b.at[0]);
    expect(upgrades.map((u) => u.host)).toEqual([...workers().map((w) => w.name), 'manager']);
    for (let i = 1; i < upgrades.length; i++) {
      const prev = upgrades[i - 1];
      // the previous node's whole turn (its last command before this upgrade: restart check, catch-up) ended first
      const turn = recs.filter((x) => x.host === prev.host && span(x)[0] >= prev.at[0] && span(x)[0] < upgrades[i].at[0]);
      expect(Math.max(...turn.map((x) => span(x)[1]))).toBeLessThanOrEqual(upgrades[i].at[0]);
      expect(turn.some((x) => x.command.includes('not caught up with the manager'))).toBe(prev.host !== 'manager');
    }
    expect(r.json.results.filter((x) => x.task === 'rollout: back in service' && x.status === 'ok').map((x) => x.host).sort()).toEqual(dbHosts().map((h) => h.name).sort());
    // base upgraded none of them; every node at the candidate, the server running it, replication running
    expect(r.json.results.filter((x) => x.role === 'base' && /mariadb/.test(x.message))).toEqual([]);
    for (const h of dbHosts()) {
      const v = onNode(file, addr(h.name), `for p in ${binaries.join(' ')}; do dpkg-query -W -f='\${Version}\\n' $p; done | sort -u; mysql -N -B -e 'SELECT VERSION()'`).stdout.trim().split('\n');
      expect({ h: h.name, installed: v.slice(0, -1) }).toEqual({ h: h.name, installed: [candidate] });
      expect(candidate).toContain(`${v[v.length - 1].split('-')[0]}-`);
      if (h.node.db === 'worker') expect(onNode(file, addr(h.name), "mysql -e 'SHOW SLAVE STATUS\\G'").stdout.match(/Slave_(IO|SQL)_Running: Yes/g)).toHaveLength(2);
    }
    const again = await zx<RunReport>('apply', file);
    expect(changedTasks(again.json)).toEqual([]);
  }, 900_000);

  test('a worker added to cluster.yaml joins with the data; the other workers are not touched', async () => {
    const { parseDocument } = await import('yaml');
    const { readFileSync, writeFileSync } = await import('node:fs');
    const doc = parseDocument(readFileSync(file, 'utf8'));
    const w1 = (doc.toJS().nodes as { name: string }[]).find((n) => n.name === 'worker1')!;
    const nodes = doc.toJS().nodes as object[];
    doc.set('nodes', [...nodes, { ...w1, name: 'worker3' }]);
    const flows = (doc.toJS().security.flows as { from: string[] | string; to: string[] | string; port: number }[]).map((f) => {
      const add = (v: string[] | string) => { const a = Array.isArray(v) ? v : [v]; return a.includes('worker1') ? [...a, 'worker3'] : a; };
      return { ...f, from: add(f.from), to: add(f.to) };
    });
    doc.setIn(['security', 'flows'], flows);
    writeFileSync(file, doc.toString());
    // one apply: the firewall (right after base) admits worker3 on the manager before it replicates
    const r = await zx<RunReport>('apply', file);
    expect(failures(r.json)).toEqual([]);
    expect(r.json.hosts.worker1.changed).toBe(0);
    expect(r.json.hosts.worker2.changed).toBe(0);
    if (!FULL) expect(changedTasks(r.json).filter((t) => t.startsWith('manager | mysql'))).toEqual(['manager | mysql | users, grants and schemas']);
    hosts = await new LocalProvider(loadCluster(file)).describe();
    expect(sql('worker3', 'SELECT COUNT(*) FROM sakila.film; SELECT COUNT(*) FROM sakila.rental').split('\n')).toEqual(['1000', '16044']);
    expect(sql('worker3', "SELECT k FROM rampart.meta ORDER BY k").split('\n')).toEqual(['sakila', 'sysbench']);
    const again = await zx<RunReport>('apply', file);
    expect(changedTasks(again.json)).toEqual([]);
  }, 600_000);
});

function workers0(nodes: { db?: string }[]): string[] {
  return (nodes as { db?: string; name?: string }[]).filter((n) => n.db === 'worker').map((n) => n.name!);
}
