// The roles, in the order the engine applies them. Each role runs on all the
// nodes that list it (in parallel) before the next role starts: the firewall
// comes right after base, so every declared flow is open before anything uses
// it (a worker added to cluster.yaml can replicate in the same apply, and no
// replication link is cut by a first firewall load); the manager's users exist
// before workers replicate; replication runs before sakila is loaded on the
// manager (so it reaches the workers).
import type { Role, RoleName } from '../core/types.ts';
import { baseRole } from './base.ts';
import { iptablesRole } from './iptables.ts';
import { mysqlRole } from './mysql.ts';
import { replicationRole } from './replication.ts';
import { sakilaRole } from './sakila.ts';
import { sysbenchRole } from './sysbench.ts';
import { serviceRole } from './service.ts';

export const ROLE_ORDER: RoleName[] = ['base', 'iptables', 'mysql', 'replication', 'sakila', 'sysbench', 'service'];

const ROLES: Partial<Record<RoleName, Role>> = {
  base: baseRole,
  mysql: mysqlRole,
  replication: replicationRole,
  sakila: sakilaRole,
  sysbench: sysbenchRole,
  iptables: iptablesRole,
  service: serviceRole,
};

/** The roles the cluster's nodes use, in engine order. */
export function rolesInOrder(used: Set<RoleName>): Role[] {
  return ROLE_ORDER.filter((n) => used.has(n)).map((n) => {
    const role = ROLES[n];
    if (!role) throw new Error(`role ${n} is not implemented yet`);
    return role;
  });
}
