// How fast is apply? Times the real command (`zx apply --json`) on a cluster:
//   --fresh   teardown first, then one apply from nothing (the base image stays cached)
//   then N no-op re-applies: whole-command wall time, the engine's and the
//   provider's share (from --json), and the controller's peak memory.
// Baseline in the same run: one OpenSSH `true` per node, all nodes in parallel
// (one connection each): the floor any SSH-based tool pays before doing work.
// Ansible pays about that per task; rampart pays it about once per run.
//
//   node_modules/.bin/tsx benchmarks/apply.ts [-f cluster.yaml] [--roles base] [--runs 5] [--fresh]
import { execFileSync, spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
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

function timed(command: string): Sample {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '@@peak %M', zx, command, '-f', file, '--json', ...extra], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
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
