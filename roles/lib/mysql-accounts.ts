// Database users, grants and rampart's own schemas, as pure functions: what
// should exist (least privilege, exact hosts), how to read what exists in one
// query, and the SQL that makes it so (written on the manager only; it reaches
// the workers through replication).
import { createHash } from 'node:crypto';
import type { Cluster, Host } from '../../core/types.ts';
import { DIALECT_SQL, sqlIdent, sqlString } from './mysql-dialect.ts';
import { DB_USERS, SECRETS } from './names.ts';
import type { Dialect } from './os.ts';

/** rampart's bookkeeping schema: completion markers written in the replicated stream. */
export const META_SCHEMA = 'rampart';
export const META_TABLE = `${META_SCHEMA}.meta`;
/** sysbench's own schema. */
export const SYSBENCH_SCHEMA = 'sbtest';

export interface Account {
  user: string;
  host: string;
  /** Name of the secret holding the password. */
  secret: string;
  /** Global privileges (besides USAGE). */
  global: string[];
  /** Privileges per schema. */
  schemas: Record<string, string[]>;
  /** REQUIRE SSL: the account logs in over TLS only (the network accounts; sysbench's local socket needs none). */
  ssl: boolean;
  /**
   * Who logs in with it, which tells npx zx rotate how to hand over a new
   * password: the proxy (its config, reloaded), replication (the replicas are
   * re-pointed), or a tool reading the secret when it runs (sysbench).
   */
  usedBy: 'proxy' | 'replication' | 'tool';
}

const APP_PRIVS = ['SELECT', 'INSERT', 'UPDATE', 'DELETE'];
/** What sysbench prepare/run/cleanup need on its own schema, nothing more. */
export const SYSBENCH_PRIVS = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'INDEX', 'ALTER'];

export function managerHost(hosts: Host[]): Host | undefined {
  return hosts.find((h) => h.node.db === 'manager');
}

export function workerHosts(hosts: Host[]): Host[] {
  return hosts.filter((h) => h.node.db === 'worker');
}

/** Every account the cluster needs, on every DB node (created on the manager). */
export function desiredAccounts(d: Dialect, cluster: Cluster, hosts: Host[]): Account[] {
  const out: Account[] = [];
  for (const p of hosts.filter((h) => h.node.service === 'proxy')) {
    // EXECUTE only when cluster.yaml allow-lists routines (the gatekeeper's policy names which ones)
    const appPrivs = cluster.services.gatekeeper.routines.length ? [...APP_PRIVS, 'EXECUTE'] : APP_PRIVS;
    out.push({ user: DB_USERS.app, host: p.privateAddress, secret: SECRETS.mysqlApp, global: [], schemas: { [cluster.database.schema]: appPrivs }, ssl: true, usedBy: 'proxy' });
    // a separate probe user, so the app user keeps DML on its schema and nothing else
    out.push({ user: DB_USERS.monitor, host: p.privateAddress, secret: SECRETS.mysqlMonitor, global: [DIALECT_SQL[d].monitorPrivilege], schemas: {}, ssl: true, usedBy: 'proxy' });
    if (cluster.services.proxy.failover.enabled) {
      // promote / re-point / fence (the exact grants: DIALECT_SQL[d].failoverPrivileges)
      out.push({ user: DB_USERS.failover, host: p.privateAddress, secret: SECRETS.mysqlFailover, global: [...DIALECT_SQL[d].failoverPrivileges], schemas: {}, ssl: true, usedBy: 'proxy' });
    }
  }
  for (const w of workerHosts(hosts)) {
    out.push({ user: DB_USERS.repl, host: w.privateAddress, secret: SECRETS.mysqlRepl, global: ['REPLICATION SLAVE'], schemas: {}, ssl: true, usedBy: 'replication' });
  }
  if (cluster.nodes.some((n) => n.db && n.roles.includes('sysbench'))) {
    // the server's default plugin (caching_sha2_password on MySQL): sysbench logs in over the
    // socket with it, and mysql_native_password is disabled in 8.4 and gone in 9.0
    out.push({ user: DB_USERS.sysbench, host: 'localhost', secret: SECRETS.mysqlSysbench, global: [], schemas: { [SYSBENCH_SCHEMA]: SYSBENCH_PRIVS }, ssl: false, usedBy: 'tool' });
  }
  return out;
}

/** Schemas rampart creates on the manager. */
export function desiredSchemas(cluster: Cluster): string[] {
  const s = [META_SCHEMA];
  if (cluster.nodes.some((n) => n.db && n.roles.includes('sysbench'))) s.push(SYSBENCH_SCHEMA);
  return s;
}

/** One query printing every user, grant and schema, tab separated, tagged U/G/S/D/T. */
export const ACCOUNTS_FACT = `mysql -N -B -e "${[
  "SELECT 'U', User, Host, plugin, IF(plugin='mysql_native_password', authentication_string, ''), ssl_type FROM mysql.user",
  "SELECT 'G', GRANTEE, PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES",
  "SELECT 'S', GRANTEE, TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES",
  "SELECT 'D', SCHEMA_NAME FROM information_schema.SCHEMATA",
  `SELECT 'T', CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA='${META_SCHEMA}'`,
].join('; ')}"`;

export interface LiveUser {
  user: string;
  host: string;
  plugin: string;
  nativeHash: string;
  /** mysql.user.ssl_type: '' (none), ANY (REQUIRE SSL), X509, SPECIFIED. */
  sslType: string;
}

export interface LiveAccounts {
  users: LiveUser[];
  /** grantee `'u'@'h'` -> global privileges (without USAGE). */
  global: Map<string, Set<string>>;
  /** grantee -> schema -> privileges. */
  schema: Map<string, Map<string, Set<string>>>;
  schemas: Set<string>;
  tables: Set<string>;
}

const normPriv = (p: string) => p.trim().toUpperCase().replace('REPLICATION REPLICA', 'REPLICATION SLAVE').replace('REPLICA MONITOR', 'SLAVE MONITOR');

/** `'user'@'host'` as information_schema spells a grantee. */
export function grantee(user: string, host: string): string {
  return `'${user}'@'${host}'`;
}

export function parseAccounts(out: string): LiveAccounts {
  const live: LiveAccounts = { users: [], global: new Map(), schema: new Map(), schemas: new Set(), tables: new Set() };
  for (const line of out.split('\n')) {
    const f = line.split('\t');
    switch (f[0]) {
      case 'U':
        live.users.push({ user: f[1] ?? '', host: f[2] ?? '', plugin: f[3] ?? '', nativeHash: f[4] === 'NULL' ? '' : (f[4] ?? ''), sslType: f[5] === 'NULL' ? '' : (f[5] ?? '') });
        break;
      case 'G': {
        const p = normPriv(f[2] ?? '');
        if (p === 'USAGE') break;
        const set = live.global.get(f[1]) ?? new Set<string>();
        set.add(p);
        live.global.set(f[1], set);
        break;
      }
      case 'S': {
        const bySchema = live.schema.get(f[1]) ?? new Map<string, Set<string>>();
        const set = bySchema.get(f[2]) ?? new Set<string>();
        set.add(normPriv(f[3] ?? ''));
        bySchema.set(f[2], set);
        live.schema.set(f[1], bySchema);
        break;
      }
      case 'D':
        live.schemas.add(f[1]);
        break;
      case 'T':
        live.tables.add(f[1]);
        break;
    }
  }
  return live;
}

/** MariaDB/MySQL mysql_native_password hash: '*' + upper(hex(sha1(sha1(password)))). */
export function nativePasswordHash(password: string): string {
  const inner = createHash('sha1').update(password).digest();
  return '*' + createHash('sha1').update(inner).digest('hex').toUpperCase();
}

const sameSet = (a: Set<string> | undefined, b: string[]) => (a?.size ?? 0) === b.length && b.every((x) => a?.has(x));

/** Why a live account differs from the wanted one (null = as wanted). */
export function accountDrift(d: Dialect, want: Account, live: LiveAccounts, password: string): string | null {
  const u = live.users.find((x) => x.user === want.user && x.host === want.host);
  const id = `${want.user}@${want.host}`;
  if (!u) return `${id} missing`;
  const plugin = d === 'mariadb' ? 'mysql_native_password' : 'caching_sha2_password';
  if (u.plugin !== plugin) return `${id} uses ${u.plugin || 'no plugin'}, want ${plugin}`;
  // salted caching_sha2 hashes cannot be compared; native ones can (without sending the password anywhere)
  if (plugin === 'mysql_native_password' && u.nativeHash !== nativePasswordHash(password)) return `${id} password differs`;
  if ((u.sslType === 'ANY') !== want.ssl) return `${id} ${want.ssl ? 'does not require TLS (REQUIRE SSL)' : `requires TLS (${u.sslType})`}`;
  const g = grantee(want.user, want.host);
  if (!sameSet(live.global.get(g), want.global)) return `${id} global privileges differ`;
  const liveSchemas = live.schema.get(g) ?? new Map<string, Set<string>>();
  const wantSchemas = Object.keys(want.schemas);
  if (liveSchemas.size !== wantSchemas.length || wantSchemas.some((s) => !sameSet(liveSchemas.get(s), want.schemas[s]))) {
    return `${id} schema privileges differ`;
  }
  return null;
}

const LOCAL_HOSTS = new Set(['localhost', '127.0.0.1', '::1']);
const MANAGED_USERS = new Set<string>(Object.values(DB_USERS));

/**
 * The servers' own local accounts (created by the package, never by a person):
 * kept although they hold global privileges. MariaDB: root, mysql (unix_socket)
 * and mariadb.sys; MySQL: root and the mysql.* system users; Ubuntu's older
 * debian-sys-maint.
 */
const SYSTEM_USERS = new Set(['root', 'mysql', 'mariadb.sys', 'mysql.sys', 'mysql.session', 'mysql.infoschema', 'debian-sys-maint']);

export type UnwantedReason = 'anonymous' | 'remote root' | 'stale' | 'unmanaged';

/** `user@host` as cluster.yaml's database.keepUsers spells it. */
export const accountId = (u: { user: string; host: string }) => `${u.user}@${u.host}`;

/**
 * Accounts that must not exist: anonymous users, root over the network, our
 * users on hosts no longer wanted, and any account rampart does not manage that
 * can log in over the network or holds a global privilege (made by hand:
 * `CREATE USER 'x'@'%'; GRANT ALL ON *.*`), unless database.keepUsers keeps it.
 * Local accounts with only schema privileges are left alone.
 */
export function unwantedUsers(live: LiveAccounts, wanted: Account[], keep: readonly string[] = []): (LiveUser & { why: UnwantedReason })[] {
  const out: (LiveUser & { why: UnwantedReason })[] = [];
  for (const u of live.users) {
    const why = ((): UnwantedReason | null => {
      if (u.user === '') return 'anonymous';
      if (u.user === 'root' && !LOCAL_HOSTS.has(u.host)) return 'remote root';
      if (MANAGED_USERS.has(u.user)) return wanted.some((w) => w.user === u.user && w.host === u.host) ? null : 'stale';
      if (keep.includes(accountId(u))) return null;
      if (SYSTEM_USERS.has(u.user) && LOCAL_HOSTS.has(u.host)) return null;
      const global = live.global.get(grantee(u.user, u.host));
      return !LOCAL_HOSTS.has(u.host) || (global?.size ?? 0) > 0 ? 'unmanaged' : null;
    })();
    if (why) out.push({ ...u, why });
  }
  return out;
}

export interface AccountsPlan {
  /** One line per difference, for the task's message. */
  reasons: string[];
  /** SQL to run through the client's stdin (contains passwords: never log it). */
  sql: string;
}

export const META_TABLE_DDL = `CREATE TABLE IF NOT EXISTS ${META_TABLE} (k VARCHAR(64) NOT NULL PRIMARY KEY, v VARCHAR(255) NOT NULL, at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)`;

/** The statements that bring users, grants and schemas to the wanted state (null = nothing to do). */
export function planAccounts(d: Dialect, cluster: Cluster, hosts: Host[], live: LiveAccounts, password: (secret: string) => string): AccountsPlan | null {
  const reasons: string[] = [];
  const sql: string[] = [];
  for (const s of desiredSchemas(cluster)) {
    if (!live.schemas.has(s)) {
      reasons.push(`schema ${s} missing`);
      sql.push(`CREATE DATABASE IF NOT EXISTS ${sqlIdent(s)}`);
    }
  }
  if (!live.tables.has(META_TABLE)) {
    if (live.schemas.has(META_SCHEMA)) reasons.push(`table ${META_TABLE} missing`);
    sql.push(META_TABLE_DDL);
  }
  if (live.schemas.has('test')) {
    reasons.push('test database present');
    sql.push('DROP DATABASE IF EXISTS `test`');
  }
  const wanted = desiredAccounts(d, cluster, hosts);
  for (const u of unwantedUsers(live, wanted, cluster.database.keepUsers)) {
    const what = u.why === 'unmanaged'
      ? ` (not managed by rampart, ${LOCAL_HOSTS.has(u.host) ? 'global privileges' : 'network access'}${live.global.get(grantee(u.user, u.host))?.size ? `: ${[...live.global.get(grantee(u.user, u.host))!].slice(0, 3).join(', ')}` : ''}; keep it with database.keepUsers)`
      : '';
    reasons.push(`drop ${u.user || "''"}@${u.host}${what}`);
    sql.push(`DROP USER IF EXISTS ${sqlString(u.user)}@${sqlString(u.host)}`);
  }
  for (const a of wanted) {
    const pw = password(a.secret);
    const why = accountDrift(d, a, live, pw);
    if (!why) continue;
    reasons.push(why);
    sql.push(...accountStatements(a, pw));
  }
  if (!reasons.length && !sql.length) return null;
  return { reasons: reasons.length ? reasons : ['meta table missing'], sql: sql.map((s) => `${s};`).join('\n') + '\n' };
}

/** Recreate one account exactly (drop + create + grants): no stale privilege survives. */
export function accountStatements(a: Account, password: string): string[] {
  const who = `${sqlString(a.user)}@${sqlString(a.host)}`;
  const out = [`DROP USER IF EXISTS ${who}`, `CREATE USER ${who} IDENTIFIED BY ${sqlString(password)}${a.ssl ? ' REQUIRE SSL' : ''}`];
  if (a.global.length) out.push(`GRANT ${a.global.join(', ')} ON *.* TO ${who}`);
  for (const [schema, privs] of Object.entries(a.schemas)) out.push(`GRANT ${privs.join(', ')} ON ${sqlIdent(schema)}.* TO ${who}`);
  return out;
}

/**
 * A new password for existing accounts, grants untouched (npx zx rotate; on
 * the manager, replicated). `retain`: where the dialect has dual passwords
 * (MySQL), the old one keeps working until passwordDiscardSql.
 */
export function passwordChangeSql(d: Dialect, accounts: readonly Account[], password: (secret: string) => string): string {
  const retain = DIALECT_SQL[d].retainCurrentPassword;
  return accounts.map((a) => `ALTER USER ${sqlString(a.user)}@${sqlString(a.host)} IDENTIFIED BY ${sqlString(password(a.secret))}${retain};`).join('\n') + '\n';
}

/** Ends the overlap where the dialect has one (MySQL: DISCARD OLD PASSWORD); null on MariaDB, where ALTER USER already replaced it. */
export function passwordDiscardSql(d: Dialect, accounts: readonly Account[]): string | null {
  if (!DIALECT_SQL[d].retainCurrentPassword) return null;
  return accounts.map((a) => `ALTER USER ${sqlString(a.user)}@${sqlString(a.host)} DISCARD OLD PASSWORD;`).join('\n') + '\n';
}
