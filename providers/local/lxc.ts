// LXC containers of one cluster: create from the cached base image, start,
// wait for SSH, stop and destroy. A marker file beside each container's
// config says which cluster owns it, so `down` never touches anyone else's.
import { randomBytes } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ProviderError } from '../../core/errors.ts';
import { run } from './exec.ts';

let lxcPathCache: string | undefined;

export async function lxcPath(): Promise<string> {
  if (!lxcPathCache) {
    const res = await run('lxc-config', ['lxc.lxcpath'], { check: false });
    lxcPathCache = res.code === 0 && res.stdout.trim() ? res.stdout.trim() : '/var/lib/lxc';
  }
  return lxcPathCache;
}

export interface Marker {
  cluster: string;
  node: string;
  address: string;
  /** false while the container is being created: a leftover is rebuilt. */
  complete: boolean;
}

export interface ContainerInfo {
  name: string;
  marker: Marker | null;
  running: boolean;
}

const MARKER = 'rampart.json';

async function readMarker(dir: string): Promise<Marker | null> {
  try {
    return JSON.parse(await readFile(join(dir, MARKER), 'utf8')) as Marker;
  } catch {
    return null;
  }
}

/** Names of running containers. */
export async function runningContainers(): Promise<Set<string>> {
  const res = await run('lxc-ls', ['-1', '--running'], { check: false });
  return new Set(res.stdout.split(/\s+/).filter(Boolean));
}

/** Containers owned by this cluster (by marker) plus any container with one of the given names. */
export async function listContainers(cluster: string, names: string[]): Promise<Map<string, ContainerInfo>> {
  const base = await lxcPath();
  const entries = await readdir(base).catch(() => [] as string[]);
  const running = await runningContainers();
  const out = new Map<string, ContainerInfo>();
  await Promise.all(entries.map(async (name) => {
    const marker = await readMarker(join(base, name));
    if (marker?.cluster === cluster || names.includes(name)) {
      out.set(name, { name, marker, running: running.has(name) });
    }
  }));
  return out;
}

// ------------------------------------------------------------------ files inside a rootfs

/** Refuse to follow a symlink planted inside a node's rootfs. */
async function safeWrite(path: string, content: string, mode: number, opts: { keepSame?: boolean } = {}): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (st?.isSymbolicLink()) await rm(path);
  else if (opts.keepSame && st?.isFile() && (st.mode & 0o7777) === mode && (await readFile(path, 'utf8').catch(() => null)) === content) return;
  const tmp = `${path}.rampart-tmp`;
  await rm(tmp, { force: true });
  await writeFile(tmp, content, { mode, flag: 'wx' }); // never through a planted link
  await chmod(tmp, mode);
  await rename(tmp, path);
}

/** A file under the node's /etc/apt/apt.conf.d that rampart owns; empty text = the file must not exist. */
export interface AptConf {
  path: string;
  text: string;
}

const HOSTS_BEGIN = '# BEGIN rampart: package mirror (no DNS on nodes)';
const HOSTS_END = '# END rampart';

/** /etc/hosts with the mirror pinned in a managed block; the rest of the file is kept. */
export function hostsWithMirror(current: string, mirror: string, addrs: string[]): string {
  const block = [HOSTS_BEGIN, ...addrs.map((a) => `${a} ${mirror}`), HOSTS_END].join('\n');
  const re = new RegExp(`${HOSTS_BEGIN.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[\\s\\S]*?${HOSTS_END}\\n?`);
  if (re.test(current)) return current.replace(re, `${block}\n`);
  return `${current.replace(/\n*$/, '\n')}${block}\n`;
}

/** Where a container's root filesystem can be read and written from the host. */
interface RootfsAccess {
  path: string;
  release(): Promise<void>;
}

async function containerPid(name: string): Promise<number | null> {
  const res = await run('lxc-info', ['-p', '-H', '-n', name], { check: false });
  const pid = Number(res.stdout.trim());
  return res.code === 0 && pid > 0 ? pid : null;
}

async function rootfsSpec(dir: string): Promise<string> {
  const config = await readFile(join(dir, 'config'), 'utf8');
  const m = /^lxc\.rootfs\.path\s*=\s*(.+)$/m.exec(config);
  if (!m) throw new ProviderError(`${join(dir, 'config')} has no lxc.rootfs.path`);
  return m[1].trim();
}

async function mountOverlay(lower: string, upper: string, work: string, target: string): Promise<void> {
  await mkdir(work, { recursive: true, mode: 0o755 });
  await mkdir(target, { recursive: true, mode: 0o755 });
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, target], {
    hint: 'nodes are overlayfs clones of the base image: the kernel needs overlay support (modprobe overlay)',
  });
}

/**
 * The container's rootfs as the node sees it: through /proc/<pid>/root when it
 * runs (never touch an overlay's upper dir under a live mount), through a
 * short-lived overlay mount when it is stopped.
 */
async function openRootfs(name: string): Promise<RootfsAccess> {
  const dir = join(await lxcPath(), name);
  const pid = await containerPid(name);
  if (pid) return { path: `/proc/${pid}/root`, release: async () => undefined };
  const spec = await rootfsSpec(dir);
  if (spec.startsWith('dir:') || spec.startsWith('/')) return { path: spec.replace(/^dir:/, ''), release: async () => undefined };
  const [kind, lower, upper] = spec.split(':');
  if (kind !== 'overlay' && kind !== 'overlayfs') throw new ProviderError(`${name}: unsupported rootfs ${spec}`);
  const target = join(dir, 'setup-mnt');
  await mountOverlay(lower, upper, join(dir, 'work'), target);
  return { path: target, release: () => run('umount', [target]).then(() => rmdir(target).catch(() => undefined)) };
}

/**
 * Point a container at the mirror: the pin in /etc/hosts (the nodes have no
 * DNS) and the apt sources. True when a file changed (or, with write=false,
 * would change).
 */
export async function syncMirror(name: string, mirror: string, addrs: string[], sources: string, write = true, aptConf: AptConf | null = null): Promise<boolean> {
  const root = await openRootfs(name);
  try {
    let changed = false;
    const hosts = join(root.path, 'etc/hosts');
    const current = await readFile(hosts, 'utf8').catch(() => '');
    const next = hostsWithMirror(current, mirror, addrs);
    if (next !== current) {
      if (write) await safeWrite(hosts, next, 0o644);
      changed = true;
    }
    if (aptConf) {
      const conf = join(root.path, aptConf.path);
      const have = await readFile(conf, 'utf8').catch(() => null);
      if (have !== (aptConf.text || null)) {
        if (write) await (aptConf.text ? safeWrite(conf, aptConf.text, 0o644) : rm(conf, { force: true }));
        changed = true;
      }
    }
    const list = join(root.path, 'etc/apt/sources.list');
    if ((await readFile(list, 'utf8').catch(() => '')) !== sources) {
      if (write) await safeWrite(list, sources, 0o644);
      changed = true;
    }
    return changed;
  } finally {
    await root.release();
  }
}

// ------------------------------------------------------------------ create / start / stop

/** A node's SSH host key in the state folder (0600), made on first use. */
export async function ensureHostKey(dir: string, container: string, hostname: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const path = join(dir, `${container}_ed25519`);
  const have = await readFile(`${path}.pub`, 'utf8').then(() => readFile(path, 'utf8')).then(() => true, () => false);
  if (!have) {
    await rm(path, { force: true });
    await rm(`${path}.pub`, { force: true });
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `root@${hostname}`, '-f', path]);
  }
  await chmod(path, 0o600);
  return path;
}

export async function forgetHostKey(dir: string, container: string): Promise<void> {
  const path = join(dir, `${container}_ed25519`);
  await rm(path, { force: true });
  await rm(`${path}.pub`, { force: true });
  await rmdir(dir).catch(() => undefined); // only when empty
}

export interface CreateOptions {
  name: string;
  cluster: string;
  node: string;
  hostname: string;
  address: string;
  prefix: number;
  gateway: string;
  bridge: string;
  /** The unpacked base image: the read-only lower layer of the node's overlay. */
  baseRootfs: string;
  adminUser: string;
  publicKey: string;
  mirror: string;
  mirrorAddrs: string[];
  /** apt sources.list content for the cluster's mirror. */
  aptSources: string;
  /** An apt.conf.d file (text '' = none). */
  aptConf?: AptConf;
  /** The node's SSH host key (private; `.pub` beside it) on the controller. */
  hostKeyPath: string;
}

function containerConfig(o: CreateOptions, dir: string): string {
  // debian.common.conf (lxc-templates) is common.conf plus an empty tty.dir;
  // inlined so the lxc-templates package is not needed.
  return [
    `# rampart: node ${o.node} of cluster ${o.cluster}`,
    'lxc.include = /usr/share/lxc/config/common.conf',
    'lxc.tty.dir =',
    'lxc.arch = linux64',
    'lxc.apparmor.profile = unconfined',
    `lxc.rootfs.path = overlay:${o.baseRootfs}:${join(dir, 'delta0')}`,
    `lxc.uts.name = ${o.hostname}`,
    'lxc.net.0.type = veth',
    `lxc.net.0.link = ${o.bridge}`,
    'lxc.net.0.flags = up',
    'lxc.net.0.name = eth0',
    `lxc.net.0.ipv4.address = ${o.address}/${o.prefix}`,
    `lxc.net.0.ipv4.gateway = ${o.gateway}`,
    `lxc.log.file = ${join(dir, 'lxc.log')}`,
    'lxc.log.level = WARN',
    '',
  ].join('\n');
}

const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

export async function createContainer(o: CreateOptions): Promise<void> {
  if (!USER_RE.test(o.adminUser)) throw new ProviderError(`adminUser ${o.adminUser} is not a valid Linux user name`);
  if ([o.baseRootfs, o.name].some((p) => p.includes(':') || p.includes(','))) {
    throw new ProviderError(`paths with ':' or ',' cannot be used for an overlay rootfs: ${o.baseRootfs}, ${o.name}`);
  }
  const dir = join(await lxcPath(), o.name);
  const upper = join(dir, 'delta0');
  await rm(dir, { recursive: true, force: true });
  await mkdir(upper, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o770);
  await chmod(upper, 0o755); // the node's / : _apt and mysql need 755, not the umask's choice
  const marker: Marker = { cluster: o.cluster, node: o.node, address: o.address, complete: false };
  await writeFile(join(dir, MARKER), JSON.stringify(marker) + '\n', { mode: 0o644 });

  const rootfs = join(dir, 'setup-mnt');
  await mountOverlay(o.baseRootfs, upper, join(dir, 'work'), rootfs);
  try {
    const etc = join(rootfs, 'etc');
    await safeWrite(join(etc, 'hostname'), `${o.hostname}\n`, 0o644);
    await safeWrite(join(etc, 'machine-id'), `${randomBytes(16).toString('hex')}\n`, 0o444);
    const hosts = `127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n${o.address} ${o.hostname}\n`;
    await safeWrite(join(etc, 'hosts'), hostsWithMirror(hosts, o.mirror, o.mirrorAddrs), 0o644);
    // the image's own when the same: its mtime then stays older than the image's package-list
    // stamp, and the node installs from the lists the image came with (no apt-get update first)
    await safeWrite(join(etc, 'apt/sources.list'), o.aptSources, 0o644, { keepSame: true });
    if (o.aptConf?.text) await safeWrite(join(rootfs, o.aptConf.path), o.aptConf.text, 0o644);

    // The node's SSH host key comes from the controller's state folder: made
    // there once (ed25519, milliseconds, where first-boot `ssh-keygen -A`
    // would spend seconds on RSA), it survives a recreated node, so the
    // engine's pinned host key stays valid. Only this key is offered.
    const hostKey = join(etc, 'ssh/ssh_host_ed25519_key');
    await safeWrite(hostKey, await readFile(o.hostKeyPath, 'utf8'), 0o600);
    await safeWrite(`${hostKey}.pub`, await readFile(`${o.hostKeyPath}.pub`, 'utf8'), 0o644);
    await mkdir(join(etc, 'ssh/sshd_config.d'), { recursive: true, mode: 0o755 });
    await safeWrite(join(etc, 'ssh/sshd_config.d/10-rampart-hostkey.conf'), 'HostKey /etc/ssh/ssh_host_ed25519_key\n', 0o644);

    // The admin user (EC2 images log in as `ubuntu`): passwordless sudo, our key.
    let home = '/root';
    let uid = 0;
    let gid = 0;
    if (o.adminUser !== 'root') {
      await run('chroot', [rootfs, 'useradd', '--create-home', '--user-group', '--shell', '/bin/bash', o.adminUser]);
      const ids = await run('chroot', [rootfs, 'id', '-u', o.adminUser]);
      const gids = await run('chroot', [rootfs, 'id', '-g', o.adminUser]);
      uid = Number(ids.stdout.trim());
      gid = Number(gids.stdout.trim());
      home = `/home/${o.adminUser}`;
      await safeWrite(join(etc, 'sudoers.d', `90-rampart-${o.adminUser}`), `${o.adminUser} ALL=(ALL) NOPASSWD:ALL\n`, 0o440);
    }
    const sshDir = join(rootfs, home, '.ssh');
    await mkdir(sshDir, { recursive: true, mode: 0o700 });
    await chmod(sshDir, 0o700);
    await chown(sshDir, uid, gid);
    const ak = join(sshDir, 'authorized_keys');
    await safeWrite(ak, `${o.publicKey.trim()}\n`, 0o600);
    await chown(ak, uid, gid);
  } finally {
    await run('umount', [rootfs]);
    await rmdir(rootfs).catch(() => undefined);
  }

  await writeFile(join(dir, 'config'), containerConfig(o, dir), { mode: 0o640 });
  await writeFile(join(dir, MARKER), JSON.stringify({ ...marker, complete: true }) + '\n', { mode: 0o644 });
}

/**
 * Put a running container's host-side veth back on the bridge (after the
 * bridge was deleted and recreated under it). True when it had to.
 */
export async function reattachVeth(name: string, bridge: string): Promise<boolean> {
  const link = await detachedVeth(name, bridge);
  if (!link) return false;
  await run('ip', ['link', 'set', 'dev', link, 'master', bridge]);
  await run('ip', ['link', 'set', 'dev', link, 'up']);
  return true;
}

/** A running container's host-side veth when it is not on the bridge (reads only); null when it is, or there is none. */
export async function detachedVeth(name: string, bridge: string): Promise<string | null> {
  const info = await run('lxc-info', ['-n', name], { check: false });
  const link = /^Link:\s*(\S+)/m.exec(info.stdout)?.[1];
  if (!link) return null;
  const res = await run('ip', ['-j', 'link', 'show', 'dev', link], { check: false });
  const master = res.code === 0 ? (JSON.parse(res.stdout) as { master?: string }[])[0]?.master : undefined;
  return master === bridge ? null : link;
}

// ------------------------------------------------------------------ a node's container as a resource

/** What the container resource's check reads: the container found (if any) and, for an existing one, its drift. */
export interface ContainerFacts {
  info?: ContainerInfo;
  /** The node's /etc/hosts pin, apt sources or apt.conf file differ from the wanted ones. */
  mirrorStale?: boolean;
  /** Its veth is off the bridge (read only when the bridge was not as wanted). */
  vethDetached?: boolean;
}

/** What up() does to a node's container. */
export type ContainerTodo =
  | { kind: 'create'; info?: ContainerInfo }
  | { kind: 'repair'; sync: boolean; reattach: boolean; start: boolean };

/** The container's check, from its facts: ok, or create / recreate / repair (pin, veth, start). */
export function containerDrift(address: string, f: ContainerFacts):
  | { action: 'ok'; detail: string }
  | { action: 'create' | 'change'; detail: string; data: ContainerTodo } {
  const c = f.info;
  if (!c) return { action: 'create', detail: `${address}, then start`, data: { kind: 'create' } };
  if (!c.marker?.complete) return { action: 'change', detail: `recreate (incomplete), ${address}`, data: { kind: 'create', info: c } };
  if (c.marker.address !== address) return { action: 'change', detail: `recreate: address ${c.marker.address} -> ${address}`, data: { kind: 'create', info: c } };
  const sync = !!f.mirrorStale;
  const reattach = c.running && !!f.vethDetached;
  const start = !c.running;
  if (!sync && !reattach && !start) return { action: 'ok', detail: address };
  const detail = [
    start && 'start',
    reattach && 're-attach to the bridge',
    sync && 'rewrite mirror pin (/etc/hosts) and apt sources',
  ].filter(Boolean).join('; ');
  return { action: 'change', detail, data: { kind: 'repair', sync, reattach, start } };
}

export async function startContainer(name: string): Promise<void> {
  const dir = join(await lxcPath(), name);
  const res = await run('lxc-start', ['-n', name], { check: false, timeoutMs: 60_000 });
  if (res.code !== 0) {
    const log = (await readFile(join(dir, 'lxc.log'), 'utf8').catch(() => '')).trim().split('\n').slice(-5).join('\n');
    throw new ProviderError(`lxc-start ${name} failed: ${(res.stderr.trim() || log).slice(0, 1500)}`,
      `see ${join(dir, 'lxc.log')}, or run \`lxc-start -n ${name} -F -l DEBUG\``);
  }
}

/**
 * Kill and remove a container. Its folder holds only its own layer (config,
 * delta0, work): the shared base layer lives in the image cache and is
 * never touched.
 */
export async function destroyContainer(name: string): Promise<void> {
  const dir = join(await lxcPath(), name);
  if (await containerPid(name)) {
    const res = await run('lxc-stop', ['-k', '-n', name], { check: false, timeoutMs: 60_000 });
    if (res.code !== 0 && (await containerPid(name))) {
      throw new ProviderError(`lxc-stop ${name} failed: ${res.stderr.trim()}`, `try \`lxc-stop -k -n ${name}\` by hand`);
    }
  }
  // A setup mount left by an interrupted create.
  await run('umount', [join(dir, 'setup-mnt')], { check: false });
  await rm(dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ SSH readiness

/** Read the SSH banner from address:22 once; resolves true when it starts with SSH-. */
export function sshBanner(address: string, port = 22, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: address, port });
    let buf = '';
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.length >= 4) done(buf.startsWith('SSH-'));
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

/** Wait until sshd answers on address:22, bounded. */
export async function waitForSsh(node: string, address: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await sshBanner(address)) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new ProviderError(`node ${node} (${address}) did not answer SSH within ${Math.round(timeoutMs / 1000)} s`,
    `look inside: lxc-attach -n <cluster>-${node} -- systemctl status ssh`);
}

/** One SSH login running `true` with the project key (retried while sshd settles). */
export async function sshLogin(node: string, address: string, user: string, keyPath: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const res = await run('ssh', [
      '-i', keyPath, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', `${user}@${address}`, 'true',
    ], { check: false, timeoutMs: 15_000 }).catch((e: Error) => ({ code: 255, stderr: e.message, stdout: '' }));
    if (res.code === 0) return;
    last = res.stderr.trim();
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new ProviderError(`node ${node} (${address}): SSH login as ${user} failed: ${last}`, 'check the key in .rampart/id_ed25519 and the node\'s authorized_keys');
}
