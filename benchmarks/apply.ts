// How fast is apply? Times the real command (`zx apply --json`) on a cluster:
//   --fresh   teardown first, then one apply from nothing (the base image stays cached)
//   then N no-op re-applies: whole-command wall time, the engine's and the
//   provider's share (from --json), and the controller's peak memory.
// Baseline in the same run: one OpenSSH `true` per node, all nodes in parallel
// (one connection each): the floor any SSH-based tool pays before doing work.
// Ansible pays about that per task; rampart pays it about once per run.
//
//   --cache   (local provider) the package cache: fresh converge without it, with a
//   cold cache (emptied first) and with a warm one, in that order, each after a
//   teardown, then N no-op re-applies with and without it; ratios against the
//   run without the cache.
//   --baseline NAME:CIDR (with --cache) the run without the cache is a second
//   cluster (that name and subnet, its own state folder beside the file) that
//   stays up: the no-op re-applies then alternate between the two (cache, no
//   cache, cache, ...) so both see the same load, and each share (provider,
//   engine) is printed for both.
//
//   node_modules/.bin/tsx benchmarks/apply.ts [-f cluster.yaml] [--roles base] [--runs 5] [--fresh | --cache [--baseline NAME:CIDR]]
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { CACHE_LOG_DIR, CACHE_PORT, CACHE_STORE } from '../providers/local/cache.ts';
import { parseArgs } from 'node:util';
import { loadClusterWithRoles } from '../core/spec.ts';
import { statePaths } from '../core/state.ts';
import type { RunReport } from '../core/types.ts';

const { values: flags } = parseArgs({
  options: {
    file: { type: 'string', short: 'f', default: 'cluster.yaml' },
    roles: { type: 'string' },
    runs: { type: 'string', default: '5' },
    fresh: { type: 'boolean', default: false },
    cache: { type: 'boolean', default: false },
    baseline: { type: 'string' },
  },
});
const ROOT = resolve(import.meta.dirname, '..');
const file = resolve(flags.file!);
const runs = Number(flags.runs);
const zx = join(ROOT, 'node_modules/.bin/zx');
const extra = flags.roles ? ['--roles', flags.roles] : [];

function ensureGnuTime(): void {
  if (spawnSync('/usr/bin/time', ['-f', '%M', 'true']).status === 0) return;
  execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'time'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

interface Sample { wallMs: number; engineMs: number; providerMs: number; peakKb: number; changed: number; code: number }

function timed(command: string, on = file): Sample {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '@@peak %M', zx, command, '-f', on, '--json', ...extra], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  const wallMs = performance.now() - t0;
  const peakKb = Number(/@@peak (\d+)/.exec(r.stderr)?.[1] ?? NaN);
  let report: Partial<RunReport> = {};
  try {
    report = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  } catch { /* not JSON: reported through code */ }
  const changed = Object.values(report.hosts ?? {}).reduce((s, h) => s + h.changed, 0);
  return { wallMs, engineMs: report.durationMs ?? NaN, providerMs: report.providerMs ?? NaN, peakKb, changed, code: r.status ?? -1 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

ensureGnuTime();
const cluster = await loadClusterWithRoles(file);
console.log(`cluster ${cluster.name}: ${cluster.nodes.length} nodes, provider ${cluster.provider.type}${flags.roles ? `, roles ${flags.roles}` : ''}`);

if (flags.cache) {
  if (cluster.provider.type !== 'local') throw new Error('--cache needs a local cluster');
  // the same cluster without the cache: a copy of the file beside it (same name, same state folder)
  // (or, with --baseline, another cluster in a folder of its own beside it)
  const [bName, bCidr] = flags.baseline?.split(':') ?? [];
  if (flags.baseline && !bCidr) throw new Error('--baseline NAME:CIDR, e.g. rpcach2:10.91.0.0/24');
  const plainDir = join(dirname(file), `.bench-${bName}`);
  if (bName) mkdirSync(plainDir, { recursive: true });
  const plain = bName ? join(plainDir, 'cluster.yaml') : join(dirname(file), `.bench-${cluster.name}-nocache.yaml`);
  const doc = parseDocument(readFileSync(file, 'utf8'));
  doc.setIn(['provider', 'local', 'packageCache'], false);
  if (bName) {
    const d2 = doc.clone();
    d2.set('name', bName);
    d2.setIn(['provider', 'local', 'subnet'], bCidr);
    d2.setIn(['provider', 'local', 'bridge'], `${bName}0`.slice(0, 15));
    writeFileSync(plain, d2.toString());
  } else writeFileSync(plain, doc.toString());
  const withCache = join(dirname(file), `.bench-${cluster.name}-cache.yaml`);
  doc.setIn(['provider', 'local', 'packageCache'], true);
  writeFileSync(withCache, doc.toString());
  const teardown = (f: string) => execFileSync(zx, ['teardown', '-f', f, '--json'], { cwd: ROOT, stdio: 'ignore' });
  // the cache's own transfer log: `time|I|bytes|client|path` = fetched from the mirror, `|O|` = served to a node
  const log = join(CACHE_LOG_DIR, 'apt-cacher.log');
  const logSize = () => (existsSync(log) ? statSync(log).size : 0);
  const traffic = (from: number) => {
    const t = { I: { deb: [0, 0], idx: [0, 0] }, O: { deb: [0, 0], idx: [0, 0] } } as Record<string, Record<string, number[]>>;
    const text = existsSync(log) ? readFileSync(log).subarray(from).toString('utf8') : '';
    for (const [, kind, bytes, , path] of text.split('\n').map((l) => l.split('|')).filter((x) => x.length >= 5)) {
      const c = t[kind]?.[path.endsWith('.deb') ? 'deb' : 'idx'];
      if (c) { c[0]++; c[1] += Number(bytes); }
    }
    const mb = (x: number[]) => `${x[0]} files ${(x[1] / 1e6).toFixed(1)} MB`;
    return `fetched from the mirror: .deb ${mb(t.I.deb)}, lists ${mb(t.I.idx)}; served to the nodes: .deb ${mb(t.O.deb)}, lists ${mb(t.O.idx)}`;
  };
  const fresh = (label: string, f: string) => {
    teardown(f);
    const from = logSize();
    const r = timed('apply', f);
    if (r.code !== 0) throw new Error(`${label}: fresh apply failed (exit ${r.code})`);
    console.log(`${label.padEnd(22)} ${s(r.wallMs)} wall (provider ${s(r.providerMs)}, roles ${s(r.engineMs)}), changed=${r.changed}`);
    if (f === withCache) console.log(`${''.padEnd(22)} ${traffic(from)}`);
    return r;
  };
  const noops = (f: string, n = runs) => {
    const xs: Sample[] = [];
    for (let i = 0; i < n; i++) {
      const r = timed('apply', f);
      if (r.code !== 0 || r.changed !== 0) throw new Error(`no-op apply: exit ${r.code}, changed=${r.changed}`);
      xs.push(r);
    }
    return xs;
  };
  const shares = (xs: Sample[]) => `${s(median(xs.map((r) => r.wallMs)))} (provider ${s(median(xs.map((r) => r.providerMs)))}, engine ${s(median(xs.map((r) => r.engineMs)))}; median of ${xs.length})`;
  try {
    const f0 = fresh('fresh, no cache', plain);
    let n0: Sample[] = [];
    if (!bName) {
      n0 = noops(plain);
      console.log(`${'no-op, no cache'.padEnd(22)} ${shares(n0)}`);
      teardown(plain);
    }
    // cold: nothing cached (the daemon is down once no rampart cluster is left)
    if (spawnSync('ss', ['-Hltn', `sport = :${CACHE_PORT}`], { encoding: 'utf8' }).stdout.trim()) {
      throw new Error(`the package cache still serves another cluster: cannot empty ${CACHE_STORE} for a cold run`);
    }
    for (const e of readdirSync(CACHE_STORE, { withFileTypes: true }).filter((d) => d.isDirectory())) rmSync(join(CACHE_STORE, e.name), { recursive: true, force: true });
    const f1 = fresh('fresh, cold cache', withCache);
    const f2 = fresh('fresh, warm cache', withCache);
    let n2: Sample[];
    if (bName) {
      // both clusters up: alternate, so load swings hit both alike
      n2 = [];
      timed('apply', plain);
      timed('apply', withCache);
      for (let i = 0; i < runs; i++) {
        n0.push(...noops(plain, 1));
        n2.push(...noops(withCache, 1));
      }
      console.log(`${'no-op, no cache'.padEnd(22)} ${shares(n0)}`);
    } else n2 = noops(withCache);
    console.log(`${'no-op, warm cache'.padEnd(22)} ${shares(n2)}`);
    const m = (xs: Sample[], k: 'wallMs' | 'providerMs' | 'engineMs') => median(xs.map((r) => r[k]));
    console.log(`ratios against no cache: cold ${(f1.wallMs / f0.wallMs).toFixed(2)}, warm ${(f2.wallMs / f0.wallMs).toFixed(2)}; no-op ${(m(n2, 'wallMs') / m(n0, 'wallMs')).toFixed(2)} (provider ${(m(n2, 'providerMs') / m(n0, 'providerMs')).toFixed(2)}, engine ${(m(n2, 'engineMs') / m(n0, 'engineMs')).toFixed(2)})`);
  } finally {
    if (bName) teardown(plain);
    rmSync(bName ? plainDir : plain, { recursive: true, force: true });
    rmSync(withCache, { force: true });
  }
  process.exit(0);
}

if (flags.fresh) {
  execFileSync(zx, ['teardown', '-f', file, '--json'], { cwd: ROOT, stdio: 'ignore' });
  const f = timed('apply');
  if (f.code !== 0) throw new Error(`fresh apply failed (exit ${f.code})`);
  console.log(`fresh apply: ${s(f.wallMs)} wall (provider ${s(f.providerMs)}, roles ${s(f.engineMs)}), peak ${(f.peakKb / 1024).toFixed(0)} MB`);
}

// Baseline: one OpenSSH connection per node, in parallel, running `true`.
const key = statePaths(cluster.dir).sshKey;
const addrs = cluster.nodes.map((n) => n.address!).filter(Boolean);
const sshAll = () => {
  const t0 = performance.now();
  const script = addrs.map((a) => `ssh -i ${key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR ${cluster.adminUser}@${a} true &`).join('\n') + '\nwait';
  execFileSync('bash', ['-c', script]);
  return performance.now() - t0;
};

const noop: Sample[] = [];
const base: number[] = [];
timed('apply'); // warm-up (tsx compile cache, page cache)
for (let i = 0; i < runs; i++) {
  base.push(cluster.provider.type === 'local' ? sshAll() : NaN);
  const r = timed('apply');
  if (r.code !== 0) throw new Error(`no-op apply failed (exit ${r.code})`);
  noop.push(r);
}
const changed = noop.reduce((a, r) => a + r.changed, 0);
console.log(`no-op re-apply x${runs} (median; changed=${changed} in total):`);
console.log(`  whole command     ${s(median(noop.map((r) => r.wallMs)))}   (min ${s(Math.min(...noop.map((r) => r.wallMs)))}, max ${s(Math.max(...noop.map((r) => r.wallMs)))})`);
console.log(`  provider check    ${s(median(noop.map((r) => r.providerMs)))}`);
console.log(`  engine (connect + facts + roles) ${s(median(noop.map((r) => r.engineMs)))}`);
console.log(`  controller peak memory ${(median(noop.map((r) => r.peakKb)) / 1024).toFixed(0)} MB`);
if (cluster.provider.type === 'local') {
  const b = median(base);
  console.log(`baseline: OpenSSH \`true\` on all ${addrs.length} nodes in parallel: ${s(b)}`);
  console.log(`ratio engine / baseline: ${(median(noop.map((r) => r.engineMs)) / b).toFixed(2)}  (whole command / baseline: ${(median(noop.map((r) => r.wallMs)) / b).toFixed(2)})`);
}
