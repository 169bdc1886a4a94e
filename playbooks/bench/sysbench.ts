// sysbench standalone vs cluster, run ON the DB nodes over SSH. The sbtest
// schema, user and tables come from the sysbench role; the password travels
// in an option file (0600, written through stdin), never on a command line.
//
// standalone: each node alone, one run after the other; oltp_read_write only
//   on the manager (workers are read-only replicas), oltp_read_only everywhere.
// cluster: (1) oltp_read_write on the manager while oltp_read_only runs on
//   every worker (writes to the manager, reads spread over the workers);
//   (2) oltp_read_only on every DB node at once.
import type { Connection } from '../../core/types.ts';
import { SYSBENCH_BIN, sysbenchOptions } from '../../roles/lib/mysql-meta.ts';
import type { SysbenchResult } from './types.ts';

export type SysbenchTest = SysbenchResult['test'];

export interface SysbenchSettings {
  password: string;
  tables: number;
  tableSize: number;
  threads: number;
  time: number;
}

export interface DbHost {
  name: string;
  role: 'manager' | 'worker';
  conn: Connection;
}

/** Where the option file lives on the node while the runs last. */
export const OPTION_FILE = '/root/.rampart-bench-sysbench.cfg';

/**
 * The option file's content: the connection lines of the sysbench role's own
 * file (driver, socket, user, password, schema). sysbench 1.0 ignores test
 * options (tables, table-size, ...) in a config file, so those go on the
 * command line (they are not secret).
 */
export function optionFile(s: SysbenchSettings): string {
  const all = sysbenchOptions({ tables: s.tables, tableSize: s.tableSize, threads: s.threads, time: s.time }, s.password);
  return all.split('\n').filter((l) => /^(db-driver|mysql-)/.test(l)).join('\n') + '\n';
}

/** The command line of one run: settings as arguments, the password in the option file. */
export function sysbenchCommand(test: SysbenchTest, s: Omit<SysbenchSettings, 'password'>): string {
  return `${SYSBENCH_BIN} ${test} --config-file=${OPTION_FILE} --tables=${s.tables} --table-size=${s.tableSize} --threads=${s.threads} --time=${s.time} --events=0 --report-interval=0 run`;
}

/** How many sbtest tables the sysbench role prepared (on the manager; replicated). */
export const PREPARED_TABLES_SQL = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest' AND TABLE_NAME REGEXP '^sbtest[0-9]+$'";

/** Parse sysbench's final report. Throws when it does not look like one. */
export function parseSysbench(out: string): { tps: number; qps: number; latencyAvgMs: number; latencyP95Ms: number; errors: number } {
  const num = (re: RegExp): number => {
    const m = out.match(re);
    if (!m) throw new Error(`sysbench output has no ${re.source.split('\\s')[0].replace(/[^a-z ]/gi, '')} line`);
    return Number.parseFloat(m[1]);
  };
  return {
    tps: num(/transactions:\s+\d+\s+\(([\d.]+) per sec\.\)/),
    qps: num(/queries:\s+\d+\s+\(([\d.]+) per sec\.\)/),
    latencyAvgMs: num(/avg:\s+([\d.]+)/),
    latencyP95Ms: num(/95th percentile:\s+([\d.]+)/),
    errors: num(/ignored errors:\s+(\d+)/),
  };
}

async function runOne(h: DbHost, test: SysbenchTest, setup: SysbenchResult['setup'], s: SysbenchSettings): Promise<{ result: SysbenchResult; output: string }> {
  const res = await h.conn.exec(`${sysbenchCommand(test, s)} 2>&1`, { check: false });
  const base = { test, setup, node: h.name };
  if (res.code !== 0) {
    const last = res.stdout.trim().split('\n').filter((l) => /FATAL|error/i.test(l)).slice(-2).join(' | ') || res.stdout.trim().split('\n').pop() || `exit ${res.code}`;
    return { result: { ...base, ok: false, error: last.slice(0, 300), tps: 0, qps: 0, latencyAvgMs: 0, latencyP95Ms: 0, errors: 0 }, output: res.stdout + res.stderr };
  }
  try {
    return { result: { ...base, ok: true, ...parseSysbench(res.stdout) }, output: res.stdout };
  } catch (e) {
    return { result: { ...base, ok: false, error: (e as Error).message, tps: 0, qps: 0, latencyAvgMs: 0, latencyP95Ms: 0, errors: 0 }, output: res.stdout };
  }
}

export interface SysbenchRun {
  results: SysbenchResult[];
  /** Raw outputs by file name (`standalone-oltp_read_write-manager.txt`). */
  outputs: Record<string, string>;
  /** Deviations from the plan (fewer prepared tables than configured). */
  notes: string[];
}

/** Standalone runs then cluster runs; a failing node is reported, the others still run. */
export async function runSysbench(hosts: DbHost[], settings: SysbenchSettings, progress?: (m: string) => void): Promise<SysbenchRun> {
  const results: SysbenchResult[] = [];
  const outputs: Record<string, string> = {};
  const notes: string[] = [];
  let s = settings;
  const manager = hosts.find((h) => h.role === 'manager');
  if (manager) {
    const r = await manager.conn.exec('mysql -N -B', { stdin: `${PREPARED_TABLES_SQL};`, check: false });
    const prepared = Number.parseInt(r.stdout.trim(), 10);
    if (r.code === 0 && prepared >= 1 && prepared < s.tables) {
      notes.push(`sysbench: only ${prepared} of ${s.tables} sbtest tables are prepared on ${manager.name}; ran on ${prepared} (rerun \`npx zx apply\` to prepare them all)`);
      s = { ...s, tables: prepared };
    }
  }
  const keep = (r: { result: SysbenchResult; output: string }) => {
    results.push(r.result);
    outputs[`${r.result.setup}-${r.result.test}-${r.result.node}.txt`] = r.output;
  };
  const usable: DbHost[] = [];
  await Promise.all(hosts.map(async (h) => {
    try {
      await h.conn.writeFile(OPTION_FILE, optionFile(s), { mode: '0600', owner: 'root:root' });
      usable.push(h);
    } catch (e) {
      for (const test of ['oltp_read_write', 'oltp_read_only'] as const) {
        results.push({ test, setup: 'standalone', node: h.name, ok: false, error: (e as Error).message, tps: 0, qps: 0, latencyAvgMs: 0, latencyP95Ms: 0, errors: 0 });
      }
    }
  }));
  usable.sort((a, b) => hosts.indexOf(a) - hosts.indexOf(b));
  try {
    for (const h of usable) {
      for (const test of h.role === 'manager' ? (['oltp_read_write', 'oltp_read_only'] as const) : (['oltp_read_only'] as const)) {
        progress?.(`standalone ${test} on ${h.name} (${s.time} s)`);
        keep(await runOne(h, test, 'standalone', s));
      }
    }
    if (usable.length > 1) {
      progress?.(`cluster: oltp_read_write on the manager + oltp_read_only on the workers (${s.time} s)`);
      for (const r of await Promise.all(usable.map((h) => runOne(h, h.role === 'manager' ? 'oltp_read_write' : 'oltp_read_only', 'cluster-mixed', s)))) keep(r);
      progress?.(`cluster: oltp_read_only on every DB node (${s.time} s)`);
      for (const r of await Promise.all(usable.map((h) => runOne(h, 'oltp_read_only', 'cluster-read-only', s)))) keep(r);
    }
  } finally {
    await Promise.all(usable.map((h) => h.conn.exec(`rm -f ${OPTION_FILE}`, { check: false }).catch(() => undefined)));
  }
  return { results, outputs, notes };
}
