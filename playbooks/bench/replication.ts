// The replication proof: every worker reaches the manager's GTID position,
// then the actor table's dump is byte-identical on all DB nodes and holds
// exactly the expected number of new rows.
import { createHash } from 'node:crypto';
import type { Connection } from '../../core/types.ts';
import { gtidWaitSql, sourcePositionSql } from '../../roles/lib/mysql-replication.ts';
import { dialectOf, scalar } from './db.ts';
import type { NodeProof, ReplicationProof } from './types.ts';

export interface DbNodes {
  manager: { name: string; conn: Connection | null };
  workers: { name: string; conn: Connection | null }[];
}

const COUNT_SQL = (schema: string) => `SELECT COUNT(*) FROM \`${schema}\`.actor`;

/** Wait until each worker has applied the manager's current position; per worker: caught up or why not. */
export async function syncWorkers(nodes: DbNodes, timeoutSeconds: number): Promise<{ gtid: string; workers: Record<string, string | null> }> {
  const m = nodes.manager.conn;
  if (!m) throw new Error(`${nodes.manager.name}: no SSH connection`);
  const d = await dialectOf(m);
  const gtid = (await scalar(m, sourcePositionSql(d))).trim();
  const workers: Record<string, string | null> = {};
  await Promise.all(nodes.workers.map(async (w) => {
    if (!w.conn) {
      workers[w.name] = 'no SSH connection';
      return;
    }
    try {
      const r = (await scalar(w.conn, gtidWaitSql(d, gtid, timeoutSeconds))).trim();
      workers[w.name] = r === '0' ? null : `did not reach ${gtid} within ${timeoutSeconds} s (result ${r || 'NULL'})`;
    } catch (e) {
      workers[w.name] = (e as Error).message;
    }
  }));
  return { gtid, workers };
}

/** actor row count per DB node (null where it cannot be read). */
export async function countRows(nodes: DbNodes, schema: string): Promise<Record<string, number | null>> {
  const all = [nodes.manager, ...nodes.workers];
  const out: Record<string, number | null> = {};
  await Promise.all(all.map(async (n) => {
    try {
      out[n.name] = n.conn ? Number.parseInt(await scalar(n.conn, COUNT_SQL(schema)), 10) : null;
    } catch {
      out[n.name] = null;
    }
  }));
  return out;
}

/** `mysqldump --skip-dump-date <schema> actor` on the node, as root. */
export async function dumpActor(conn: Connection, schema: string): Promise<string> {
  const res = await conn.exec(`mysqldump --skip-dump-date --single-transaction ${schema.replace(/[^A-Za-z0-9_]/g, '')} actor`);
  return res.stdout;
}

export const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/**
 * Judge the proof from what was measured (pure, unit-tested): every node
 * caught up, `after - before === expected` everywhere, all dumps equal.
 */
export function judgeProof(input: { expected: number; gtid: string; nodes: NodeProof[] }): ReplicationProof {
  const messages: string[] = [];
  for (const n of input.nodes) {
    // SSH errors already start with the host's name
    if (n.error) messages.push(n.error.startsWith(`${n.node}: `) ? n.error : `${n.node}: ${n.error}`);
    else if (!n.caughtUp) messages.push(`${n.node}: did not reach the manager's GTID position`);
    if (n.before !== null && n.after !== null && n.after - n.before !== input.expected) {
      messages.push(`${n.node}: ${n.after - n.before} new actor rows, expected ${input.expected}`);
    }
    if (!n.error && (n.before === null || n.after === null)) messages.push(`${n.node}: row count not readable`);
  }
  const shas = input.nodes.map((n) => n.dumpSha256);
  const identicalDumps = shas.length > 0 && shas.every((s) => s !== null && s === shas[0]);
  if (!identicalDumps && shas.every((s) => s !== null)) {
    messages.push(`dumps differ: ${input.nodes.map((n) => `${n.node} ${n.dumpSha256?.slice(0, 12)}`).join(', ')}`);
  }
  const ok = identicalDumps && input.nodes.every((n) => !n.error && n.caughtUp && n.before !== null && n.after !== null && n.after - n.before === input.expected);
  return { ok, expectedNewRows: input.expected, gtid: input.gtid, nodes: input.nodes, identicalDumps, messages: [...new Set(messages)] };
}

/** Sync, count, dump everywhere; returns the proof and the dumps (to be saved by the caller). */
export async function proveReplication(
  nodes: DbNodes, schema: string, before: Record<string, number | null>, expected: number, timeoutSeconds = 30,
): Promise<{ proof: ReplicationProof; dumps: Record<string, string> }> {
  let gtid = '';
  let lag: Record<string, string | null> = {};
  let syncError: string | undefined;
  try {
    ({ gtid, workers: lag } = await syncWorkers(nodes, timeoutSeconds));
  } catch (e) {
    syncError = (e as Error).message;
  }
  const after = await countRows(nodes, schema);
  const dumps: Record<string, string> = {};
  const proofs: NodeProof[] = await Promise.all([nodes.manager, ...nodes.workers].map(async (n): Promise<NodeProof> => {
    const isManager = n === nodes.manager;
    const p: NodeProof = { node: n.name, before: before[n.name] ?? null, after: after[n.name] ?? null, dumpSha256: null, caughtUp: isManager ? !syncError : lag[n.name] === null };
    if (isManager && syncError) p.error = syncError;
    if (!isManager && lag[n.name]) p.error = lag[n.name] ?? undefined;
    if (!n.conn) {
      p.error = 'no SSH connection';
      return p;
    }
    try {
      const dump = await dumpActor(n.conn, schema);
      dumps[n.name] = dump;
      p.dumpSha256 = sha256(dump);
    } catch (e) {
      p.error ??= `dump failed: ${(e as Error).message}`;
    }
    return p;
  }));
  return { proof: judgeProof({ expected, gtid, nodes: proofs }), dumps };
}
