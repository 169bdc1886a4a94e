// Automatic failover on a real LXC cluster of its own (rpfail, 10.88.0.0/24,
// bridge rpfail0; MariaDB on bookworm, 1 manager + 2 workers behind the
// gatekeeper -> trustedhost -> proxy chain): semi-sync on, then the manager's
// container is stopped hard (lxc-stop -k) under a write-heavy load. Writes
// resume on a promoted worker, no acknowledged write is lost, reads never fail,
// and the old manager, started again, is fenced (read_only); apply rejoins it,
// `zx switchover` moves the primary back under writes, and `zx bench` runs
// through a second hard stop (summary.json: the failover, lost = 0).
// Needs Linux + root; skips elsewhere, but fails when CI=true.
// Traffic: only to the cluster's nodes on 10.88.0.0/24 (HTTP to the
// gatekeeper, SSH to the nodes).
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunReport } from '../../core/types.ts';
import { applyOrThrow, teardownSuite, e2eAvailable, onNode, ROOT, testClusterFile, zx } from '../support/cluster.ts';

const NAME = 'rpfail';
const SUBNET = '10.88.0.0/24';
const available = e2eAvailable();
const keep = process.env.RPFAIL_DIR;
const dir = keep ?? mkdtempSync(join(tmpdir(), 'rpfail-'));
let file = join(dir, 'cluster.yaml');
const ADDR: Record<string, string> = { gatekeeper: '10.88.0.10', trustedhost: '10.88.0.11', proxy: '10.88.0.12', manager: '10.88.0.13', worker1: '10.88.0.14', worker2: '10.88.0.15' };
const DB = ['manager', 'worker1', 'worker2'];
const MARK = `FO${Date.now() % 1_000_000}`;

function sql(node: string, q: string): string {
  const r = onNode(file, ADDR[node], `mysql -N -B -e ${JSON.stringify(q)}`);
  if (r.code !== 0) throw new Error(`${node}: ${r.stderr}`);
  return r.stdout.trim();
}

let promoted = '';

interface Outcome { kind: 'read' | 'write'; at: number; status: number; code?: string; node?: string; id?: number }

// The gatekeeper's clients: one read or one write (an acknowledged insert has an id).
async function call(kind: 'read' | 'write'): Promise<Outcome> {
  const key = (JSON.parse(readFileSync(join(dir, '.rampart', 'secrets.json'), 'utf8')) as Record<string, string>).gatekeeper_api_key;
  // TLS on every hop: the gatekeeper is HTTPS, verified against the cluster CA
  const ca = readFileSync(join(dir, '.rampart', 'tls', 'ca.pem'), 'utf8');
  const body = kind === 'read'
    ? { sql: 'SELECT COUNT(*) AS n FROM sakila.film', mode: 'random' }
    : { sql: 'INSERT INTO sakila.actor (first_name, last_name) VALUES (?, ?)', params: [MARK, 'FAILOVER'] };
  const at = Date.now();
  try {
    const r = await fetch(`https://${ADDR.gatekeeper}/query`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: JSON.stringify(body), signal: AbortSignal.timeout(20_000), tls: { ca } } as RequestInit);
    const v = (await r.json()) as { node?: string; insert_id?: number; error?: { code: string } };
    return { kind, at, status: r.status, node: v.node, id: v.insert_id, code: v.error?.code };
  } catch (e) {
    return { kind, at, status: 0, code: (e as Error).name };
  }
}

/** 3 writers and 1 reader through the gatekeeper until `stop()`; every answer recorded. */
function startLoad(): { outcomes: Outcome[]; stop: () => Promise<void> } {
  const outcomes: Outcome[] = [];
  let running = true;
  const loop = async (kind: 'read' | 'write') => {
    while (running) {
      outcomes.push(await call(kind));
      await new Promise((r) => setTimeout(r, kind === 'read' ? 50 : 5));
    }
  };
  const loops = [loop('write'), loop('write'), loop('write'), loop('read')];
  return { outcomes, stop: async () => { running = false; await Promise.all(loops); } };
}

describe.skipIf(!available)('automatic failover on LXC (rpfail)', () => {
  beforeAll(async () => {
    file = testClusterFile(dir, NAME, SUBNET, (doc) => {
      // no sysbench here (faster apply); the DB nodes replicate from whichever is primary
      for (const i of [3, 4, 5]) doc.setIn(['nodes', i, 'roles'], ['base', 'mysql', 'sakila', 'replication', 'iptables']);
      const flows = doc.getIn(['security', 'flows']) as { items: unknown[] };
      flows.items.splice(4, 1, doc.createNode({ from: DB, to: DB, port: 3306 }));
    });
    await applyOrThrow(file);
  }, 1_500_000);

  afterAll(() => teardownSuite(file, { keep: Boolean(keep), dir }), 600_000);

  test('semi-sync is on: the manager waits for its two workers', () => {
    const status = sql('manager', "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status','Rpl_semi_sync_master_clients')");
    expect(status).toContain('Rpl_semi_sync_master_status\tON');
    expect(status).toContain('Rpl_semi_sync_master_clients\t2');
    for (const w of ['worker1', 'worker2']) expect(sql(w, 'SELECT @@rpl_semi_sync_slave_enabled, @@read_only')).toBe('1\t1');
  });

  test('manager stopped hard under writes: a worker is promoted within 30 s, no acknowledged write lost, reads never fail, the old manager fenced', async () => {
    const { outcomes, stop } = startLoad();
    await new Promise((r) => setTimeout(r, 3000));
    const killedAt = Date.now();
    expect(spawnSync('lxc-stop', ['-k', '-n', `${NAME}-manager`]).status).toBe(0);
    // until writes run on a promoted worker for 5 s (at most 60 s)
    const deadline = killedAt + 60_000;
    while (Date.now() < deadline) {
      const promoted = outcomes.filter((o) => o.kind === 'write' && o.status === 200 && o.at > killedAt && o.node !== 'manager');
      if (promoted.length && Date.now() - promoted[0].at > 5000) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await stop();

    const writes = outcomes.filter((o) => o.kind === 'write');
    const acked = writes.filter((o) => o.status === 200);
    const firstAfter = acked.find((o) => o.at > killedAt && o.node !== 'manager');
    expect(firstAfter).toBeDefined();
    const primary = firstAfter!.node!;
    promoted = primary;
    expect(['worker1', 'worker2']).toContain(primary);
    const resumedS = (firstAfter!.at - killedAt) / 1000;
    process.stderr.write(`failover: writes resumed on ${primary} ${resumedS.toFixed(1)} s after the kill; ${acked.length} acknowledged, ${writes.length - acked.length} not (${JSON.stringify(Object.fromEntries([...new Set(writes.filter((o) => o.status !== 200).map((o) => o.code))].map((c) => [c, writes.filter((o) => o.code === c).length])))})\n`);
    expect(resumedS).toBeLessThan(30);
    // failed writes say what happened: not executed (503) or outcome unknown (504), nothing else
    for (const o of writes.filter((w) => w.status !== 200)) expect([`503 DB_UNAVAILABLE`, `504 OUTCOME_UNKNOWN`]).toContain(`${o.status} ${o.code}`);
    // reads never failed
    const reads = outcomes.filter((o) => o.kind === 'read');
    expect(reads.length).toBeGreaterThan(20);
    expect(reads.filter((o) => o.status !== 200)).toEqual([]);
    // every acknowledged insert is on the new primary and on the other worker (replication, waited for)
    const other = primary === 'worker1' ? 'worker2' : 'worker1';
    const ids = acked.map((o) => o.id!).sort((a, b) => a - b);
    const pos = sql(primary, 'SELECT @@gtid_binlog_pos');
    expect(sql(other, `SELECT MASTER_GTID_WAIT('${pos}', 30)`)).toBe('0');
    for (const n of [primary, other]) {
      const have = new Set(sql(n, `SELECT actor_id FROM sakila.actor WHERE first_name = '${MARK}'`).split('\n').filter(Boolean).map(Number));
      const lost = ids.filter((id) => !have.has(id));
      expect({ node: n, lost }).toEqual({ node: n, lost: [] });
    }
    expect(sql(primary, 'SELECT @@read_only')).toBe('0');
    const st = onNode(file, ADDR[other], 'mysql -E -e "SHOW REPLICA STATUS"').stdout;
    expect(st).toContain(`Master_Host: ${ADDR[primary]}`);
    expect(st).toContain('Slave_SQL_Running: Yes');

    // the old manager comes back: the proxy fences it (read_only) and routes nothing to it
    expect(spawnSync('lxc-start', ['-n', `${NAME}-manager`]).status).toBe(0);
    let ro = '';
    for (let i = 0; i < 60 && ro !== '1'; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        ro = sql('manager', 'SELECT @@read_only');
      } catch {
        ro = '';
      }
    }
    expect(ro).toBe('1');
    const after = await Promise.all(Array.from({ length: 10 }, () => call('write')));
    expect(after.map((o) => [o.status, o.node])).toEqual(after.map(() => [200, primary]));
  }, 300_000);

  test('apply follows the live primary: the old manager rejoins as its replica (GTID), nothing demoted; a second apply changes nothing', async () => {
    expect(promoted).not.toBe('');
    const r = await zx<RunReport>('apply', file);
    if (r.code !== 0) process.stderr.write(`${r.stderr.slice(-3000)}\n`);
    expect(r.code).toBe(0);
    expect(r.json.primary).toEqual({ live: promoted, preferred: 'manager', moved: true });
    expect(sql(promoted, 'SELECT @@read_only')).toBe('0');
    const st = onNode(file, ADDR.manager, 'mysql -E -e "SHOW REPLICA STATUS"').stdout;
    expect(st).toContain(`Master_Host: ${ADDR[promoted]}`);
    expect(st).toContain('Slave_IO_Running: Yes');
    expect(st).toContain('Slave_SQL_Running: Yes');
    expect(sql('manager', 'SELECT @@read_only')).toBe('1');
    // the same rows everywhere once caught up
    const pos = sql(promoted, 'SELECT @@gtid_binlog_pos');
    for (const n of DB.filter((x) => x !== promoted)) expect(sql(n, `SELECT MASTER_GTID_WAIT('${pos}', 30)`)).toBe('0');
    const counts = DB.map((n) => sql(n, `SELECT COUNT(*) FROM sakila.actor WHERE first_name = '${MARK}'`));
    expect(new Set(counts).size).toBe(1);
    const again = await zx<RunReport>('apply', file);
    expect(again.code).toBe(0);
    const changed = again.json.results.filter((x) => x.status === 'changed').map((x) => `${x.host}: ${x.role}/${x.task}: ${x.message}`);
    expect(changed).toEqual([]);
  }, 900_000);
  test('switchover moves the primary back to the manager under writes: 0 failed writes, none lost; apply changes nothing; a bench passes', async () => {
    expect(promoted).not.toBe('');
    const check = await zx<{ action: string; from: string; to: string }>('switchover', file, ['--check']);
    expect(check.code).toBe(0);
    expect(check.json).toMatchObject({ action: 'switch', from: promoted, to: 'manager' });
    const { outcomes, stop } = startLoad();
    await new Promise((r) => setTimeout(r, 2000));
    const r = await zx<{ from: string; to: string; durationMs: number; heldMs: number }>('switchover', file);
    if (r.code !== 0) process.stderr.write(`${r.stderr.slice(-3000)}\n${r.stdout.slice(-2000)}\n`);
    expect(r.code).toBe(0);
    const doneAt = Date.now();
    // writes on for 2 s more on the new primary
    await new Promise((res) => setTimeout(res, 2000));
    await stop();
    const writes = outcomes.filter((o) => o.kind === 'write');
    const failed = writes.filter((o) => o.status !== 200);
    process.stderr.write(`switchover: ${r.json.from} -> ${r.json.to} in ${(r.json.durationMs / 1000).toFixed(1)} s, writes held ${(r.json.heldMs / 1000).toFixed(1)} s; ${writes.length} writes, ${failed.length} failed (${JSON.stringify(failed.slice(0, 5))})\n`);
    expect(r.json).toMatchObject({ from: promoted, to: 'manager' });
    expect(failed).toEqual([]);
    expect(outcomes.filter((o) => o.kind === 'read' && o.status !== 200)).toEqual([]);
    const late = writes.filter((o) => o.at > doneAt);
    expect(late.length).toBeGreaterThan(0);
    expect(new Set(late.map((o) => o.node))).toEqual(new Set(['manager']));
    // every acknowledged write is on the manager and both workers
    expect(sql('manager', 'SELECT @@read_only')).toBe('0');
    const pos = sql('manager', 'SELECT @@gtid_binlog_pos');
    for (const w of ['worker1', 'worker2']) {
      expect(sql(w, `SELECT MASTER_GTID_WAIT('${pos}', 30)`)).toBe('0');
      expect(sql(w, 'SELECT @@read_only')).toBe('1');
      const st = onNode(file, ADDR[w], 'mysql -E -e "SHOW REPLICA STATUS"').stdout;
      expect(st).toContain(`Master_Host: ${ADDR.manager}`);
      expect(st).toContain('Slave_SQL_Running: Yes');
    }
    const ids = writes.map((o) => o.id!);
    for (const n of DB) {
      const have = new Set(sql(n, `SELECT actor_id FROM sakila.actor WHERE first_name = '${MARK}'`).split('\n').filter(Boolean).map(Number));
      expect({ node: n, lost: ids.filter((id) => !have.has(id)) }).toEqual({ node: n, lost: [] });
    }
    const again = await zx<RunReport>('apply', file);
    expect(again.code).toBe(0);
    expect(again.json.primary).toEqual({ live: 'manager', preferred: 'manager', moved: false });
    expect(again.json.results.filter((x) => x.status === 'changed').map((x) => `${x.host}: ${x.role}/${x.task}: ${x.message}`)).toEqual([]);
    // nothing to do the second time
    const none = await zx<{ action: string }>('switchover', file);
    expect(none.code).toBe(0);
    expect(none.json.action).toBe('none');
    const bench = await zx<{ writes: { acknowledged: number; lost: number } }>('bench', file, ['--writes', '100', '--reads', '100', '--no-sysbench']);
    if (bench.code !== 0) process.stderr.write(`${bench.stderr.slice(-3000)}\n`);
    expect(bench.code).toBe(0);
    expect(bench.json.writes.lost).toBe(0);
    expect(bench.json.writes.acknowledged).toBeGreaterThan(0);
  }, 600_000);

  test('zx bench through a failover: the manager stopped hard in its write phase; summary.json shows the failover and lost = 0', async () => {
    const count = () => Number(sql('manager', 'SELECT COUNT(*) FROM sakila.actor'));
    const before = count();
    // paced (about 25 s of writes) so writes go on well past the failover
    const child = spawn(join(ROOT, 'node_modules/.bin/zx'), ['bench', '-f', file, '--json', '--writes', '3000', '--reads', '0', '--rate', '120', '--concurrency', '8', '--no-sysbench'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const done = new Promise<number>((r) => child.on('close', (code) => r(code ?? -1)));
    // the write phase has begun: the bench's rows arrive on the manager
    const deadline = Date.now() + 120_000;
    while (count() < before + 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 300));
    expect(count()).toBeGreaterThanOrEqual(before + 100);
    expect(spawnSync('lxc-stop', ['-k', '-n', `${NAME}-manager`]).status).toBe(0);
    const code = await done;
    let s: { writes: { acknowledged: number; lost: number; unknown: number; refused: number }; failover: { from: string; to: string; seconds: number } | null };
    try {
      s = JSON.parse(stdout.trim().split('\n').pop() ?? '');
    } catch {
      throw new Error(`no summary (exit ${code}): ${stderr.slice(-3000)}`);
    }
    process.stderr.write(`bench through a failover: exit ${code}, writes ${JSON.stringify(s.writes)}, failover ${JSON.stringify(s.failover)}\n`);
    expect(s.failover).not.toBeNull();
    expect(s.failover!.from).toBe('manager');
    expect(['worker1', 'worker2']).toContain(s.failover!.to);
    expect(s.failover!.seconds).toBeLessThan(30);
    expect(s.writes.lost).toBe(0);
    expect(s.writes.acknowledged).toBeGreaterThan(1000);
    expect(s.writes.acknowledged + s.writes.refused + s.writes.unknown).toBe(3000);
  }, 600_000);
});
