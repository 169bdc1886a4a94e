// e2e helpers: run the real commands (`zx apply|teardown|bench`) on a cluster
// file, and run shell commands on its nodes over SSH with the project's key.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { shq } from '../../core/ssh.ts';

export const ROOT = resolve(import.meta.dir, '../..');

/** LXC e2e tests need Linux + root. They skip elsewhere, but never in CI. */
export function e2eAvailable(): boolean {
  const ok = process.platform === 'linux' && process.getuid?.() === 0;
  if (!ok && process.env.CI === 'true') throw new Error('e2e tests need root on Linux (CI=true: refusing to skip)');
  return ok;
}

export interface CommandResult<T = unknown> {
  code: number;
  json: T;
  stdout: string;
  stderr: string;
}

/** Run `zx <command> -f <file> --json ...args` from the repo root; parse stdout as JSON. */
export async function zx<T = unknown>(command: 'apply' | 'teardown' | 'bench' | 'exec' | 'facts' | 'rotate' | 'switchover', file: string, args: string[] = [], opts: { signalAfterMs?: number; env?: Record<string, string> } = {}): Promise<CommandResult<T>> {
  return new Promise((resolveP) => {
    const child = spawn(join(ROOT, 'node_modules/.bin/zx'), [command, '-f', file, '--json', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = opts.signalAfterMs ? setTimeout(() => child.kill('SIGKILL'), opts.signalAfterMs) : undefined;
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      let json = undefined as T;
      try {
        json = JSON.parse(stdout.trim().split('\n').pop() ?? '') as T;
      } catch {
        /* killed or crashed: no JSON */
      }
      resolveP({ code: code ?? -1, json, stdout, stderr });
    });
  });
}

/** The reference cluster the e2e tests derive theirs from (a fixture: never the user's cluster.yaml). */
/** A suite's first apply: its result, or an error carrying the command's last output. */
export async function applyOrThrow<T = unknown>(file: string, args: string[] = []): Promise<CommandResult<T>> {
  const r = await zx<T>('apply', file, args);
  if (r.code !== 0 || r.json === undefined) throw new Error(`apply failed (${r.code}):\n${r.stderr.slice(-3000)}\n${r.stdout.slice(-2000)}`);
  return r;
}

/**
 * A suite's afterAll: tear its cluster down (not when the suite keeps it: `keep`,
 * or RAMPART_E2E_KEEP=1), say why when that failed, remove the suite's folder.
 */
export async function teardownSuite(file: string | undefined, opts: { keep?: boolean; dir?: string } = {}): Promise<void> {
  if (!file || opts.keep || process.env.RAMPART_E2E_KEEP === '1') return;
  const r = await zx('teardown', file);
  if (r.code !== 0) process.stderr.write(`teardown failed (${r.code}): ${r.stderr.slice(-2000)}\n`);
  if (opts.dir) rmSync(opts.dir, { recursive: true, force: true });
}

export const FIXTURE_CLUSTER = join(ROOT, 'test/fixtures/cluster.yaml');

/**
 * Write a test cluster file derived from the fixture cluster, with its own
 * name, subnet and bridge so it never collides with a user's cluster. `edit`
 * may change anything else (e.g. drop nodes). Returns the file path.
 */
export function testClusterFile(dir: string, name: string, subnet: string, edit?: (doc: ReturnType<typeof parseDocument>) => void): string {
  mkdirSync(dir, { recursive: true });
  const doc = parseDocument(readFileSync(FIXTURE_CLUSTER, 'utf8'));
  doc.set('name', name);
  doc.setIn(['provider', 'local', 'subnet'], subnet);
  doc.setIn(['provider', 'local', 'bridge'], `${name}0`.slice(0, 15));
  // the offline Sakila tarball, by absolute path (never copied into the repo)
  doc.setIn(['database', 'sakila', 'path'], resolve(ROOT, '../shared/sakila/sakila-db.tar.gz'));
  edit?.(doc);
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, doc.toString());
  return file;
}

/** Run a shell command on a node as root over SSH with the cluster's key (state in <dir>/.rampart). */
export function onNode(clusterFile: string, address: string, command: string, user = 'ubuntu'): { code: number; stdout: string; stderr: string } {
  const key = join(dirname(clusterFile), '.rampart', 'id_ed25519');
  const r = spawnSync('ssh', [
    '-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', `${user}@${address}`, `sudo -n bash -c ${shq(command)}`,
  ], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
