// The whole cluster on real Oracle MySQL (own cluster rpmysql, 10.86.0.0/24):
// LXC nodes from a Debian sid image (sid's mysql-server is MySQL 9.x; this
// machine's mirror serves a frozen sid snapshot, hence checkValidUntil: false),
// database.engine: mysql. Apply from nothing, second apply changed=0, GTID
// replication on both workers from the manager, least-privilege accounts,
// Sakila on every DB node, a small bench through the gatekeeper with
// random/customized reads served by the workers and a short sysbench, drift
// (a stopped replica, a replica pointed elsewhere) repaired, teardown leaves
// nothing. One cluster shared by every test. Needs Linux + root; skips
// elsewhere, fails when CI=true. Traffic: only the cluster's own nodes.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import type { BenchSummary } from '../../playbooks/bench/types.ts';
import type { RunReport } from '../../core/types.ts';
import { e2eAvailable, onNode, testClusterFile, zx } from '../support/cluster.ts';

const NAME = 'rpmysql';
const SUBNET = '10.86.0.0/24';
const DIR = '/tmp/rampart-e2e-mysql';
const available = e2eAvailable();
const ADDR: Record<string, string> = { gatekeeper: '10.86.0.10', trustedhost: '10.86.0.11', proxy: '10.86.0.12', manager: '10.86.0.13', worker1: '10.86.0.14', worker2: '10.86.0.15' };
const DB = ['manager', 'worker1', 'worker2'];
const WORKERS = ['worker1', 'worker2'];

let file = '';

function sql(node: string, query: string): string {
  const r = onNode(file, ADDR[node], `mysql -N -B -e ${JSON.stringify(query).replace(/\$/g, '\\$')}`);
  if (r.code !== 0) throw new Error(`${node}: ${query}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** SHOW REPLICA STATUS as a map (mysql -E: one `Key: value` per line). */
function replicaStatus(node: string): Map<string, string> {
  const r = onNode(file, ADDR[node], "mysql -E -e 'SHOW REPLICA STATUS'");
  const m = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const kv = /^\s*(\w+):\s?(.*)$/.exec(line);
    if (kv) m.set(kv[1], kv[2].trim());
  }
  return m;
}

const changedTasks = (r: RunReport) => r.results.filter((x) => x.status === 'changed').map((x) => `${x.host} | ${x.role} | ${x.task}`).sort();
const failures = (r: RunReport) => r.results.filter((x) => x.status === 'failed').map((x) => `${x.host} | ${x.task}: ${x.message}`);

describe.skipIf(!available)('the cluster on Oracle MySQL (sid nodes, rpmysql)', () => {
  beforeAll(async () => {
    file = testClusterFile(DIR, NAME, SUBNET, (doc) => {
      doc.setIn(['provider', 'local', 'suite'], 'sid');
      // this machine's mirror serves a sid snapshot whose Release file is past its Valid-Until
      doc.setIn(['provider', 'local', 'checkValidUntil'], false);
      doc.setIn(['database', 'engine'], 'mysql');
      doc.setIn(['database', 'sysbench'], { tables: 2, tableSize: 1000, threads: 2, time: 2 });
    });
    await zx('teardown', file);
  }, 300_000);

  afterAll(async () => {
    if (process.env.RAMPART_E2E_KEEP === '1') return;
    const r = await zx<{ removed: { action: string; resource: string }[] }>('teardown', file);
    expect(r.code).toBe(0);
  }, 300_000);

  test('apply from nothing converges; the second apply changes nothing on any host', async () => {
    const first = await zx<RunReport>('apply', file);
    expect(failures(first.json ?? { results: [] } as unknown as RunReport)).toEqual([]);
    expect(first.code).toBe(0);
    const again = await zx<RunReport>('apply', file);
    expect(again.code).toBe(0);
    expect(changedTasks(again.json)).toEqual([]);
    for (const [h, recap] of Object.entries(again.json.hosts)) expect({ h, changed: recap.changed, failed: recap.failed }).toEqual({ h, changed: 0, failed: 0 });
  }, 1_200_000);

  test('Oracle MySQL 9.x, bound to the node address, option file after the packaged mysqld.cnf', () => {
    for (const n of DB) {
      expect(sql(n, 'SELECT VERSION()')).toMatch(/^9\.\d+\.\d+/);
      expect(sql(n, 'SELECT @@bind_address, @@gtid_mode, @@enforce_gtid_consistency, @@binlog_format')).toBe(`${ADDR[n]}\tON\tON\tROW`);
      const files = onNode(file, ADDR[n], 'ls /etc/mysql/mysql.conf.d/').stdout.trim().split('\n');
      expect(files).toContain('zz-rampart.cnf');
      expect(files.at(-1)).toBe('zz-rampart.cnf');
    }
    expect(sql('manager', 'SELECT @@read_only, @@super_read_only')).toBe('0\t0');
    for (const w of WORKERS) expect(sql(w, 'SELECT @@read_only, @@super_read_only')).toBe('1\t1');
  });

  test('GTID replication running on both workers from the manager; a row reaches them after a GTID wait', () => {
    for (const w of WORKERS) {
      const st = replicaStatus(w);
      expect([st.get('Source_Host'), st.get('Source_User'), st.get('Replica_IO_Running'), st.get('Replica_SQL_Running'), st.get('Auto_Position')])
        .toEqual([ADDR.manager, 'rampart_repl', 'Yes', 'Yes', '1']);
      expect(Number(st.get('Source_Retry_Count'))).toBeGreaterThanOrEqual(86400);
    }
    sql('manager', "CREATE TABLE IF NOT EXISTS rampart.e2e_probe (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(32)); INSERT INTO rampart.e2e_probe (token) VALUES ('mysql-e2e')");
    const pos = sql('manager', "SELECT REPLACE(@@GLOBAL.gtid_executed, '\\n', '')");
    for (const w of WORKERS) {
      expect(sql(w, `SELECT WAIT_FOR_EXECUTED_GTID_SET('${pos}', 30)`)).toBe('0');
      expect(sql(w, "SELECT COUNT(*) FROM rampart.e2e_probe WHERE token='mysql-e2e'")).toBe('1');
    }
    sql('manager', 'DROP TABLE rampart.e2e_probe');
  });

  test('least-privilege accounts: no native-password user, no remote root, exact hosts', () => {
    const users = sql('manager', "SELECT CONCAT(user, '@', host, ' ', plugin) FROM mysql.user ORDER BY 1").split('\n');
    expect(users.filter((u) => u.endsWith(' mysql_native_password'))).toEqual([]);
    expect(users.filter((u) => u.startsWith('root@') && !/^root@(localhost|127\.0\.0\.1|::1) /.test(u))).toEqual([]);
    const ours = users.filter((u) => /^(rampart_|sbtest@)/.test(u)).map((u) => u.split(' ')[0]).sort();
    expect(ours).toEqual([`rampart_app@${ADDR.proxy}`, `rampart_failover@${ADDR.proxy}`, `rampart_monitor@${ADDR.proxy}`, `rampart_repl@${ADDR.worker1}`, `rampart_repl@${ADDR.worker2}`, 'sbtest@localhost'].sort());
    expect(sql('manager', `SHOW GRANTS FOR 'rampart_monitor'@'${ADDR.proxy}'`)).toBe(`GRANT REPLICATION CLIENT ON *.* TO \`rampart_monitor\`@\`${ADDR.proxy}\``);
    expect(sql('manager', `SHOW GRANTS FOR 'rampart_app'@'${ADDR.proxy}'`)).toContain('GRANT SELECT, INSERT, UPDATE, DELETE ON `sakila`.*');
  });

  test('Sakila counts on all three DB nodes', () => {
    for (const n of DB) {
      expect(sql(n, 'SELECT COUNT(*) FROM sakila.actor; SELECT COUNT(*) FROM sakila.film; SELECT COUNT(*) FROM sakila.rental').split('\n').map(Number).slice(1)).toEqual([1000, 16044]);
      expect(Number(sql(n, 'SELECT COUNT(*) FROM sakila.actor'))).toBeGreaterThanOrEqual(200);
    }
  });

  test('zx bench --writes 100 --reads 100 with a short sysbench passes; random/customized reads served by the workers', async () => {
    const r = await zx<BenchSummary>('bench', file, ['--writes', '100', '--reads', '100', '--sysbench-time', '2']);
    const s = r.json;
    if (r.code !== 0) process.stderr.write(`${r.stderr.slice(-3000)}\n${JSON.stringify(s?.incidents)}\n`);
    expect(r.code).toBe(0);
    expect(s.ok).toBe(true);
    const byPhase = Object.fromEntries(s.phases.map((p) => [p.phase, p]));
    for (const p of s.phases) expect({ phase: p.phase, count: p.count, errors: p.errors }).toEqual({ phase: p.phase, count: 100, errors: 0 });
    expect(Object.keys(byPhase.write.byNode)).toEqual(['manager']);
    expect(Object.keys(byPhase.direct.byNode)).toEqual(['manager']);
    expect(Object.keys(byPhase.random.byNode).sort()).toEqual(WORKERS);
    expect(Object.keys(byPhase.customized.byNode).length).toBeGreaterThan(0);
    expect(Object.keys(byPhase.customized.byNode).every((n) => WORKERS.includes(n))).toBe(true);
    expect(s.replication?.nodes.map((n) => (n.after ?? 0) - (n.before ?? 0))).toEqual([100, 100, 100]);
    // sysbench really ran against MySQL on every DB node (read_write on the manager only)
    expect(s.sysbench.length).toBeGreaterThanOrEqual(4);
    expect(s.sysbench.every((x) => x.ok && x.tps > 0)).toBe(true);
    expect(new Set(s.sysbench.map((x) => x.node))).toEqual(new Set(DB));
    expect(readdirSync(`${s.dir}/sysbench`).length).toBe(s.sysbench.length);
  }, 600_000);

  test('drift: a stopped replica and a replica pointed elsewhere are reported and repaired exactly', async () => {
    sql('worker1', 'STOP REPLICA');
    // worker2 pointed at a wrong source port (as a hand-made mistake would): needs a re-point, not a start
    sql('worker2', "STOP REPLICA; CHANGE REPLICATION SOURCE TO SOURCE_PORT=3307; START REPLICA");
    const expected = ['worker1 | replication | replica of the manager (GTID)', 'worker2 | replication | replica of the manager (GTID)'];
    const check = await zx<RunReport>('apply', file, ['--check']);
    expect(check.code).toBe(0);
    expect(changedTasks(check.json)).toEqual(expected);
    const w2 = check.json.results.find((x) => x.host === 'worker2' && x.role === 'replication')!;
    expect(w2.message).toContain('3307');
    const fix = await zx<RunReport>('apply', file);
    expect(failures(fix.json)).toEqual([]);
    expect(changedTasks(fix.json)).toEqual(expected);
    for (const w of WORKERS) {
      const st = replicaStatus(w);
      expect([st.get('Source_Port'), st.get('Replica_IO_Running'), st.get('Replica_SQL_Running')]).toEqual(['3306', 'Yes', 'Yes']);
    }
    expect(changedTasks((await zx<RunReport>('apply', file)).json)).toEqual([]);
  }, 300_000);

  test('teardown leaves no container, bridge or fence; a second teardown has nothing to do', async () => {
    const r = await zx<{ removed: { action: string; resource: string }[] }>('teardown', file);
    expect(r.code).toBe(0);
    expect(r.json.removed.filter((x) => x.action === 'delete').length).toBeGreaterThanOrEqual(8);
    const lxc = execFileSync('lxc-ls', ['-1'], { encoding: 'utf8' });
    expect(lxc.split('\n').filter((n) => n.startsWith(`${NAME}-`))).toEqual([]);
    expect(execFileSync('ip', ['-br', 'link'], { encoding: 'utf8' })).not.toContain(`${NAME}0`);
    expect(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' })).not.toContain(`rampart_${NAME}`);
    const again = await zx<{ removed: { action: string }[] }>('teardown', file);
    expect(again.json.removed.filter((x) => x.action === 'delete')).toEqual([]);
  }, 300_000);
});
