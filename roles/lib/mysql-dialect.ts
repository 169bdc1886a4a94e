// The one place where MariaDB and Oracle MySQL differ in SQL: every statement
// the roles (and the bench) send that is not the same on both servers, chosen
// by dialect; which server versions are supported; and what each version
// removed (the unit tests check every generated statement against it).
//
// Forms chosen so one spelling serves every supported version of a dialect:
// MySQL's REPLICA/SOURCE forms exist since 8.0.22 and the old SLAVE/MASTER
// forms are gone in 8.4; MariaDB keeps CHANGE MASTER and its old column names
// but has accepted SHOW REPLICA STATUS since 10.5.1.
import type { Dialect } from './os.ts';

/** A server version as `mysqld --version` / SELECT VERSION() print it. */
export interface ServerVersion {
  dialect: Dialect;
  major: number;
  minor: number;
  patch: number;
}

/** Oldest versions the statements below are valid on (MySQL: log_replica_updates and replica_net_timeout arrived in 8.0.26). */
export const MIN_VERSION: Record<Dialect, [number, number, number]> = { mariadb: [10, 5, 2], mysql: [8, 0, 26] };

/** Shell command printing the installed server's version line (nothing when no server is installed). */
export const SERVER_VERSION_FACT = '{ mysqld --version || mariadbd --version; } 2>/dev/null | head -n 1; true';

/** `mysqld  Ver 9.7.0-1 for Linux ...`, `mariadbd  Ver 10.11.11-MariaDB-0+deb12u1 ...`, `8.4.3-0ubuntu...`, `10.11.6-MariaDB-log`. */
export function parseServerVersion(text: string): ServerVersion | null {
  const m = /(?:Ver\s+|^)(\d+)\.(\d+)\.(\d+)(\S*)/m.exec(text.trim());
  if (!m) return null;
  return { dialect: /mariadb/i.test(text) ? 'mariadb' : 'mysql', major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) };
}

export const versionText = (v: ServerVersion) => `${v.dialect === 'mariadb' ? 'MariaDB' : 'MySQL'} ${v.major}.${v.minor}.${v.patch}`;

const cmp = (v: ServerVersion, w: [number, number, number]) => v.major - w[0] || v.minor - w[1] || v.patch - w[2];

/**
 * MySQL only: forget the GTIDs of a freshly installed server that no binary log
 * holds any more. Debian's mysql-server postinst (9.7.4-2) runs an ALTER USER with
 * GTIDs on; rampart's first config renames the binary log (log_bin = mysql-bin), so
 * that transaction stays in gtid_executed but in no log rampart's replicas can read
 * (gtid_purged), and every replica fails with error 1236. Runs only right after the
 * restart that first turned rampart's binary log on, and only when everything the
 * server executed is purged (nothing a replica could fetch is forgotten) and it
 * has no replication channel: INSTALL_GTIDS_ONLY_SQL says 1 then.
 */
export const INSTALL_GTIDS_ONLY_SQL = "SELECT @@GLOBAL.gtid_executed <> '' AND GTID_SUBSET(@@GLOBAL.gtid_executed, @@GLOBAL.gtid_purged) AND (SELECT COUNT(*) FROM performance_schema.replication_connection_configuration) = 0";

/** The reset itself (super_read_only lifted for it on a replica, then put back). */
export function resetInstallGtidsSql(v: ServerVersion | null): string {
  const reset = v && cmp(v, [8, 2, 0]) < 0 ? 'RESET MASTER' : 'RESET BINARY LOGS AND GTIDS';
  return `SET @ro = @@GLOBAL.super_read_only;\nSET GLOBAL super_read_only = 0;\n${reset};\nSET GLOBAL super_read_only = @ro;\n`;
}

/** Why this server cannot run rampart's statements (null = supported). */
export function unsupportedVersion(v: ServerVersion, want: Dialect): string | null {
  if (v.dialect !== want) return `the node runs ${versionText(v)}, cluster.yaml wants ${want} (database.engine)`;
  const min = MIN_VERSION[want];
  if (cmp(v, min) < 0) return `${versionText(v)} is older than the oldest supported ${want} (${min.join('.')})`;
  return null;
}

/**
 * What a version no longer accepts (statements, options, plugins), per dialect.
 * `since` is the first version without it.
 */
export const REMOVED: Record<Dialect, { since: [number, number, number]; forms: RegExp[]; what: string }[]> = {
  mysql: [
    {
      since: [8, 4, 0],
      what: 'SLAVE/MASTER statements',
      forms: [/\bSHOW\s+SLAVE\s+STATUS\b/i, /\b(START|STOP)\s+SLAVE\b/i, /\bCHANGE\s+MASTER\b/i, /\bSHOW\s+MASTER\s+STATUS\b/i, /\bMASTER_[A-Z_]+\s*=/],
    },
    { since: [8, 4, 0], what: 'mysql_native_password (disabled by default)', forms: [/IDENTIFIED\s+WITH\s+'?mysql_native_password/i, /default_authentication_plugin/i] },
    // deprecated since 8.0.34: a warning at every start; ROW is the default anyway
    { since: [8, 0, 34], what: 'binlog_format (deprecated)', forms: [/^\s*binlog_format\s*=/m] },
  ],
  mariadb: [
    // MariaDB never had these MySQL forms
    { since: [0, 0, 0], what: 'MySQL-only replication forms', forms: [/\bCHANGE\s+REPLICATION\s+SOURCE\b/i, /\bSOURCE_AUTO_POSITION\b/i, /\bSTART\s+REPLICA\b/i] },
  ],
};

/** Statements of one dialect that differ from the other's. */
export interface DialectSql {
  /** Replica status, one `Key: value` per line with `mysql -E` (never `\G`: the 9.x client refuses it in batch mode). */
  replicaStatus: string;
  startReplica: string;
  stopReplica: string;
  /** Run after stopping and before pointing: makes a former primary continue from its own GTID position (null: not needed). */
  adoptOwnPosition: string | null;
  /** Point the replica at its source with GTID auto-positioning (the password is in it: stdin only). */
  changeSource(src: { host: string; port: number; user: string }, password: string, connectRetryS: number, retryCount: number): string;
  /** This server's GTID position as one line. */
  gtidPosition: string;
  /** Block until `pos` is applied here or `timeoutS` passed; 0 when caught up. */
  gtidWait(pos: string, timeoutS: string | number): string;
  /** The only global privilege the proxy's probes need. */
  monitorPrivilege: string;
  /** Replication over TLS, the source's certificate verified against `ca` (appended to changeSource). */
  sourceTls(ca: string): string;
  /** Option-file lines making the command-line client use TLS and verify the server against `ca`. */
  clientTls(ca: string): string[];
  /** Reloads the certificate files without a restart. */
  reloadTls: string;
  /**
   * What the proxy's failover account needs, nothing more (no data access):
   * stop/start/re-point replication (REPLICATION SLAVE ADMIN / REPLICATION_SLAVE_ADMIN),
   * RESET SLAVE/REPLICA ALL on the promoted node (RELOAD: both servers ask for it),
   * set read_only (MariaDB >= 10.11: READ_ONLY ADMIN, no longer part of SUPER;
   * MySQL: SYSTEM_VARIABLES_ADMIN, also for super_read_only) and read replica status.
   */
  failoverPrivileges: string[];
  /** The proxy's failover statements (its admin connection runs no others). */
  failover: FailoverSql;
  /** The client option that lets a replica / client fetch the server's RSA key for caching_sha2_password without TLS. */
  clientPublicKeyOption: string;
  /**
   * Appended to ALTER USER ... IDENTIFIED BY to keep the old password valid
   * beside the new one (MySQL 8.0.14+ dual passwords); '' where the server has
   * none (MariaDB: the proxy falls back to the old password instead).
   */
  retainCurrentPassword: string;
  /** Semi-synchronous replication's names in this dialect. */
  semiSync: SemiSyncNames;
}

/**
 * Semi-sync differs by dialect: MariaDB (>= 10.3) has it built in as
 * rpl_semi_sync_master_* / rpl_semi_sync_slave_*; MySQL (>= 8.0.26) loads the
 * semisync_source.so / semisync_replica.so plugins, named rpl_semi_sync_source_* /
 * rpl_semi_sync_replica_*.
 */
export interface SemiSyncNames {
  /** Plugin libraries to load (plugin_load_add), none where built in. */
  plugins: string[];
  /** Option-file prefix for the plugin's options: `loose-` so a missing plugin never stops the server (the live check names it instead). */
  optionPrefix: string;
  sourceEnabled: string;
  replicaEnabled: string;
  /** ms a commit waits for an acknowledgement before falling back to async. */
  timeout: string;
  /** AFTER_SYNC: the commit is visible to nobody before a replica has it (lossless). */
  waitPoint: string;
  /**
   * OFF: a server with no semi-sync replica connected commits without waiting. Every DB node has
   * the source side on (a promoted worker keeps the guarantee), and a worker (log_replica_updates)
   * has no replica of its own: with the default ON its applier waited the whole timeout for an
   * acknowledgement nobody sends, on the first replicated commit after each start (10 s of lag,
   * the worker left out of reads). The primary loses nothing by it: with no replica connected it
   * would run without the guarantee after the timeout anyway (and `refuse` refuses at the proxy).
   */
  waitNoReplica: string;
  /** Global status: ON while the source waits for acknowledgements (OFF: fallen back to async). */
  statusVar: string;
  /** Global status: semi-sync replicas connected now. */
  clientsVar: string;
}

/**
 * What the proxy's failover runs on a DB node, by dialect (services/proxy/failover.ts).
 * Re-pointing names only the new source and GTID positioning: CHANGE MASTER / CHANGE
 * REPLICATION SOURCE keep every option not named, so the replication user, its password
 * and the TLS link set by roles/replication.ts (sourceTls: TLS, the source's certificate
 * verified against the cluster CA) stay as they were: the proxy never holds the
 * replication password, and a re-pointed replica replicates over TLS like the others.
 */
export interface FailoverSql {
  /** GTIDs applied here and this server's own origin (server_id / server_uuid). */
  state: string;
  /** Stop fetching from the (dead) source: what was received is final. */
  stopReceiver: string;
  startReceiver: string;
  /** Become a primary: forget the source, accept writes. */
  promote: string[];
  /** Follow another primary (GTID auto-positioning; user, password and TLS kept). */
  repoint(host: string, port: number): string[];
  /** A replaced primary never accepts writes again. */
  fence: string[];
  /** Undo a fence (a switchover that stopped before promoting: the old primary takes writes again). */
  unfence: string[];
  /** A demoted primary about to replicate continues from its own history (null where auto-positioning does it). */
  demotedPosition: string | null;
}

/** A string literal in either dialect's default sql_mode. */
export function sqlString(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function sqlIdent(v: string): string {
  return '`' + v.replace(/`/g, '``') + '`';
}

const q = sqlString;

export const DIALECT_SQL: Record<Dialect, DialectSql> = {
  mariadb: {
    replicaStatus: 'SHOW REPLICA STATUS',
    startReplica: 'START SLAVE',
    stopReplica: 'STOP SLAVE',
    // MariaDB retries the source master_retry_count times (server option, default 100000)
    // a former primary rejoining has its history in gtid_binlog_pos and an empty gtid_slave_pos:
    // start from its own position, not from the beginning (a no-op on a replica that has one)
    adoptOwnPosition: "SET GLOBAL gtid_slave_pos = IF(@@GLOBAL.gtid_slave_pos = '', @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos)",
    changeSource: (src, pw, connectRetryS) =>
      `CHANGE MASTER TO MASTER_HOST=${q(src.host)}, MASTER_PORT=${src.port}, MASTER_USER=${q(src.user)}, MASTER_PASSWORD=${q(pw)}, MASTER_CONNECT_RETRY=${connectRetryS}, MASTER_USE_GTID=slave_pos`,
    gtidPosition: 'SELECT @@GLOBAL.gtid_binlog_pos',
    gtidWait: (pos, t) => `SELECT MASTER_GTID_WAIT(${q(pos)}, ${t})`,
    monitorPrivilege: 'SLAVE MONITOR',
    sourceTls: (ca) => `, MASTER_SSL=1, MASTER_SSL_CA=${q(ca)}, MASTER_SSL_VERIFY_SERVER_CERT=1`,
    clientTls: (ca) => ['ssl', `ssl-ca=${ca}`, 'ssl-verify-server-cert'],
    reloadTls: 'FLUSH SSL',
    failoverPrivileges: ['RELOAD', 'REPLICATION SLAVE ADMIN', 'READ_ONLY ADMIN', 'SLAVE MONITOR'],
    clientPublicKeyOption: '',
    retainCurrentPassword: '',
    failover: {
      state: 'SELECT @@GLOBAL.gtid_current_pos AS executed, @@GLOBAL.server_id AS self',
      stopReceiver: 'STOP SLAVE IO_THREAD',
      startReceiver: 'START SLAVE IO_THREAD',
      promote: ['STOP SLAVE', 'RESET SLAVE ALL', 'SET GLOBAL read_only = OFF'],
      repoint: (host, port) => ['STOP SLAVE', `CHANGE MASTER TO MASTER_HOST=${q(host)}, MASTER_PORT=${port}, MASTER_USE_GTID=slave_pos`, 'START SLAVE'],
      fence: ['SET GLOBAL read_only = ON'],
      unfence: ['SET GLOBAL read_only = OFF'],
      // its own writes are in gtid_binlog_pos, not in the gtid_slave_pos it had as a replica before
      demotedPosition: 'SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos',
    },
    semiSync: {
      plugins: [],
      optionPrefix: '',
      sourceEnabled: 'rpl_semi_sync_master_enabled',
      replicaEnabled: 'rpl_semi_sync_slave_enabled',
      timeout: 'rpl_semi_sync_master_timeout',
      waitPoint: 'rpl_semi_sync_master_wait_point',
      waitNoReplica: 'rpl_semi_sync_master_wait_no_slave',
      statusVar: 'Rpl_semi_sync_master_status',
      clientsVar: 'Rpl_semi_sync_master_clients',
    },
  },
  mysql: {
    replicaStatus: 'SHOW REPLICA STATUS',
    startReplica: 'START REPLICA',
    stopReplica: 'STOP REPLICA',
    // SOURCE_RETRY_COUNT: 8.4 lowered the default to 10 attempts, so a replica gave up after
    // a minute of manager outage and stayed stopped until the next apply
    // auto-positioning starts from gtid_executed, which a former primary has
    adoptOwnPosition: null,
    changeSource: (src, pw, connectRetryS, retryCount) =>
      `CHANGE REPLICATION SOURCE TO SOURCE_HOST=${q(src.host)}, SOURCE_PORT=${src.port}, SOURCE_USER=${q(src.user)}, SOURCE_PASSWORD=${q(pw)}, SOURCE_CONNECT_RETRY=${connectRetryS}, SOURCE_RETRY_COUNT=${retryCount}, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1`,
    gtidPosition: "SELECT REPLACE(@@GLOBAL.gtid_executed, '\\n', '')",
    gtidWait: (pos, t) => `SELECT WAIT_FOR_EXECUTED_GTID_SET(${q(pos)}, ${t})`,
    monitorPrivilege: 'REPLICATION CLIENT',
    sourceTls: (ca) => `, SOURCE_SSL=1, SOURCE_SSL_CA=${q(ca)}, SOURCE_SSL_VERIFY_SERVER_CERT=1`,
    clientTls: (ca) => [`ssl-ca=${ca}`, 'ssl-mode=VERIFY_IDENTITY'],
    reloadTls: 'ALTER INSTANCE RELOAD TLS',
    failoverPrivileges: ['RELOAD', 'REPLICATION CLIENT', 'REPLICATION_SLAVE_ADMIN', 'SYSTEM_VARIABLES_ADMIN'],
    clientPublicKeyOption: ' --get-server-public-key',
    retainCurrentPassword: ' RETAIN CURRENT PASSWORD',
    failover: {
      state: "SELECT REPLACE(@@GLOBAL.gtid_executed, '\\n', '') AS executed, @@GLOBAL.server_uuid AS self",
      stopReceiver: 'STOP REPLICA IO_THREAD',
      startReceiver: 'START REPLICA IO_THREAD',
      promote: ['STOP REPLICA', 'RESET REPLICA ALL', 'SET GLOBAL super_read_only = OFF', 'SET GLOBAL read_only = OFF'],
      repoint: (host, port) => ['STOP REPLICA', `CHANGE REPLICATION SOURCE TO SOURCE_HOST=${q(host)}, SOURCE_PORT=${port}, SOURCE_AUTO_POSITION=1`, 'START REPLICA'],
      fence: ['SET GLOBAL read_only = ON', 'SET GLOBAL super_read_only = ON'],
      unfence: ['SET GLOBAL super_read_only = OFF', 'SET GLOBAL read_only = OFF'],
      demotedPosition: null,
    },
    semiSync: {
      plugins: ['semisync_source.so', 'semisync_replica.so'],
      optionPrefix: 'loose-',
      sourceEnabled: 'rpl_semi_sync_source_enabled',
      replicaEnabled: 'rpl_semi_sync_replica_enabled',
      timeout: 'rpl_semi_sync_source_timeout',
      waitPoint: 'rpl_semi_sync_source_wait_point',
      waitNoReplica: 'rpl_semi_sync_source_wait_no_replica',
      statusVar: 'Rpl_semi_sync_source_status',
      clientsVar: 'Rpl_semi_sync_source_clients',
    },
  },
};
