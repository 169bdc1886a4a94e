// The Debian base rootfs every node is unpacked from: built once with
// debootstrap from the cluster's mirror and cached as a .tar.zst. Built in a
// temp dir and renamed into place, so an interrupted build never leaves a
// broken cache; a lock file keeps two concurrent runs from building twice.
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ProviderError } from '../../core/errors.ts';
import type { ProviderEvents } from '../../core/types.ts';
import { LISTS_STAMP } from '../../roles/lib/apt.ts';
import { pidAlive } from '../../core/state.ts';
import { acquireLock, run, unmountUnder } from './exec.ts';
import { lxcPath, type AptConf } from './lxc.ts';

/** How old the cached image is, for the plan: "built 3 h ago" (nodes refresh older package lists). */
export async function imageAge(suite: string): Promise<string> {
  const st = await stat(imagePath(suite)).catch(() => null);
  if (!st) return 'not built';
  const h = (Date.now() - st.mtimeMs) / 3_600_000;
  return `built ${h < 1 ? `${Math.round(h * 60)} min` : h < 48 ? `${h.toFixed(1)} h` : `${Math.round(h / 24)} days`} ago`;
}

/**
 * When the image's package lists (refreshed right before the image was packed,
 * stamped in it at LISTS_STAMP) are older than `maxAgeS`
 * (apt.cacheValidSeconds): what that means, for plan and apply to say; else null.
 */
export async function staleImageNote(suite: string, maxAgeS: number): Promise<string | null> {
  const st = await stat(imagePath(suite)).catch(() => null);
  if (!st || (Date.now() - st.mtimeMs) / 1000 <= maxAgeS) return null;
  return `${await imageAge(suite)}, its package lists are older than apt.cacheValidSeconds (${maxAgeS} s): each new node refreshes them at its first apply and installs the pending updates apt.upgrades asks for (delete ${imagePath(suite)} to rebuild it)`;
}

export const CACHE_DIR = process.env.RAMPART_IMAGE_CACHE ?? '/var/cache/rampart';
export const IMAGE_PACKAGES = ['systemd-sysv', 'openssh-server', 'sudo', 'iproute2', 'dbus', 'procps', 'ca-certificates', 'iptables'];

export function imagePath(suite: string): string {
  return join(CACHE_DIR, `${suite}-base.tar.zst`);
}

export function imageExists(suite: string): boolean {
  return existsSync(imagePath(suite));
}

/** Suites without -updates / -security archives (their apt-get update would fail with 404). */
const ROLLING_SUITES = new Set(['sid', 'unstable', 'experimental']);

/**
 * apt sources for a node: the suite, its updates and its security updates (where the
 * suite has them: sid has neither), all from the one mirror. `checkValidUntil: false`
 * marks each line [check-valid-until=no], for a mirror serving a frozen snapshot.
 * `root` is where apt fetches from: the mirror itself, or the package cache on the
 * node's gateway (cacheRoot in cache.ts: http://<gateway>:3142/<mirror>).
 */
export function aptSources(mirror: string, suite: string, checkValidUntil = true, root = `http://${mirror}`): string {
  const opt = checkValidUntil ? '' : '[check-valid-until=no] ';
  const lines = [`deb ${opt}${root}/debian ${suite} main`];
  if (!ROLLING_SUITES.has(suite)) {
    lines.push(`deb ${opt}${root}/debian ${suite}-updates main`, `deb ${opt}${root}/debian-security ${suite}-security main`);
  }
  return [...lines, ''].join('\n');
}

const SSH_KEYGEN_UNIT = `[Unit]
Description=Generate this node's SSH host keys (rampart base image ships none)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
`;

const UDEV_UNITS = [
  'systemd-udevd.service',
  'systemd-udevd-control.socket',
  'systemd-udevd-kernel.socket',
  'systemd-udev-trigger.service',
  'systemd-udev-settle.service',
];

/** Take the build lock, or wait for the other builder to finish. Returns false when the image appeared meanwhile. */
async function lock(lockPath: string, suite: string, events?: ProviderEvents): Promise<boolean> {
  return acquireLock(lockPath, 1000, (pid, attempt) => {
    if (attempt === 0) events?.progress?.(`waiting for another run (pid ${pid}) building the base image`);
    return imageExists(suite);
  });
}

/**
 * Build the base image if it is not cached; returns true when it built one.
 * `root`: where debootstrap fetches from (default the mirror itself; the package
 * cache on loopback, cacheRoot('127.0.0.1', mirror), when it is on: a rebuilt
 * image then downloads nothing already cached). `aptConf`: the nodes' apt
 * options (the cache's, when it is on), used by the image's update too.
 */
export async function ensureBaseImage(mirror: string, suite: string, events?: ProviderEvents, checkValidUntil = true, root = `http://${mirror}`, aptConf?: AptConf): Promise<boolean> {
  if (imageExists(suite)) return false;
  await mkdir(CACHE_DIR, { recursive: true, mode: 0o755 });
  const lockPath = join(CACHE_DIR, `${suite}-base.lock`);
  if (!(await lock(lockPath, suite, events))) return false;
  const work = join(CACHE_DIR, `.build-${suite}-${process.pid}`);
  const rootfs = join(work, 'rootfs');
  try {
    if (imageExists(suite)) return false;
    await removeStaleWork();
    await removeTree(work);
    await mkdir(rootfs, { recursive: true });
    // mktemp-like dirs are 0700: _apt and mysql then fail inside the node.
    await chmod(rootfs, 0o755);
    events?.progress?.(`building the ${suite} base image with debootstrap from ${root} (once, about 90 s)`);
    const t0 = Date.now();
    await run('debootstrap', ['--variant=minbase', `--include=${IMAGE_PACKAGES.join(',')}`, suite, rootfs, `${root}/debian`], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' },
      timeoutMs: 15 * 60_000,
      hint: `debootstrap needs the Debian mirror ${mirror} (provider.local.mirror) over HTTP${root === `http://${mirror}` ? '' : `, through the package cache (${root})`}`,
    });
    if (!existsSync(join(rootfs, 'usr/bin/systemctl')) || !existsSync(join(rootfs, 'usr/sbin/sshd'))) {
      throw new ProviderError(`debootstrap of ${suite} finished without systemd or sshd in ${rootfs}`, 'check the mirror and the suite name (provider.local.suite)');
    }
    await upgradeImage(rootfs, mirror, suite, checkValidUntil, root, aptConf, events);
    await configureImage(rootfs, mirror, suite, checkValidUntil);
    events?.progress?.(`packing the base image (debootstrap and updates took ${Math.round((Date.now() - t0) / 1000)} s)`);
    const tmp = join(work, 'image.tar.zst');
    await run('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-I', 'zstd -T0 -3', '-cpf', tmp, '-C', rootfs, '.']);
    await chmod(tmp, 0o644);
    await rename(tmp, imagePath(suite));
    return true;
  } finally {
    await removeTree(work).catch(() => undefined);
    await unlink(lockPath).catch(() => undefined);
  }
}

/**
 * Bring the fresh rootfs up to date: debootstrap installs the suite's release
 * versions only, so every new node would otherwise download and install the
 * -updates and -security versions at its first apply (a dozen packages, 20-30 s
 * of each fresh converge on this kind of machine, on every node). Done once here,
 * in a chroot with nothing allowed to start (policy-rc.d), through `root` (the
 * mirror, or the package cache). The package lists stay in the image when they
 * name the mirror the nodes use: a node made within apt.cacheValidSeconds then
 * installs without refreshing them.
 */
async function upgradeImage(rootfs: string, mirror: string, suite: string, checkValidUntil: boolean, root: string, aptConf: AptConf | undefined, events?: ProviderEvents): Promise<void> {
  events?.progress?.(`bringing the ${suite} base image up to date (apt-get dist-upgrade in it)`);
  await writeFile(join(rootfs, 'etc/apt/sources.list'), aptSources(mirror, suite, checkValidUntil, root));
  // the build resolves the mirror as the host does (configureImage then leaves the image without DNS)
  await rm(join(rootfs, 'etc/resolv.conf'), { force: true });
  await copyFile('/etc/resolv.conf', join(rootfs, 'etc/resolv.conf')).catch(() => undefined);
  const policy = join(rootfs, 'usr/sbin/policy-rc.d');
  await writeFile(policy, '#!/bin/sh\n# rampart image build: nothing starts in the chroot\nexit 101\n', { mode: 0o755 });
  // the nodes' own apt options (through the cache: no pipelining, see cache.ts), for the build only
  const viaCache = root !== `http://${mirror}`;
  const conf = aptConf?.text ? join(rootfs, aptConf.path) : null;
  if (conf) await writeFile(conf, aptConf!.text);
  const proc = join(rootfs, 'proc');
  await run('mount', ['-t', 'proc', 'proc', proc]);
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C', HOME: '/root' };
  const apt = (args: string[]) => run('chroot', [rootfs, 'apt-get', '-q', '-y', ...args], {
    env,
    timeoutMs: 15 * 60_000,
    hint: `the base image's update needs the Debian mirror ${mirror} (provider.local.mirror)${viaCache ? `, through the package cache (${root})` : ''}`,
  });
  try {
    await apt(['update']);
    await apt(['-o', 'Dpkg::Options::=--force-confold', '-o', 'Dpkg::Options::=--force-unsafe-io', 'dist-upgrade']);
    await apt(['clean']);
  } finally {
    await run('umount', [proc]).catch(() => run('umount', ['-l', proc]).catch(() => undefined));
    await rm(policy, { force: true });
    if (conf) await rm(conf, { force: true });
  }
  // lists fetched through the cache name its URL, not the mirror's: the nodes refresh their own
  if (viaCache) {
    for (const f of await readdir(join(rootfs, 'var/lib/apt/lists')).catch(() => [] as string[])) {
      if (f !== 'partial' && f !== 'lock') await rm(join(rootfs, 'var/lib/apt/lists', f), { recursive: true, force: true });
    }
  }
}

/** rm -rf that first unmounts what is mounted inside (debootstrap mounts /proc and /sys in its target). */
async function removeTree(path: string): Promise<void> {
  await unmountUnder(path);
  await rm(path, { recursive: true, force: true });
}

/** Temp dirs of builds/unpacks whose process is gone (killed mid-way). */
async function removeStaleWork(): Promise<void> {
  const names = await readdir(CACHE_DIR).catch(() => [] as string[]);
  for (const n of names) {
    const m = /^\.(?:build|unpack)-.+?-(\d+)(?:-\d+)?$/.exec(n);
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) await removeTree(join(CACHE_DIR, n));
  }
}

async function forceSymlink(target: string, path: string): Promise<void> {
  await rm(path, { force: true });
  await symlink(target, path);
}

/** Make the rootfs a node template: no identity of its own, no udev, fresh host keys at first boot. */
async function configureImage(rootfs: string, mirror: string, suite: string, checkValidUntil: boolean): Promise<void> {
  const etc = join(rootfs, 'etc');
  // Identity is written per node.
  await writeFile(join(etc, 'machine-id'), '');
  await forceSymlink('/etc/machine-id', join(rootfs, 'var/lib/dbus/machine-id')).catch(() => undefined);
  for (const f of ['ssh_host_rsa_key', 'ssh_host_ecdsa_key', 'ssh_host_ed25519_key']) {
    await rm(join(etc, 'ssh', f), { force: true });
    await rm(join(etc, 'ssh', `${f}.pub`), { force: true });
  }
  await writeFile(join(etc, 'systemd/system/rampart-ssh-keygen.service'), SSH_KEYGEN_UNIT);
  for (const target of ['multi-user.target.wants', 'ssh.service.wants']) {
    await mkdir(join(etc, 'systemd/system', target), { recursive: true });
    await forceSymlink('/etc/systemd/system/rampart-ssh-keygen.service', join(etc, 'systemd/system', target, 'rampart-ssh-keygen.service'));
  }
  // No devices to manage in a container.
  for (const unit of UDEV_UNITS) await forceSymlink('/dev/null', join(etc, 'systemd/system', unit));
  // Nodes have no DNS: the mirror is pinned in /etc/hosts by the provider.
  await rm(join(etc, 'resolv.conf'), { force: true });
  await writeFile(join(etc, 'resolv.conf'), '# rampart nodes have no DNS; the package mirror is pinned in /etc/hosts\n');
  await writeFile(join(etc, 'apt/sources.list'), aptSources(mirror, suite, checkValidUntil));
  // when the image's package lists were made: a node refreshes them once they are older than
  // apt.cacheValidSeconds, or at once when its apt sources differ (they do: -updates, -security)
  await mkdir(join(rootfs, 'var/lib/rampart'), { recursive: true });
  await writeFile(join(rootfs, LISTS_STAMP), `${new Date().toISOString()}\n`);
  await rm(join(rootfs, 'var/cache/apt/archives'), { recursive: true, force: true });
  await mkdir(join(rootfs, 'var/cache/apt/archives/partial'), { recursive: true });
  const st = await stat(rootfs);
  if ((st.mode & 0o777) !== 0o755) await chmod(rootfs, 0o755);
}

/** The node layer of the current image of `suite` (named after the image file's mtime). */
async function layerPath(suite: string, cacheDir = CACHE_DIR): Promise<string> {
  const image = join(cacheDir, `${suite}-base.tar.zst`);
  return join(cacheDir, `${suite}-base.rootfs.${Math.floor((await stat(image)).mtimeMs)}`);
}

/**
 * Removes the layers of earlier images of `suite` that no container is built
 * on (of any cluster: every container config under the LXC path is read). A
 * rebuilt image leaves its predecessor's layer (hundreds of MB) in use until
 * the last node on it is gone; after that, the next teardown or new layer
 * removes it. Returns the paths removed.
 */
export async function pruneBaseLayers(suite: string, events?: ProviderEvents, where: { cacheDir?: string; lxcDir?: string } = {}): Promise<string[]> {
  const cacheDir = where.cacheDir ?? CACHE_DIR;
  const current = await layerPath(suite, cacheDir).catch(() => null);
  const layers = (await readdir(cacheDir).catch(() => [] as string[]))
    .filter((n) => n.startsWith(`${suite}-base.rootfs.`)).map((n) => join(cacheDir, n)).filter((p) => p !== current);
  if (layers.length === 0) return [];
  const dir = where.lxcDir ?? (await lxcPath());
  const configs = await Promise.all((await readdir(dir).catch(() => [] as string[])).map((n) => readFile(join(dir, n, 'config'), 'utf8').catch(() => '')));
  const removed: string[] = [];
  for (const p of layers) {
    if (configs.some((c) => c.includes(`overlay:${p}:`))) continue;
    events?.progress?.(`removing the unused base layer of an earlier image: ${p}`);
    await removeTree(p);
    removed.push(p);
  }
  return removed;
}

/**
 * The image unpacked once, read-only by convention: the shared lower layer of
 * every node's overlay rootfs (a node is then created in milliseconds and
 * holds only its own changes). Named after the image's mtime, so a rebuilt
 * image never changes the layer under existing nodes.
 */
export async function ensureBaseRootfs(suite: string, events?: ProviderEvents): Promise<{ path: string; created: boolean }> {
  const path = await layerPath(suite);
  if (existsSync(join(path, 'sbin/init')) || existsSync(join(path, 'usr/sbin/init'))) return { path, created: false };
  const tmp = join(CACHE_DIR, `.unpack-${suite}-${process.pid}-${Date.now()}`);
  await removeStaleWork();
  events?.progress?.(`unpacking the base image into the shared node layer ${path}`);
  try {
    await mkdir(tmp, { mode: 0o755 });
    await chmod(tmp, 0o755);
    await run('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-I', 'zstd', '-xpf', imagePath(suite), '-C', tmp]);
    try {
      await rename(tmp, path);
    } catch (e) {
      // Another run unpacked it at the same time: use theirs.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      return { path, created: false };
    }
    return { path, created: true };
  } finally {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}
