// Read throughput and latency through gatekeeper -> trustedhost -> proxy
// (services on Bun) against the same query sent straight to MariaDB with
// mysql2, same concurrency, same run, loopback only. Needs root (it starts
// its own MariaDB primary + replica in a temp dir, see test/support/mariadb.ts).
//
//   node_modules/.bin/bun benchmarks/services.ts [--seconds 10] [--concurrency 64] [--pool 16] [--warmup 2] [--json]
//
// Progress on stderr; the result table (or --json) on stdout. Exit 1 when a
// request failed or was lost (a hop without its log line).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import type { ProxyMode } from '../core/types.ts';
import { launchServices } from '../test/integration/launch.ts';
import { mariadbAvailability, startCluster } from '../test/support/mariadb.ts';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const SECONDS = flag('seconds', 10);
const CONCURRENCY = flag('concurrency', 64);
const WARMUP = flag('warmup', 2);
const ROWS = 1000;
const SQL = 'SELECT id, name, qty FROM items WHERE id = ?';
const say = (m: string): void => void process.stderr.write(`${m}\n`);

interface Run {
  name: string;
  requests: number;
  failed: number;
  rps: number;
  p50: number;
  p99: number;
  errors: string[];
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;

/** CONCURRENCY loops calling `once` for `seconds`. `once` returns null on success, else why it failed. */
async function measure(name: string, seconds: number, once: () => Promise<string | null>, concurrency = CONCURRENCY): Promise<Run> {
  const lat: number[] = [];
  const errors: string[] = [];
  let failed = 0;
  const stopAt = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < stopAt) {
      const s = performance.now();
      let err: string | null;
      try {
        err = await once();
      } catch (e) {
        err = (e as Error).message;
      }
      lat.push(performance.now() - s);
      if (err !== null) {
        failed++;
        if (errors.length < 5) errors.push(err);
      }
    }
  }));
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { name, requests: lat.length, failed, rps: lat.length / elapsed, p50: pct(lat, 0.5), p99: pct(lat, 0.99), errors };
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) a process used so far. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

async function main(): Promise<number> {
  const avail = mariadbAvailability();
  if (!avail.ok) {
    say(`services bench: ${avail.reason}`);
    return 2;
  }
  say('starting MariaDB primary + replica on loopback ...');
  const cluster = await startCluster({ replicas: 1, rows: ROWS });
  const logDir = mkdtempSync(join(tmpdir(), 'rampart-bench-logs-'));
  let svc: Awaited<ReturnType<typeof launchServices>> | undefined;
  const direct = mysql.createPool({
    host: '127.0.0.1', port: cluster.primary.port, user: cluster.app.user, password: cluster.app.password,
    database: cluster.database, connectionLimit: CONCURRENCY, dateStrings: true, supportBigNumbers: true,
  });
  try {
    say('starting gatekeeper -> trustedhost -> proxy (bun) ...');
    svc = await launchServices({
      schemas: [cluster.database], logDir, poolSize: flag('pool', 16), probeIntervalMs: 250,
      db: {
        manager: { name: 'manager', host: '127.0.0.1', port: cluster.primary.port },
        workers: [{ name: 'worker1', host: '127.0.0.1', port: cluster.replicas[0].port }],
        user: cluster.app.user, password: cluster.app.password, database: cluster.database,
      },
    });
    const s = svc;
    const hops = [s.gatekeeper, s.trustedhost, s.proxy];
    const url = `${s.gatekeeper.url}/query`;
    const headers = { 'content-type': 'application/json', 'x-api-key': s.apiKey };
    const id = (): number => 1 + Math.floor(Math.random() * ROWS);
    const viaServices = (mode: ProxyMode) => async (): Promise<string | null> => {
      const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ sql: SQL, params: [id()], mode }) });
      const body = (await res.json()) as { rows?: unknown[]; error?: { code: string } };
      if (res.status !== 200 || body.rows?.length !== 1) return `HTTP ${res.status} ${body.error?.code ?? ''}`;
      return null;
    };
    const straight = async (): Promise<string | null> => {
      const [rows] = await direct.execute(SQL, [id()]);
      return (rows as unknown[]).length === 1 ? null : 'no row';
    };

    say(`warm-up ${WARMUP}s each ...`);
    await measure('warmup-direct', WARMUP, straight);
    await measure('warmup-services', WARMUP, viaServices('direct'));
    await measure('warmup-services', WARMUP / 2, viaServices('customized'));

    await new Promise((r) => setTimeout(r, 300)); // let the warm-up log batches land
    const linesBefore = Object.fromEntries(hops.map((p) => [p.name, p.logs().length]));
    const peak: Record<string, number> = { gatekeeper: 0, trustedhost: 0, proxy: 0 };
    const sample = (): void => {
      for (const p of hops) peak[p.name] = Math.max(peak[p.name], rssMb(p.pid));
    };
    const sampler = setInterval(sample, 200);
    say(`measuring ${SECONDS}s per run at concurrency ${CONCURRENCY} ...`);
    const runs: Run[] = [];
    runs.push(await measure('mysql2 straight -> manager', SECONDS, straight));
    const cpu0 = hops.map((p) => cpuSeconds(p.pid));
    const self0 = process.cpuUsage();
    runs.push(await measure('3 hops mode=direct -> manager', SECONDS, viaServices('direct')));
    const selfUsage = process.cpuUsage(self0);
    const cpuPerReq = Object.fromEntries(hops.map((p, i) => [p.name, ((cpuSeconds(p.pid) - cpu0[i]) * 1e6) / runs[1].requests]));
    cpuPerReq.client = (selfUsage.user + selfUsage.system) / runs[1].requests;
    runs.push(await measure('3 hops mode=customized -> replica', SECONDS, viaServices('customized')));
    // Unloaded latency: one request at a time, so queueing does not hide what the hops add.
    const quiet = Math.max(2, Math.round(SECONDS / 3));
    const idle = [await measure('mysql2 straight, concurrency 1', quiet, straight, 1), await measure('3 hops direct, concurrency 1', quiet, viaServices('direct'), 1)];
    sample();
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 300));
    const served = runs[1].requests + runs[2].requests + idle[1].requests;
    const logged = Object.fromEntries(hops.map((p) => [p.name, p.logs().length - linesBefore[p.name]]));

    const base = runs[0];
    const row = (r: Run, b: Run) => ({
      run: r.name,
      requests: String(r.requests),
      failed: String(r.failed),
      'req/s': String(Math.round(r.rps)),
      'p50 ms': r.p50.toFixed(2),
      'p99 ms': r.p99.toFixed(2),
      'vs straight': `${((r.rps / b.rps) * 100).toFixed(0)}%`,
      'p50 added ms': (r.p50 - b.p50).toFixed(2),
    });
    const table = [...runs.map((r) => row(r, base)), ...idle.map((r) => row(r, idle[0]))];
    const result = {
      concurrency: CONCURRENCY, seconds: SECONDS, query: SQL, runtime: `bun ${Bun.version}`, runs: table,
      rss_mb: Object.fromEntries(Object.entries(peak).map(([k, v]) => [k, Math.round(v)])),
      log_lines: logged, requests_through_services: served,
      cpu_us_per_request_mode_direct: Object.fromEntries(Object.entries(cpuPerReq).map(([k, v]) => [k, Math.round(v)])),
    };
    if (process.argv.includes('--json')) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    } else {
      const cols = Object.keys(table[0]) as Array<keyof (typeof table)[number]>;
      const width = cols.map((c) => Math.max(c.length, ...table.map((r) => r[c].length)));
      const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(width[i])).join('  ').trimEnd();
      const out = [
        line(cols), line(width.map((w) => '-'.repeat(w))), ...table.map((r) => line(cols.map((c) => r[c]))), '',
        `peak RSS under load (MB): ${Object.entries(result.rss_mb).map(([k, v]) => `${k} ${v}`).join(', ')}`,
        `CPU per request (mode=direct run, us): ${Object.entries(result.cpu_us_per_request_mode_direct).map(([k, v]) => `${k} ${v}`).join(', ')}`,
        `log lines in the measured runs: ${Object.entries(logged).map(([k, v]) => `${k} ${v}`).join(', ')} (requests sent: ${served})`,
        `concurrency ${CONCURRENCY} (last two rows: 1), ${SECONDS}s per loaded run, ${result.runtime}, query: ${SQL}`,
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    }
    const lost = Object.values(logged).some((n) => n !== served);
    const failed = [...runs, ...idle].some((r) => r.failed > 0);
    for (const r of [...runs, ...idle]) for (const e of r.errors) say(`${r.name}: ${e}`);
    if (lost) say('some requests have no log line on some hop (lost?)');
    return failed || lost ? 1 : 0;
  } finally {
    await direct.end();
    await svc?.stop();
    await cluster.stop();
    rmSync(logDir, { recursive: true, force: true });
  }
}

process.exitCode = await main().catch((e: unknown) => {
  say(`services bench: ${(e as Error).message}`);
  return 1;
});
