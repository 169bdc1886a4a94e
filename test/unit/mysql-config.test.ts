// Server configuration per dialect: stable server_id, option file content,
// live-variable comparison, and the mysql role's config/running checks.
import { describe, expect, test } from 'bun:test';
import { fileState } from '../../core/ssh.ts';
import { basename } from 'node:path';
import {
  assertUniqueServerIds, configPath, dbService, explainOverrides, LIVE_VARIABLES_FACT, liveDrift, overridesFact, PACKAGED_OPTION_FILES, parseVariables,
  renderConfig, serverIdFor, serverSettings,
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
    expect(configPath('mysql')).toBe('/etc/mysql/mysql.conf.d/zz-rampart.cnf');
    expect(dbService('mysql')).toBe('mysql');
    // ROW is MySQL's default and setting binlog_format is deprecated (a warning at every start)
    expect(c.has('binlog_format')).toBe(false);
  });

  test('our option file sorts after every packaged one of its folder (the last value read wins)', () => {
    for (const d of ['mariadb', 'mysql'] as const) {
      const ours = basename(configPath(d));
      // !includedir reads a folder's files in byte order
      for (const packaged of PACKAGED_OPTION_FILES[d]) expect(Buffer.compare(Buffer.from(ours), Buffer.from(packaged))).toBe(1);
    }
    // the trap itself: a 60- file sorts before mysqld.cnf ('6' < 'm')
    expect(Buffer.compare(Buffer.from('60-rampart.cnf'), Buffer.from('mysqld.cnf'))).toBe(-1);
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
    'ssl_ca\t/etc/mysql/rampart-tls/ca.pem', 'ssl_cert\t/etc/mysql/rampart-tls/server.pem', 'ssl_key\t/etc/mysql/rampart-tls/server.key',
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
    const want = renderConfig('mariadb', serverSettings('mariadb', host('worker2'), 'worker', cluster.database.semiSync));
    const facts = { os: 'debian\n', mariadb: fileState(want, '0644', 'root:root'), mysql: 'absent', legacy: '' };
    expect(task('server config').check(ctxFor('worker2', facts))).toBeNull();
    const edited = fileState(want.replace('binlog_format = ROW', 'binlog_format = MIXED'), '0644', 'root:root');
    expect((task('server config').check(ctxFor('worker2', { ...facts, mariadb: edited })) as { message: string }).message).toContain('60-rampart.cnf');
  });

  test('config on Ubuntu compares the MySQL path', () => {
    const want = renderConfig('mysql', serverSettings('mysql', host('worker1'), 'worker', cluster.database.semiSync));
    const facts = { os: 'ubuntu\n', mariadb: 'absent', mysql: fileState(want, '0644', 'root:root'), legacy: '' };
    expect(task('server config').check(ctxFor('worker1', facts))).toBeNull();
  });

  test('a leftover 60-rampart.cnf of an earlier version (read before mysqld.cnf) is removed', () => {
    const want = renderConfig('mysql', serverSettings('mysql', host('worker1'), 'worker', cluster.database.semiSync));
    const facts = { os: 'ubuntu\n', mariadb: 'absent', mysql: fileState(want, '0644', 'root:root'), legacy: '/etc/mysql/mysql.conf.d/60-rampart.cnf\n' };
    const d = task('server config').check(ctxFor('worker1', facts)) as { message: string; data: string[] };
    expect(d.message).toMatch(/remove \/etc\/mysql\/mysql.conf.d\/60-rampart.cnf/);
    expect(d.message).not.toMatch(/write/);
    expect(d.data).toEqual(['/etc/mysql/mysql.conf.d/60-rampart.cnf']);
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
    const d = task('server runs the config').check(ctxFor('manager', { os: 'debian', vars: { stdout: '', code: 1 }, version: '' }));
    expect(d).not.toBeNull();
  });

  test('an unsupported server version is refused with the version named', () => {
    const t = task('server runs the config');
    const old = t.check(ctxFor('manager', { os: 'ubuntu', vars: { stdout: '', code: 1 }, version: '/usr/sbin/mysqld  Ver 8.0.21-0ubuntu0.20.04.4 for Linux on x86_64' })) as { message: string };
    expect(old.message).toMatch(/MySQL 8\.0\.21 is older than the oldest supported mysql \(8\.0\.26\)/);
    const wrong = t.check(ctxFor('manager', { os: 'ubuntu', vars: { stdout: '', code: 1 }, version: 'mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu' })) as { message: string };
    expect(wrong.message).toMatch(/runs MariaDB 10\.11\.6, cluster.yaml wants mysql/);
  });
});

describe('after a restart: an option another file overrides is named, not restarted forever', () => {
  // what the override fact prints on a node where mysqld.cnf (read after a 60- file) binds to loopback
  const out = [
    '/etc/mysql/mysql.conf.d/mysqld.cnf:31:bind-address\t\t= 127.0.0.1',
    `/etc/mysql/mysql.conf.d/zz-rampart.cnf:5:bind_address = ${host('manager').privateAddress}`,
    '@@effective',
    `--bind_address=${host('manager').privateAddress}`,
    '--bind-address=127.0.0.1',
  ].join('\n');

  test('the fact greps both spellings and asks my_print_defaults', () => {
    const f = overridesFact(['bind_address']);
    expect(f).toContain('bind[-_]address');
    expect(f).toContain('my_print_defaults mysqld');
  });

  test('the explanation names the overriding file and line, not ours', () => {
    const [why] = explainOverrides('mysql', ['bind_address'], out);
    expect(why).toContain('/etc/mysql/mysql.conf.d/mysqld.cnf:31');
    expect(why).toContain('127.0.0.1');
    expect(why).not.toContain('zz-rampart.cnf:5');
  });

  test('the running task fails after a restart whose server still differs', async () => {
    const settings = serverSettings('mysql', host('manager'), 'manager');
    const liveVars = settings.map((x) => `${x.variable}\t${x.variable === 'bind_address' ? '127.0.0.1' : x.live}`).join('\n');
    const sent: string[] = [];
    const conn = {
      exec: async (script: string) => {
        sent.push(script);
        if (script.includes('SHOW GLOBAL VARIABLES')) return { stdout: liveVars, stderr: '', code: 0 };
        if (script.includes('my_print_defaults')) return { stdout: out, stderr: '', code: 0 };
        return { stdout: '', stderr: '', code: 0 };
      },
    };
    const t = task('server runs the config');
    const ctx = { ...ctxFor('manager', { os: 'ubuntu', vars: liveVars, version: 'mysqld  Ver 8.4.3-0ubuntu1 for Linux' }), conn: conn as never, check: false };
    const diff = t.check(ctx) as { message: string };
    expect(diff.message).toMatch(/restart mysql \(bind_address: 127\.0\.0\.1 ->/);
    await expect(t.apply(ctx, diff as never)).rejects.toThrow(/still runs bind_address: 127\.0\.0\.1 -> .*mysqld\.cnf:31/);
    expect(sent[0]).toBe('systemctl restart mysql');
  });
});
