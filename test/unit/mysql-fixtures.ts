// Shared inputs for the mysql-* unit tests: the fixture cluster.yaml and hosts
// shaped as the local provider hands them to the engine.
import { join } from 'node:path';
import { loadCluster } from '../../core/spec.ts';
import type { Cluster, Connection, Fact, Host, SecretStore, TaskContext } from '../../core/types.ts';

export const cluster: Cluster = loadCluster(join(import.meta.dir, '../fixtures/cluster.yaml'));

export function hostsOf(c: Cluster, base = '10.77.0.'): Host[] {
  return c.nodes.map((node, i) => ({
    name: node.name, address: `${base}${10 + i}`, privateAddress: `${base}${10 + i}`, port: 22, user: 'ubuntu', sshFrom: `${base}1/32`, node,
  }));
}

export const hosts = hostsOf(cluster);
export const host = (name: string): Host => hosts.find((h) => h.name === name)!;

export const secrets: SecretStore = { get: (n) => `pw-${n}-Zx9_q` };

/** A task context whose facts are the given outputs (exit 0 unless given as a Fact). */
export function ctxFor(name: string, facts: Record<string, string | Fact>, opts: { cluster?: Cluster; hosts?: Host[] } = {}): TaskContext {
  const hs = opts.hosts ?? hosts;
  return {
    host: hs.find((h) => h.name === name)!,
    conn: undefined as unknown as Connection, // check() must never touch the connection
    cluster: opts.cluster ?? cluster,
    hosts: hs,
    facts: Object.fromEntries(Object.entries(facts).map(([k, v]) => [k, typeof v === 'string' ? { stdout: v, code: 0 } : v])),
    check: true,
    secrets,
    notify: () => {},
  };
}

export const withEngine = (engine: Cluster['database']['engine']): Cluster => ({ ...cluster, database: { ...cluster.database, engine } });
