// What the commands that act on a whole running cluster share (rotate,
// switchover): its hosts as the provider describes them, every node of
// cluster.yaml among them, and one kept SSH connection per host.
import type { RunLog } from '../core/runlog.ts';
import { Connections, KnownHosts } from '../core/ssh.ts';
import { ensureSshKey, ensureStateDir } from '../core/state.ts';
import type { Cluster, Host } from '../core/types.ts';
import { providerFor } from '../providers/index.ts';

export interface RunningCluster {
  hosts: Host[];
  conns: Connections;
}

/** How long a command waits for a node's SSH (it runs, so it answers unless busy). */
const CONNECT_RETRY_MS = 10_000;

/** The hosts, or `notRunning(names)` when a node of cluster.yaml is not running (nothing is contacted then). */
export async function runningCluster(cluster: Cluster, runLog: RunLog, notRunning: (missing: string[]) => Error): Promise<RunningCluster> {
  const hosts = await (await providerFor(cluster)).describe();
  const missing = cluster.nodes.filter((n) => !hosts.some((h) => h.name === n.name)).map((n) => n.name);
  if (missing.length) throw notRunning(missing);
  const knownHosts = new KnownHosts(ensureStateDir(cluster.dir).knownHosts);
  const conns = new Connections({ privateKey: ensureSshKey(cluster.dir).privateKey, knownHosts, retryForMs: CONNECT_RETRY_MS, log: runLog.record });
  return { hosts, conns };
}
