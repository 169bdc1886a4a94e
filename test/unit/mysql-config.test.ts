// Server configuration per dialect: stable server_id, option file content,
// live-variable comparison, and the mysql role's config/running checks.
import { describe, expect, test } from 'bun:test';
import { fileState } from '../../core/ssh.ts';
import {
  assertUniqueServerIds, configPath, dbService, LIVE_VARIABLES_FACT, liveDrift, parseVariables, renderConfig, serverIdFor, serverSettings,
} from '../../roles/lib/mysql-config.ts';
import { dialectFor } from '../../roles/lib/os.ts';
import { mysqlRole } from '../../roles/mysql.ts';
import { cluster, ctxFor, host, hosts, hostsOf, withEngine } from './mysql-fixtures.ts';

const task = (name: string) => mysqlRole.tasks.find((t) => t.name === name)!;

describe('server_id', () => {
  test('depends on the node name only: adding, removing or reordering nodes keeps it', () => {
    const before = new Map(hosts.map((h) => [h.name, serverIdFor(h.name)]));
    const reordered = hostsOf({ ...cluster, nodes: [...cluster.nodes].reverse() }, '10.99.0.');
    for (const h of reordered) expect(serverIdFor(h.name)).toBe(before.get(h.name)!);
    const conf = (hs: typeof hosts) => renderConfig('mariadb', serverSettings('mariadb', hs.find((h) => h.name === 'worker1')!, 'worker'));
    expect(conf(reordered).match(/server_id = (\d+)/)![1]).toBe(conf(hosts).match(/server_id = (\d+)/)![1]);
  });

  test('is in 1..2^32-1 and unique across many node names', () => {
    const names = Array.from({ length: 2000 }, (_, i) => `worker${i}`);
    const ids = names.map(serverIdFor);
    for (const id of ids) {
      expect(id).toBeGreaterThanOrEqual(1);
      expect(id).toBeLessThanOrEqual(4294967295);
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(() => assertUniqueServerIds(names)).not.toThrow();
    expect(() => assertUniqueServerIds(['a', 'b', 'a'])).toThrow(/same server_id/);
  });
});

describe('option file per dialect and DB role', () => {
  const parse = (text: string) => new Map(text.split('\n').filter((l) => l.includes(' = ')).map((l) => l.split(' = ') as [string, string]));

  test('MariaDB manager: binlog, ROW, log_slave_updates, strict GTID, writable, bound to its address', () => {
    const text = renderConfig('mariadb', serverSettings('mariadb', host('manager'), 'manager'));
    const c = parse(text);
    expect(text).toContain('[mysqld]');
    expect(c.get('server_id')).toBe(String(serverIdFor('manager')));
    expect(c.get('bind_address')).toBe(host('manager').privateAddress);
    expect(c.get('log_bin')).toBe('mysql-bin');
    expect(c.get('binlog_format')).toBe('ROW');
    expect(c.get('log_slave_updates')).toBe('ON');
    expect(c.get('gtid_strict_mode')).toBe('ON');
    expect(c.get('read_only')).toBe('OFF');
    expect(c.has('gtid_mode')).toBe(false);
    expect(c.has('super_read_only')).toBe(false);
    expect(configPath('mariadb')).toBe('/etc/mysql/mariadb.conf.d/60-rampart.cnf');
    expect(dbService('mariadb')).toBe('mariadb');
  });

  test('MySQL 8 worker: gtid_mode + enforce_gtid_consistency, log_replica_updates, read_only AND super_read_only', () => {
    const c = parse(renderConfig('mysql', serverSettings('mysql', host('worker2'), 'worker')));
    expect(c.get('gtid_mode')).toBe('ON');
    expect(c.get('enforce_gtid_consistency')).toBe('ON');
    expect(c.get('log_replica_updates')).toBe('ON');
    expect(c.get('read_only')).toBe('ON');
    expect(c.get('super_read_only')).toBe('ON');
    expect(c.get('bind_address')).toBe(host('worker2').privateAddress);
    expect(c.has('gtid_strict_mode')).toBe(false);
    expect(c.has('log_slave_updates')).toBe(false);
    expect(configPath('mysql')).toBe('/etc/mysql/mysql.conf.d/60-rampart.cnf');
    expect(dbService('mysql')).toBe('mysql');
  });

  test('MySQL 8 manager is writable (super_read_only OFF)', () => {
    const c = parse(renderConfig('mysql', serverSettings('mysql', host('manager'), 'manager')));
    expect(c.get('read_only')).toBe('OFF');
    expect(c.get('super_read_only')).toBe('OFF');
  });

  test('every option has a live variable the fact reads, so a running server can be compared', () => {
    for (const d of ['mariadb', 'mysql'] as const) {
      for (const s of serverSettings(d, host('worker1'), 'worker')) expect(LIVE_VARIABLES_FACT).toContain(`'${s.variable}'`);
    }
  });

  test('dialect: auto follows /etc/os-release, cluster.yaml engine overrides', () => {
    expect(dialectFor(cluster, 'debian\n')).toBe('mariadb');
    expect(dialectFor(cluster, 'ubuntu\n')).toBe('mysql');
    expect(dialectFor(withEngine('mysql'), 'debian')).toBe('mysql');
    expect(dialectFor(withEngine('mariadb'), 'ubuntu')).toBe('mariadb');
  });
});

describe('live variables', () => {
  const settings = serverSettings('mariadb', host('worker1'), 'worker');
  // what SHOW GLOBAL VARIABLES prints on a MariaDB worker running our config
  const liveOk = [
    `server_id\t${serverIdFor('worker1')}`, `bind_address\t${host('worker1').privateAddress}`, 'port\t3306', 'log_bin\tON',
    'relay_log\trelay-bin', 'binlog_format\tROW', 'skip_name_resolve\tON', 'log_bin_trust_function_creators\tON',
    'log_slave_updates\tON', 'gtid_strict_mode\tON', 'slave_net_timeout\t10', 'read_only\tON',
  ].join('\n');

  test('a server running the config shows no drift', () => {
    expect(liveDrift(settings, parseVariables(liveOk))).toEqual([]);
  });

  test('a fresh server (Debian defaults) differs on the binlog, server_id, bind address, read_only', () => {
    const fresh = liveOk.replace('log_bin\tON', 'log_bin\tOFF').replace(/server_id\t\d+/, 'server_id\t1')
      .replace(/bind_address\t\S+/, 'bind_address\t127.0.0.1').replace('read_only\tON', 'read_only\tOFF');
    const drift = liveDrift(settings, parseVariables(fresh));
    expect(drift.map((d) => d.split(':')[0]).sort()).toEqual(['bind_address', 'log_bin', 'read_only', 'server_id']);
  });

  test('MySQL 8 spelling (gtid_mode ON, super_read_only ON) compares equal', () => {
    const s = serverSettings('mysql', host('worker1'), 'worker');
    const live = s.map((x) => `${x.variable}\t${x.live === 'ON' ? '1' : x.live}`).join('\n').replace('gtid_mode\t1', 'gtid_mode\tON');
    expect(liveDrift(s, parseVariables(live))).toEqual([]);
    expect(liveDrift(s, parseVariables(live.replace('super_read_only\t1', 'super_read_only\t0')))).toEqual(['super_read_only: 0 -> ON']);
  });
});

describe('mysql role checks (pure: facts in, diff out)', () => {
  test('config: the live file matching the rendered one is ok; an edited one is a diff', () => {
    const want = renderConfig('mariadb', serverSettings('mariadb', host('worker2'), 'worker'));
    const facts = { os: 'debian\n', mariadb: fileState(want, '0644', 'root:root'), mysql: 'absent' };
    expect(task('server config').check(ctxFor('worker2', facts))).toBeNull();
    const edited = fileState(want.replace('binlog_format = ROW', 'binlog_format = MIXED'), '0644', 'root:root');
    expect((task('server config').check(ctxFor('worker2', { ...facts, mariadb: edited })) as { message: string }).message).toContain('60-rampart.cnf');
  });

  test('config on Ubuntu compares the MySQL path', () => {
    const want = renderConfig('mysql', serverSettings('mysql', host('worker1'), 'worker'));
    const facts = { os: 'ubuntu\n', mariadb: 'absent', mysql: fileState(want, '0644', 'root:root') };
    expect(task('server config').check(ctxFor('worker1', facts))).toBeNull();
  });

  test('users are written on the manager only; workers get them by replication', () => {
    const t = task('users, grants and schemas');
    expect(t.when!(ctxFor('manager', {}))).toBeNull();
    expect(t.when!(ctxFor('worker1', {}))).toMatch(/manager only/);
    expect(t.when!(ctxFor('proxy', {}))).toMatch(/not a DB node/);
  });

  test('packages: per dialect; an apt/dpkg still running (killed apply) or interrupted is waited for / finished', () => {
    const t = task('server packages');
    const installed = (pkgs: string[]) => pkgs.map((p) => `${p} install ok installed`).join('\n');
    expect(t.check(ctxFor('worker1', { os: 'debian', pkgs: installed(['mariadb-server', 'mariadb-client']), dpkg: '' }))).toBeNull();
    expect((t.check(ctxFor('worker1', { os: 'ubuntu', pkgs: installed(['mariadb-server', 'mariadb-client']), dpkg: '' })) as { data: string[] }).data).toEqual(['mysql-server', 'mysql-client']);
    expect((t.check(ctxFor('worker1', { os: 'debian', pkgs: installed(['mariadb-server', 'mariadb-client']), dpkg: 'busy\n' })) as { message: string }).message).toMatch(/wait for a running apt/);
    expect((t.check(ctxFor('worker1', { os: 'debian', pkgs: installed(['mariadb-server', 'mariadb-client']), dpkg: 'audit\n' })) as { message: string }).message).toMatch(/interrupted dpkg/);
  });

  test('server not answering (fresh node) is a diff, not a crash', () => {
    const d = task('server runs the config').check(ctxFor('manager', { os: 'debian', vars: { stdout: '', code: 1 } }));
    expect(d).not.toBeNull();
  });
});
