// Collection into results/<timestamp>/: each service's log from its node
// (journald, since the run started), the DB dumps, sysbench outputs, the
// exact cluster.yaml used and summary.json.
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection, ServiceName } from '../../core/types.ts';

/** results/<UTC timestamp>, e.g. results/2026-11-21T12-40-05Z (sortable, no colons). */
export function resultsDir(root: string, at: Date): string {
  const stamp = at.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  return join(root, 'results', stamp);
}

export function makeResultsDir(dir: string): void {
  for (const sub of ['logs', 'dumps', 'sysbench']) mkdirSync(join(dir, sub), { recursive: true });
}

/** The systemd unit of a service (written by the service role). */
export const unitOf = (service: ServiceName): string => `rampart-${service}`;

/**
 * The journal of a service since `since` (seconds since the epoch), message
 * text only. A few seconds of margin cover clock skew between controller and
 * node; lines of other runs are ignored later (the request_ids are ours).
 */
export async function fetchServiceLog(conn: Connection, service: ServiceName, since: Date, marginSeconds = 5): Promise<string> {
  const epoch = Math.floor(since.getTime() / 1000) - marginSeconds;
  const res = await conn.exec(`journalctl -u ${unitOf(service)} -o cat --no-pager --since @${epoch}`);
  return res.stdout;
}

export interface ServiceLog {
  node: string;
  service: ServiceName;
  text: string;
  error?: string;
}

/** Fetch every service's log in parallel; a node that fails gives an error entry, not an exception. */
export async function collectLogs(services: { node: string; service: ServiceName; conn: Connection | null }[], since: Date): Promise<ServiceLog[]> {
  return Promise.all(services.map(async (s): Promise<ServiceLog> => {
    if (!s.conn) return { node: s.node, service: s.service, text: '', error: 'no SSH connection' };
    try {
      return { node: s.node, service: s.service, text: await fetchServiceLog(s.conn, s.service, since) };
    } catch (e) {
      return { node: s.node, service: s.service, text: '', error: (e as Error).message };
    }
  }));
}

export interface Artifacts {
  logs: ServiceLog[];
  dumps: Record<string, string>;
  sysbench: Record<string, string>;
  clusterFile: string;
}

/** Write what was collected; file names are `<node>-<service>.log`, `<node>-actor.sql`. */
export function writeArtifacts(dir: string, a: Artifacts): void {
  makeResultsDir(dir);
  for (const l of a.logs) writeFileSync(join(dir, 'logs', `${l.node}-${l.service}.log`), l.error ? `# not collected: ${l.error}\n` : l.text);
  for (const [node, dump] of Object.entries(a.dumps)) writeFileSync(join(dir, 'dumps', `${node}-actor.sql`), dump);
  for (const [name, out] of Object.entries(a.sysbench)) writeFileSync(join(dir, 'sysbench', name), out);
  copyFileSync(a.clusterFile, join(dir, 'cluster.yaml'));
}
