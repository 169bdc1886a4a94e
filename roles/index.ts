// The built-in roles, in declaration order (the order cluster.yaml's schema
// lists them in). The engine's order comes from each manifest's `after`:
// base, iptables, mysql, replication, sakila, sysbench, service. The firewall
// comes right after base, so every declared flow is open before anything uses
// it; the manager's users exist before workers replicate; replication runs
// before sakila is loaded on the manager (so it reaches the workers).
// Importing this file registers them (core/ never imports roles/): every
// entry point (playbooks/*, schema/generate.ts, benchmarks, the test preload) does.
import { registerBuiltinRoles, RoleRegistry } from '../core/roles.ts';
import { baseRole } from './base.ts';
import { iptablesRole } from './iptables.ts';
import { roleKit } from './lib/kit.ts';
import { mysqlRole } from './mysql.ts';
import { replicationRole } from './replication.ts';
import { sakilaRole } from './sakila.ts';
import { serviceRole } from './service.ts';
import { sysbenchRole } from './sysbench.ts';

export const BUILTIN_ROLES = new RoleRegistry([baseRole, mysqlRole, sakilaRole, sysbenchRole, replicationRole, iptablesRole, serviceRole]);

registerBuiltinRoles(BUILTIN_ROLES, roleKit);
