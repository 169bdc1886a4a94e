// Host prerequisites: Linux, root, and the Debian packages the provider drives
// (installed with apt when missing).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProviderError } from '../../core/errors.ts';
import type { ProviderEvents } from '../../core/types.ts';
import { run } from './exec.ts';

export const HOST_PACKAGES = ['lxc', 'debootstrap', 'nftables', 'iptables', 'rsync', 'openssh-client', 'zstd'];

/** The host packages a cluster needs: apt-cacher-ng too with provider.local.packageCache. */
export function hostPackages(packageCache: boolean): string[] {
  return packageCache ? [...HOST_PACKAGES, 'apt-cacher-ng'] : HOST_PACKAGES;
}

export function checkPlatform(): void {
  if (process.platform !== 'linux') {
    throw new ProviderError(`the local provider needs Linux (this is ${process.platform})`, 'use provider.type: aws in cluster.yaml, or run on a Linux machine');
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new ProviderError('the local provider needs root (it creates LXC containers, a bridge and nftables rules)', 'run it as root, e.g. `sudo npx zx apply`');
  }
}

/** The command each package provides (what is checked where there is no dpkg). */
const PACKAGE_COMMANDS: Record<string, string> = {
  lxc: 'lxc-start', debootstrap: 'debootstrap', nftables: 'nft', iptables: 'iptables',
  rsync: 'rsync', 'openssh-client': 'ssh-keygen', zstd: 'zstd', 'apt-cacher-ng': 'apt-cacher-ng',
};

function onPath(cmd: string): boolean {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d && existsSync(join(d, cmd)));
}

/** Host packages that are not installed (dpkg's view; the commands on PATH without dpkg). */
export async function missingHostPackages(packages: string[] = HOST_PACKAGES): Promise<string[]> {
  const res = await run('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\n', ...packages], { check: false }).catch(() => null);
  if (!res) return packages.filter((p) => !onPath(PACKAGE_COMMANDS[p]));
  const installed = new Set(
    res.stdout.split('\n').filter((l) => l.endsWith(' installed')).map((l) => l.split(' ')[0]),
  );
  return packages.filter((p) => !installed.has(p));
}

const APT_ENV = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' };

/** Install missing host packages; returns what was installed. */
export async function ensureHostPackages(events?: ProviderEvents, packages: string[] = HOST_PACKAGES): Promise<string[]> {
  const missing = await missingHostPackages(packages);
  if (missing.length === 0) return [];
  try {
    await run('apt-get', ['--version'], { check: true });
  } catch {
    throw new ProviderError(`LXC and its helpers are missing (${missing.join(', ')}) and apt-get is not available to install them`,
      'install them with your package manager, or run on Debian/Ubuntu');
  }
  events?.progress?.(`installing host packages: ${missing.join(' ')}`);
  const install = ['-y', '-q', '--no-install-recommends', '-o', 'Dpkg::Options::=--force-confold', 'install', ...missing];
  let res = await run('apt-get', install, { check: false, env: APT_ENV });
  if (res.code !== 0) {
    // Usually "Unable to locate package": no package lists yet.
    events?.progress?.('apt-get install failed; running apt-get update first');
    await run('apt-get', ['-q', 'update'], { env: APT_ENV, hint: 'the host needs to reach its Debian mirror for apt' });
    res = await run('apt-get', install, { check: false, env: APT_ENV });
  }
  const still = await missingHostPackages(packages);
  if (res.code !== 0 || still.length > 0) {
    const tail = res.stderr.trim().split('\n').slice(-3).join('\n');
    throw new ProviderError(`LXC is missing and could not be installed (${still.join(', ') || missing.join(', ')}): ${tail}`,
      `install them by hand: apt-get install --no-install-recommends ${packages.join(' ')}`);
  }
  return missing;
}

/**
 * Every node's systemd takes inotify instances from the host's per-user pool
 * (containers run as root). The stock limit (128) runs out after a dozen nodes:
 * systemd then logs "Failed to create inotify object: Too many open files" and
 * never starts sshd. Raise the limits when they are lower (never lowers them;
 * not restored by down: higher limits are harmless and other clusters may need them).
 */
export const INOTIFY_MIN: Record<string, number> = {
  'fs/inotify/max_user_instances': 8192,
  'fs/inotify/max_user_watches': 524288,
};

/** The limits below their minimum (reads only). */
export function lowHostLimits(): { key: string; now: number; min: number }[] {
  return Object.entries(INOTIFY_MIN)
    .map(([key, min]) => ({ key, min, now: Number(readFileSync(join('/proc/sys', key), 'utf8').trim()) }))
    .filter((l) => l.now < l.min);
}

export async function ensureHostLimits(events?: ProviderEvents): Promise<string[]> {
  const raised: string[] = [];
  for (const { key, now, min } of lowHostLimits()) {
    events?.progress?.(`raising ${key.replaceAll('/', '.')} from ${now} to ${min}`);
    writeFileSync(join('/proc/sys', key), `${min}\n`);
    raised.push(`${key.replaceAll('/', '.')}=${min}`);
  }
  return raised;
}
