// Which Debian/Ubuntu packages each role needs, so the base role can install
// everything a node needs in ONE apt transaction (the roles still check their own).
import type { NodeSpec, RoleName } from '../../core/types.ts';
import type { Dialect } from './os.ts';

export const BASE_PACKAGES = ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps'];

export const DB_PACKAGES: Record<Dialect, string[]> = {
  mariadb: ['mariadb-server', 'mariadb-client'],
  mysql: ['mysql-server', 'mysql-client'],
};

const BY_ROLE: Partial<Record<RoleName, (d: Dialect) => string[]>> = {
  base: () => BASE_PACKAGES,
  mysql: (d) => DB_PACKAGES[d],
  sysbench: () => ['sysbench'],
};

export function packagesFor(node: NodeSpec, dialect: Dialect): string[] {
  return [...new Set(node.roles.flatMap((r) => BY_ROLE[r]?.(dialect) ?? []))];
}

/** Every package any role might want (for one dpkg query before the dialect is known). */
export function allCandidatePackages(node: NodeSpec): string[] {
  return [...new Set([...packagesFor(node, 'mariadb'), ...packagesFor(node, 'mysql')])];
}
