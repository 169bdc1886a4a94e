// --limit: node names and groups, resolved to node names. Groups, as Ansible
// users expect them: `db` (every DB node), `manager`, `workers`, `services`
// (every node with a service), a service name (the node running it) and a role
// name (the nodes that list it).
import { UsageError } from './cli.ts';
import type { Cluster } from './types.ts';

export function limitGroups(cluster: Cluster): Map<string, string[]> {
  const g = new Map<string, string[]>();
  const add = (name: string, nodes: string[]) => {
    if (nodes.length && !g.has(name)) g.set(name, nodes);
  };
  const names = (pred: (n: Cluster['nodes'][number]) => boolean) => cluster.nodes.filter(pred).map((n) => n.name);
  add('all', names(() => true));
  add('db', names((n) => Boolean(n.db)));
  add('manager', names((n) => n.db === 'manager'));
  add('workers', names((n) => n.db === 'worker'));
  add('services', names((n) => Boolean(n.service)));
  for (const n of cluster.nodes) if (n.service) add(n.service, [n.name]);
  for (const role of new Set(cluster.nodes.flatMap((n) => n.roles))) add(role, names((n) => n.roles.includes(role)));
  return g;
}

/** Node names selected by a --limit list (comma separated); undefined = all. A node name wins over a group of the same name. */
export function resolveLimit(cluster: Cluster, flag: string | undefined): string[] | undefined {
  if (!flag) return undefined;
  const items = flag.split(',').map((s) => s.trim()).filter(Boolean);
  const groups = limitGroups(cluster);
  const nodes = new Set(cluster.nodes.map((n) => n.name));
  const out = new Set<string>();
  const unknown: string[] = [];
  for (const item of items) {
    if (nodes.has(item)) out.add(item);
    else if (groups.has(item)) for (const n of groups.get(item)!) out.add(n);
    else unknown.push(item);
  }
  if (unknown.length) {
    throw new UsageError(`--limit names unknown host(s) or group(s): ${unknown.join(', ')}`, `hosts: ${[...nodes].join(', ')}; groups: ${[...groups.keys()].join(', ')}`);
  }
  return cluster.nodes.map((n) => n.name).filter((n) => out.has(n));
}
