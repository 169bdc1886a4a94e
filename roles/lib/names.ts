// Names shared by several roles (and the services' deployment): MySQL users
// and the keys of generated secrets in .rampart/secrets.json.

export const DB_USERS = {
  /** The proxy's user: DML + SELECT on the application schema, from the proxy's address only. */
  app: 'rampart_app',
  /** Replication, from worker addresses only. */
  repl: 'rampart_repl',
  /** sysbench, local to each DB node. */
  sysbench: 'sbtest',
  /** The proxy's probes (health, latency, replication lag): replica status only, no data; from the proxy's address only. */
  monitor: 'rampart_monitor',
  /** The proxy's failover: promote, re-point and fence DB nodes (replication admin + read_only only, no data); from the proxy's address only. */
  failover: 'rampart_failover',
} as const;

export const SECRETS = {
  mysqlApp: 'mysql_app_password',
  mysqlRepl: 'mysql_repl_password',
  mysqlSysbench: 'mysql_sysbench_password',
  mysqlMonitor: 'mysql_monitor_password',
  mysqlFailover: 'mysql_failover_password',
  /** Clients' key for the gatekeeper (X-API-Key). */
  apiKey: 'gatekeeper_api_key',
  /** Internal credential gatekeeper -> trusted host. */
  gatekeeperToTrusted: 'gatekeeper_to_trustedhost',
  /** Internal credential trusted host -> proxy. */
  trustedToProxy: 'trustedhost_to_proxy',
} as const;
