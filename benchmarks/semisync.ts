// What does semi-sync cost a write? On an applied cluster (semi-sync on, as
// database.semiSync enables it), alternating rounds of the same write-only
// bench (`zx bench --writes N --reads 0 --no-sysbench --json`): one round as
// applied (the primary waits for a worker's acknowledgement), one with the
// primary's source side turned off at run time (`SET GLOBAL
// rpl_semi_sync_master_enabled = OFF`, MySQL: rpl_semi_sync_source_enabled),
// then on again. The baseline (off) runs in the same run, on the same cluster;
// the figures are write throughput and p50/p99 through gatekeeper -> trusted
// host -> proxy -> primary, and the ratio of each to the baseline. The primary
// is left as apply set it (on) at the end, also when a round fails.
//
//   node_modules/.bin/tsx benchmarks/semisync.ts -f cluster.yaml [--writes 2000] [--rounds 2]
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { BenchSummary } from '../playbooks/bench/types.ts';

const { values: flags } = parseArgs({
  options: {
    file: { type: 'string', short: 'f', default: 'cluster.yaml' },
    writes: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '2' },
  },
});
const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const zx = join(ROOT, 'node_modules/.bin/zx');
const file = resolve(flags.file!);

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(zx, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** The primary's source side on or off, both dialects' names (the other one is unknown to the server: ignored). */
function sourceSide(on: boolean): void {
  const v = on ? 'ON' : 'OFF';
  const sql = `SET GLOBAL rpl_semi_sync_master_enabled = ${v}`;
  const mysqlSql = `SET GLOBAL rpl_semi_sync_source_enabled = ${v}`;
  // exec runs its arguments as one shell command line on the node
  const r = run(['exec', '-f', file, '--limit', 'manager', '--', `mysql -e '${sql}' 2>/dev/null || mysql -e '${mysqlSql}'`]);
  if (r.code !== 0) throw new Error(`could not turn semi-sync ${v} on the manager: ${r.stderr.slice(-500)}`);
}

interface Round { semiSync: boolean; throughput: number; p50: number; p99: number; failed: number }

function bench(semiSync: boolean): Round {
  const r = run(['bench', '-f', file, '--json', '--writes', flags.writes!, '--reads', '0', '--no-sysbench']);
  const s = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as BenchSummary;
  const w = s.phases?.find((p) => p.phase === 'write');
  if (!w) throw new Error(`bench gave no write phase (exit ${r.code}): ${r.stderr.slice(-1000)}`);
  return { semiSync, throughput: w.throughput, p50: w.p50, p99: w.p99, failed: w.errors };
}

const rounds: Round[] = [];
try {
  for (let i = 0; i < Number(flags.rounds); i++) {
    sourceSide(true);
    rounds.push(bench(true));
    sourceSide(false);
    rounds.push(bench(false));
  }
} finally {
  sourceSide(true);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const agg = (on: boolean) => {
  const rs = rounds.filter((r) => r.semiSync === on);
  return { throughput: median(rs.map((r) => r.throughput)), p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), failed: rs.reduce((a, r) => a + r.failed, 0) };
};
for (const r of rounds) {
  console.log(`semi-sync ${r.semiSync ? 'on ' : 'off'}: ${r.throughput.toFixed(0)} writes/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  failed ${r.failed}`);
}
const on = agg(true);
const off = agg(false);
console.log(`median of ${rounds.length / 2} round(s), ${flags.writes} writes each:`);
console.log(`| semi-sync | writes/s | p50 ms | p99 ms | failed |`);
console.log(`|---|---|---|---|---|`);
console.log(`| off (baseline) | ${off.throughput.toFixed(0)} | ${off.p50.toFixed(2)} | ${off.p99.toFixed(2)} | ${off.failed} |`);
console.log(`| on | ${on.throughput.toFixed(0)} (${(on.throughput / off.throughput).toFixed(2)}x) | ${on.p50.toFixed(2)} (${(on.p50 / off.p50).toFixed(2)}x) | ${on.p99.toFixed(2)} (${(on.p99 / off.p99).toFixed(2)}x) | ${on.failed} |`);
