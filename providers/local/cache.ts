// The package cache on the controller: Debian's apt-cacher-ng, run by rampart
// itself (PID 1 may not be systemd) with a config of its own. One daemon
// serves every rampart cluster on this host: each cluster's `up` registers its
// bridge gateway and mirror, the daemon listens on loopback and on those
// gateways only, and serves only those mirrors' /debian and /debian-security
// (ForceManaged: no other host, no CONNECT). The cache store lives under the
// image cache folder and outlives the clusters, so a rebuilt cluster fetches
// no .deb again; the daemon stops when the last registered cluster goes down.
import { createHash } from 'node:crypto';
import { chown, mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { ProviderError } from '../../core/errors.ts';
import { CACHE_DIR } from './image.ts';
import { acquireLock, run } from './exec.ts';

export const CACHE_PACKAGE = 'apt-cacher-ng';
export const CACHE_PORT = 3142;
const DAEMON = '/usr/sbin/apt-cacher-ng';
const USER = 'apt-cacher-ng';
/** Config and the clusters' registrations. */
const CONF_DIR = process.env.RAMPART_PACKAGE_CACHE_CONF ?? '/var/lib/rampart/package-cache';
/** The downloaded files: kept by teardown (a rebuilt cluster downloads nothing). */
export const CACHE_STORE = join(CACHE_DIR, 'apt-cacher-ng');
/** apt-cacher.log: one line per transfer, `time|I|bytes|client|path` for bytes fetched from the mirror, `O` for bytes served. */
export const CACHE_LOG_DIR = '/var/log/rampart-apt-cacher-ng';
// not under /run/rampart (0700 root): the daemon runs as its own user
const RUN_DIR = '/run/rampart-apt-cacher-ng';
const PID_FILE = join(RUN_DIR, 'pid');

export interface CacheRegistration {
  /** The cluster's fence table: one registration per cluster. */
  table: string;
  gateway: string;
  mirror: string;
}

/**
 * apt options on a node using the cache: apt-cacher-ng 3.7 sometimes answers
 * one of several simultaneous requests for the same index file (the nodes of a
 * fresh cluster refresh at once) with an empty body, and a pipelined apt then
 * waited for ever; no pipelining, a read timeout and retries make it fetch again.
 */
export const APT_CACHE_CONF_PATH = '/etc/apt/apt.conf.d/80rampart-package-cache';
export const APT_CACHE_CONF = `// managed by rampart: the package cache on the gateway (providers/local/cache.ts)
Acquire::http::Pipeline-Depth "0";
Acquire::http::Timeout "30";
Acquire::Retries "3";
`;

/** The apt URL root a node uses for `mirror` through the cache on its gateway. */
export function cacheRoot(gateway: string, mirror: string): string {
  return `http://${gateway}:${CACHE_PORT}/${mirror}`;
}

const remapName = (kind: string, mirror: string) => `${kind}_${mirror.replace(/[^A-Za-z0-9]/g, '_')}`;

/** acng.conf for these registrations (pure; sorted, so the same set gives the same text). */
export function cacheConfig(regs: CacheRegistration[]): string {
  const gateways = [...new Set(regs.map((r) => r.gateway))].sort();
  const mirrors = [...new Set(regs.map((r) => r.mirror))].sort();
  return [
    '# managed by rampart: the package cache for its local nodes (providers/local/cache.ts)',
    `CacheDir: ${CACHE_STORE}`,
    `LogDir: ${CACHE_LOG_DIR}`,
    `Port: ${CACHE_PORT}`,
    `BindAddress: 127.0.0.1 ${gateways.join(' ')}`.trimEnd(),
    // only the remapped mirrors below are served: no other host, no CONNECT (PassThroughPattern unset)
    'ForceManaged: 1',
    ...mirrors.flatMap((m) => [
      `Remap-${remapName('deb', m)}: http://${m}/debian ; http://${m}/debian`,
      `Remap-${remapName('sec', m)}: http://${m}/debian-security ; http://${m}/debian-security`,
    ]),
    'ExThreshold: 4',
    'VerboseLog: 1',
    'UnbufferLogs: 1',
    '',
  ].join('\n');
}

/**
 * IPv4 addresses on this host's interfaces: a registration whose gateway is gone
 * (a bridge removed without down) is left out. From getifaddrs (no `ip` process:
 * this runs on every apply, and a spawn was most of a no-op's cache check).
 */
function hostAddresses(): Set<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((l) => (l ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address)));
}

async function registrations(): Promise<CacheRegistration[]> {
  const dir = join(CONF_DIR, 'clusters');
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: CacheRegistration[] = [];
  for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
    try {
      out.push(JSON.parse(await readFile(join(dir, n), 'utf8')) as CacheRegistration);
    } catch { /* a torn file: ignored, rewritten by its cluster's next up */ }
  }
  const live = hostAddresses();
  return out.filter((r) => live.has(r.gateway));
}

async function daemonPid(): Promise<number | null> {
  const pid = Number((await readFile(PID_FILE, 'utf8').catch(() => '')).trim());
  if (!pid) return null;
  const exe = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return exe.split('\0')[0].endsWith('apt-cacher-ng') ? pid : null;
}

function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(1000, () => { s.destroy(); resolve(false); });
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

const digest = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

export type CacheState = 'missing' | 'differs' | 'ok';

/** Is the daemon running with a config that includes this registration? */
export async function cacheState(reg: CacheRegistration): Promise<CacheState> {
  const regs = (await registrations()).filter((r) => r.table !== reg.table);
  const want = cacheConfig([...regs, reg]);
  const pid = await daemonPid();
  if (!pid) return 'missing';
  const running = (await readFile(join(RUN_DIR, 'config.digest'), 'utf8').catch(() => '')).trim();
  return running === digest(want) ? 'ok' : 'differs';
}

async function stopDaemon(): Promise<boolean> {
  const pid = await daemonPid();
  if (!pid) return false;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && (await daemonPid()); i++) await new Promise((r) => setTimeout(r, 100));
  if (await daemonPid()) process.kill(pid, 'SIGKILL');
  await rm(PID_FILE, { force: true });
  return true;
}

async function startDaemon(config: string, gateways: string[]): Promise<void> {
  const ids = await run('id', ['-u', USER]).then((r) => Number(r.stdout.trim()));
  const gid = await run('id', ['-g', USER]).then((r) => Number(r.stdout.trim()));
  for (const d of [CACHE_STORE, CACHE_LOG_DIR, RUN_DIR]) {
    await mkdir(d, { recursive: true, mode: 0o750 });
    await chown(d, ids, gid);
  }
  await mkdir(CONF_DIR, { recursive: true, mode: 0o755 });
  await writeFile(join(CONF_DIR, 'acng.conf'), config, { mode: 0o644 });
  // the daemon drops to its own user (as Debian's init script runs it) and detaches itself
  await run('start-stop-daemon', [
    '--start', '--chuid', USER, '--group', USER, '--pidfile', PID_FILE, '--exec', DAEMON, '--',
    '-c', CONF_DIR, `pidfile=${PID_FILE}`, `SocketPath=${join(RUN_DIR, 'socket')}`, 'foreground=0',
  ], { hint: `${CACHE_PACKAGE} is installed with the host packages; set provider.local.packageCache: false to go without it` });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await Promise.all(['127.0.0.1', ...gateways].map((h) => answers(h, CACHE_PORT)));
    if (up.every(Boolean)) break;
    if (Date.now() > deadline) {
      throw new ProviderError(`the package cache (${CACHE_PACKAGE}) does not answer on port ${CACHE_PORT} of ${['127.0.0.1', ...gateways].filter((_, i) => !up[i]).join(', ')}`,
        `is another program on port ${CACHE_PORT}? see ${CACHE_LOG_DIR}/apt-cacher.err, or set provider.local.packageCache: false`);
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  await writeFile(join(RUN_DIR, 'config.digest'), `${digest(config)}\n`, { mode: 0o644 });
}

/** Two clusters' up/down at once would both (re)start the daemon: one at a time (a dead holder's lock is taken over). */
async function locked<T>(fn: () => Promise<T>): Promise<T> {
  await mkdir(CONF_DIR, { recursive: true, mode: 0o755 });
  const path = join(CONF_DIR, 'lock');
  await acquireLock(path, 100, (pid, attempt) => {
    if (attempt > 600) throw new ProviderError(`the package cache is locked by process ${pid} for over a minute`, `remove ${path} if that process is gone`);
    return false;
  });
  try {
    return await fn();
  } finally {
    await unlink(path).catch(() => undefined);
  }
}

/**
 * Register this cluster and make the daemon serve it: started when not
 * running, restarted when the set of gateways/mirrors changed (a transfer in
 * flight for another cluster is then cut; apt's retry in the install fetches
 * it again). Returns what it did.
 */
export async function ensurePackageCache(reg: CacheRegistration): Promise<CacheState> {
  // the no-op case without the lock or a write: registered as it is and served by the running daemon
  const registered = await readFile(join(CONF_DIR, 'clusters', `${reg.table}.json`), 'utf8').catch(() => '');
  if (registered === registrationText(reg) && (await cacheState(reg)) === 'ok') return 'ok';
  return locked(() => ensureLocked(reg));
}

const registrationText = (reg: CacheRegistration) => JSON.stringify(reg) + '\n';

async function ensureLocked(reg: CacheRegistration): Promise<CacheState> {
  const state = await cacheState(reg);
  await mkdir(join(CONF_DIR, 'clusters'), { recursive: true, mode: 0o755 });
  await writeFile(join(CONF_DIR, 'clusters', `${reg.table}.json`), registrationText(reg), { mode: 0o644 });
  if (state === 'ok') return state;
  const regs = await registrations();
  await stopDaemon();
  await startDaemon(cacheConfig(regs), [...new Set(regs.map((r) => r.gateway))]);
  return state;
}

/**
 * Unregister this cluster (down). The daemon is restarted without its gateway,
 * or stopped when no cluster is left; the cache store stays. Returns what it did, or null.
 */
export async function releasePackageCache(table: string): Promise<'stopped' | 'restarted' | null> {
  if (!(await readFile(join(CONF_DIR, 'clusters', `${table}.json`)).then(() => true, () => false))) return null;
  return locked(() => releaseLocked(table));
}

async function releaseLocked(table: string): Promise<'stopped' | 'restarted' | null> {
  const path = join(CONF_DIR, 'clusters', `${table}.json`);
  const had = await readFile(path, 'utf8').then(() => true, () => false);
  if (!had) return null;
  await rm(path, { force: true });
  const regs = await registrations();
  const wasRunning = await stopDaemon();
  if (regs.length === 0) return wasRunning ? 'stopped' : null;
  await startDaemon(cacheConfig(regs), [...new Set(regs.map((r) => r.gateway))]);
  return 'restarted';
}
