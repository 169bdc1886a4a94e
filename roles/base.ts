// base: what every node needs — its packages (one apt transaction), hostname,
// timezone, and an SSH daemon that takes keys only.
import { shq } from '../core/ssh.ts';
import { defineRole } from '../core/roles.ts';
import type { Task, TaskWith } from '../core/types.ts';
import { aptInstall, missingPackages, packagesFact } from './lib/apt.ts';
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
  apply: async ({ conn }, diff) => {
    await aptInstall(conn, diff.data);
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
    return link === want && file?.trim() === cluster.timezone ? null : { message: `${file?.trim() || link} -> ${cluster.timezone}` };
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
  tasks: [packages, hostname, timezone, sshd],
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
