// Which Debian/Ubuntu packages each role needs, so the base role can install
// everything a node needs in ONE apt transaction (the roles still check their own).
import type { NodeSpec, RoleName } from '../../core/types.ts';
import type { Dialect } from './os.ts';

export const BASE_PACKAGES = ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps'];

export const DB_PACKAGES: Record<Dialect, string[]> = {
  mariadb: ['mariadb-server', 'mariadb-client'],
  mysql: ['mysql-server', 'mysql-client'],
};

/**
 * How sysbench gets onto a DB node. Debian's sysbench links libmariadb3, which
 * depends on mariadb-common, which Oracle's mysql-server conflicts with: next to
 * MySQL on Debian, the sysbench role unpacks the archive's sysbench and
 * libmariadb3 under /opt/rampart/sysbench (its other libraries from apt) and
 * runs it through a wrapper. Ubuntu's sysbench links libmysqlclient: apt.
 */
export function sysbenchFromApt(osId: string, dialect: Dialect): boolean {
  return !(dialect === 'mysql' && osId.trim() === 'debian');
}

const BY_ROLE: Partial<Record<RoleName, (d: Dialect, osId: string) => string[]>> = {
  base: () => BASE_PACKAGES,
  mysql: (d) => DB_PACKAGES[d],
  sysbench: (d, osId) => (sysbenchFromApt(osId, d) ? ['sysbench'] : []),
};

export function packagesFor(node: NodeSpec, dialect: Dialect, osId: string): string[] {
  return [...new Set(node.roles.flatMap((r) => BY_ROLE[r]?.(dialect, osId) ?? []))];
}

/** Every package any role might want (for one dpkg query before the dialect is known). */
export function allCandidatePackages(node: NodeSpec): string[] {
  return [...new Set([...packagesFor(node, 'mariadb', 'debian'), ...packagesFor(node, 'mysql', 'ubuntu')])];
}
