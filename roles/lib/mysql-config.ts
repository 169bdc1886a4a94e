// The database server's configuration, per dialect, as pure functions: a
// stable server_id, the option file, and the live variables that prove the
// running server uses it.
import { createHash } from 'node:crypto';
import type { DbRole, Host, SemiSyncSpec } from '../../core/types.ts';
import { DIALECT_SQL } from './mysql-dialect.ts';
import type { Dialect } from './os.ts';

export const MYSQL_PORT = 3306;
/** Replica network timeout; the heartbeat period defaults to half of it. */
export const NET_TIMEOUT_S = 10;

/** The server's TLS files (written by the mysql role; the key 0600, the mysql user's): the cluster CA, its certificate, its key. */
export const DB_TLS_PATHS = { ca: '/etc/mysql/rampart-tls/ca.pem', cert: '/etc/mysql/rampart-tls/server.pem', key: '/etc/mysql/rampart-tls/server.key' } as const;

/** systemd unit of the server. */
export function dbService(d: Dialect): string {
  return d === 'mariadb' ? 'mariadb' : 'mysql';
}

/**
 * The option files each package ships in the folder ours goes to. Files of an
 * `!includedir` are read in sorted order and the last value wins, so ours must
 * sort after every one of them: MySQL's `mysqld.cnf` sets bind-address =
 * 127.0.0.1, and a `60-...` file sorts before it ('6' < 'm').
 */
export const PACKAGED_OPTION_FILES: Record<Dialect, string[]> = {
  mariadb: ['50-client.cnf', '50-mysql-clients.cnf', '50-mysqld_safe.cnf', '50-server.cnf', '60-galera.cnf'],
  mysql: ['mysqld.cnf'],
};

/** Our option file, named to sort after the packaged ones of its folder. */
export function configPath(d: Dialect): string {
  return d === 'mariadb' ? '/etc/mysql/mariadb.conf.d/60-rampart.cnf' : '/etc/mysql/mysql.conf.d/zz-rampart.cnf';
}

/** Where earlier rampart versions wrote the MySQL option file (read before mysqld.cnf): removed when found. */
export const LEGACY_CONFIG_PATHS: Record<Dialect, string[]> = { mariadb: [], mysql: ['/etc/mysql/mysql.conf.d/60-rampart.cnf'] };

/**
 * A server_id derived from the node's NAME (not its position or address), so it
 * never changes when nodes are added, removed or reordered. 1..2^32-1.
 */
export function serverIdFor(nodeName: string): number {
  const h = createHash('sha256').update(`rampart-server-id:${nodeName}`).digest();
  return (h.readUInt32BE(0) % 4294967294) + 1;
}

/** Throws when two DB nodes would share a server_id (astronomically unlikely; rename one). */
export function assertUniqueServerIds(nodeNames: string[]): void {
  const seen = new Map<number, string>();
  for (const n of nodeNames) {
    const id = serverIdFor(n);
    const other = seen.get(id);
    if (other !== undefined) throw new Error(`nodes ${other} and ${n} hash to the same server_id ${id}: rename one of them`);
    seen.set(id, n);
  }
}

/** One option: its line in the file, and the global variable that shows it is live. */
export interface ServerSetting {
  option: string;
  value: string;
  /** Name in SHOW GLOBAL VARIABLES ('' = no variable shows it, e.g. plugin_load_add: the plugin's own variables do). */
  variable: string;
  /** Expected live value (compared after normalising ON/OFF/1/0). */
  live: string;
}

const on = (option: string, variable = option): ServerSetting => ({ option, value: 'ON', variable, live: 'ON' });
const flag = (option: string, yes: boolean): ServerSetting => ({ option, value: yes ? 'ON' : 'OFF', variable: option, live: yes ? 'ON' : 'OFF' });

/**
 * Semi-sync on every DB node, both sides: the manager waits for an
 * acknowledgement, a worker gives one, and a promoted worker keeps the
 * guarantee without a restart. AFTER_SYNC (lossless): a commit becomes visible
 * only once a worker has it. `onTimeout: refuse` is held by the proxy (it
 * refuses writes while no worker acknowledges), not by the server: a server
 * that never falls back would hang the roles' own writes on a fresh cluster.
 */
export function semiSyncSettings(d: Dialect, semi: SemiSyncSpec | undefined): ServerSetting[] {
  if (!semi) return []; // no opinion (callers that only need the replication settings)
  const n = DIALECT_SQL[d].semiSync;
  const wanted = semi.enabled;
  // turned off: the variables exist only where the plugin is loaded (MySQL): say so live only where it is built in
  if (!wanted) return d === 'mariadb' ? [flag(n.sourceEnabled, false), flag(n.replicaEnabled, false)] : [];
  const opt = (variable: string, value: string, live = value): ServerSetting => ({ option: `${n.optionPrefix}${variable}`, value, variable, live });
  return [
    ...n.plugins.map((p) => ({ option: 'plugin_load_add', value: p, variable: '', live: '' })),
    opt(n.sourceEnabled, 'ON'),
    opt(n.replicaEnabled, 'ON'),
    opt(n.timeout, String(semi.timeoutMs)),
    opt(n.waitPoint, 'AFTER_SYNC'),
    opt(n.waitNoReplica, 'OFF'),
  ];
}

export function serverSettings(d: Dialect, host: Host, role: DbRole, semi?: SemiSyncSpec): ServerSetting[] {
  return [...baseSettings(d, host, role), ...semiSyncSettings(d, semi)];
}

function baseSettings(d: Dialect, host: Host, role: DbRole): ServerSetting[] {
  const worker = role === 'worker';
  const common: ServerSetting[] = [
    { option: 'server_id', value: String(serverIdFor(host.node.name)), variable: 'server_id', live: String(serverIdFor(host.node.name)) },
    { option: 'bind_address', value: host.privateAddress, variable: 'bind_address', live: host.privateAddress },
    { option: 'port', value: String(MYSQL_PORT), variable: 'port', live: String(MYSQL_PORT) },
    // file names independent of the hostname, so a rename never orphans the logs
    { option: 'log_bin', value: 'mysql-bin', variable: 'log_bin', live: 'ON' },
    { option: 'relay_log', value: 'relay-bin', variable: 'relay_log', live: 'relay-bin' },
    // user hosts are addresses: no DNS lookups on connect
    on('skip_name_resolve'),
    // safe with ROW format; Sakila creates functions and triggers
    on('log_bin_trust_function_creators'),
    // TLS: the accounts that log in over the network REQUIRE SSL (mysql-accounts.ts)
    { option: 'ssl_ca', value: DB_TLS_PATHS.ca, variable: 'ssl_ca', live: DB_TLS_PATHS.ca },
    { option: 'ssl_cert', value: DB_TLS_PATHS.cert, variable: 'ssl_cert', live: DB_TLS_PATHS.cert },
    { option: 'ssl_key', value: DB_TLS_PATHS.key, variable: 'ssl_key', live: DB_TLS_PATHS.key },
  ];
  // a replica notices a dead link (source restart, firewall reload) within seconds, not a minute
  const netTimeout = (variable: string): ServerSetting => ({ option: variable, value: String(NET_TIMEOUT_S), variable, live: String(NET_TIMEOUT_S) });
  if (d === 'mariadb') {
    // (MariaDB defaults to MIXED; MySQL's default is ROW and setting it is deprecated since 8.0.34)
    const row: ServerSetting = { option: 'binlog_format', value: 'ROW', variable: 'binlog_format', live: 'ROW' };
    return [...common, row, on('log_slave_updates'), on('gtid_strict_mode'), netTimeout('slave_net_timeout'), flag('read_only', worker)];
  }
  return [
    ...common,
    on('log_replica_updates'),
    on('gtid_mode'),
    on('enforce_gtid_consistency'),
    netTimeout('replica_net_timeout'),
    flag('read_only', worker),
    // replicas refuse writes even from SUPER users: no errant GTIDs
    flag('super_read_only', worker),
  ];
}

export function renderConfig(d: Dialect, settings: ServerSetting[]): string {
  const lines = settings.map((s) => `${s.option} = ${s.value}`);
  return `# managed by rampart (${d}): do not edit, the next apply rewrites it\n[mysqld]\n${lines.join('\n')}\n`;
}

/** Every variable any dialect's settings use, for one SHOW GLOBAL VARIABLES. */
const LIVE_NAMES = [
  'server_id', 'bind_address', 'port', 'log_bin', 'relay_log', 'binlog_format', 'skip_name_resolve',
  'log_bin_trust_function_creators', 'log_slave_updates', 'log_replica_updates', 'gtid_strict_mode', 'gtid_mode',
  'enforce_gtid_consistency', 'read_only', 'super_read_only', 'slave_net_timeout', 'replica_net_timeout',
  'ssl_ca', 'ssl_cert', 'ssl_key',
  ...(['mariadb', 'mysql'] as const).flatMap((d) => {
    const n = DIALECT_SQL[d].semiSync;
    return [n.sourceEnabled, n.replicaEnabled, n.timeout, n.waitPoint, n.waitNoReplica];
  }),
];

/** Shell command printing `name<TAB>value` of the live variables (fails when the server is down). */
export const LIVE_VARIABLES_FACT = `mysql -N -B -e "SHOW GLOBAL VARIABLES WHERE Variable_name IN (${LIVE_NAMES.map((n) => `'${n}'`).join(',')})"`;

export function parseVariables(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const i = line.indexOf('\t');
    if (i > 0) m.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim());
  }
  return m;
}

function norm(v: string): string {
  const u = v.trim().toUpperCase();
  if (u === 'ON' || u === '1' || u === 'TRUE' || u === 'YES') return '1';
  if (u === 'OFF' || u === '0' || u === 'FALSE' || u === 'NO' || u === '') return '0';
  // relay_log may be shown as a path ending in the configured base name
  return u.replace(/^.*\//, '');
}

/**
 * Shell command printing, for each option, every line of the server's option
 * files that sets it (`path:line:text`, both `-` and `_` spellings), then what
 * `my_print_defaults mysqld` resolves: enough to name the file that overrides ours.
 */
export function overridesFact(options: string[]): string {
  const re = options.map((o) => o.replace(/[-_]/g, '[-_]')).join('|');
  return `grep -rHnE '^[[:space:]]*(${re})[[:space:]]*(=|$)' /etc/mysql/ 2>/dev/null | grep -v rampart-tmp; echo '@@effective'; my_print_defaults mysqld 2>/dev/null | grep -E -- '^--(${re})(=|$)'; true`;
}

/** "bind_address is set by /etc/mysql/...:31 (bind-address = 127.0.0.1), read after ours" for each drifting option. */
export function explainOverrides(d: Dialect, options: string[], out: string): string[] {
  const [files = '', effective = ''] = out.split(/^@@effective$/m);
  const ours = configPath(d);
  return options.map((o) => {
    const key = o.replace(/[-_]/g, '_');
    const setters = files.split('\n').filter((l) => {
      const m = /^([^:]+):(\d+):\s*([A-Za-z_-]+)/.exec(l);
      return m && m[3].replace(/-/g, '_') === key && m[1] !== ours;
    });
    const eff = effective.split('\n').find((l) => l.replace(/-/g, '_').startsWith(`__${key}`));
    const by = setters.length ? `set again by ${setters.map((l) => l.replace(/^([^:]+:\d+):\s*/, '$1 (') + ')').join(', ')}` : 'not set by any other option file';
    return `${o}: ${by}${eff ? `; the server reads ${eff.trim()}` : ''}`;
  });
}

/** What differs between the running server and the settings: `name: live -> wanted`. */
export function liveDrift(settings: ServerSetting[], live: Map<string, string>): string[] {
  const out: string[] = [];
  for (const s of settings) {
    if (!s.variable) continue;
    const have = live.get(s.variable);
    if (have === undefined || norm(have) !== norm(s.live)) out.push(`${s.variable}: ${have ?? '(unset)'} -> ${s.live}`);
  }
  return out;
}
