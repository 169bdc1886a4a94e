// Role manifests and the registry: the built-in order follows from `after`,
// the checked-in schema is what the registry generates, user roles from a
// roleDirs folder are ordered, validated (file:line:col) and run; cycles and
// unknown names are refused naming the roles. Operations: facts in, diff out.
import { describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpecError } from '../../core/errors.ts';
import { defineRole, RoleError, RoleRegistry } from '../../core/roles.ts';
import { run } from '../../core/run.ts';
import { loadCluster, loadClusterWithRoles, schemaPath } from '../../core/spec.ts';
import { fileState, KnownHosts } from '../../core/ssh.ts';
import type { Cluster, Host, Role, TaskContext } from '../../core/types.ts';
import { BUILTIN_ROLES } from '../../roles/index.ts';
import { mysqlRole } from '../../roles/mysql.ts';
import { FIREWALL_UNIT_TEXT, firewallRules, firewallRules6 } from '../../roles/lib/firewall.ts';
import { files, unitRunning } from '../../roles/lib/ops.ts';
import { schemaText } from '../../schema/generate.ts';
import { FIXTURE_CLUSTER, ROOT } from '../support/cluster.ts';
import { host as fixtureHost, hosts as fixtureHosts } from '../support/hosts.ts';
import { LocalConnection } from '../support/local-connection.ts';

const fixture = readFileSync(FIXTURE_CLUSTER, 'utf8');

const stub = (name: string, after: string[] = []) => defineRole({ name, after, tasks: [] });

async function specProblems(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SpecError) return e.problems;
    throw e;
  }
  throw new Error('expected a SpecError');
}

describe('registry', () => {
  test('the built-in engine order follows from the manifests', () => {
    expect(BUILTIN_ROLES.order.map((r) => r.name)).toEqual(['base', 'iptables', 'mysql', 'replication', 'sakila', 'sysbench', 'service']);
    // declaration order is what the schema lists
    expect(BUILTIN_ROLES.names()).toEqual(['base', 'mysql', 'sakila', 'sysbench', 'replication', 'iptables', 'service']);
  });

  test('the checked-in schema is the generated one (run `npm run schema` when this fails)', () => {
    expect(readFileSync(schemaPath, 'utf8')).toBe(schemaText());
  });

  test('after wins over declaration order; ties keep declaration order', () => {
    const r = new RoleRegistry([stub('c', ['b']), stub('a'), stub('b', ['a']), stub('d')]);
    expect(r.order.map((x) => x.name)).toEqual(['a', 'b', 'c', 'd']);
  });

  test('a cycle is refused naming the roles in it', () => {
    expect(() => new RoleRegistry([stub('a'), stub('x', ['z']), stub('y', ['x']), stub('z', ['y'])]))
      .toThrow(new RoleError('roles "x" -> "z" -> "y" -> "x" form a cycle through "after"; remove one of these "after" entries'));
    expect(() => new RoleRegistry([stub('a', ['a'])])).toThrow('role "a" lists itself in "after"');
  });

  test('an unknown after name is refused naming both roles, with a suggestion', () => {
    expect(() => BUILTIN_ROLES.with([stub('probe', ['iptabels'])]))
      .toThrow('role "probe" runs after unknown role "iptabels" (did you mean "iptables"?) (roles: base, mysql, sakila, sysbench, replication, iptables, service, probe)');
  });

  test('a name used twice is refused', () => {
    expect(() => BUILTIN_ROLES.with([stub('mysql')])).toThrow('role "mysql" is already defined (built in)');
  });

  test('packages per OS and dialect: the union base installs, sysbench unpacked next to MySQL on Debian', () => {
    const manager = loadCluster(FIXTURE_CLUSTER).nodes.find((n) => n.name === 'manager')!;
    expect(BUILTIN_ROLES.packagesFor(manager, { osId: 'debian', dialect: 'mariadb' }))
      .toEqual(['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps', 'mariadb-server', 'mariadb-client', 'sysbench']);
    expect(BUILTIN_ROLES.packagesFor(manager, { osId: 'debian', dialect: 'mysql' })).not.toContain('sysbench');
    expect(BUILTIN_ROLES.packagesFor(manager, { osId: 'ubuntu', dialect: 'mysql' })).toContain('sysbench');
    expect(BUILTIN_ROLES.candidatePackages(manager).slice(6)).toEqual(['mariadb-server', 'mariadb-client', 'sysbench', 'mysql-server', 'mysql-client']);
  });
});

// Two user roles in a temp folder (files sorted by name: zeta is declared first
// but runs after hello), each with its own cluster.yaml section.
const HELLO = `
export default ({ defineRole, files }) => {
  const role = defineRole({
    name: 'hello',
    after: ['base'],
    settings: { schema: { type: 'object', additionalProperties: false, default: {}, properties: {
      greeting: { type: 'string', default: 'hi' }, dir: { type: 'string' } } } },
    tasks: [files('greeting file', [{
      path: ({ cluster, host }) => role.settingsOf(cluster).dir + '/' + host.name + '.txt',
      content: ({ cluster }) => role.settingsOf(cluster).greeting + '\\n',
      mode: '0644', owner: 'root:root' }])],
  });
  return role;
};
`;
const ZETA = `export default ({ defineRole }) => defineRole({ name: 'zeta', after: ['hello'], tasks: [] });\n`;

function userCluster(opts: { roles?: Record<string, string>; extra?: string; nodeRoles?: string; roleDirs?: string } = {}): { file: string; dir: string; text: string } {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-roles-'));
  mkdirSync(join(dir, 'myroles'));
  for (const [f, text] of Object.entries(opts.roles ?? { 'a-zeta.ts': ZETA, 'b-hello.ts': HELLO })) writeFileSync(join(dir, 'myroles', f), text);
  const text = fixture
    .replace('    roles: [base, mysql, sakila, sysbench, replication, iptables]\n', `    roles: [${opts.nodeRoles ?? 'base, mysql, zeta, hello'}]\n`)
    + `roleDirs: ${opts.roleDirs ?? '[myroles]'}\n${opts.extra ?? `hello:\n  dir: ${dir}\n  greeting: hello there\n`}`;
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, text);
  return { file, dir, text };
}

describe('user roles (roleDirs)', () => {
  test('are loaded, ordered by after, and their sections validated with defaults', async () => {
    const { file, dir } = userCluster();
    const c = await loadClusterWithRoles(file);
    expect(c.roles.order.map((r) => r.name)).toEqual(['base', 'iptables', 'mysql', 'replication', 'sakila', 'sysbench', 'service', 'hello', 'zeta']);
    expect(c.roles.get('hello')!.source).toBe('myroles/b-hello.ts');
    expect(c.settings.hello).toEqual({ dir, greeting: 'hello there' });
    expect(c.nodes.find((n) => n.name === 'manager')!.roles).toEqual(['base', 'mysql', 'zeta', 'hello']);
    // the built-in sections are still there, typed
    expect(c.database.sysbench.tables).toBe(10);
  });

  test('a bad setting is reported at its file:line:col', async () => {
    const { file, text } = userCluster({ extra: 'hello:\n  greeting: 5\n  colour: red\n' });
    const line = text.split('\n').indexOf('  greeting: 5') + 1;
    expect(await specProblems(loadClusterWithRoles(file))).toEqual([
      `${file}:${line}:13: hello.greeting must be a string (got 5)`,
      `${file}:${line + 1}:3: hello has unknown field "colour" (known fields: greeting, dir)`,
    ]);
  });

  test('an unknown role name in a node is reported with the user roles among the allowed ones', async () => {
    const { file } = userCluster({ nodeRoles: 'base, mysql, helo' });
    const [problem] = await specProblems(loadClusterWithRoles(file));
    expect(problem).toContain('must be one of base, mysql, sakila, sysbench, replication, iptables, service, zeta, hello (got "helo"; did you mean "hello"?)');
  });

  test('a cycle or an unknown after name is refused at roleDirs, naming the roles', async () => {
    const cyc = userCluster({ roles: {
      'a.ts': `export default ({ defineRole }) => defineRole({ name: 'alpha', after: ['beta'], tasks: [] });\n`,
      'b.ts': `export default ({ defineRole }) => defineRole({ name: 'beta', after: ['alpha'], tasks: [] });\n`,
    }, nodeRoles: 'base, mysql', extra: '' });
    const line = cyc.text.split('\n').indexOf('roleDirs: [myroles]') + 1;
    expect(await specProblems(loadClusterWithRoles(cyc.file))).toEqual([
      `${cyc.file}:${line}:11: roleDirs: roles "alpha" -> "beta" -> "alpha" form a cycle through "after"; remove one of these "after" entries`,
    ]);
    const unknown = userCluster({ roles: { 'a.ts': `export default ({ defineRole }) => defineRole({ name: 'alpha', after: ['bsae'], tasks: [] });\n` }, nodeRoles: 'base, mysql', extra: '' });
    const [problem] = await specProblems(loadClusterWithRoles(unknown.file));
    expect(problem).toContain('roleDirs: role "alpha" (myroles/a.ts) runs after unknown role "bsae" (did you mean "base"?)');
  });

  test('a missing folder or a file that is not a role is reported at its entry', async () => {
    const { file, dir, text } = userCluster({ roles: { 'x.ts': 'export default 42;\n' }, nodeRoles: 'base, mysql', extra: '', roleDirs: '[myroles, nowhere]' });
    const line = text.split('\n').indexOf('roleDirs: [myroles, nowhere]') + 1;
    expect(await specProblems(loadClusterWithRoles(file))).toEqual([
      `${file}:${line}:12: roleDirs[0]: myroles/x.ts does not export a role (export default defineRole({...}), or a function of the role kit returning one)`,
      `${file}:${line}:21: roleDirs[1] "nowhere": folder not found (${dir}/nowhere)`,
    ]);
  });

  test('the synchronous reader refuses roleDirs instead of ignoring it', () => {
    const { file } = userCluster({ nodeRoles: 'base, mysql', extra: '' });
    expect(() => loadCluster(file)).toThrow('roleDirs: user roles are imported by loadClusterWithRoles');
  });

  test('run on a local connection: changed, then ok; --check plans without writing', async () => {
    const { file, dir } = userCluster();
    const c = await loadClusterWithRoles(file);
    const node = c.nodes.find((n) => n.name === 'manager')!;
    const host: Host = { name: 'manager', address: '127.0.0.1', privateAddress: '127.0.0.1', port: 22, user: 'root', sshFrom: '127.0.0.1/32', node };
    const go = (check: boolean) => run({
      cluster: c, hosts: [host], roles: c.roles.inOrder(new Set(['hello', 'zeta'])), check,
      privateKey: '', knownHosts: new KnownHosts(join(dir, 'kh')), secrets: { get: (n) => n }, progress: false,
      connect: async (h) => new LocalConnection(h),
    });
    const planned = await go(true);
    expect(planned.results.map((r) => [r.role, r.task, r.status, r.message])).toEqual([['hello', 'greeting file', 'changed', `would: write ${dir}/manager.txt`]]);
    expect(() => readFileSync(join(dir, 'manager.txt'))).toThrow();
    expect((await go(false)).hosts.manager).toMatchObject({ changed: 1, failed: 0 });
    expect(readFileSync(join(dir, 'manager.txt'), 'utf8')).toBe('hello there\n');
    expect((await go(false)).hosts.manager).toMatchObject({ changed: 0, ok: 1, failed: 0 });
  });

  test('the shipped example role loads through roleDirs and plans its tasks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-example-'));
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, fixture.replace('    roles: [base, mysql, sakila, sysbench, replication, iptables]\n', '    roles: [base, mysql, iptables, node_exporter]\n')
      + `roleDirs: [${join(ROOT, 'examples/roles')}]\nnode_exporter:\n  port: 9109\n`);
    const c = await loadClusterWithRoles(file);
    const role = c.roles.get('node_exporter')!;
    expect(c.roles.order.map((r) => r.name).indexOf('node_exporter')).toBeGreaterThan(c.roles.order.map((r) => r.name).indexOf('iptables'));
    expect(c.settings.node_exporter).toEqual({ port: 9109 });
    expect(role.tasks.map((t) => t.name)).toEqual(['node exporter package', 'node exporter options', 'node exporter enabled and running']);
    // base installs its package with the others
    expect(c.roles.packagesFor(c.nodes.find((n) => n.name === 'manager')!, { osId: 'debian', dialect: 'mariadb' })).toContain('prometheus-node-exporter');
  });
});

// Operations as tables: facts in, diff out.
describe('operations', () => {
  const cluster: Cluster = loadCluster(FIXTURE_CLUSTER);
  const host = { name: 'n', node: cluster.nodes[0] } as Host;
  const ctx = (facts: Record<string, string>): TaskContext => ({
    host, cluster, hosts: [host], conn: undefined as never, check: true, secrets: { get: (n) => n }, notify: () => {},
    facts: Object.fromEntries(Object.entries(facts).map(([k, stdout]) => [k, { stdout, code: 0 }])),
  });

  const unit = unitRunning('x.service');
  test.each([
    ['x.service enabled active\n', null],
    ['x.service disabled active\n', 'x.service: disabled/active -> enabled/active'],
    ['x.service enabled inactive\n', 'x.service: enabled/inactive -> enabled/active'],
    ['x.service  inactive\n', 'x.service: not installed/inactive -> enabled/active'],
    ['', 'x.service: not installed/inactive -> enabled/active'],
  ])('unitRunning: %j -> %p', (state, message) => {
    const diff = unit.check(ctx({ state })) as { message: string } | null;
    expect(diff?.message ?? null).toBe(message);
  });

  // the mysql role's server unit: both read in the round trip, the node's dialect picks
  const server = mysqlRole.tasks.find((t) => t.name === 'server enabled and running')!;
  test.each([
    ['debian\n', 'mariadb enabled active\nmysql  inactive\n', null],
    ['ubuntu\n', 'mariadb enabled active\nmysql  inactive\n', 'mysql: not installed/inactive -> enabled/active'],
    ['debian\n', 'mariadb disabled inactive\nmysql  inactive\n', 'mariadb: disabled/inactive -> enabled/active'],
  ])('mysql server unit on %j: %j -> %p', (os, state, message) => {
    expect(Object.keys(server.facts!(ctx({})))).toEqual(['os', 'state']);
    const diff = server.check(ctx({ os, state })) as { message: string } | null;
    expect(diff?.message ?? null).toBe(message);
  });

  const two = files('two files', [
    { path: () => '/a', content: () => 'A', mode: '0644', owner: 'root:root' },
    { path: () => '/b', content: () => 'B', mode: '0600', owner: 'root:root' },
  ]);
  test.each([
    [fileState('A', '0644', 'root:root'), fileState('B', '0600', 'root:root'), null],
    ['absent', fileState('B', '0600', 'root:root'), ['/a']],
    [fileState('A', '0600', 'root:root'), 'absent', ['/a', '/b']],
  ])('files: %p, %p -> %p', (file0, file1, paths) => {
    const diff = two.check(ctx({ file0, file1 })) as { data: { path: string }[] } | null;
    expect(diff ? diff.data.map((d) => d.path) : null).toEqual(paths);
  });

  // base: the union of the node's roles' packages, a user role's among them
  test.each([
    ['debian\n', '', ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps', 'mariadb-server', 'mariadb-client', 'sysbench', 'prometheus-node-exporter']],
    ['debian\n', 'tzdata install ok installed\nmariadb-server install ok installed\nsysbench deinstall ok config-files\n', ['ca-certificates', 'iproute2', 'iptables', 'curl', 'procps', 'mariadb-client', 'sysbench', 'prometheus-node-exporter']],
    ['ubuntu\n', '', ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps', 'mysql-server', 'mysql-client', 'sysbench', 'prometheus-node-exporter']],
  ])('base packages on %j with %j installed -> %p', (os, pkgs, missing) => {
    const withRole = { ...cluster, roles: BUILTIN_ROLES.with([defineRole({ name: 'exporter', packages: ['prometheus-node-exporter'], tasks: [] })]) };
    const node = { ...cluster.nodes.find((n) => n.name === 'manager')!, roles: ['base', 'mysql', 'sysbench', 'exporter'] };
    const base = BUILTIN_ROLES.get('base')!.tasks.find((t) => t.name === 'packages')!;
    const c = { ...ctx({ os, pkgs }), cluster: withRole, host: { ...host, node } };
    expect(base.facts!(c)).toMatchObject({ pkgs: expect.stringContaining("'prometheus-node-exporter'") });
    expect((base.check(c) as { data: string[] }).data).toEqual(missing);
  });

  // iptables persistence: each file compared by its fact, plus the boot unit enabled
  const persist = BUILTIN_ROLES.get('iptables')!.tasks.find((t) => t.name === 'firewall persistence')!;
  const gatekeeper = fixtureHost('gatekeeper');
  const persistCtx = (over: Record<string, string>) => {
    const c = { ...ctx({}), host: gatekeeper, hosts: fixtureHosts };
    const want: Record<string, string> = {
      rules: fileState(firewallRules(cluster, gatekeeper, fixtureHosts), '0600', 'root:root'),
      rules6: fileState(firewallRules6(cluster, gatekeeper), '0600', 'root:root'),
      unit: fileState(FIREWALL_UNIT_TEXT, '0644', 'root:root'),
      enabled: 'enabled\n',
    };
    return { ...c, facts: Object.fromEntries(Object.entries({ ...want, ...over }).map(([k, stdout]) => [k, { stdout, code: 0 }])) };
  };
  test.each([
    [{}, null],
    [{ rules: 'absent' }, 'write /etc/iptables/rules.v4'],
    [{ rules6: 'x 600 root:root', enabled: 'disabled\n' }, 'write /etc/iptables/rules.v6, enable'],
    [{ unit: 'absent', enabled: '\n' }, 'write rampart-firewall.service, enable'],
  ])('iptables persistence: %j -> %p', (over, message) => {
    const diff = persist.check(persistCtx(over)) as { message: string } | null;
    expect(diff?.message ?? null).toBe(message);
  });

  test('plain roles (no manifest) still run: the engine takes any Role', () => {
    const r: Role = { name: 'adhoc', tasks: [] };
    expect(r.name).toBe('adhoc');
  });
});
