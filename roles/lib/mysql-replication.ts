// GTID replication, per dialect, as pure functions: the status fact and its
// parsing, the decision "what is wrong", the statements that repair it and
// the GTID waits. Passwords only ever travel in SQL or option-file text fed
// through stdin, never in an argument vector.
import { RampartError } from '../../core/errors.ts';
import { shq } from '../../core/ssh.ts';
import type { Host } from '../../core/types.ts';
import { managerHost } from './mysql-accounts.ts';
import { DB_TLS_PATHS, MYSQL_PORT } from './mysql-config.ts';
import { DIALECT_SQL } from './mysql-dialect.ts';
import { DB_USERS } from './names.ts';
import type { Dialect } from './os.ts';

export class ReplicationError extends RampartError {}

/**
 * Replica status, one `Key: value` per line (-E: the 9.x client refuses `\G` in
 * batch mode). The same statement on every supported server.
 */
export const REPLICA_STATUS_FACT = `mysql -E -e ${shq(DIALECT_SQL.mysql.replicaStatus)}`;

export interface ReplicaStatus {
  /** The link uses TLS and verifies the source's certificate (Source_SSL_Allowed, ..._Verify_Server_Cert). */
  ssl: boolean;
  sourceHost: string;
  sourcePort: number;
  sourceUser: string;
  ioRunning: string;
  sqlRunning: string;
  /** GTID auto-positioning is on (MariaDB Using_Gtid=Slave_Pos|Current_Pos, MySQL Auto_Position=1). */
  gtid: boolean;
  ioErrno: number;
  ioError: string;
  sqlErrno: number;
  sqlError: string;
  /** MySQL's Source_Retry_Count (null where the server does not show it: MariaDB). */
  retryCount: number | null;
}

/** Parse SHOW SLAVE/REPLICA STATUS\G of either dialect; null when the node is not a replica. */
export function parseReplicaStatus(text: string): ReplicaStatus | null {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z_]+):\s?(.*)$/.exec(line);
    if (m) kv.set(m[1], m[2].trim());
  }
  const get = (...names: string[]) => names.map((n) => kv.get(n)).find((v) => v !== undefined) ?? '';
  const host = get('Source_Host', 'Master_Host');
  if (!kv.size || (!host && !kv.has('Source_Host') && !kv.has('Master_Host'))) return null;
  const usingGtid = get('Using_Gtid');
  return {
    sourceHost: host,
    sourcePort: Number(get('Source_Port', 'Master_Port')) || 0,
    sourceUser: get('Source_User', 'Master_User'),
    ioRunning: get('Replica_IO_Running', 'Slave_IO_Running'),
    sqlRunning: get('Replica_SQL_Running', 'Slave_SQL_Running'),
    gtid: usingGtid ? /^(slave|current)_pos$/i.test(usingGtid) : get('Auto_Position') === '1',
    ioErrno: Number(get('Last_IO_Errno')) || 0,
    ioError: get('Last_IO_Error'),
    sqlErrno: Number(get('Last_SQL_Errno')) || 0,
    sqlError: get('Last_SQL_Error'),
    ssl: /^yes$/i.test(get('Source_SSL_Allowed', 'Master_SSL_Allowed')) && /^yes$/i.test(get('Source_SSL_Verify_Server_Cert', 'Master_SSL_Verify_Server_Cert')),
    retryCount: kv.has('Source_Retry_Count') ? Number(kv.get('Source_Retry_Count')) : null,
  };
}

export interface ReplicaSource {
  host: string;
  port: number;
  user: string;
  /** Reconnect attempts before the replica gives up (compared where the server shows it). */
  retryCount?: number;
  /** The CA file the source's certificate is verified against: replication over TLS. */
  ca?: string;
}

export type ReplicaAction =
  | { action: 'ok' }
  /** (Re)point at the source: CHANGE MASTER / CHANGE REPLICATION SOURCE, then start. */
  | { action: 'configure'; reason: string }
  /** Configured right but stopped: start it. */
  | { action: 'start'; reason: string }
  /** Not safely repairable by a re-run: needs a human (message says what). */
  | { action: 'fail'; reason: string; hint: string };

/** Binlog position requested by the replica is gone on the source. */
const ER_SOURCE_FATAL_READING_BINLOG = 1236;

/** What is wrong with a replica, and the least that repairs it. */
export function replicaDecision(status: ReplicaStatus | null, want: ReplicaSource): ReplicaAction {
  if (!status) return { action: 'configure', reason: 'not a replica yet' };
  const at = `${status.sourceUser}@${status.sourceHost}:${status.sourcePort}`;
  const wanted = `${want.user}@${want.host}:${want.port}`;
  if (status.sourceHost !== want.host || status.sourcePort !== want.port || status.sourceUser !== want.user) {
    return { action: 'configure', reason: `replicates from ${at}, want ${wanted}` };
  }
  if (!status.gtid) return { action: 'configure', reason: 'not using GTID positioning' };
  if (want.ca && !status.ssl) return { action: 'configure', reason: 'replicates without TLS (or without verifying the manager\'s certificate)' };
  if (want.retryCount !== undefined && status.retryCount !== null && status.retryCount < want.retryCount) {
    return { action: 'configure', reason: `gives up after ${status.retryCount} reconnect attempts, want ${want.retryCount} (survive a manager outage)` };
  }
  if (status.sqlErrno !== 0) {
    return {
      action: 'fail',
      reason: `replica SQL error ${status.sqlErrno}: ${status.sqlError}`,
      hint: 'the replica diverged from the manager; re-seed it (drop the node and apply again) rather than skipping transactions',
    };
  }
  if (status.ioErrno === ER_SOURCE_FATAL_READING_BINLOG) {
    return {
      action: 'fail',
      reason: `the manager no longer has the binlogs this replica needs (${status.ioError})`,
      hint: "seed the replica from a consistent dump of the manager (mysqldump --single-transaction --gtid --master-data), or recreate the node while the manager's binlogs are complete",
    };
  }
  if (status.ioErrno !== 0 && status.ioRunning !== 'Yes') {
    // wrong/old password, source restarted elsewhere...: give it the current credentials again
    return { action: 'configure', reason: `replica IO error ${status.ioErrno}: ${status.ioError}` };
  }
  if (status.ioRunning !== 'Yes' || status.sqlRunning !== 'Yes') {
    return { action: 'start', reason: `replica threads IO=${status.ioRunning || 'No'} SQL=${status.sqlRunning || 'No'}` };
  }
  return { action: 'ok' };
}

/** Where every worker replicates from: the manager, as the replication user, with the retry count wanted. */
export function replicaSource(hosts: Host[]): ReplicaSource {
  const m = managerHost(hosts);
  if (!m) throw new ReplicationError('no node has db: manager', 'mark exactly one DB node `db: manager` in cluster.yaml');
  return { host: m.privateAddress, port: MYSQL_PORT, user: DB_USERS.repl, retryCount: RETRY_COUNT, ca: DB_TLS_PATHS.ca };
}

/** Reconnect every few seconds (default 60) after the source restarts or a firewall reload drops the link. */
export const CONNECT_RETRY_S = 5;
/** ... for up to 5 days (86400 x 5 s): a replica outlives a manager outage and reconnects by itself. */
export const RETRY_COUNT = 86400;

/** Point the replica at the source with GTID auto-positioning and start it (contains the password: stdin only). */
export function changeSourceSql(d: Dialect, src: ReplicaSource, password: string): string {
  const sql = DIALECT_SQL[d];
  const change = sql.changeSource(src, password, CONNECT_RETRY_S, src.retryCount ?? RETRY_COUNT) + (src.ca ? sql.sourceTls(src.ca) : '');
  return [sql.stopReplica, change, sql.startReplica].map((s) => `${s};`).join('\n') + '\n';
}

/** Before (re)pointing: a former primary rejoining continues from its own GTID position (null where auto-positioning does it). */
export function adoptPositionSql(d: Dialect): string | null {
  const sql = DIALECT_SQL[d];
  return sql.adoptOwnPosition ? `${sql.stopReplica};\n${sql.adoptOwnPosition};\n` : null;
}

export function startReplicaSql(d: Dialect): string {
  return `${DIALECT_SQL[d].startReplica};\n`;
}

/** The source's GTID position, one line (MySQL sets may span lines). */
export function sourcePositionSql(d: Dialect): string {
  return DIALECT_SQL[d].gtidPosition;
}

/** Block until this replica has applied `pos` (or the timeout); returns 0 when caught up. */
export function gtidWaitSql(d: Dialect, pos: string, timeoutS: number): string {
  return DIALECT_SQL[d].gtidWait(pos, timeoutS);
}

/**
 * Shell script run on a replica: read the replication password from the first
 * line of stdin, ask the source for its GTID position over the network (option
 * file through a pipe: the password is in no argv), then wait for it locally.
 * Prints the position waited for; exits 1 on timeout.
 */
export function catchUpScript(d: Dialect, src: ReplicaSource, timeoutS = 120): string {
  const extra = DIALECT_SQL[d].clientPublicKeyOption;
  const tls = src.ca ? DIALECT_SQL[d].clientTls(src.ca).map((l) => `${l}\\n`).join('') : '';
  return `set -euo pipefail
IFS= read -r pw
opts() { printf '[client]\\nuser=%s\\npassword=%s\\nhost=%s\\nport=%s\\n${tls}' ${shq(src.user)} "$pw" ${shq(src.host)} ${src.port}; }
pos=$(mysql --defaults-extra-file=<(opts)${extra} --connect-timeout=10 -N -B -e ${shq(sourcePositionSql(d))})
[[ "$pos" =~ ^[0-9A-Fa-f:,-]*$ ]] || { echo "unexpected GTID position from the manager: $pos" >&2; exit 1; }
r=$(mysql -N -B -e "${gtidWaitSql(d, '$pos', timeoutS)}")
if [ "$r" != 0 ]; then echo "not caught up with the manager (GTID $pos) after ${timeoutS} s (wait returned $r)" >&2; exit 1; fi
printf '%s\\n' "$pos"`;
}

// ------------------------------------------------------------ live topology
// cluster.yaml's `db: manager` is the preferred primary; after a failover
// (the proxy promoted a worker) the live primary is elsewhere, and apply must
// follow it rather than demote it. Read on every DB node before the roles run.

/** read_only and the replica status of a DB node, in one command (`ro: 0|1`, then the status rows). */
export const TOPOLOGY_FACT = `mysql -E -e ${shq('SELECT @@GLOBAL.read_only AS ro; SHOW REPLICA STATUS')}`;

export interface NodeTopology {
  name: string;
  address: string;
  /** null: the server did not answer. */
  readOnly: boolean | null;
  /** Where it replicates from (null: not a replica). */
  sourceHost: string | null;
}

export function parseTopology(name: string, address: string, code: number, out: string): NodeTopology {
  if (code !== 0) return { name, address, readOnly: null, sourceHost: null };
  const ro = /^\s*ro:\s*(\d)/m.exec(out);
  const status = parseReplicaStatus(out);
  return { name, address, readOnly: ro ? ro[1] === '1' : null, sourceHost: status?.sourceHost || null };
}

export type LivePrimary =
  | { ok: true; primary: string; moved: boolean }
  | { ok: false; reason: string };

/**
 * The live primary: the preferred manager, unless another DB node is writable,
 * replicates from nobody and is the source of at least one other DB node (a
 * promoted worker). A fresh cluster (nobody replicates yet) keeps the preferred
 * one. Two such nodes: split brain, apply refuses to choose.
 */
export function livePrimary(preferred: string, nodes: NodeTopology[]): LivePrimary {
  const promoted = nodes.filter((n) =>
    n.name !== preferred && n.readOnly === false && n.sourceHost === null && nodes.some((o) => o.name !== n.name && o.sourceHost === n.address));
  if (promoted.length === 0) return { ok: true, primary: preferred, moved: false };
  if (promoted.length > 1) {
    return { ok: false, reason: `more than one DB node acts as the primary (${promoted.map((n) => n.name).join(', ')}: writable, replicating from nobody, replicated from): a human must pick one` };
  }
  const pref = nodes.find((n) => n.name === preferred);
  if (pref && pref.readOnly === false && pref.sourceHost === null && nodes.some((o) => o.name !== pref.name && o.sourceHost === pref.address)) {
    return { ok: false, reason: `both ${preferred} (cluster.yaml's manager) and ${promoted[0].name} act as the primary: a human must pick one` };
  }
  return { ok: true, primary: promoted[0].name, moved: true };
}

/** The hosts as the roles must see them: the live primary is the manager, the preferred one (if elsewhere) a worker. */
export function withLivePrimary(hosts: Host[], primary: string): Host[] {
  return hosts.map((h) => {
    if (!h.node.db) return h;
    const db = h.name === primary ? 'manager' : 'worker';
    return db === h.node.db ? h : { ...h, node: { ...h.node, db } };
  });
}
