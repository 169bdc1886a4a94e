// The package cache on the controller (provider.local.packageCache, the
// default) on real LXC: two small clusters, rpcache (10.90.0.0/24) and
// rpcach2 (10.91.0.0/24), 2 nodes each (MariaDB on both), one cache daemon.
// What is proved, from apt-cacher-ng's own transfer log (`|I|` = bytes it
// fetched from the mirror, `|O|` = bytes it served):
//   - a fresh cluster installs through the cache, each .deb fetched once,
//     and every managed package is at the candidate of the refreshed lists
//     (security archive included);
//   - the fence: a node reaches the cache on its gateway, not the mirror's
//     address, not another address (those probes are dropped by the fence on
//     this host: its drop counter grows; nothing leaves the machine);
//   - a second cluster installs with no .deb fetched from the mirror;
//   - teardown: the daemon keeps serving the other cluster, stops with the
//     last one, and the cached files stay.
// Needs Linux + root; skips elsewhere, but fails when CI=true.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanItem, RunReport } from '../../core/types.ts';
import { APT_CACHE_CONF, APT_CACHE_CONF_PATH, CACHE_LOG_DIR, CACHE_PORT, CACHE_STORE } from '../../providers/local/cache.ts';
import { e2eAvailable, onNode, zx } from '../support/cluster.ts';

const RUN = e2eAvailable();
const DIR = '/tmp/rampart-e2e-cache';
const LOG = join(CACHE_LOG_DIR, 'apt-cacher.log');
const MIRROR = 'deb.debian.org';
const NODES = ['manager', 'worker1'];
// what base and mysql install (roles/base.ts, the MariaDB packages of roles/lib/mysql-dialect.ts)
const MANAGED = ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps', 'mariadb-server', 'mariadb-client'];

interface C { name: string; net: string; file: string }
const one: C = { name: 'rpcache', net: '10.90.0', file: '' };
const two: C = { name: 'rpcach2', net: '10.91.0', file: '' };
const addr = (c: C, node: string) => `${c.net}.${10 + NODES.indexOf(node)}`;

function writeCluster(c: C): string {
  const dir = join(DIR, c.name);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'cluster.yaml');
  // worker1's own firewall restricts its OUTPUT (egress): apt must still reach the cache
  writeFileSync(file, `name: ${c.name}
adminUser: ubuntu
provider:
  type: local
  local:
    subnet: ${c.net}.0/24
    bridge: ${c.name}0
    mirror: ${MIRROR}
    packageCache: true
nodes:
  - { name: manager, db: manager, roles: [base, mysql] }
  - { name: worker1, db: worker, roles: [base, mysql, iptables] }
security:
  flows: []
  egress:
    - { node: worker1, mirror: true }
`);
  return file;
}

function ok(r: { code: number; stderr: string }) {
  if (r.code !== 0) throw new Error(`exit ${r.code}:\n${r.stderr.slice(-3000)}`);
}
const logSize = () => (existsSync(LOG) ? statSync(LOG).size : 0);
/** The cache's transfer log since `from` (bytes): `{ kind: I|O, bytes, client, path }`. */
function transfers(from: number) {
  const text = existsSync(LOG) ? readFileSync(LOG).subarray(from).toString('utf8') : '';
  return text.split('\n').map((l) => l.split('|')).filter((f) => f.length >= 5)
    .map(([, kind, bytes, client, path]) => ({ kind, bytes: Number(bytes), client, path }));
}
const debs = (t: ReturnType<typeof transfers>, kind: 'I' | 'O') => t.filter((x) => x.kind === kind && x.path.endsWith('.deb'));
/** 0 when a TCP connection from the node to host:port opens within 3 s. */
const probe = (c: C, node: string, host: string, port: number) =>
  onNode(c.file, addr(c, node), `timeout 3 bash -c '</dev/tcp/${host}/${port}' 2>/dev/null`).code;
const fenceDrops = (c: C) => {
  const t = spawnSync('nft', ['list', 'table', 'inet', `rampart_${c.name}`], { encoding: 'utf8' }).stdout;
  return Number(new RegExp(`iifname "${c.name}0" counter packets (\\d+)`).exec(t)?.[1] ?? NaN);
};
const cacheItem = (items: PlanItem[] | undefined) => items?.find((p) => p.resource === 'package cache');
const listening = () => spawnSync('ss', ['-Hltn', `sport = :${CACHE_PORT}`], { encoding: 'utf8' }).stdout;

function atCandidate(c: C) {
  for (const node of NODES) {
    const out = onNode(c.file, addr(c, node), `for p in ${MANAGED.join(' ')}; do apt-cache policy $p | awk -v p=$p '/Installed:/{i=$2} /Candidate:/{c=$2} END{print p, i, c}'; done; apt-cache policy | grep -c 'bookworm-security' || true`);
    const lines = out.stdout.trim().split('\n');
    expect(Number(lines.pop())).toBeGreaterThan(0); // the security archive is in the lists
    expect(lines.length).toBe(MANAGED.length);
    for (const line of lines) {
      const [p, installed, candidate] = line.split(' ');
      expect({ node, p, installed }).toEqual({ node, p, installed: candidate });
      expect(installed).not.toBe('(none)');
    }
  }
}

describe.skipIf(!RUN)('package cache on the controller (2 clusters x 2 LXC nodes)', () => {
  beforeAll(async () => {
    one.file = writeCluster(one);
    two.file = writeCluster(two);
    await zx('teardown', two.file);
    await zx('teardown', one.file);
  }, 300_000);

  afterAll(async () => {
    if (two.file) await zx('teardown', two.file);
    if (one.file) await zx('teardown', one.file);
  }, 300_000);

  test('a fresh cluster installs through the cache: each .deb fetched once, every managed package at its candidate', async () => {
    const from = logSize();
    const r = await zx<RunReport>('apply', one.file);
    ok(r);
    for (const h of NODES) expect(r.json.hosts[h]).toMatchObject({ failed: 0, unreachable: false });
    expect(cacheItem(r.json.provider)?.detail).toBe(`apt-cacher-ng on ${one.net}.1:${CACHE_PORT} for ${MIRROR}`);
    for (const node of NODES) {
      const sources = onNode(one.file, addr(one, node), 'cat /etc/apt/sources.list').stdout;
      expect(sources).toContain(`deb http://${one.net}.1:${CACHE_PORT}/${MIRROR}/debian bookworm main`);
      expect(sources).toContain(`deb http://${one.net}.1:${CACHE_PORT}/${MIRROR}/debian-security bookworm-security main`);
      expect(sources).not.toContain(`http://${MIRROR}/`);
      expect(onNode(one.file, addr(one, node), `cat ${APT_CACHE_CONF_PATH}`).stdout).toBe(APT_CACHE_CONF);
    }
    const t = transfers(from);
    // both nodes were served their packages by the cache; none was fetched from the mirror twice
    // (on a warm cache none at all: the store outlives clusters)
    for (const node of NODES) expect(debs(t, 'O').filter((x) => x.client === addr(one, node)).length).toBeGreaterThan(10);
    const fetched = debs(t, 'I').map((x) => x.path);
    expect(fetched.length).toBe(new Set(fetched).size);
    atCandidate(one);
  }, 900_000);

  test('the fence: a node reaches the cache on its gateway, not the mirror itself, not another address', async () => {
    const [mirrorAddr] = (await lookup(MIRROR, { all: true, family: 4 })).map((a) => a.address);
    const table = spawnSync('nft', ['list', 'table', 'inet', `rampart_${one.name}`], { encoding: 'utf8' }).stdout;
    expect(table).toContain(`iifname "${one.name}0" ip daddr ${one.net}.0/24 accept`);
    expect(table).not.toContain('mirror4');
    expect(table).not.toContain('masquerade');
    // manager has no firewall of its own: only the fence decides
    const before = fenceDrops(one);
    expect(probe(one, 'manager', `${one.net}.1`, CACHE_PORT)).toBe(0);
    expect(probe(one, 'manager', mirrorAddr, 80)).not.toBe(0);
    expect(probe(one, 'manager', mirrorAddr, 443)).not.toBe(0);
    expect(probe(one, 'manager', `${two.net}.10`, 22)).not.toBe(0);
    expect(fenceDrops(one)).toBeGreaterThanOrEqual(before + 3);
    // worker1's own OUTPUT rules (egress) admit the cache's port on the gateway, and apt works through it
    expect(onNode(one.file, addr(one, 'worker1'), 'iptables-save -t filter').stdout).toContain(`-A OUTPUT -d ${one.net}.1/32 -p tcp -m tcp --dport ${CACHE_PORT} -j ACCEPT`);
    expect(probe(one, 'worker1', `${one.net}.1`, CACHE_PORT)).toBe(0);
    const upd = onNode(one.file, addr(one, 'worker1'), 'apt-get -q update 2>&1');
    expect(upd.stdout).toMatch(/bookworm-security/);
    expect(upd.stdout).not.toMatch(/^(Err|W):/m);
    expect(upd.code).toBe(0);
  }, 120_000);

  test('a second apply changes nothing', async () => {
    const r = await zx<RunReport>('apply', one.file);
    ok(r);
    for (const h of NODES) expect(r.json.hosts[h]).toMatchObject({ changed: 0, failed: 0 });
    expect(r.json.provider!.filter((p) => p.action !== 'ok')).toEqual([]);
  }, 300_000);

  test('a second cluster installs with no .deb fetched from the mirror; one daemon serves both bridges', async () => {
    const from = logSize();
    const r = await zx<RunReport>('apply', two.file);
    ok(r);
    for (const h of NODES) expect(r.json.hosts[h]).toMatchObject({ failed: 0, unreachable: false });
    const t = transfers(from);
    expect(debs(t, 'I')).toEqual([]);
    expect(debs(t, 'O').filter((x) => x.client.startsWith(`${two.net}.`)).length).toBeGreaterThan(20);
    const indexBytes = t.filter((x) => x.kind === 'I').reduce((s, x) => s + x.bytes, 0);
    process.stderr.write(`second cluster: ${debs(t, 'O').length} .deb served from the cache, 0 fetched; ${indexBytes} bytes of package lists revalidated\n`);
    expect(listening()).toContain(`${one.net}.1:${CACHE_PORT}`);
    expect(listening()).toContain(`${two.net}.1:${CACHE_PORT}`);
    atCandidate(two);
  }, 900_000);

  test('teardown: the daemon keeps serving the other cluster, stops with the last; the cached files stay', async () => {
    const d2 = await zx<{ removed: PlanItem[] }>('teardown', two.file);
    expect(d2.code).toBe(0);
    expect(listening()).toContain(`${one.net}.1:${CACHE_PORT}`);
    expect(listening()).not.toContain(`${two.net}.1:${CACHE_PORT}`);
    expect(probe(one, 'manager', `${one.net}.1`, CACHE_PORT)).toBe(0);
    const d1 = await zx<{ removed: PlanItem[] }>('teardown', one.file);
    expect(d1.code).toBe(0);
    expect(listening()).toBe('');
    expect(existsSync(join(CACHE_STORE, 'deb_deb_debian_org'))).toBe(true);
  }, 300_000);
});
