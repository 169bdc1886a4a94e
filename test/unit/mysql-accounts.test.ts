// Users and grants: least privilege, exact hosts, the one-query fact parsed,
// drift found without exposing passwords, SQL only through stdin.
import { describe, expect, test } from 'bun:test';
import {
  accountDrift, accountStatements, ACCOUNTS_FACT, desiredAccounts, grantee, nativePasswordHash, parseAccounts, planAccounts, unwantedUsers,
} from '../../roles/lib/mysql-accounts.ts';
import { DIALECT_SQL, sqlString } from '../../roles/lib/mysql-dialect.ts';
import { DB_USERS, SECRETS } from '../../roles/lib/names.ts';
import { cluster, host, hosts, secrets } from './mysql-fixtures.ts';

const pw = (s: string) => secrets.get(s);

/** Render what the fact query prints on a server where the given SQL-described state holds. */
interface LiveSpec { user: string; host: string; plugin: string; password?: string; global?: string[]; schemas?: Record<string, string[]>; ssl?: string }
function liveFrom(users: LiveSpec[], schemas: string[] = [], tables: string[] = []): string {
  const lines: string[] = [];
  for (const u of users) {
    const hash = u.plugin === 'mysql_native_password' && u.password ? nativePasswordHash(u.password) : '';
    lines.push(['U', u.user, u.host, u.plugin, hash, u.ssl ?? ''].join('\t'));
    const g = grantee(u.user, u.host);
    for (const p of u.global?.length ? u.global : ['USAGE']) lines.push(['G', g, p].join('\t'));
    for (const [s, ps] of Object.entries(u.schemas ?? {})) for (const p of ps) lines.push(['S', g, s, p].join('\t'));
  }
  for (const s of schemas) lines.push(`D\t${s}`);
  for (const t of tables) lines.push(`T\t${t}`);
  return lines.join('\n') + '\n';
}

const SYSBENCH = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'INDEX', 'ALTER'];
const wantedLive = (d: 'mariadb' | 'mysql'): LiveSpec[] => [
  { user: 'root', host: 'localhost', plugin: d === 'mariadb' ? 'mysql_native_password' : 'auth_socket', global: ['SELECT', 'SUPER'] },
  { user: DB_USERS.app, host: host('proxy').privateAddress, plugin: d === 'mariadb' ? 'mysql_native_password' : 'caching_sha2_password', password: pw(SECRETS.mysqlApp), schemas: { sakila: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'] }, ssl: 'ANY' },
  ...['worker1', 'worker2'].map((w) => ({ user: DB_USERS.repl, host: host(w).privateAddress, plugin: d === 'mariadb' ? 'mysql_native_password' : 'caching_sha2_password', password: pw(SECRETS.mysqlRepl), global: ['REPLICATION SLAVE'], ssl: 'ANY' })),
  { user: DB_USERS.sysbench, host: 'localhost', plugin: d === 'mariadb' ? 'mysql_native_password' : 'caching_sha2_password', password: pw(SECRETS.mysqlSysbench), schemas: { sbtest: SYSBENCH } },
  { user: DB_USERS.monitor, host: host('proxy').privateAddress, plugin: d === 'mariadb' ? 'mysql_native_password' : 'caching_sha2_password', password: pw(SECRETS.mysqlMonitor), global: [DIALECT_SQL[d].monitorPrivilege], ssl: 'ANY' },
  { user: DB_USERS.failover, host: host('proxy').privateAddress, plugin: d === 'mariadb' ? 'mysql_native_password' : 'caching_sha2_password', password: pw(SECRETS.mysqlFailover), global: DIALECT_SQL[d].failoverPrivileges, ssl: 'ANY' },
];

describe('wanted accounts', () => {
  test('app: DML + SELECT on the application schema only, from the proxy only', () => {
    const app = desiredAccounts('mariadb', cluster, hosts).filter((a) => a.user === DB_USERS.app);
    expect(app).toHaveLength(1);
    expect(app[0].host).toBe(host('proxy').privateAddress);
    expect(app[0].global).toEqual([]);
    expect(app[0].schemas).toEqual({ [cluster.database.schema]: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'] });
  });

  test('app: EXECUTE on the schema only when cluster.yaml allow-lists routines', () => {
    const withRoutines = { ...cluster, services: { ...cluster.services, gatekeeper: { ...cluster.services.gatekeeper, routines: ['sakila.inventory_in_stock'] } } };
    const [app] = desiredAccounts('mariadb', withRoutines, hosts).filter((a) => a.user === DB_USERS.app);
    expect(app.schemas).toEqual({ [cluster.database.schema]: ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'EXECUTE'] });
    expect(app.global).toEqual([]);
  });

  test('replication: REPLICATION SLAVE only, one account per worker address, none for the manager or services', () => {
    const repl = desiredAccounts('mariadb', cluster, hosts).filter((a) => a.user === DB_USERS.repl);
    expect(repl.map((a) => a.host).sort()).toEqual([host('worker1').privateAddress, host('worker2').privateAddress].sort());
    for (const a of repl) {
      expect(a.global).toEqual(['REPLICATION SLAVE']);
      expect(a.schemas).toEqual({});
    }
  });

  test('monitor: replica status only (no data, no schema), from the proxy only, per dialect', () => {
    for (const d of ['mariadb', 'mysql'] as const) {
      const mon = desiredAccounts(d, cluster, hosts).filter((a) => a.user === DB_USERS.monitor);
      expect(mon).toHaveLength(1);
      expect(mon[0].host).toBe(host('proxy').privateAddress);
      expect(mon[0].global).toEqual([d === 'mariadb' ? 'SLAVE MONITOR' : 'REPLICATION CLIENT']);
      expect(mon[0].schemas).toEqual({});
    }
  });

  test('sysbench: local only, its own schema only, the server default plugin on both (no mysql_native_password: gone in MySQL 9)', () => {
    for (const d of ['mariadb', 'mysql'] as const) {
      const [sb] = desiredAccounts(d, cluster, hosts).filter((a) => a.user === DB_USERS.sysbench);
      expect(sb.host).toBe('localhost');
      expect(Object.keys(sb.schemas)).toEqual(['sbtest']);
      expect(accountStatements(sb, 'pw').join('\n')).not.toContain('IDENTIFIED WITH');
    }
  });

  test('failover: replication admin, RELOAD and read_only only (no data), from the proxy only, per dialect', () => {
    const want = { mariadb: ['RELOAD', 'REPLICATION SLAVE ADMIN', 'READ_ONLY ADMIN', 'SLAVE MONITOR'], mysql: ['RELOAD', 'REPLICATION CLIENT', 'REPLICATION_SLAVE_ADMIN', 'SYSTEM_VARIABLES_ADMIN'] };
    for (const d of ['mariadb', 'mysql'] as const) {
      const f = desiredAccounts(d, cluster, hosts).filter((a) => a.user === DB_USERS.failover);
      expect(f.map((a) => [a.host, a.global, a.schemas])).toEqual([[host('proxy').privateAddress, want[d], {}]]);
      const off = { ...cluster, services: { ...cluster.services, proxy: { ...cluster.services.proxy, failover: { ...cluster.services.proxy.failover, enabled: false } } } };
      expect(desiredAccounts(d, off, hosts).some((a) => a.user === DB_USERS.failover)).toBe(false);
    }
  });

  test('no account anywhere uses a wildcard host or global data privileges', () => {
    for (const d of ['mariadb', 'mysql'] as const) {
      for (const a of desiredAccounts(d, cluster, hosts)) {
        expect(a.host).not.toMatch(/[%_]/);
        expect(a.global.filter((p) => p !== 'REPLICATION SLAVE' && p !== DIALECT_SQL[d].monitorPrivilege && !DIALECT_SQL[d].failoverPrivileges.includes(p))).toEqual([]);
      }
    }
  });
});

describe('statements', () => {
  test('MySQL accounts, sysbench included, get the default plugin (IDENTIFIED BY, no plugin named)', () => {
    const accts = desiredAccounts('mysql', cluster, hosts);
    const sb = accountStatements(accts.find((a) => a.user === DB_USERS.sysbench)!, 'pw');
    expect(sb).toContain(`CREATE USER 'sbtest'@'localhost' IDENTIFIED BY 'pw'`);
    expect(sb).toContain("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON `sbtest`.* TO 'sbtest'@'localhost'");
    const repl = accountStatements(accts.find((a) => a.user === DB_USERS.repl)!, 'pw');
    expect(repl[0]).toMatch(/^DROP USER IF EXISTS 'rampart_repl'@'10\.77\.0\.\d+'$/);
    expect(repl[1]).toMatch(/^CREATE USER 'rampart_repl'@'10\.77\.0\.\d+' IDENTIFIED BY 'pw' REQUIRE SSL$/);
    expect(repl[2]).toMatch(/^GRANT REPLICATION SLAVE ON \*\.\* TO 'rampart_repl'@/);
  });

  test('SQL string literals escape quotes and backslashes', () => {
    expect(sqlString(`a'b\\c`)).toBe(`'a\\'b\\\\c'`);
  });

  test('native password hash matches the server algorithm (known vector)', () => {
    // SELECT PASSWORD('password') on MariaDB / MySQL 5.7
    expect(nativePasswordHash('password')).toBe('*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19');
  });

  test('the fact query is one client call and carries no secret', () => {
    expect(ACCOUNTS_FACT.match(/\bmysql /g)).toHaveLength(1);
    for (const s of Object.values(SECRETS)) expect(ACCOUNTS_FACT).not.toContain(pw(s));
  });
});

describe('plan on live state', () => {
  for (const d of ['mariadb', 'mysql'] as const) {
    test(`${d}: everything in place -> nothing to do`, () => {
      const live = parseAccounts(liveFrom(wantedLive(d), ['mysql', 'rampart', 'sbtest', 'sakila'], ['rampart.meta']));
      expect(planAccounts(d, cluster, hosts, live, pw)).toBeNull();
    });
  }

  test('fresh server: schemas, meta table and every account are created', () => {
    const live = parseAccounts(liveFrom([{ user: 'root', host: 'localhost', plugin: 'mysql_native_password' }], ['mysql']));
    const plan = planAccounts('mariadb', cluster, hosts, live, pw)!;
    expect(plan.sql).toContain('CREATE DATABASE IF NOT EXISTS `rampart`');
    expect(plan.sql).toContain('CREATE DATABASE IF NOT EXISTS `sbtest`');
    expect(plan.sql).toContain('CREATE TABLE IF NOT EXISTS rampart.meta');
    expect(plan.sql.match(/CREATE USER/g)).toHaveLength(6);
    expect(plan.sql).toContain(pw(SECRETS.mysqlApp)); // it goes to mysql's stdin, never argv
  });

  test('anonymous users, remote root, test database and stale worker accounts are removed; local root kept', () => {
    const live = parseAccounts(liveFrom([
      ...wantedLive('mariadb'),
      { user: '', host: 'localhost', plugin: '' },
      { user: 'root', host: '%', plugin: 'mysql_native_password' },
      { user: 'root', host: '127.0.0.1', plugin: 'mysql_native_password' },
      { user: DB_USERS.repl, host: '10.77.0.99', plugin: 'mysql_native_password', global: ['REPLICATION SLAVE'] },
    ], ['mysql', 'rampart', 'sbtest', 'test'], ['rampart.meta']));
    const drop = unwantedUsers(live, desiredAccounts('mariadb', cluster, hosts)).map((u) => `${u.user}@${u.host}`);
    expect(drop.sort()).toEqual(['@localhost', 'rampart_repl@10.77.0.99', 'root@%']);
    const plan = planAccounts('mariadb', cluster, hosts, live, pw)!;
    expect(plan.sql).toContain('DROP DATABASE IF EXISTS `test`');
    expect(plan.sql).toContain(`DROP USER IF EXISTS ''@'localhost'`);
    expect(plan.sql).not.toContain('CREATE USER');
  });

  test('unmanaged accounts with network access or a global privilege are drift; system accounts, local schema-only users and keepUsers stay', () => {
    const system = (d: 'mariadb' | 'mysql') => d === 'mariadb'
      ? [{ user: 'mysql', host: 'localhost', plugin: 'unix_socket', global: ['SELECT', 'SUPER'] }, { user: 'mariadb.sys', host: 'localhost', plugin: 'mysql_native_password', global: ['DELETE'] }]
      : [{ user: 'mysql.sys', host: 'localhost', plugin: 'caching_sha2_password', global: ['SELECT'] }, { user: 'mysql.session', host: 'localhost', plugin: 'caching_sha2_password', global: ['SUPER'] }, { user: 'mysql.infoschema', host: 'localhost', plugin: 'caching_sha2_password', global: ['SELECT'] }];
    for (const d of ['mariadb', 'mysql'] as const) {
      const live = parseAccounts(liveFrom([
        ...wantedLive(d), ...system(d),
        { user: 'rogue', host: '%', plugin: 'x', global: ['SELECT', 'INSERT', 'SUPER'] },    // the hand-made superuser
        { user: 'reporting', host: '10.77.0.50', plugin: 'x', schemas: { sakila: ['SELECT'] } }, // network access, no global privilege
        { user: 'localadmin', host: 'localhost', plugin: 'x', global: ['PROCESS'] },           // local, but a global privilege
        { user: 'localapp', host: 'localhost', plugin: 'x', schemas: { sakila: ['SELECT'] } },  // local, schema only: left alone
        { user: 'backup', host: '10.77.0.5', plugin: 'x', global: ['RELOAD', 'LOCK TABLES'] },  // kept by keepUsers
      ], ['mysql', 'rampart', 'sbtest'], ['rampart.meta']));
      const drop = unwantedUsers(live, desiredAccounts(d, cluster, hosts), ['backup@10.77.0.5']);
      expect(drop.map((u) => `${u.user}@${u.host} ${u.why}`).sort()).toEqual(['localadmin@localhost unmanaged', 'reporting@10.77.0.50 unmanaged', 'rogue@% unmanaged']);
      const plan = planAccounts(d, { ...cluster, database: { ...cluster.database, keepUsers: ['backup@10.77.0.5'] } }, hosts, live, pw)!;
      expect(plan.reasons.find((r) => r.startsWith('drop rogue@%'))).toMatch(/not managed by rampart, network access: .*keepUsers/);
      expect(plan.sql).toContain(`DROP USER IF EXISTS 'rogue'@'%'`);
      expect(plan.sql).not.toMatch(/'backup'|'localapp'|'mysql'@|'mysql\.|'mariadb\.sys'/);
    }
  });

  test('an extra privilege, a wrong password (native) or a wrong plugin recreates just that account', () => {
    const base = wantedLive('mariadb');
    const extra = base.map((u) => (u.user === DB_USERS.app ? { ...u, schemas: { sakila: ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'DROP'] } } : u));
    const wrongPw = base.map((u) => (u.user === DB_USERS.sysbench ? { ...u, password: 'other' } : u));
    const schemas = ['mysql', 'rampart', 'sbtest'];
    for (const [state, who] of [[extra, DB_USERS.app], [wrongPw, DB_USERS.sysbench]] as const) {
      const plan = planAccounts('mariadb', cluster, hosts, parseAccounts(liveFrom([...state], schemas, ['rampart.meta'])), pw)!;
      expect(plan.sql.match(/CREATE USER '([^']+)'/g)).toEqual([`CREATE USER '${who}'`]);
    }
    const mysqlLive = wantedLive('mysql').map((u) => (u.user === DB_USERS.sysbench ? { ...u, plugin: 'mysql_native_password' } : u));
    const a = desiredAccounts('mysql', cluster, hosts).find((x) => x.user === DB_USERS.sysbench)!;
    expect(accountDrift('mysql', a, parseAccounts(liveFrom(mysqlLive)), pw(a.secret))).toMatch(/mysql_native_password, want caching_sha2_password/);
  });

  test('a network account without REQUIRE SSL is recreated with it; the local sysbench account needs none', () => {
    const noTls = wantedLive('mariadb').map((u) => (u.user === DB_USERS.app ? { ...u, ssl: '' } : u));
    const plan = planAccounts('mariadb', cluster, hosts, parseAccounts(liveFrom(noTls, ['mysql', 'rampart', 'sbtest', 'sakila'], ['rampart.meta'])), pw)!;
    expect(plan.reasons).toEqual([`${DB_USERS.app}@${host('proxy').privateAddress} does not require TLS (REQUIRE SSL)`]);
    expect(plan.sql).toContain(`CREATE USER '${DB_USERS.app}'@'${host('proxy').privateAddress}' IDENTIFIED BY '${pw(SECRETS.mysqlApp)}' REQUIRE SSL;`);
    const accts = desiredAccounts('mariadb', cluster, hosts);
    expect(accts.filter((a) => a.ssl).map((a) => a.user).sort()).toEqual([DB_USERS.app, DB_USERS.failover, DB_USERS.monitor, DB_USERS.repl, DB_USERS.repl]);
    expect(accts.find((a) => a.user === DB_USERS.sysbench)!.ssl).toBe(false);
  });

  test('MariaDB spells REPLICATION REPLICA / SLAVE interchangeably', () => {
    const live = parseAccounts(`U\trampart_repl\t10.77.0.14\tmysql_native_password\t${nativePasswordHash(pw(SECRETS.mysqlRepl))}\tANY\nG\t'rampart_repl'@'10.77.0.14'\tREPLICATION REPLICA\n`);
    const a = desiredAccounts('mariadb', cluster, hosts).find((x) => x.user === DB_USERS.repl && x.host === '10.77.0.14')!;
    expect(accountDrift('mariadb', a, live, pw(a.secret))).toBeNull();
  });
});
