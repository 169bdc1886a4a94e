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

/** One non-interactive apt transaction; refreshes the package lists when they are missing or stale. */
export async function aptInstall(conn: Connection, pkgs: string[]): Promise<void> {
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
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt-get ${lock} update -q >>"$log" 2>&1 || { cat "$log" >&2; echo "apt-get update failed: $(why)" >&2; exit 100; }; fi
if ! ${install} >>"$log" 2>&1; then
  dpkg --configure -a >>"$log" 2>&1 || true
  if ! { apt-get ${lock} update -q && ${install}; } >>"$log" 2>&1; then tail -n 20 "$log" >&2; echo "apt-get install failed: $(why)" >&2; exit 100; fi
fi`,
  );
}
