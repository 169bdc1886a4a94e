// Debian/Ubuntu packages: read what is installed in one command, install what
// is missing in one apt transaction.
import { shq } from '../../core/ssh.ts';
import type { Connection } from '../../core/types.ts';

/** Shell command printing `name status` for each package (installed ones say "install ok installed"). */
export function packagesFact(pkgs: string[]): string {
  return `dpkg-query -W -f='\${Package} \${Status}\\n' ${pkgs.map(shq).join(' ')} 2>/dev/null; true`;
}

export function missingPackages(pkgs: string[], factOutput: string): string[] {
  const installed = new Set(
    factOutput.split('\n').filter((l) => l.endsWith(' install ok installed')).map((l) => l.split(' ')[0]),
  );
  return pkgs.filter((p) => !installed.has(p));
}

/** When rampart last refreshed the node's package lists (apt sets the lists' own mtimes to the archive's dates). */
export const LISTS_STAMP = '/var/lib/rampart/apt-lists.stamp';

/**
 * Shell: refresh the package lists when there are none, when rampart's stamp is
 * older than `maxAgeS` (Ansible's cache_valid_time), or when the apt sources
 * changed since; then stamp. Paid once per node per max age, not per role.
 */
export function refreshListsScript(maxAgeS: number, lock: string): string {
  return `stamp=$(stat -c %Y ${LISTS_STAMP} 2>/dev/null || echo 0)
src=$(stat -c %Y /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | sort -n | tail -n 1)
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || [ $(( $(date +%s) - stamp )) -gt ${maxAgeS} ] || [ "\${src:-0}" -gt "$stamp" ]; then
  apt-get ${lock} update -q && mkdir -p "$(dirname ${LISTS_STAMP})" && touch ${LISTS_STAMP}
fi`;
}

/** One non-interactive apt transaction, on package lists no older than `maxAgeS`. */
export async function aptInstall(conn: Connection, pkgs: string[], maxAgeS: number): Promise<void> {
  if (pkgs.length === 0) return;
  const list = pkgs.map(shq).join(' ');
  const env = 'export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a;';
  // An apply killed part-way leaves its apt-get running on the node (wait for its lock)
  // or dpkg interrupted (finish it with dpkg --configure -a before retrying).
  const lock = '-o DPkg::Lock::Timeout=600';
  // --force-unsafe-io: dpkg skips its fsync per unpacked file, most of an install's time on
  // a fresh node (a crash mid-install is repaired by the next apply, as above)
  const install = `apt-get ${lock} install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-unsafe-io ${list}`;
  // Both attempts' output is kept: the retry's last lines alone hid the real cause (a
  // conflict reported by the first attempt). On failure the lines that say why
  // (E:, unmet Depends/Conflicts) of both attempts close stderr, which the error shows.
  await conn.exec(
    `${env} set -e
log=$(mktemp); trap 'rm -f "$log"' EXIT
why() { grep -hE '^(E|W): |^ +[^ ]+ : (Pre)?Depends|: (Conflicts|Breaks): ' "$log" | sort -u | head -n 8 | tr '\\n' ' '; }
{ ${refreshListsScript(maxAgeS, lock)}
} >>"$log" 2>&1 || { cat "$log" >&2; echo "apt-get update failed: $(why)" >&2; exit 100; }
if ! ${install} >>"$log" 2>&1; then
  dpkg --configure -a >>"$log" 2>&1 || true
  if ! { apt-get ${lock} update -q && touch ${LISTS_STAMP} && ${install}; } >>"$log" 2>&1; then tail -n 20 "$log" >&2; echo "apt-get install failed: $(why)" >&2; exit 100; fi
fi`,
  );
}

/** One pending upgrade as `apt-get -s upgrade` shows it. */
export interface PendingUpgrade {
  name: string;
  from: string;
  to: string;
  /** From a -security archive (Debian-Security:12/stable-security, Ubuntu:24.04/noble-security). */
  security: boolean;
  /** Its source package (mariadb for mariadb-server, libmariadb3, mariadb-common...), when dpkg said. */
  source?: string;
}

/**
 * Shell: the upgrades apt would make now (a simulation: nothing is changed), and
 * how old rampart's package-list stamp is in seconds (-1 when never refreshed);
 * then the source package of each package upgraded (`src <package> <source>`,
 * from dpkg: what tells the packages a DB server upgrade pulls in).
 */
export const PENDING_UPGRADES_FACT = `c=/var/lib/rampart/apt-pending.cache
echo "age $(( $(date +%s) - $(stat -c %Y ${LISTS_STAMP} 2>/dev/null || echo -1) ))"
# the simulation loads apt's whole cache (about a second): reuse its result until dpkg or the lists change
if [ -f "$c" ] && [ "$c" -nt /var/lib/dpkg/status ] && { [ ! -e ${LISTS_STAMP} ] || [ "$c" -nt ${LISTS_STAMP} ]; }; then cat "$c"
else mkdir -p /var/lib/rampart && { LC_ALL=C apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>/dev/null | grep '^Inst ' || true; } > "$c.tmp" && mv -f "$c.tmp" "$c" && cat "$c"; fi
n=$(sed -n 's/^Inst \\([^ ]*\\) \\[.*/\\1/p' "$c")
[ -z "$n" ] || dpkg-query -W -f='src \${Package} \${source:Package}\\n' $n 2>/dev/null; true`;

export function parsePendingUpgrades(out: string): { listsAgeS: number | null; upgrades: PendingUpgrade[] } {
  let listsAgeS: number | null = null;
  const upgrades: PendingUpgrade[] = [];
  const sources = new Map<string, string>();
  for (const line of out.split('\n')) {
    const age = /^age (-?\d+)$/.exec(line);
    if (age) {
      const n = Number(age[1]);
      // a stamp that was never written gives now - (-1): absurdly large
      listsAgeS = n > 10 * 365 * 86400 ? null : n;
      continue;
    }
    // Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
    const m = /^Inst (\S+) \[([^\]]+)\] \((\S+) ([^[]*?)\s*(\[[^\]]*\])?\)/.exec(line);
    if (m) upgrades.push({ name: m[1], from: m[2], to: m[3], security: /security/i.test(m[4]) });
    const src = /^src (\S+) (\S+)$/.exec(line);
    if (src) sources.set(src[1].replace(/:.*/, ''), src[2]);
  }
  for (const u of upgrades) {
    const source = sources.get(u.name);
    if (source) u.source = source;
  }
  return { listsAgeS, upgrades };
}

/** The upgrades the policy wants (apt.upgrades: security = security only, all, none). */
export function wantedUpgrades(upgrades: PendingUpgrade[], policy: 'security' | 'all' | 'none'): PendingUpgrade[] {
  if (policy === 'none') return [];
  return policy === 'all' ? upgrades : upgrades.filter((u) => u.security);
}

/**
 * The upgrades that belong to a rolling role's packages (`own`: the role's
 * manifest packages, e.g. mariadb-server): the packages themselves and every
 * other binary of their source packages (mariadb-server-core, mariadb-common,
 * libmariadb3 for MariaDB). A rolling role installs these under its serial, one
 * node at a time; base installs the rest.
 */
export function splitRolled(upgrades: PendingUpgrade[], own: readonly string[]): { rolled: PendingUpgrade[]; rest: PendingUpgrade[] } {
  const names = new Set(own);
  const sources = new Set(upgrades.filter((u) => names.has(u.name) && u.source).map((u) => u.source!));
  for (const n of own) sources.add(n); // a source named after its main binary (mysql-server's is mysql-8.0: found through the line above)
  const isRolled = (u: PendingUpgrade) => names.has(u.name) || (u.source !== undefined && sources.has(u.source));
  return { rolled: upgrades.filter(isRolled), rest: upgrades.filter((u) => !isRolled(u)) };
}

/**
 * Refresh the package lists (now, or when older than `maxAgeS`), then read the
 * pending upgrades from them: one round trip (the check may have seen stale lists).
 */
export async function refreshedUpgrades(conn: Connection, maxAgeS = 0): Promise<PendingUpgrade[]> {
  const lock = '-o DPkg::Lock::Timeout=600';
  const r = await conn.exec(`export DEBIAN_FRONTEND=noninteractive; set -e
${refreshListsScript(maxAgeS, lock)} >&2
${PENDING_UPGRADES_FACT}`);
  return parsePendingUpgrades(r.stdout).upgrades;
}

/** Install exactly these upgrades (--only-upgrade: nothing new is pulled in), on lists just refreshed. */
export async function aptUpgrade(conn: Connection, names: string[]): Promise<void> {
  if (!names.length) return;
  const lock = '-o DPkg::Lock::Timeout=600';
  await conn.exec(`export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a; set -e
apt-get ${lock} install -y -q --only-upgrade --no-install-recommends -o Dpkg::Options::=--force-confold ${names.map(shq).join(' ')}`);
}
