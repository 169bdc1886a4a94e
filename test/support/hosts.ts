// The fixture cluster.yaml with the hosts the local provider would hand out
// (.10 + index, controller .1): the fixture of the roles' unit tests.
import '../../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { join } from 'node:path';
import { loadCluster } from '../../core/spec.ts';
import type { Cluster, Host } from '../../core/types.ts';
import { ROOT } from './cluster.ts';

export const cluster: Cluster = loadCluster(join(ROOT, 'test/fixtures/cluster.yaml'));
export const hosts: Host[] = cluster.nodes.map((node, i) => ({
  name: node.name, address: `10.77.0.${10 + i}`, privateAddress: `10.77.0.${10 + i}`, port: 22, user: 'ubuntu',
  sshFrom: '10.77.0.1/32', node,
}));
export const ip: Record<string, string> = Object.fromEntries(hosts.map((h) => [h.name, h.privateAddress]));
export const host = (name: string): Host => hosts.find((h) => h.name === name)!;
