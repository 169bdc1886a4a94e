// Read throughput and latency through gatekeeper -> trustedhost -> proxy
// (services on Bun) against, in the same run, loopback only: the same query
// sent straight to MariaDB with mysql2, the same three hops over HTTPS (a
// second chain with certificates from a CA of the run: TLS vs not, same
// run), and three bare Bun.serve hops
// (benchmarks/bare-hop.ts: the runtime's floor for three HTTP hops). The services
// run from their bundles, built as the service role builds them. The bare
// and rampart runs alternate `--runs` times; the ratio rampart / bare is the
// median of the pairs. Needs root (it starts its own MariaDB primary +
// replica in a temp dir, see test/support/mariadb.ts).
//
//   node_modules/.bin/bun benchmarks/services.ts [--seconds 5] [--runs 3] [--concurrency 64] [--pool 16] [--warmup 2] [--json]
//
// Progress on stderr; the result table (or --json) on stdout. Exit 1 when a
// request failed or was lost (a hop without its log line).

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mysql from 'mysql2/promise';
import { serviceBundle } from '../roles/lib/artifact.ts';
import { SERVICE_NAMES, type ProxyMode } from '../services/contract.ts';
import { launchServices } from '../test/integration/launch.ts';
import { freePort, mariadbAvailability, secret, startCluster } from '../test/support/mariadb.ts';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const SECONDS = flag('seconds', 5);
const RUNS = flag('runs', 3);
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

interface Hop {
  name: string;
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** Starts the three bare hops (benchmarks/bare-hop.ts), the last one on the database. */
async function launchBare(db: Record<string, unknown>): Promise<{ hops: Hop[]; secret: string; stop(): Promise<void> }> {
  const key = secret();
  const bun = resolve(import.meta.dir, '../node_modules/.bin/bun');
  const entry = resolve(import.meta.dir, 'bare-hop.ts');
  const hops: Hop[] = [];
  let next = '';
  for (const name of ['bare3', 'bare2', 'bare1']) {
    const port = await freePort();
    const env: Record<string, string> = { ...process.env as Record<string, string>, BARE_PORT: String(port), BARE_SECRET: key };
    if (next) env.BARE_NEXT = next;
    else env.BARE_DB = JSON.stringify(db);
    const child = spawn(bun, [entry], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    await new Promise<void>((ok, fail) => {
      let err = '';
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('listening')) ok();
      });
      child.once('exit', (code) => fail(new Error(`${name} exited with ${code}: ${err}`)));
    });
    const url = `http://127.0.0.1:${port}`;
    hops.unshift({ name, url, pid: child.pid ?? 0, stop: async () => { if (child.exitCode === null) child.kill('SIGTERM'); await exited; } });
    next = url;
  }
  return { hops, secret: key, stop: async () => void (await Promise.all(hops.map((h) => h.stop()))) };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<number> {
  const avail = mariadbAvailability();
  if (!avail.ok) {
    say(`services bench: ${avail.reason}`);
    return 2;
  }
  say('starting MariaDB primary + replica on loopback ...');
  const cluster = await startCluster({ replicas: 1, rows: ROWS });
  const logDir = mkdtempSync(join(tmpdir(), 'rampart-bench-logs-'));
  let tlsLogDir: string | undefined;
  const poolSize = flag('pool', 16);
  let svc: Awaited<ReturnType<typeof launchServices>> | undefined;
  let svcTls: Awaited<ReturnType<typeof launchServices>> | undefined;
  let bare: Awaited<ReturnType<typeof launchBare>> | undefined;
  const dbUser = { host: '127.0.0.1', port: cluster.primary.port, user: cluster.app.user, password: cluster.app.password, database: cluster.database };
  const direct = mysql.createPool({ ...dbUser, connectionLimit: CONCURRENCY, dateStrings: true, supportBigNumbers: true });
  try {
    say('bundling the services as the service role does ...');
    const bundles = Object.fromEntries(await Promise.all(SERVICE_NAMES.map(async (n) => [n, (await serviceBundle(logDir, n)).path] as const)));
    say('starting gatekeeper -> trustedhost -> proxy (their bundles, on bun) and three bare hops ...');
    const launchOpts = {
      schemas: [cluster.database], poolSize, probeIntervalMs: 250, entry: (n: (typeof SERVICE_NAMES)[number]) => bundles[n],
      db: {
        manager: { name: 'manager', host: '127.0.0.1', port: cluster.primary.port },
        workers: [{ name: 'worker1', host: '127.0.0.1', port: cluster.replicas[0].port }],
        user: cluster.app.user, password: cluster.app.password, database: cluster.database,
      },
    };
    svc = await launchServices({ ...launchOpts, logDir });
    // the same chain with HTTPS on every hop (certificates from a CA of the run, verified)
    const tlsLogs = mkdtempSync(join(tmpdir(), 'rampart-bench-tls-logs-'));
    tlsLogDir = tlsLogs;
    svcTls = await launchServices({ ...launchOpts, logDir: tlsLogs, tls: true });
    bare = await launchBare({ ...dbUser, connectionLimit: poolSize });
    const s = svc;
    const hops = [s.gatekeeper, s.trustedhost, s.proxy];
    const url = `${s.gatekeeper.url}/query`;
    const headers = { 'content-type': 'application/json', 'x-api-key': s.apiKey };
    const t = svcTls;
    const tlsHops = [t.gatekeeper, t.trustedhost, t.proxy];
    const tlsUrl = `${t.gatekeeper.url}/query`;
    const tlsHeaders = { 'content-type': 'application/json', 'x-api-key': t.apiKey };
    const tlsOpt = { tls: { ca: t.ca } } as RequestInit;
    const bareUrl = `${bare.hops[0].url}/query`;
    const bareHeaders = { 'content-type': 'application/json', 'x-hop': bare.secret };
    const id = (): number => 1 + Math.floor(Math.random() * ROWS);
    const viaServices = (mode: ProxyMode) => async (): Promise<string | null> => {
      const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ sql: SQL, params: [id()], mode }) });
      const body = (await res.json()) as { rows?: unknown[]; error?: { code: string } };
      if (res.status !== 200 || body.rows?.length !== 1) return `HTTP ${res.status} ${body.error?.code ?? ''}`;
      return null;
    };
    const viaTls = async (): Promise<string | null> => {
      const res = await fetch(tlsUrl, { method: 'POST', headers: tlsHeaders, body: JSON.stringify({ sql: SQL, params: [id()], mode: 'direct' }), ...tlsOpt });
      const body = (await res.json()) as { rows?: unknown[]; error?: { code: string } };
      return res.status === 200 && body.rows?.length === 1 ? null : `HTTP ${res.status} ${body.error?.code ?? ''}`;
    };
    const viaBare = async (): Promise<string | null> => {
      const res = await fetch(bareUrl, { method: 'POST', headers: bareHeaders, body: JSON.stringify({ sql: SQL, params: [id()] }) });
      const body = (await res.json()) as { rows?: unknown[] };
      return res.status === 200 && body.rows?.length === 1 ? null : `HTTP ${res.status}`;
    };
    const straight = async (): Promise<string | null> => {
      const [rows] = await direct.execute(SQL, [id()]);
      return (rows as unknown[]).length === 1 ? null : 'no row';
    };

    say(`warm-up ${WARMUP}s each ...`);
    await measure('warmup-direct', WARMUP, straight);
    await measure('warmup-bare', WARMUP, viaBare);
    await measure('warmup-services', WARMUP, viaServices('direct'));
    await measure('warmup-services', WARMUP / 2, viaServices('customized'));
    await measure('warmup-tls', WARMUP, viaTls);

    await new Promise((r) => setTimeout(r, 300)); // let the warm-up log batches land
    const linesBefore = Object.fromEntries(hops.map((p) => [p.name, p.logs().length]));
    const watched = [...hops, ...bare.hops, ...tlsHops.map((h) => ({ ...h, name: `${h.name}-tls` }))];
    const peak: Record<string, number> = Object.fromEntries(watched.map((p) => [p.name, 0]));
    const sample = (): void => {
      for (const p of watched) peak[p.name] = Math.max(peak[p.name], rssMb(p.pid));
    };
    const sampler = setInterval(sample, 200);
    /** A run plus the CPU the given processes (and this client) spent per request in it. */
    const timed = async (name: string, once: () => Promise<string | null>, procs: Hop[], seconds = SECONDS, concurrency = CONCURRENCY) => {
      const cpu0 = procs.map((p) => cpuSeconds(p.pid));
      const self0 = process.cpuUsage();
      const run = await measure(name, seconds, once, concurrency);
      const self = process.cpuUsage(self0);
      const cpu = Object.fromEntries(procs.map((p, i) => [p.name, ((cpuSeconds(p.pid) - cpu0[i]) * 1e6) / run.requests]));
      cpu.client = (self.user + self.system) / run.requests;
      return { run, cpu };
    };
    say(`measuring ${SECONDS}s per run at concurrency ${CONCURRENCY}, bare and rampart alternating ${RUNS} times ...`);
    const runs: Run[] = [];
    runs.push(await measure('mysql2 straight -> manager', SECONDS, straight));
    const pairs: Array<{ bare: Run; rampart: Run }> = [];
    const tlsPairs: Array<{ plain: Run; tls: Run }> = [];
    const cpuTls: Array<Record<string, number>> = [];
    const cpuRampart: Array<Record<string, number>> = [];
    const cpuBare: Array<Record<string, number>> = [];
    for (let i = 1; i <= RUNS; i++) {
      const b = await timed(`3 bare hops -> manager (#${i})`, viaBare, bare.hops);
      const r = await timed(`3 hops mode=direct -> manager (#${i})`, viaServices('direct'), hops);
      const tl = await timed(`TLS: 3 https hops mode=direct -> manager (#${i})`, viaTls, tlsHops);
      runs.push(b.run, r.run, tl.run);
      pairs.push({ bare: b.run, rampart: r.run });
      tlsPairs.push({ plain: r.run, tls: tl.run });
      cpuBare.push(b.cpu);
      cpuRampart.push(r.cpu);
      cpuTls.push(tl.cpu);
    }
    runs.push(await measure('3 hops mode=customized -> replica', SECONDS, viaServices('customized')));
    // Unloaded latency: one request at a time, so queueing does not hide what the hops add.
    const quiet = Math.max(2, Math.round(SECONDS / 2));
    const idle: Run[] = [await measure('mysql2 straight, concurrency 1', quiet, straight, 1)];
    const idlePairs: Array<{ bare: Run; rampart: Run }> = [];
    const idleTls: Array<{ plain: Run; tls: Run }> = [];
    for (let i = 1; i <= RUNS; i++) {
      const b = await measure(`3 bare hops, concurrency 1 (#${i})`, quiet, viaBare, 1);
      const r = await measure(`3 hops direct, concurrency 1 (#${i})`, quiet, viaServices('direct'), 1);
      const tl = await measure(`TLS: 3 https hops direct, concurrency 1 (#${i})`, quiet, viaTls, 1);
      idle.push(b, r, tl);
      idlePairs.push({ bare: b, rampart: r });
      idleTls.push({ plain: r, tls: tl });
    }
    sample();
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 300));
    const served = [...runs, ...idle].filter((r) => r.name.startsWith('3 hops')).reduce((n, r) => n + r.requests, 0);
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
    const ratios = pairs.map((p) => p.rampart.rps / p.bare.rps);
    const idleAdded = idlePairs.map((p) => p.rampart.p50 - p.bare.p50);
    const medianCpu = (xs: Array<Record<string, number>>) => Object.fromEntries(Object.keys(xs[0]).map((k) => [k, Math.round(median(xs.map((x) => x[k])))]));
    const result = {
      concurrency: CONCURRENCY, seconds: SECONDS, runs_per_pair: RUNS, query: SQL, runtime: `bun ${Bun.version}`, runs: table,
      rampart_vs_bare: {
        throughput_ratio_median: Math.round(median(ratios) * 1000) / 1000,
        throughput_ratios: ratios.map((r) => Math.round(r * 1000) / 1000),
        unloaded_p50_ms: { bare: Math.round(median(idlePairs.map((p) => p.bare.p50)) * 1000) / 1000, rampart: Math.round(median(idlePairs.map((p) => p.rampart.p50)) * 1000) / 1000 },
        unloaded_p50_added_ms_median: Math.round(median(idleAdded) * 1000) / 1000,
      },
      rss_mb: Object.fromEntries(Object.entries(peak).map(([k, v]) => [k, Math.round(v)])),
      log_lines: logged, requests_through_services: served,
      cpu_us_per_request: { rampart: medianCpu(cpuRampart), bare: medianCpu(cpuBare), tls: medianCpu(cpuTls) },
      tls_vs_plain: {
        throughput_ratio_median: Math.round(median(tlsPairs.map((p) => p.tls.rps / p.plain.rps)) * 1000) / 1000,
        throughput_ratios: tlsPairs.map((p) => Math.round((p.tls.rps / p.plain.rps) * 1000) / 1000),
        unloaded_p50_added_ms_median: Math.round(median(idleTls.map((p) => p.tls.p50 - p.plain.p50)) * 1000) / 1000,
      },
    };
    if (process.argv.includes('--json')) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    } else {
      const cols = Object.keys(table[0]) as Array<keyof (typeof table)[number]>;
      const width = cols.map((c) => Math.max(c.length, ...table.map((r) => r[c].length)));
      const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(width[i])).join('  ').trimEnd();
      const list = (o: Record<string, number>): string => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ');
      const vs = result.rampart_vs_bare;
      const out = [
        line(cols), line(width.map((w) => '-'.repeat(w))), ...table.map((r) => line(cols.map((c) => r[c]))), '',
        `rampart / bare, 3 hops at concurrency ${CONCURRENCY}: ${(vs.throughput_ratio_median * 100).toFixed(1)}% (median of ${RUNS}; pairs: ${vs.throughput_ratios.map((r) => `${(r * 100).toFixed(1)}%`).join(', ')})`,
        `unloaded p50 (median of ${RUNS}): bare ${vs.unloaded_p50_ms.bare.toFixed(3)} ms, rampart ${vs.unloaded_p50_ms.rampart.toFixed(3)} ms, added ${vs.unloaded_p50_added_ms_median.toFixed(3)} ms`,
        `TLS / plain, 3 hops at concurrency ${CONCURRENCY} (same run, keep-alive): ${(result.tls_vs_plain.throughput_ratio_median * 100).toFixed(1)}% (pairs: ${result.tls_vs_plain.throughput_ratios.map((r) => `${(r * 100).toFixed(1)}%`).join(', ')}); unloaded p50 added by TLS: ${result.tls_vs_plain.unloaded_p50_added_ms_median.toFixed(3)} ms`,
        `peak RSS under load (MB): ${list(result.rss_mb)}`,
        `CPU per request (median of the loaded runs, us): rampart ${list(result.cpu_us_per_request.rampart)}; rampart TLS ${list(result.cpu_us_per_request.tls)}; bare ${list(result.cpu_us_per_request.bare)}`,
        `log lines in the measured runs: ${list(logged)} (requests sent: ${served})`,
        `concurrency ${CONCURRENCY} (concurrency-1 rows: 1), ${SECONDS}s per loaded run, ${result.runtime}, query: ${SQL}`,
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
    await svcTls?.stop();
    await bare?.stop();
    if (tlsLogDir) rmSync(tlsLogDir, { recursive: true, force: true });
    await cluster.stop();
    rmSync(logDir, { recursive: true, force: true });
  }
}

process.exitCode = await main().catch((e: unknown) => {
  say(`services bench: ${(e as Error).message}`);
  return 1;
});
