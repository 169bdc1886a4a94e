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
  /** The client option that lets a replica / client fetch the server's RSA key for caching_sha2_password without TLS. */
  clientPublicKeyOption: string;
  /**
   * Appended to ALTER USER ... IDENTIFIED BY to keep the old password valid
   * beside the new one (MySQL 8.0.14+ dual passwords); '' where the server has
   * none (MariaDB: the proxy falls back to the old password instead).
   */
  retainCurrentPassword: string;
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
    changeSource: (src, pw, connectRetryS) =>
      `CHANGE MASTER TO MASTER_HOST=${q(src.host)}, MASTER_PORT=${src.port}, MASTER_USER=${q(src.user)}, MASTER_PASSWORD=${q(pw)}, MASTER_CONNECT_RETRY=${connectRetryS}, MASTER_USE_GTID=slave_pos`,
    gtidPosition: 'SELECT @@GLOBAL.gtid_binlog_pos',
    gtidWait: (pos, t) => `SELECT MASTER_GTID_WAIT(${q(pos)}, ${t})`,
    monitorPrivilege: 'SLAVE MONITOR',
    sourceTls: (ca) => `, MASTER_SSL=1, MASTER_SSL_CA=${q(ca)}, MASTER_SSL_VERIFY_SERVER_CERT=1`,
    clientTls: (ca) => ['ssl', `ssl-ca=${ca}`, 'ssl-verify-server-cert'],
    reloadTls: 'FLUSH SSL',
    clientPublicKeyOption: '',
    retainCurrentPassword: '',
  },
  mysql: {
    replicaStatus: 'SHOW REPLICA STATUS',
    startReplica: 'START REPLICA',
    stopReplica: 'STOP REPLICA',
    // SOURCE_RETRY_COUNT: 8.4 lowered the default to 10 attempts, so a replica gave up after
    // a minute of manager outage and stayed stopped until the next apply
    changeSource: (src, pw, connectRetryS, retryCount) =>
      `CHANGE REPLICATION SOURCE TO SOURCE_HOST=${q(src.host)}, SOURCE_PORT=${src.port}, SOURCE_USER=${q(src.user)}, SOURCE_PASSWORD=${q(pw)}, SOURCE_CONNECT_RETRY=${connectRetryS}, SOURCE_RETRY_COUNT=${retryCount}, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1`,
    gtidPosition: "SELECT REPLACE(@@GLOBAL.gtid_executed, '\\n', '')",
    gtidWait: (pos, t) => `SELECT WAIT_FOR_EXECUTED_GTID_SET(${q(pos)}, ${t})`,
    monitorPrivilege: 'REPLICATION CLIENT',
    sourceTls: (ca) => `, SOURCE_SSL=1, SOURCE_SSL_CA=${q(ca)}, SOURCE_SSL_VERIFY_SERVER_CERT=1`,
    clientTls: (ca) => [`ssl-ca=${ca}`, 'ssl-mode=VERIFY_IDENTITY'],
    reloadTls: 'ALTER INSTANCE RELOAD TLS',
    clientPublicKeyOption: ' --get-server-public-key',
    retainCurrentPassword: ' RETAIN CURRENT PASSWORD',
  },
};
