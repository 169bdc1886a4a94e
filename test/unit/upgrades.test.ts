// Pending upgrades of the DB server roll: base leaves them (and what they pull
// in, by source package) to the mysql role, which installs them under its
// serial, workers first, one node at a time.
import { describe, expect, test } from 'bun:test';
import { parsePendingUpgrades, splitRolled, wantedUpgrades } from '../../roles/lib/apt.ts';
import { baseRole } from '../../roles/base.ts';
import { DB_PACKAGES, mysqlRole } from '../../roles/mysql.ts';
import { serviceRole } from '../../roles/service.ts';
import { cluster, ctxFor, hosts } from './mysql-fixtures.ts';

// a MariaDB security update as `apt-get -s dist-upgrade` and dpkg show it, next to an OpenSSL one
const PENDING = [
  'age 60',
  'Inst mariadb-common [1:10.11.11-0+deb12u1] (1:10.11.14-0+deb12u2 Debian-Security:12/stable-security [all])',
  'Inst libmariadb3 [1:10.11.11-0+deb12u1] (1:10.11.14-0+deb12u2 Debian-Security:12/stable-security [amd64])',
  'Inst mariadb-server-core [1:10.11.11-0+deb12u1] (1:10.11.14-0+deb12u2 Debian-Security:12/stable-security [amd64])',
  'Inst mariadb-server [1:10.11.11-0+deb12u1] (1:10.11.14-0+deb12u2 Debian-Security:12/stable-security [amd64])',
  'Inst mariadb-client [1:10.11.11-0+deb12u1] (1:10.11.14-0+deb12u2 Debian-Security:12/stable-security [amd64])',
  'Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])',
  'Inst mysql-common [5.8+1.1.0] (5.8+1.1.1 Debian:12/stable-updates [all])',
  'src mariadb-common mariadb',
  'src libmariadb3:amd64 mariadb',
  'src mariadb-server-core mariadb',
  'src mariadb-server mariadb',
  'src mariadb-client mariadb',
  'src libssl3:amd64 openssl',
  'src mysql-common mysql-defaults',
].join('\n');
const MARIADB = ['mariadb-common', 'libmariadb3', 'mariadb-server-core', 'mariadb-server', 'mariadb-client'];

describe('DB server upgrades roll', () => {
  test('the source package of each upgrade is read; the DB server and everything of its source are rolled, the rest is not', () => {
    const { upgrades } = parsePendingUpgrades(PENDING);
    expect(upgrades.find((u) => u.name === 'libmariadb3')!.source).toBe('mariadb');
    const { rolled, rest } = splitRolled(upgrades, DB_PACKAGES.mariadb);
    expect(rolled.map((u) => u.name)).toEqual(MARIADB);
    expect(rest.map((u) => u.name)).toEqual(['libssl3', 'mysql-common']);
    // without dpkg's sources (an older fact), the role's own packages still roll
    const bare = parsePendingUpgrades(PENDING.split('\n').filter((l) => !l.startsWith('src ')).join('\n')).upgrades;
    expect(splitRolled(bare, DB_PACKAGES.mariadb).rolled.map((u) => u.name)).toEqual(['mariadb-server', 'mariadb-client']);
  });

  test("the rolled packages are the rolling roles' manifest packages: the mysql role's on a DB node, none elsewhere (the services have none)", () => {
    const manager = cluster.nodes.find((n) => n.name === 'manager')!;
    expect(cluster.roles.rolledPackages(manager).sort()).toEqual([...DB_PACKAGES.mariadb, ...DB_PACKAGES.mysql].sort());
    expect(cluster.roles.rolledPackages(manager, 'base')).toEqual([]);
    for (const n of cluster.nodes.filter((x) => !x.db)) expect({ n: n.name, p: cluster.roles.rolledPackages(n) }).toEqual({ n: n.name, p: [] });
    expect(serviceRole.packagesFor({ osId: 'debian', dialect: 'mariadb' })).toEqual([]);
    expect(mysqlRole.serial?.size).toBe(1);
  });

  test('base leaves the DB server upgrades to the mysql role on a DB node; upgrades them itself nowhere', () => {
    const base = baseRole.tasks.find((t) => t.name === 'package lists and pending updates')!;
    const onDb = base.check(ctxFor('manager', { pending: PENDING })) as { message: string; detail: () => string };
    expect(onDb.message).toBe('upgrade 1 package(s) with a security update: libssl3');
    expect(onDb.detail()).toBe('libssl3: 3.0.15-1~deb12u1 -> 3.0.17-1~deb12u2 (security)\n');
    // only DB server upgrades pending, lists fresh: nothing for base
    const dbOnly = PENDING.split('\n').filter((l) => !/libssl3|mysql-common/.test(l)).join('\n');
    expect(base.check(ctxFor('worker1', { pending: dbOnly }))).toBeNull();
    // with policy "all", mysql-common (another source) is still base's
    const all = { ...cluster, apt: { ...cluster.apt, upgrades: 'all' as const } };
    expect((base.check(ctxFor('manager', { pending: PENDING }, { cluster: all })) as { message: string }).message).toBe('upgrade 2 package(s): libssl3 mysql-common');
  });

  test('the mysql role reports them (--diff: old -> new) under its own task, before the config and restart tasks', () => {
    const names = mysqlRole.tasks.map((t) => t.name);
    expect(names.slice(0, 2)).toEqual(['server packages', 'server package upgrades']);
    expect(names.indexOf('server package upgrades')).toBeLessThan(names.indexOf('server runs the config'));
    const t = mysqlRole.tasks.find((x) => x.name === 'server package upgrades')!;
    const d = t.check(ctxFor('worker1', { os: 'debian\n', pending: PENDING })) as { message: string; detail: () => string; data: unknown };
    expect(d.message).toBe(`upgrade ${MARIADB.join(' ')} (one DB node at a time)`);
    expect(d.detail()).toContain('mariadb-server: 1:10.11.11-0+deb12u1 -> 1:10.11.14-0+deb12u2 (security)\n');
    expect(d.detail()).not.toContain('libssl3');
    expect(t.check(ctxFor('worker1', { os: 'debian\n', pending: 'age 60\n' }))).toBeNull();
    // policy none: nothing rolls either
    const none = { ...cluster, apt: { ...cluster.apt, upgrades: 'none' as const } };
    expect(t.check(ctxFor('worker1', { os: 'debian\n', pending: PENDING }, { cluster: none }))).toBeNull();
    expect(t.when!(ctxFor('proxy', {}))).toBe('not a DB node');
    expect(wantedUpgrades(parsePendingUpgrades(PENDING).upgrades, 'security')).toHaveLength(6);
  });

  test('the rollout order: every worker before the manager, one at a time', () => {
    const db = hosts.filter((h) => h.node.db);
    const order = mysqlRole.serial!.order!(db).map((h) => h.node.db);
    expect(order[order.length - 1]).toBe('manager');
    expect(order.filter((x) => x === 'worker')).toHaveLength(db.length - 1);
  });
});
