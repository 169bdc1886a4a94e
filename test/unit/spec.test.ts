import { describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { formatSpecError, loadCluster, parseCluster } from '../../core/spec.ts';
import { SpecError } from '../../core/errors.ts';

const ROOT = path.resolve(import.meta.dir, '../..');

// A small valid cluster; every bad case below is one edit of it. Line numbers
// in the expectations refer to this text (the numbers on the right).
const BASE = [
  'name: demo', //                                                   1
  'provider:', //                                                    2
  '  type: local', //                                                3
  '  local:', //                                                     4
  '    subnet: 10.9.0.0/24', //                                      5
  'nodes:', //                                                       6
  '  - name: gatekeeper', //                                         7
  '    public: true', //                                             8
  '    service: gatekeeper', //                                      9
  '    roles: [base, iptables, service]', //                         10
  '  - name: trustedhost', //                                        11
  '    service: trustedhost', //                                     12
  '    roles: [base, iptables, service]', //                         13
  '  - name: proxy', //                                              14
  '    service: proxy', //                                           15
  '    roles: [base, iptables, service]', //                         16
  '  - name: manager', //                                            17
  '    db: manager', //                                              18
  '    roles: [base, mysql, replication, iptables]', //              19
  '  - name: worker1', //                                            20
  '    db: worker', //                                               21
  '    roles: [base, mysql, replication, iptables]', //              22
  'security:', //                                                    23
  '  flows:', //                                                     24
  '    - { from: internet, to: gatekeeper, port: 443 }', //          25
  '    - { from: gatekeeper, to: trustedhost, port: 5000 }', //      26
  '    - { from: trustedhost, to: proxy, port: 5000 }', //           27
  '    - { from: proxy, to: [manager, worker1], port: 3306 }', //    28
  '    - { from: worker1, to: manager, port: 3306 }', //             29
  '  egress:', //                                                    30
  '    - { node: trustedhost }', //                                  31
  'services:', //                                                    32
  '  proxy:', //                                                     33
  '    defaultMode: random', //                                      34
  '    modes: [direct, random]', //                                  35
  '',
].join('\n');

/** BASE with `from` replaced by `to`; `from` must occur exactly once (so a stale edit fails loudly). */
function edit(from: string, to: string, src = BASE): string {
  const i = src.indexOf(from);
  if (i < 0 || src.indexOf(from, i + 1) >= 0) throw new Error(`edit: ${JSON.stringify(from)} must occur exactly once`);
  return src.slice(0, i) + to + src.slice(i + from.length);
}

function problems(src: string): string[] {
  try {
    parseCluster(src, 'cluster.yaml');
  } catch (e) {
    if (e instanceof SpecError) return e.problems;
    throw e;
  }
  throw new Error('expected a SpecError, but the spec was accepted');
}

describe('valid specs', () => {
  test('the shipped cluster.yaml is valid', () => {
    expect(() => loadCluster(path.join(ROOT, 'cluster.yaml'))).not.toThrow();
  });

  test('the reference cluster (fixture) loads: 6 nodes, defaults filled', () => {
    const fixture = path.join(ROOT, 'test/fixtures/cluster.yaml');
    const c = loadCluster(fixture);
    expect(c.file).toBe(fixture);
    expect(c.dir).toBe(path.dirname(fixture));
    expect(c.nodes.map((n) => n.name)).toEqual(['gatekeeper', 'trustedhost', 'proxy', 'manager', 'worker1', 'worker2']);
    expect(c.nodes.filter((n) => n.db === 'manager').map((n) => n.name)).toEqual(['manager']);
    expect(c.nodes.map((n) => n.public)).toEqual([true, false, false, false, false, false]);
    // default addresses: .10 + index on the subnet
    expect(c.nodes.map((n) => n.address)).toEqual(['10.77.0.10', '10.77.0.11', '10.77.0.12', '10.77.0.13', '10.77.0.14', '10.77.0.15']);
    expect(c.provider.local.suite).toBe('bookworm'); // schema default (not in the file)
    expect(c.provider.aws.keyName).toBe('rampart-rampart');
    // from/to always lists
    expect(c.security.flows[0]).toEqual({ from: ['internet'], to: ['gatekeeper'], port: 443 });
    expect(c.security.flows[3].to).toEqual(['manager', 'worker1', 'worker2']);
    expect(c.security.egress).toEqual([{ node: 'trustedhost', mirror: true }]);
    // sakila.path is resolved against the file's folder
    expect(c.database.sakila.path).toBe(path.resolve(ROOT, '../shared/sakila/sakila-db.tar.gz'));
    expect(c.services.proxy.defaultMode).toBe('customized');
  });

  test('a minimal spec gets every default', () => {
    const c = parseCluster(BASE, path.join(ROOT, 'x', 'cluster.yaml'));
    expect(c.dir).toBe(path.join(ROOT, 'x'));
    expect(c.timezone).toBe('UTC');
    expect(c.adminUser).toBe('ubuntu');
    expect(c.provider.local).toEqual({ subnet: '10.9.0.0/24', bridge: 'rampart0', mirror: 'deb.debian.org', suite: 'bookworm', checkValidUntil: true, packageCache: false });
    expect(c.provider.aws).toEqual({ ubuntu: '26.04', jump: true, keyName: 'rampart-demo', sshTimeoutSeconds: 600 });
    expect(c.nodes[3]).toEqual({ name: 'manager', type: 't2.micro', roles: ['base', 'mysql', 'replication', 'iptables'], db: 'manager', public: false, address: '10.9.0.13' });
    expect(c.security.egress).toEqual([{ node: 'trustedhost', mirror: true }]);
    expect(c.database).toEqual({
      engine: 'auto',
      schema: 'sakila',
      keepUsers: [],
      sakila: { url: 'https://downloads.mysql.com/docs/sakila-db.tar.gz', sha256: '51bf9a9314f9d164ffde94646ff70f445a1cb9a2e53aad1a773b007c13ad7b4f' },
      sysbench: { tables: 10, tableSize: 10000, threads: 4, time: 10 },
      semiSync: { enabled: true, timeoutMs: 10000, onTimeout: 'async' },
    });
    expect(c.services).toEqual({
      gatekeeper: { port: 443, statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: ['sakila'], routines: [], maxBodyBytes: 65536, rateLimit: { requests: 2000, perSeconds: 1 } },
      trustedhost: { port: 5000 },
      proxy: { port: 5000, defaultMode: 'random', modes: ['direct', 'random'], probeIntervalMs: 250, maxLagSeconds: 5, failover: { enabled: true, failCount: 5, downAfterMs: 10000 } },
    });
    expect(c.bench).toEqual({ writes: 1000, reads: 1000, concurrency: 32, firstName: 'RAMPART', lastName: 'BENCH' });
  });

  test('explicit addresses are kept; others default to .10 + index', () => {
    const c = parseCluster(edit('  - name: worker1\n', '  - name: worker1\n    address: 10.9.0.200\n'), 'cluster.yaml');
    expect(c.nodes.map((n) => n.address)).toEqual(['10.9.0.10', '10.9.0.11', '10.9.0.12', '10.9.0.13', '10.9.0.200']);
  });

  test('x-* fields hold anchors that nodes merge with <<', () => {
    const src = edit('nodes:\n', 'x-db: &db\n  type: t3.small\n  roles: [base, mysql, replication, iptables]\nnodes:\n',
      edit('    db: worker\n    roles: [base, mysql, replication, iptables]\n', '    db: worker\n    <<: *db\n'));
    const c = parseCluster(src, 'cluster.yaml');
    expect(c.nodes[4]).toEqual({ name: 'worker1', type: 't3.small', roles: ['base', 'mysql', 'replication', 'iptables'], db: 'worker', public: false, address: '10.9.0.14' });
    expect(Object.keys(c)).not.toContain('x-db');
  });

  test('a second parse is not affected by defaults filled in the first', () => {
    const a = parseCluster(BASE, 'cluster.yaml');
    a.services.gatekeeper.statements.push('REPLACE');
    a.nodes[0].roles.push('mysql');
    const b = parseCluster(BASE, 'cluster.yaml');
    expect(b.services.gatekeeper.statements).toEqual(['SELECT', 'INSERT', 'UPDATE', 'DELETE']);
    expect(b.nodes[0].roles).toEqual(['base', 'iptables', 'service']);
  });
});

// Each case: the edit, and the exact problems (file:line:col + message), in file order.
const BAD: [string, string, string[]][] = [
  ['yaml syntax error (unclosed quote)', edit('  type: local', '  type: "local'), [
    'cluster.yaml:3:9: yaml: Missing closing "quote: the string starting here is never closed',
  ]],
  ['yaml duplicate key', edit('name: demo\n', 'name: demo\nname: again\n'), [
    'cluster.yaml:2:1: yaml: Map keys must be unique',
  ]],
  ['empty file', '# nothing here\n', [
    'cluster.yaml:1:1: file is empty (expected name, nodes, security, ...)',
  ]],
  ['top level is not a mapping', '- a\n- b\n', [
    'cluster.yaml:1:1: top level must be a mapping (got a list)',
  ]],
  ['unknown top-level field', BASE + 'extras: 1\n', [
    'cluster.yaml:36:1: top level has unknown field "extras" (known fields: name, timezone, adminUser, provider, nodes, security, database, services, bench, apt; x-* fields are free for anchors)',
  ]],
  ['misspelt top-level field', edit('name: demo', 'nmae: demo'), [
    'cluster.yaml:1:1: top level is missing required field "name"',
    'cluster.yaml:1:1: top level has unknown field "nmae" (did you mean "name"?)',
  ]],
  ['unknown node field', edit('    roles: [base, mysql, replication, iptables]\n  - name: worker1', '    rolez: [base, mysql, replication, iptables]\n  - name: worker1'), [
    'cluster.yaml:17:5: nodes[3] is missing required field "roles"',
    'cluster.yaml:19:5: nodes[3] has unknown field "rolez" (did you mean "roles"?)',
  ]],
  ['missing required field', edit('    service: proxy\n    roles: [base, iptables, service]\n', '    service: proxy\n'), [
    'cluster.yaml:14:5: nodes[2] is missing required field "roles"',
  ]],
  ['wrong type (string for boolean)', edit('public: true', 'public: "yes"'), [
    'cluster.yaml:8:13: nodes[0].public must be true or false (got "yes")',
  ]],
  ['wrong type (string for port)', edit('port: 443 }', 'port: "443" }'), [
    'cluster.yaml:25:47: security.flows[0].port must be a whole number (got "443")',
  ]],
  ['nodes is a mapping', edit(BASE.slice(BASE.indexOf('nodes:'), BASE.indexOf('security:')), 'nodes: { gatekeeper: { roles: [base] } }\n'), [
    'cluster.yaml:6:8: nodes must be a list (got a mapping)',
  ]],
  ['bad enum', edit('db: manager', 'db: boss'), [
    'cluster.yaml:18:9: nodes[3].db must be one of manager, worker (got "boss")',
  ]],
  ['enum typo gets a suggestion', edit('db: manager', 'db: mangaer'), [
    'cluster.yaml:18:9: nodes[3].db must be one of manager, worker (got "mangaer"; did you mean "manager"?)',
  ]],
  ['unknown role', edit('roles: [base, mysql, replication, iptables]\n  - name: worker1', 'roles: [base, mysql, replikation, iptables]\n  - name: worker1'), [
    'cluster.yaml:19:26: nodes[3].roles[2] must be one of base, mysql, sakila, sysbench, replication, iptables, service (got "replikation"; did you mean "replication"?)',
  ]],
  ['role listed twice', edit('roles: [base, mysql, replication, iptables]\n  - name: worker1', 'roles: [base, mysql, base, iptables]\n  - name: worker1'), [
    'cluster.yaml:19:26: nodes[3].roles lists "base" more than once',
  ]],
  ['flow port out of range', edit('port: 443 }', 'port: 70000 }'), [
    'cluster.yaml:25:47: security.flows[0].port must be between 1 and 65535 (got 70000)',
  ]],
  ['service port out of range', edit('  proxy:\n    defaultMode', '  proxy:\n    port: 0\n    defaultMode'), [
    'cluster.yaml:34:11: services.proxy.port must be between 1 and 65535 (got 0)',
  ]],
  ['flow source of the wrong type (oneOf collapsed)', edit('from: internet', 'from: 5'), [
    'cluster.yaml:25:15: security.flows[0].from must be a node name or a list of node names (got 5)',
  ]],
  ['empty flow source list (oneOf collapsed to the list branch)', edit('from: internet', 'from: []'), [
    'cluster.yaml:25:15: security.flows[0].from must not be empty',
  ]],
  ['node listed twice in a flow', edit('to: [manager, worker1]', 'to: [manager, manager]'), [
    'cluster.yaml:28:36: security.flows[3].to lists "manager" more than once',
  ]],
  ['bad cluster name pattern', edit('name: demo', 'name: Demo_1'), [
    'cluster.yaml:1:7: name must be 1-16 lower-case letters, digits or "-", starting with a letter (got "Demo_1")',
  ]],
  ['bad node name pattern', edit('  - name: worker1', '  - name: Worker_1'), [
    'cluster.yaml:20:11: nodes[4].name must be 1-31 lower-case letters, digits or "-", starting with a letter (got "Worker_1")',
  ]],
  ['empty nodes', edit(BASE.slice(BASE.indexOf('nodes:'), BASE.indexOf('security:')), 'nodes: []\n'), [
    'cluster.yaml:6:8: nodes must not be empty',
  ]],
  ['bad subnet (pattern)', edit('10.9.0.0/24', '10.9.0.0/16'), [
    'cluster.yaml:5:13: provider.local.subnet must be an IPv4 /24 subnet ending in .0/24, like 10.77.0.0/24 (got "10.9.0.0/16")',
  ]],
  ['bad subnet (octet > 255)', edit('10.9.0.0/24', '10.300.0.0/24'), [
    'cluster.yaml:5:13: provider.local.subnet 10.300.0.0/24 is not a valid IPv4 subnet (each number must be 0-255)',
  ]],
  ['public subnet', edit('10.9.0.0/24', '8.8.8.0/24'), [
    'cluster.yaml:5:13: provider.local.subnet 8.8.8.0/24 is not a private range (use 10.x.x.0/24, 172.16-31.x.0/24 or 192.168.x.0/24)',
  ]],
  ['bad address format', edit('    public: true\n', '    public: true\n    address: 10.9.0.300\n'), [
    'cluster.yaml:9:14: nodes[0].address must be an IPv4 address like 10.77.0.20 (got "10.9.0.300")',
  ]],
  ['address outside the subnet', edit('    public: true\n', '    public: true\n    address: 10.8.0.20\n'), [
    'cluster.yaml:9:14: nodes[0].address 10.8.0.20 is outside provider.local.subnet 10.9.0.0/24',
  ]],
  ['address is the host (.1)', edit('    public: true\n', '    public: true\n    address: 10.9.0.1\n'), [
    'cluster.yaml:9:14: nodes[0].address 10.9.0.1 is the host (controller); use .2-.254',
  ]],
  ['duplicate addresses', edit('    db: worker\n', '    db: worker\n    address: 10.9.0.50\n', edit('    db: manager\n', '    db: manager\n    address: 10.9.0.50\n')), [
    'cluster.yaml:23:14: nodes[4].address 10.9.0.50 is already used by nodes[3]',
  ]],
  ['address collides with another node\'s default', edit('    db: worker\n', '    db: worker\n    address: 10.9.0.10\n'), [
    'cluster.yaml:22:14: nodes[4].address 10.9.0.10 is the default address of nodes[0] (.10 + its index); pick another or set nodes[0].address',
  ]],
  ['duplicate node names', edit('security:', '  - name: worker1\n    db: worker\n    roles: [base, mysql]\nsecurity:'), [
    'cluster.yaml:23:11: nodes[5].name "worker1" is already used by nodes[4]',
  ]],
  ['reserved node name', edit('security:', '  - name: internet\n    roles: [base]\nsecurity:'), [
    'cluster.yaml:23:11: nodes[5].name "internet" is reserved (it names a flow source); pick another name',
  ]],
  ['two managers (and so no worker)', edit('db: worker', 'db: manager'), [
    'cluster.yaml:7:3: nodes has no node with "db: worker" (at least one is needed: workers serve reads)',
    'cluster.yaml:21:9: nodes[4].db: only one manager is allowed (nodes[3] is already the manager)',
  ]],
  ['no manager', edit('db: manager', 'db: worker'), [
    'cluster.yaml:7:3: nodes has no node with "db: manager" (exactly one is needed: it receives every write)',
  ]],
  ['db without the mysql role', edit('roles: [base, mysql, replication, iptables]\n  - name: worker1', 'roles: [base, iptables]\n  - name: worker1'), [
    'cluster.yaml:19:12: nodes[3].roles must include mysql (the node has db: manager)',
  ]],
  ['mysql role without db', edit('    service: proxy\n    roles: [base, iptables, service]', '    service: proxy\n    roles: [base, mysql, iptables, service]'), [
    'cluster.yaml:16:12: nodes[2] has the mysql role but no "db: manager" or "db: worker"',
  ]],
  ['service role without service (and so no proxy)', edit('    service: proxy\n', ''), [
    'cluster.yaml:7:3: nodes has no node with "service: proxy" (the SQL path needs gatekeeper, trustedhost and proxy)',
    'cluster.yaml:15:12: nodes[2] has the service role but no "service:" (one of gatekeeper, trustedhost, proxy)',
  ]],
  ['service declared twice', edit('service: trustedhost', 'service: gatekeeper'), [
    'cluster.yaml:7:3: nodes has no node with "service: trustedhost" (the SQL path needs gatekeeper, trustedhost and proxy)',
    'cluster.yaml:12:14: nodes[1].service: gatekeeper already runs on nodes[0] (each service runs on one node)',
  ]],
  ['two public nodes', edit('    service: proxy\n', '    service: proxy\n    public: true\n'), [
    'cluster.yaml:16:13: nodes[2].public: only one node may be public (nodes[0] already is)',
  ]],
  ['unknown node in a flow', edit('to: trustedhost', 'to: trustedhst'), [
    'cluster.yaml:12:14: nodes[1].service trustedhost listens on port 5000 (services.trustedhost.port default) but no flow in security.flows lets "gatekeeper" reach "trustedhost" on port 5000 (its iptables would drop every request)',
    'cluster.yaml:26:31: security.flows[1].to names unknown node "trustedhst" (did you mean "trustedhost"?)',
  ]],
  ['unknown node inside a list (so the proxy no longer reaches worker1)', edit('to: [manager, worker1]', 'to: [manager, worker2]'), [
    'cluster.yaml:21:9: nodes[4] (worker1): no flow in security.flows lets "proxy" reach it on port 3306 (MySQL)',
    'cluster.yaml:28:36: security.flows[3].to names unknown node "worker2" (did you mean "worker1"?)',
  ]],
  ['internet in `to`', edit('from: worker1, to: manager', 'from: worker1, to: [manager, internet]'), [
    'cluster.yaml:29:38: security.flows[4].to: "internet" may only be used in "from" (flows go to nodes)',
  ]],
  ['explicit service port with no flow', edit('  proxy:\n    defaultMode', '  proxy:\n    port: 6000\n    defaultMode'), [
    'cluster.yaml:34:11: services.proxy.port 6000: no flow in security.flows lets "trustedhost" reach "proxy" on port 6000 (its iptables would drop every request)',
  ]],
  ['gatekeeper port with no flow from anywhere', edit('to: gatekeeper, port: 443 }', 'to: gatekeeper, port: 8080 }'), [
    'cluster.yaml:9:14: nodes[0].service gatekeeper listens on port 443 (services.gatekeeper.port default) but no flow in security.flows reaches node "gatekeeper" on port 443 (its iptables would drop every request)',
  ]],
  ['proxy cannot reach a database node', edit('to: [manager, worker1]', 'to: [worker1]'), [
    'cluster.yaml:18:9: nodes[3] (manager): no flow in security.flows lets "proxy" reach it on port 3306 (MySQL)',
  ]],
  ['worker cannot reach the manager to replicate', edit('    - { from: worker1, to: manager, port: 3306 }\n', ''), [
    'cluster.yaml:21:9: nodes[4] (worker1) replicates from "manager" but no flow in security.flows lets it reach "manager" on port 3306',
  ]],
  ['app schema not allowed by the gatekeeper', BASE + 'database: { schema: app }\n', [
    'cluster.yaml:32:1: services.gatekeeper.schemas must include database.schema "app" (the app user can only use that schema)',
  ]],
  ['routine not schema.name', edit('services:\n', 'services:\n  gatekeeper:\n    routines: [inventory_in_stock]\n'), [
    'cluster.yaml:34:16: services.gatekeeper.routines[0] must be schema.function, e.g. sakila.inventory_in_stock (got "inventory_in_stock")',
  ]],
  ['routine outside database.schema', edit('services:\n', 'services:\n  gatekeeper:\n    routines: [sakila.inventory_in_stock, other.f]\n'), [
    'cluster.yaml:34:43: services.gatekeeper.routines: other.f is not in database.schema "sakila" (the app user can only use that schema)',
  ]],
  ['egress names an unknown node', edit('node: trustedhost', 'node: trusted'), [
    'cluster.yaml:31:15: security.egress[0].node names unknown node "trusted"',
  ]],
  ['egress names a node twice', edit('    - { node: trustedhost }\n', '    - { node: trustedhost }\n    - { node: trustedhost, mirror: false }\n'), [
    'cluster.yaml:32:15: security.egress[1].node: "trustedhost" is already listed in security.egress[0]',
  ]],
  ['defaultMode not in modes', edit('defaultMode: random', 'defaultMode: customized'), [
    'cluster.yaml:34:18: services.proxy.defaultMode "customized" must be one of services.proxy.modes (direct, random)',
  ]],
  ['aws jump without a public node', edit('  type: local', '  type: aws', edit('    public: true\n', '')), [
    'cluster.yaml:3:9: provider.aws.jump (default true) needs one node with "public: true" to reach the others through (or set jump: false)',
  ]],
  ['an error inside a merged anchor points at the anchor', edit('nodes:\n', 'x-db: &db\n  roles: [base, mysql, replikation]\nnodes:\n',
    edit('    db: worker\n    roles: [base, mysql, replication, iptables]\n', '    db: worker\n    <<: *db\n')), [
    'cluster.yaml:7:24: nodes[4].roles[2] must be one of base, mysql, sakila, sysbench, replication, iptables, service (got "replikation"; did you mean "replication"?)',
  ]],
  ['unknown time zone', edit('name: demo\n', 'name: demo\ntimezone: Europe/Pariss\n'), [
    'cluster.yaml:2:11: timezone "Europe/Pariss" is not a known time zone (did you mean "Europe/Paris"?)',
  ]],
  ['an Ubuntu release the AWS provider has no images of, and an SSH wait too short', edit('  type: local\n', '  type: local\n  aws: { ubuntu: "22.04", sshTimeoutSeconds: 5 }\n'), [
    'cluster.yaml:4:18: provider.aws.ubuntu must be one of 26.04, 24.04 (got "22.04"; did you mean "26.04"?)',
    'cluster.yaml:4:46: provider.aws.sshTimeoutSeconds must be between 10 and 3600 (got 5)',
  ]],
  ['bad aws.sshCidr numbers', edit('  type: local\n', '  type: local\n  aws: { sshCidr: 203.0.113.7/33 }\n'), [
    'cluster.yaml:4:19: provider.aws.sshCidr 203.0.113.7/33 is not a valid IPv4 CIDR (numbers 0-255, prefix 0-32)',
  ]],
  ['several problems come back together, in file order', edit('name: demo', 'name: Demo', edit('db: manager', 'db: boss', BASE + 'extra: 1\n')), [
    'cluster.yaml:1:7: name must be 1-16 lower-case letters, digits or "-", starting with a letter (got "Demo")',
    'cluster.yaml:18:9: nodes[3].db must be one of manager, worker (got "boss")',
    'cluster.yaml:36:1: top level has unknown field "extra" (known fields: name, timezone, adminUser, provider, nodes, security, database, services, bench, apt; x-* fields are free for anchors)',
  ]],
];

describe('invalid specs: exact file:line:col and message', () => {
  test('the base spec itself is valid', () => {
    expect(() => parseCluster(BASE, 'cluster.yaml')).not.toThrow();
  });
  test(`there are at least 20 cases (${BAD.length})`, () => {
    expect(BAD.length).toBeGreaterThanOrEqual(20);
  });
  for (const [name, src, expected] of BAD) {
    test(name, () => {
      expect(problems(src)).toEqual(expected);
    });
  }
});

describe('loadCluster and formatting', () => {
  test('a missing file is a SpecError naming it', () => {
    expect(() => loadCluster('no-such-dir/cluster.yaml')).toThrow(new SpecError(['no-such-dir/cluster.yaml: file not found']));
  });

  test('a file outside the working folder is named by its absolute path', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rampart-spec-'));
    try {
      const file = path.join(dir, 'cluster.yaml');
      writeFileSync(file, edit('db: manager', 'db: boss'));
      let err: unknown;
      try { loadCluster(file); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(SpecError);
      expect((err as SpecError).problems).toEqual([`${file}:18:9: nodes[3].db must be one of manager, worker (got "boss")`]);
      expect(formatSpecError(err as SpecError)).toBe(`invalid cluster spec (1 problem):\n  ${file}:18:9: nodes[3].db must be one of manager, worker (got "boss")`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
