// A real EC2 API server for the AWS provider's integration test: moto's
// server (Debian trixie's python3-moto), chrooted into a trixie root built
// once with debootstrap and cached in /var/cache/rampart/moto-trixie, run
// inside a network namespace that has only `lo`. Everything that talks to it
// runs in that namespace too (runInNamespace), so the public-looking instance
// addresses moto hands out fail at once with ENETUNREACH and no packet leaves
// the machine. Installs debootstrap and iproute2 with apt when missing.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const MOTO_ROOT = process.env.RAMPART_MOTO_ROOT ?? '/var/cache/rampart/moto-trixie';
const MIRROR = process.env.RAMPART_MOTO_MIRROR ?? 'http://deb.debian.org/debian';
const READY = '.rampart-moto-ready';
/** Any port: the namespace is ours alone. */
export const MOTO_PORT = 5055;

export interface Availability {
  ok: boolean;
  reason: string;
}

const have = (bin: string): boolean => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;

/** Whether the suite can run here (Linux, root). It must not be skipped when CI=true. */
export function motoAvailability(): Availability {
  if (process.platform !== 'linux') return { ok: false, reason: 'needs Linux (network namespaces, chroot)' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (ip netns, chroot, debootstrap)' };
  return { ok: true, reason: '' };
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command; stdout and stderr are kept (and stderr is also streamed when `show`). */
export function runCommand(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; show?: boolean; timeoutMs?: number; cwd?: string } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (opts.show) process.stderr.write(d);
    });
    const timer = opts.timeoutMs ? setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs) : undefined;
    p.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function aptInstall(packages: string[]): Promise<void> {
  if (!have('apt-get')) throw new Error(`${packages.join(', ')} missing and apt-get is not available: install them by hand`);
  process.stderr.write(`installing ${packages.join(' ')} with apt-get ...\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = await runCommand('apt-get', ['update', '-qq'], { env });
  if (update.code !== 0) throw new Error(`apt-get update failed:\n${update.stderr.slice(-2000)}`);
  const install = await runCommand('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], { env });
  if (install.code !== 0) throw new Error(`apt-get install ${packages.join(' ')} failed:\n${install.stderr.slice(-2000)}`);
}

// Built in a temp dir beside the root and renamed into place, under a lock:
// a half-built root is never used, and two test runs never build at once.
const BUILD = `set -euo pipefail
root=$1; mirror=$2; ready=$3
mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9
[ -e "$root/$ready" ] && exit 0
tmp=$(mktemp -d "$root.build.XXXXXX")
trap 'for m in proc sys dev/pts; do umount "$tmp/$m" 2>/dev/null || true; done; rm -rf --one-file-system "$tmp"' EXIT
debootstrap --variant=minbase trixie "$tmp" "$mirror"
chroot "$tmp" apt-get update -qq
chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-moto python3-flask-cors
chroot "$tmp" apt-get clean
chroot "$tmp" python3 -c 'import moto.server, flask_cors'
touch "$tmp/$ready"
rm -rf --one-file-system "$root"
mv -T "$tmp" "$root"
trap - EXIT
`;

/** Build the cached trixie root with moto once (about a minute; later runs reuse it). */
export async function ensureMotoRoot(root = MOTO_ROOT): Promise<string> {
  const missing = [['debootstrap', 'debootstrap'], ['ip', 'iproute2'], ['flock', 'util-linux']].filter(([bin]) => !have(bin)).map(([, pkg]) => pkg);
  if (missing.length) await aptInstall(missing);
  if (existsSync(join(root, READY))) return root;
  process.stderr.write(`building the moto root ${root} (debootstrap trixie + python3-moto, once) ...\n`);
  const built = await runCommand('bash', ['-c', BUILD, 'build-moto-root', root, MIRROR, READY], { show: true });
  if (built.code !== 0 || !existsSync(join(root, READY))) throw new Error(`building the moto root ${root} failed (exit ${built.code}):\n${built.stderr.slice(-3000)}`);
  return root;
}

export interface MotoServer {
  /** Network namespace the server (and every client of it) runs in. */
  namespace: string;
  endpoint: string;
  /** Environment for an AWS SDK client of this server. */
  env: Record<string, string>;
  /** Run a command inside the namespace with the client environment. */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; cwd?: string }): Promise<Ran>;
  /** What the server printed (its request log), for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

/** Start moto in a fresh namespace with only loopback; resolves once it answers. */
export async function startMoto(root: string): Promise<MotoServer> {
  const namespace = `rampart-moto-${process.pid}`;
  const RECORDING = `moto-recording-${process.pid}.jsonl`;
  const endpoint = `http://127.0.0.1:${MOTO_PORT}`;
  const env: Record<string, string> = {
    AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_EC2: endpoint, AWS_EC2_METADATA_DISABLED: 'true',
  };
  spawnSync('ip', ['netns', 'del', namespace], { stdio: 'ignore' }); // a leftover of a killed run with the same pid
  const add = spawnSync('ip', ['netns', 'add', namespace], { encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`ip netns add ${namespace} failed: ${add.stderr}`);
  let server: ChildProcess | undefined;
  let output = '';
  const stop = async (): Promise<void> => {
    if (server && server.exitCode === null && server.signalCode === null) {
      const exited = new Promise<void>((r) => server!.once('exit', () => r()));
      server.kill('SIGTERM');
      const t = setTimeout(() => server!.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    spawnSync('ip', ['netns', 'del', namespace], { stdio: 'ignore' });
    rmSync(join(root, 'tmp', RECORDING), { force: true });
  };
  try {
    const lo = spawnSync('ip', ['netns', 'exec', namespace, 'ip', 'link', 'set', 'lo', 'up'], { encoding: 'utf8' });
    if (lo.status !== 0) throw new Error(`bringing up lo in ${namespace} failed: ${lo.stderr}`);
    // ip netns exec and chroot both exec: the child's pid is python's.
    // The request recorder's file lives in the root's /tmp; removed again by stop().
    server = spawn('ip', ['netns', 'exec', namespace, 'chroot', root, 'python3', '-m', 'moto.server', '-H', '127.0.0.1', '-p', String(MOTO_PORT)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8', MOTO_RECORDER_FILEPATH: `/tmp/${RECORDING}` },
    });
    server.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    server.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    // Nothing of this machine's AWS or proxy setup may reach into the namespace.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^AWS_|^(http|https|all|no)_proxy$/i.test(k)));
    const run = (cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}) =>
      runCommand('ip', ['netns', 'exec', namespace, cmd, ...args], { env: { ...inherited, ...env }, ...opts });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (server.exitCode !== null) throw new Error(`moto exited with ${server.exitCode}:\n${output.slice(-3000)}`);
      // moto answers its own API once every backend is loaded.
      const probe = await run('chroot', [root, 'python3', '-c', `import urllib.request; urllib.request.urlopen('${endpoint}/moto-api/', timeout=2)`]).catch(() => ({ code: 1 }));
      if (probe.code === 0) break;
      if (Date.now() > deadline) throw new Error(`moto did not answer on ${endpoint} within 60 s:\n${output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    return { namespace, endpoint, env, run, log: () => output, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
