// `zx bench` on a real LXC cluster of its own (rpbench, 10.82.0.0/24, bridge
// rpbench0): applied from scratch, benched with small counts, then benched
// again with worker1's database stopped in the middle of the read phase.
// Needs Linux + root; skips elsewhere, but fails when CI=true.
// Traffic: only to the cluster's nodes on 10.82.0.0/24 (HTTPS to the
// gatekeeper, verified against the cluster CA; SSH to the nodes).
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunReport } from '../../core/types.ts';
import type { BenchSummary } from '../../playbooks/bench/types.ts';
import { applyOrThrow, teardownSuite, e2eAvailable, onNode, ROOT, testClusterFile, zx } from '../support/cluster.ts';

const NAME = 'rpbench';
const SUBNET = '10.82.0.0/24';
const available = e2eAvailable();
// RPBENCH_DIR=<folder>: use (and keep) the cluster in that folder instead of a fresh one torn down at the end
const keep = process.env.RPBENCH_DIR;
const dir = keep ?? mkdtempSync(join(tmpdir(), 'rpbench-'));
const file = join(dir, 'cluster.yaml');
const ADDR: Record<string, string> = { gatekeeper: '10.82.0.10', trustedhost: '10.82.0.11', proxy: '10.82.0.12', manager: '10.82.0.13', worker1: '10.82.0.14', worker2: '10.82.0.15' };
const DB = ['manager', 'worker1', 'worker2'];
const SERVICES = ['gatekeeper', 'trustedhost', 'proxy'];
const OUR_ID = /^b\d{14}-[wdrc]-\d+$/;

/** Row count, highest actor_id and the next id (AUTO_INCREMENT) of sakila.actor on a DB node, seen over SSH. */
function actorTable(node: string): { rows: number; maxId: number; nextId: number } {
  const r = onNode(file, ADDR[node], `mysql -N -B -e "SELECT COUNT(*), MAX(actor_id) FROM sakila.actor; SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'sakila' AND TABLE_NAME = 'actor'"`);
  if (r.code !== 0) throw new Error(`${node}: ${r.stderr}`);
  const [counts, next] = r.stdout.trim().split('\n');
  const [rows, maxId] = counts.split('\t').map(Number);
  return { rows, maxId, nextId: Number(next) };
}

/** request_ids of this run in a collected service log (JSON lines), with their status. */
function loggedIds(path: string): Map<string, number> {
  const ids = new Map<string, number>();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const v = JSON.parse(line) as { request_id: string; status: number };
    if (OUR_ID.test(v.request_id)) ids.set(v.request_id, v.status);
  }
  return ids;
}

/** Run the bench as a child process (so the test can act on the cluster meanwhile). */
function benchChild(args: string[]): { done: Promise<{ code: number; json: BenchSummary; stderr: string }> } {
  const child = spawn(join(ROOT, 'node_modules/.bin/zx'), ['bench', '-f', file, '--json', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number; json: BenchSummary; stderr: string }>((resolve) =>
    child.on('close', (code) => {
      let json = {} as BenchSummary;
      try {
        json = JSON.parse(stdout.trim().split('\n').pop() ?? '') as BenchSummary;
      } catch {
        /* no summary */
      }
      resolve({ code: code ?? -1, json, stderr });
    }),
  );
  return { done };
}

describe.skipIf(!available)('zx bench on LXC (rpbench)', () => {
  beforeAll(async () => {
    if (!keep || !existsSync(file)) testClusterFile(dir, NAME, SUBNET);
    await applyOrThrow(file);
  }, 1_500_000);

  afterAll(() => teardownSuite(file, { keep: Boolean(keep), dir }), 600_000);

  test('50 writes + 50 reads per mode: report, exact rows, identical dumps, distribution, logs, sysbench', async () => {
    const before = Object.fromEntries(DB.map((n) => [n, actorTable(n)]));
    const r = await zx<BenchSummary>('bench', file, ['--writes', '50', '--reads', '50', '--sysbench-time', '2']);
    const s = r.json;
    if (r.code !== 0) process.stderr.write(`${r.stderr.slice(-3000)}\n${JSON.stringify(s?.incidents)}\n`);
    expect(r.code).toBe(0);
    expect(s.ok).toBe(true);

    // report files
    for (const f of ['report.md', 'report.html', 'summary.json', 'cluster.yaml']) expect(existsSync(join(s.dir, f))).toBe(true);
    expect(readFileSync(join(s.dir, 'cluster.yaml'), 'utf8')).toBe(readFileSync(file, 'utf8'));
    expect(readFileSync(join(s.dir, 'report.html'), 'utf8')).not.toMatch(/https?:\/\/|<script|<link|src=/i);
    expect(JSON.parse(readFileSync(join(s.dir, 'summary.json'), 'utf8')).ok).toBe(true);

    // exact row counts at the proof: +50 on every DB node
    expect(s.replication?.nodes.map((n) => (n.after ?? 0) - (n.before ?? 0))).toEqual([50, 50, 50]);
    // then the bench removed its own rows and gave the id space back: the table as it found it, on every
    // DB node (seen independently over SSH; the replicas follow the primary through the binlog)
    expect(s.cleanup).toEqual({ node: 'manager', removed: 50, nextId: before.manager.maxId + 1 });
    const settled = (n: string) => {
      const a = actorTable(n);
      return a.rows === before[n].rows && a.maxId === before[n].maxId;
    };
    for (let i = 0; i < 20 && !DB.every(settled); i++) await new Promise((res) => setTimeout(res, 500));
    for (const n of DB) {
      const after = actorTable(n);
      expect({ n, rows: after.rows, maxId: after.maxId }).toEqual({ n, rows: before[n].rows, maxId: before[n].maxId });
    }
    expect(actorTable('manager').nextId).toBe(before.manager.maxId + 1);

    // identical dumps, byte for byte
    const dumps = DB.map((n) => readFileSync(join(s.dir, 'dumps', `${n}-actor.sql`)));
    expect(dumps[0].length).toBeGreaterThan(1000);
    expect(dumps[0].toString()).toContain('RAMPART');
    for (const d of dumps.slice(1)) expect(Buffer.compare(d, dumps[0])).toBe(0);

    // every request succeeded; per-mode node distribution
    const byPhase = Object.fromEntries(s.phases.map((p) => [p.phase, p]));
    for (const p of s.phases) {
      expect(p.count).toBe(50);
      expect(p.errors).toBe(0);
    }
    expect(Object.keys(byPhase.write.byNode)).toEqual(['manager']);
    expect(Object.keys(byPhase.direct.byNode)).toEqual(['manager']);
    expect(Object.keys(byPhase.random.byNode).sort()).toEqual(['worker1', 'worker2']);
    expect(Object.keys(byPhase.customized.byNode).every((n) => n === 'worker1' || n === 'worker2')).toBe(true);

    // the logs account for every request on every hop (read from the collected files)
    for (const svc of SERVICES) {
      const ids = loggedIds(join(s.dir, 'logs', `${svc}-${svc}.log`));
      expect(ids.size).toBe(200);
      expect([...ids.values()].every((st) => st === 200)).toBe(true);
    }
    expect(s.logs.every((h) => h.found === 200 && h.missing.length === 0)).toBe(true);

    // sysbench: standalone and cluster results, read_write only on the manager
    expect(s.sysbench.length).toBeGreaterThanOrEqual(4);
    expect(s.sysbench.every((x) => x.ok && x.tps > 0)).toBe(true);
    expect(s.sysbench.filter((x) => x.test === 'oltp_read_write').every((x) => x.node === 'manager')).toBe(true);
    expect(readdirSync(join(s.dir, 'sysbench')).length).toBe(s.sysbench.length);
  }, 600_000);

  test('wrong API key, gatekeeper down, no applied cluster: exit 4 with a clear message each', async () => {
    const secrets = join(dir, '.rampart', 'secrets.json');
    copyFileSync(secrets, `${secrets}.keep`);
    try {
      const v = JSON.parse(readFileSync(secrets, 'utf8')) as Record<string, string>;
      v.gatekeeper_api_key = 'not-the-key-not-the-key';
      writeFileSync(secrets, JSON.stringify(v), { mode: 0o600 });
      const r = await zx<{ error: { message: string } }>('bench', file, ['--writes', '1', '--reads', '1', '--no-sysbench']);
      expect(r.code).toBe(4);
      expect(r.json.error.message).toContain('refused the API key (401)');
    } finally {
      copyFileSync(`${secrets}.keep`, secrets);
      rmSync(`${secrets}.keep`);
    }
    // gatekeeper down: exit 4, says unreachable
    expect(onNode(file, ADDR.gatekeeper, 'systemctl stop rampart-gatekeeper').code).toBe(0);
    try {
      const r = await zx<{ error: { message: string } }>('bench', file, ['--writes', '1', '--reads', '1', '--no-sysbench']);
      expect(r.code).toBe(4);
      expect(r.json.error.message).toContain(`gatekeeper unreachable at ${ADDR.gatekeeper}:443`);
    } finally {
      onNode(file, ADDR.gatekeeper, 'systemctl start rampart-gatekeeper');
    }
    const other = testClusterFile(join(dir, 'none'), 'rpbenchx', '10.82.1.0/24');
    const r = await zx<{ error: { message: string; hint: string } }>('bench', other, ['--no-sysbench']);
    expect(r.code).toBe(4);
    expect(r.json.error.message).toContain('no applied cluster');
    expect(r.json.error.hint).toContain('zx apply');
  }, 120_000);

  test('a change that needs a MariaDB restart rolls: reads answered throughout, writes refused at most during the manager\'s own restart', async () => {
    // drift on every DB node (a variable changed by hand): apply restarts each server to its config
    for (const n of DB) expect(onNode(file, ADDR[n], 'mysql -e "SET GLOBAL slave_net_timeout = 30"').code).toBe(0);
    const key = (JSON.parse(readFileSync(join(dir, '.rampart', 'secrets.json'), 'utf8')) as Record<string, string>).gatekeeper_api_key;
    const ca = readFileSync(join(dir, '.rampart', 'tls', 'ca.pem'), 'utf8');
    const outcomes: { kind: 'read' | 'write'; at: number; ok: boolean }[] = [];
    let observing = true;
    const observe = async (kind: 'read' | 'write') => {
      const body = kind === 'read'
        ? { sql: 'SELECT COUNT(*) AS n FROM sakila.film', mode: 'random' }
        : { sql: 'UPDATE sakila.actor SET last_update = last_update WHERE actor_id = ?', params: [1] };
      while (observing) {
        const at = Date.now();
        const ok = await fetch(`https://${ADDR.gatekeeper}/query`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: JSON.stringify(body), signal: AbortSignal.timeout(5000), tls: { ca } } as RequestInit)
          .then((r) => r.status === 200, () => false);
        outcomes.push({ kind, at, ok });
        await new Promise((r) => setTimeout(r, 40));
      }
    };
    const observers = [observe('read'), observe('write')];
    const r = await zx<RunReport>('apply', file);
    await new Promise((res) => setTimeout(res, 1000));
    observing = false;
    await Promise.all(observers);
    expect(r.code).toBe(0);
    const restarts = DB.map((n) => r.json.results.find((x) => x.host === n && x.task === 'server runs the config')!);
    for (const x of restarts) expect(x.status).toBe('changed');
    // the run log has each restart command with its end time and duration: one after another, workers first
    const log = readFileSync(r.json.log!, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { host: string; kind: string; command: string; ts: string; durationMs: number });
    const windows = DB.map((n) => {
      const e = log.find((l) => l.host === n && l.kind === 'exec' && l.command === 'systemctl restart mariadb')!;
      return { n, start: Date.parse(e.ts) - e.durationMs, end: Date.parse(e.ts) };
    }).sort((a, b) => a.start - b.start);
    expect(windows.map((w) => w.n)).toEqual(['worker1', 'worker2', 'manager']);
    for (let i = 1; i < windows.length; i++) expect(windows[i].start).toBeGreaterThanOrEqual(windows[i - 1].end);
    // reads answered the whole time; writes failed only around the manager's restart
    const reads = outcomes.filter((o) => o.kind === 'read');
    expect(reads.length).toBeGreaterThan(20);
    expect(reads.filter((o) => !o.ok)).toEqual([]);
    const manager = windows.find((w) => w.n === 'manager')!;
    const badWrites = outcomes.filter((o) => o.kind === 'write' && !o.ok);
    expect(badWrites.filter((o) => o.at < manager.start - 1000 || o.at > manager.end + 5000)).toEqual([]);
    expect(outcomes.filter((o) => o.kind === 'write' && o.ok).length).toBeGreaterThan(10);
    const again = await zx<RunReport>('apply', file);
    expect(again.json.results.filter((x) => x.status === 'changed')).toEqual([]);
    // the run logs hold every command of these runs, and no secret
    const secrets = Object.values(JSON.parse(readFileSync(join(dir, '.rampart', 'secrets.json'), 'utf8')) as Record<string, string>);
    const logs = readdirSync(join(dir, '.rampart', 'logs')).map((f) => readFileSync(join(dir, '.rampart', 'logs', f), 'utf8'));
    expect(logs.length).toBeGreaterThanOrEqual(3);
    for (const text of logs) for (const v of secrets) expect(text.includes(v)).toBe(false);
  }, 600_000);

  test('worker1 stopped during the read phase: random/customized reads still succeed, the report says what happened', async () => {
    // paced so each read phase lasts 6 s: direct (manager only), then random, then customized
    const executed = () => Number(onNode(file, ADDR.worker1, `mysql -N -B -e "SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'"`).stdout.split('\t')[1] ?? 0);
    const base = executed();
    const run = benchChild(['--writes', '20', '--reads', '900', '--rate', '150', '--no-sysbench']);
    // worker1 first executes our (prepared) reads when the random phase starts: stop it soon after
    const deadline = Date.now() + 60_000;
    while (executed() < base + 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    if (executed() < base + 50) {
      const { json } = await run.done;
      throw new Error(`worker1 never served the random reads (is it usable by the proxy?): ${JSON.stringify(json.incidents)}`);
    }
    const stop = onNode(file, ADDR.worker1, 'systemctl stop mariadb');
    expect(stop.code).toBe(0);
    const { code, json: s, stderr } = await run.done;
    try {
      if (!s.phases) throw new Error(`no summary (exit ${code}): ${stderr.slice(-2000)}`);
      const byPhase = Object.fromEntries(s.phases.map((p) => [p.phase, p]));
      // every read answered, routed around worker1
      for (const m of ['direct', 'random', 'customized']) expect(byPhase[m].errors).toBe(0);
      expect(byPhase.random.byNode.worker1).toBeGreaterThan(0); // served until it stopped
      expect(byPhase.random.byNode.worker2).toBeGreaterThan(byPhase.random.byNode.worker1);
      expect(Object.keys(byPhase.customized.byNode)).toEqual(['worker2']);
      // what happened is said: worker1's database down, it stopped serving random reads, the proof incomplete
      const said = s.incidents.join('\n');
      expect(said).toContain('worker1: its database server is not answering');
      expect(said).toMatch(/random: worker1 served \d+ request\(s\), none after/);
      expect(s.replication?.ok).toBe(false);
      expect(s.distribution.every((d) => d.ok)).toBe(true);
      expect(code).toBe(1);
      const md = readFileSync(join(s.dir, 'report.md'), 'utf8');
      expect(md).toContain('## What happened');
      expect(md).toContain('worker1: its database server is not answering');
      // every request is still in every hop's log
      expect(s.logs.every((h) => h.found === 20 + 2700 && h.missing.length === 0)).toBe(true);
    } finally {
      onNode(file, ADDR.worker1, 'systemctl start mariadb');
    }
  }, 300_000);
});
