// Per dialect and version (MariaDB 10.11, MySQL 8.0, 8.4, 9.x): every statement,
// option and account the roles, the bench and the proxy generate contains
// nothing that version removed; server versions are read and checked.
import { describe, expect, test } from 'bun:test';
import { REPLICA_STATUS_SQL } from '../../services/proxy/nodes.ts';
import { ACCOUNTS_FACT, accountStatements, desiredAccounts, parseAccounts, planAccounts } from '../../roles/lib/mysql-accounts.ts';
import { LIVE_VARIABLES_FACT, renderConfig, serverSettings } from '../../roles/lib/mysql-config.ts';
import { DIALECT_SQL, INSTALL_GTIDS_ONLY_SQL, parseServerVersion, REMOVED, resetInstallGtidsSql, unsupportedVersion, type ServerVersion } from '../../roles/lib/mysql-dialect.ts';
import { sakilaLoadScript, SYSBENCH_DONE_QUERY, sysbenchPrepareScript, SYSBENCH_TABLES_FACT } from '../../roles/lib/mysql-meta.ts';
import {
  catchUpScript, changeSourceSql, gtidWaitSql, REPLICA_STATUS_FACT, sourcePositionSql, startReplicaSql,
} from '../../roles/lib/mysql-replication.ts';
import type { Dialect } from '../../roles/lib/os.ts';
import { cluster, host, hosts, secrets } from './mysql-fixtures.ts';

/** Everything rampart sends to (or writes for) a server of this dialect. */
function generated(d: Dialect): string[] {
  const src = { host: host('manager').privateAddress, port: 3306, user: 'rampart_repl' };
  const accounts = desiredAccounts(d, cluster, hosts);
  const fresh = planAccounts(d, cluster, hosts, parseAccounts(''), (s) => secrets.get(s))!;
  return [
    renderConfig(d, serverSettings(d, host('manager'), 'manager', { enabled: true, timeoutMs: 10000, onTimeout: 'async' })),
    renderConfig(d, serverSettings(d, host('worker1'), 'worker')),
    LIVE_VARIABLES_FACT, ACCOUNTS_FACT, fresh.sql,
    ...accounts.flatMap((a) => accountStatements(a, 'pw')),
    changeSourceSql(d, src, 'pw'), startReplicaSql(d), sourcePositionSql(d), gtidWaitSql(d, 'x', 5), catchUpScript(d, src),
    REPLICA_STATUS_FACT, REPLICA_STATUS_SQL,
    sakilaLoadScript('/tmp/s.tgz', cluster.database.sakila.sha256, 'sakila'), sysbenchPrepareScript(cluster.database.sysbench),
    SYSBENCH_DONE_QUERY, SYSBENCH_TABLES_FACT,
    // the proxy's failover statements
    ...Object.values(DIALECT_SQL[d].failover).flatMap((v) => (typeof v === 'function' ? v('10.0.0.2', 3306) : v)),
  ];
}

const MATRIX: ServerVersion[] = [
  { dialect: 'mariadb', major: 10, minor: 11, patch: 6 },
  { dialect: 'mysql', major: 8, minor: 0, patch: 39 },
  { dialect: 'mysql', major: 8, minor: 4, patch: 3 },
  { dialect: 'mysql', major: 9, minor: 7, patch: 4 },
];

const atLeast = (v: ServerVersion, s: [number, number, number]) => (v.major - s[0] || v.minor - s[1] || v.patch - s[2]) >= 0;

describe('nothing a supported version removed', () => {
  for (const v of MATRIX) {
    test(`${v.dialect} ${v.major}.${v.minor}.${v.patch}`, () => {
      expect(unsupportedVersion(v, v.dialect)).toBeNull();
      const texts = generated(v.dialect);
      const gone = REMOVED[v.dialect].filter((r) => atLeast(v, r.since));
      expect(gone.length).toBeGreaterThan(0);
      for (const text of texts) {
        for (const r of gone) for (const form of r.forms) expect({ what: r.what, hit: form.test(text) ? text : null }).toEqual({ what: r.what, hit: null });
      }
    });
  }

  test('the checks would catch the old forms (they are not vacuous)', () => {
    const mysql84 = REMOVED.mysql.filter((r) => atLeast(MATRIX[2], r.since)).flatMap((r) => r.forms);
    for (const old of ['SHOW SLAVE STATUS', 'START SLAVE', 'CHANGE MASTER TO MASTER_HOST=1', "IDENTIFIED WITH mysql_native_password BY 'x'", 'binlog_format = ROW']) {
      expect(mysql84.some((f) => f.test(old))).toBe(true);
    }
    expect(REMOVED.mariadb[0].forms.some((f) => f.test(changeSourceSql('mysql', { host: 'h', port: 1, user: 'u' }, 'p')))).toBe(true);
  });

  test('replica status is read with one statement valid on both dialects, by the roles and the proxy alike', () => {
    expect(DIALECT_SQL.mariadb.replicaStatus).toBe(DIALECT_SQL.mysql.replicaStatus);
    expect(REPLICA_STATUS_SQL).toBe(DIALECT_SQL.mysql.replicaStatus);
    // -E, never \G: the 9.x client refuses client commands in batch mode
    expect(REPLICA_STATUS_FACT).toContain('mysql -E');
    expect(REPLICA_STATUS_FACT).not.toContain('\\G');
  });
});

describe('server versions', () => {
  test('parsed from mysqld --version and SELECT VERSION() of both servers', () => {
    expect(parseServerVersion('/usr/sbin/mysqld  Ver 9.7.4-2 for Linux on x86_64 ((Debian))')).toEqual({ dialect: 'mysql', major: 9, minor: 7, patch: 4 });
    expect(parseServerVersion('/usr/sbin/mysqld  Ver 8.0.42-0ubuntu0.24.04.1 for Linux on x86_64 ((Ubuntu))')).toEqual({ dialect: 'mysql', major: 8, minor: 0, patch: 42 });
    expect(parseServerVersion('mariadbd  Ver 10.11.14-MariaDB-0+deb12u2 for debian-linux-gnu on x86_64 (Debian 12)')).toEqual({ dialect: 'mariadb', major: 10, minor: 11, patch: 14 });
    expect(parseServerVersion('10.11.6-MariaDB-log')).toEqual({ dialect: 'mariadb', major: 10, minor: 11, patch: 6 });
    expect(parseServerVersion('')).toBeNull();
  });

  test('too old or the other engine is refused', () => {
    expect(unsupportedVersion({ dialect: 'mysql', major: 8, minor: 0, patch: 25 }, 'mysql')).toMatch(/older than/);
    expect(unsupportedVersion({ dialect: 'mariadb', major: 10, minor: 4, patch: 0 }, 'mariadb')).toMatch(/older than/);
    expect(unsupportedVersion({ dialect: 'mariadb', major: 10, minor: 11, patch: 6 }, 'mysql')).toMatch(/wants mysql/);
  });
});

describe('install-time GTIDs of a fresh MySQL server', () => {
  test('the reset uses the statement the version has, and puts super_read_only back', () => {
    expect(resetInstallGtidsSql({ dialect: 'mysql', major: 8, minor: 0, patch: 36 })).toContain('\nRESET MASTER;\n');
    for (const v of [{ major: 8, minor: 4, patch: 3 }, { major: 9, minor: 7, patch: 4 }]) {
      const sql = resetInstallGtidsSql({ dialect: 'mysql', ...v });
      expect(sql).toContain('\nRESET BINARY LOGS AND GTIDS;\n');
      expect(sql).not.toContain('RESET MASTER');
      expect(sql.indexOf('SET @ro = @@GLOBAL.super_read_only')).toBe(0);
      expect(sql.trim().endsWith('SET GLOBAL super_read_only = @ro;')).toBe(true);
    }
  });
  test('it resets only when every executed GTID is purged and no replication channel exists', () => {
    expect(INSTALL_GTIDS_ONLY_SQL).toContain('GTID_SUBSET(@@GLOBAL.gtid_executed, @@GLOBAL.gtid_purged)');
    expect(INSTALL_GTIDS_ONLY_SQL).toContain("@@GLOBAL.gtid_executed <> ''");
    expect(INSTALL_GTIDS_ONLY_SQL).toContain('replication_connection_configuration) = 0');
  });
});
