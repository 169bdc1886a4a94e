// base: what every node needs — its packages (one apt transaction), hostname,
// timezone, and an SSH daemon that takes keys only.
import { shq } from '../core/ssh.ts';
import { defineRole } from '../core/roles.ts';
import type { Task, TaskWith } from '../core/types.ts';
import { aptInstall, aptUpgrade, missingPackages, packagesFact, parsePendingUpgrades, PENDING_UPGRADES_FACT, refreshedUpgrades, splitRolled, wantedUpgrades } from './lib/apt.ts';
import { fileTask } from './lib/files.ts';
import { dialectFor, OS_ID_FACT } from './lib/os.ts';

export const BASE_PACKAGES = ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps'];

const SSHD_CONFIG_PATH = '/etc/ssh/sshd_config.d/50-rampart.conf';
const SSHD_CONFIG = `# managed by rampart: keys only, no root login
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
X11Forwarding no
`;

// Everything the node's roles need (each role's manifest says what), in one apt
// transaction: apt is most of a fresh converge.
const packages: TaskWith<string[]> = {
  name: 'packages',
  facts: ({ host, cluster }) => ({ os: OS_ID_FACT, pkgs: packagesFact(cluster.roles.candidatePackages(host.node)) }),
  check: ({ facts, host, cluster }) => {
    const osId = facts.os.stdout.trim();
    const wanted = cluster.roles.packagesFor(host.node, { osId, dialect: dialectFor(cluster, osId) });
    const missing = missingPackages(wanted, facts.pkgs.stdout);
    return missing.length ? { message: `install ${missing.join(' ')}`, data: missing } : null;
  },
  apply: async ({ conn, cluster }, diff) => {
    await aptInstall(conn, diff.data, cluster.apt.cacheValidSeconds);
  },
};

/**
 * Pending updates are drift: package lists older than apt.cacheValidSeconds are
 * refreshed, and the upgrades apt.upgrades asks for (security only by default)
 * are installed. --check reports them per package (--diff: old -> new), from
 * the lists as they are (it refreshes nothing). The upgrades of a rolling role's
 * packages (the DB server's, with what it pulls in) are left to that role: it
 * installs them one node at a time under its serial (roles/mysql.ts).
 */
const updates: TaskWith<{ stale: boolean; names: string[] }> = {
  name: 'package lists and pending updates',
  facts: () => ({ pending: PENDING_UPGRADES_FACT }),
  check: ({ facts, cluster, host }) => {
    const { listsAgeS, upgrades } = parsePendingUpgrades(facts.pending.stdout);
    const want = splitRolled(wantedUpgrades(upgrades, cluster.apt.upgrades), cluster.roles.rolledPackages(host.node)).rest;
    const stale = listsAgeS === null || listsAgeS > cluster.apt.cacheValidSeconds;
    if (!stale && !want.length) return null;
    const parts = [
      ...(stale ? [`refresh package lists (${listsAgeS === null ? 'never refreshed by rampart' : `${Math.round(listsAgeS / 60)} min old`})`] : []),
      ...(want.length ? [`upgrade ${want.length} package(s)${cluster.apt.upgrades === 'security' ? ' with a security update' : ''}: ${want.slice(0, 6).map((u) => u.name).join(' ')}${want.length > 6 ? ' ...' : ''}`] : []),
    ];
    return { message: parts.join('; '), data: { stale, names: want.map((u) => u.name) }, detail: () => want.map((u) => `${u.name}: ${u.from} -> ${u.to}${u.security ? ' (security)' : ''}\n`).join('') };
  },
  apply: async ({ conn, cluster, host }, diff) => {
    // refresh now (the check may have seen stale lists), then upgrade what the fresh lists say
    const now = splitRolled(wantedUpgrades(await refreshedUpgrades(conn), cluster.apt.upgrades), cluster.roles.rolledPackages(host.node)).rest.map((u) => u.name);
    await aptUpgrade(conn, now);
    const { names } = diff.data;
    return `lists refreshed${now.length ? `; upgraded ${now.join(' ')}` : names.length ? '' : '; nothing to upgrade'}`;
  },
};

const hostname: Task = {
  name: 'hostname',
  facts: () => ({ name: 'hostname; cat /etc/hostname' }),
  check: ({ facts, host }) => {
    const [live, file] = facts.name.stdout.split('\n');
    return live === host.node.name && file === host.node.name ? null : { message: `${live} -> ${host.node.name}` };
  },
  apply: async ({ conn, host }) => {
    const n = shq(host.node.name);
    await conn.exec(`echo ${n} > /etc/hostname && hostname ${n} && (grep -q "\\s${host.node.name}$" /etc/hosts || echo "127.0.1.1 ${host.node.name}" >> /etc/hosts)`);
  },
};

const zonePath = (tz: string) => (tz === 'UTC' ? '/usr/share/zoneinfo/Etc/UTC' : `/usr/share/zoneinfo/${tz}`);

const timezone: Task = {
  name: 'timezone',
  facts: ({ cluster }) => ({
    tz: `readlink -f /etc/localtime; readlink -f ${shq(zonePath(cluster.timezone))}; cat /etc/timezone 2>/dev/null`,
  }),
  check: ({ facts, cluster }) => {
    const [link, want, file] = facts.tz.stdout.split('\n');
    // tzdata's own scripts (run by an upgrade) write Etc/UTC for UTC: the same zone
    const same = (a = '', b: string) => a.trim() === b || (b === 'UTC' && a.trim() === 'Etc/UTC');
    return link === want && same(file, cluster.timezone) ? null : { message: `${file?.trim() || link} -> ${cluster.timezone}` };
  },
  apply: async ({ conn, cluster }) => {
    const zone = shq(zonePath(cluster.timezone));
    await conn.exec(`test -e ${zone} || { echo "unknown timezone ${cluster.timezone}" >&2; exit 1; }; ln -sfn ${zone} /etc/localtime && echo ${shq(cluster.timezone)} > /etc/timezone`);
  },
};

const sshd = fileTask({
  name: 'sshd keys only',
  path: () => SSHD_CONFIG_PATH,
  content: () => SSHD_CONFIG,
  mode: '0644',
  owner: 'root:root',
  notify: 'reload sshd',
});

export const baseRole = defineRole({
  name: 'base',
  packages: BASE_PACKAGES,
  tasks: [packages, updates, hostname, timezone, sshd],
  handlers: [
    {
      name: 'reload sshd',
      // sshd -t first: a broken config must never lock the controller out
      run: async ({ conn }) => {
        await conn.exec('sshd -t && (systemctl reload ssh 2>/dev/null || systemctl reload sshd)');
      },
    },
  ],
});
