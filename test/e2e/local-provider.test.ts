// The local provider on real LXC: its own small cluster (rpt, 10.78.0.0/24,
// bridge rpt0, 2 nodes) so it never collides with anyone's default cluster.
// Needs Linux + root; skips elsewhere, but fails when CI=true.
// Traffic goes only to the nodes on the bridge (and, from inside a node, to
// the package mirror through the fence); the fence itself is checked by
// reading the ruleset, never by sending packets elsewhere.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCluster } from '../../core/spec.ts';
import { ProviderError } from '../../core/errors.ts';
import type { Cluster, Host, PlanItem } from '../../core/types.ts';
import { LocalProvider } from '../../providers/local.ts';
import { fenceRuleset, parseSubnet } from '../../providers/local/network.ts';
import { hostsWithMirror, waitForSsh } from '../../providers/local/lxc.ts';
import { aptSources } from '../../providers/local/image.ts';

const NAME = 'rpt';
const BRIDGE = 'rpt0';
const TABLE = 'rampart_rpt';
const MIRROR = 'deb.debian.org';

function canRun(): boolean {
  const ok = process.platform === 'linux' && process.getuid?.() === 0;
  if (!ok && process.env.CI === 'true') throw new Error('the LXC e2e test needs root on Linux (CI=true: refusing to skip)');
  return ok;
}

function sh(cmd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function writeCluster(dir: string): string {
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, `name: ${NAME}
adminUser: ubuntu
provider:
  type: local
  local:
    subnet: 10.78.0.0/24
    bridge: ${BRIDGE}
    mirror: ${MIRROR}
    packageCache: false   # the nodes fetch from the mirror through the fence (the cache: package-cache.test.ts)
nodes:
  - { name: n1, type: t2.micro, db: manager, roles: [base, mysql] }
  - { name: n2, type: t2.micro, db: worker, roles: [base, mysql] }
security:
  flows: []
`);
  return file;
}

const actions = (items: PlanItem[]) => Object.fromEntries(items.map((i) => [i.resource, i.action]));

// ------------------------------------------------------------------ pure parts (run everywhere)

describe('local provider building blocks', () => {
  test('subnet: gateway .1, nodes from .10, bounds checked', () => {
    const s = parseSubnet('10.78.0.0/24');
    expect(s.gateway).toBe('10.78.0.1');
    expect(s.nodeAddress(0)).toBe('10.78.0.10');
    expect(s.nodeAddress(5)).toBe('10.78.0.15');
    expect(s.contains('10.78.0.200')).toBe(true);
    expect(s.contains('10.78.1.2')).toBe(false);
    expect(s.contains('10.78.0.255')).toBe(false);
    expect(parseSubnet('10.78.0.77/24').cidr).toBe('10.78.0.0/24');
    expect(() => parseSubnet('10.78.0.0/30')).toThrow(ProviderError);
    expect(() => parseSubnet('nonsense')).toThrow(ProviderError);
    expect(() => parseSubnet('10.78.0.0/28').nodeAddress(6)).toThrow(/no room/);
  });

  test('fence: only the subnet and the mirror on 80/443 leave the bridge, NAT out', () => {
    const r = fenceRuleset(TABLE, BRIDGE, parseSubnet('10.78.0.0/24'), ['192.0.2.7', '192.0.2.9']);
    expect(r).toContain('elements = { 192.0.2.7, 192.0.2.9 }');
    expect(r).toContain('iifname "rpt0" ip daddr 10.78.0.0/24 accept');
    expect(r).toContain('iifname "rpt0" ip daddr @mirror4 tcp dport { 80, 443 } accept');
    expect(r).toMatch(/iifname "rpt0" counter drop/);
    expect(r).toContain('ip saddr 10.78.0.0/24 oifname != "rpt0" masquerade');
    // a different mirror address changes the digest the provider compares
    const other = fenceRuleset(TABLE, BRIDGE, parseSubnet('10.78.0.0/24'), ['192.0.2.8']);
    expect(/comment "([^"]+)"/.exec(other)?.[1]).not.toBe(/comment "([^"]+)"/.exec(r)?.[1]);
  });

  test('mirror pin: a managed block in /etc/hosts, replaced in place, the rest kept', () => {
    const first = hostsWithMirror('127.0.0.1 localhost\n10.78.0.10 n1\n', MIRROR, ['192.0.2.7']);
    expect(first).toContain('10.78.0.10 n1\n');
    expect(first).toContain(`192.0.2.7 ${MIRROR}`);
    const second = hostsWithMirror(`${first}10.78.0.11 n2\n`, MIRROR, ['192.0.2.8', '192.0.2.9']);
    expect(second).not.toContain('192.0.2.7');
    expect(second).toContain(`192.0.2.8 ${MIRROR}\n192.0.2.9 ${MIRROR}`);
    expect(second).toContain('10.78.0.11 n2\n');
    expect(hostsWithMirror(second, MIRROR, ['192.0.2.8', '192.0.2.9'])).toBe(second);
  });
});

// ------------------------------------------------------------------ real LXC

const run = canRun();

describe.skipIf(!run)('local provider on LXC (cluster rpt, 2 nodes)', () => {
  let dir: string;
  let cluster: Cluster;
  let provider: LocalProvider;
  let hosts: Host[] = [];
  let key: string;
  let ipForwardBefore: string;
  let othersBefore: boolean;
  const progress: string[] = [];
  const events = { progress: (m: string) => { progress.push(m); process.stderr.write(`  local: ${m}\n`); } };

  const otherRampartTables = () =>
    sh('nft', ['list', 'tables']).stdout.split('\n').some((l) => /table inet rampart_/.test(l) && !l.includes(TABLE));
  const ssh = (address: string, command: string) =>
    sh('ssh', ['-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5', `ubuntu@${address}`, command]);
  const hostOf = (name: string) => hosts.find((h) => h.name === name)!;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rampart-local-'));
    cluster = loadCluster(writeCluster(dir));
    provider = new LocalProvider(cluster);
    key = join(dir, '.rampart', 'id_ed25519');
    // Leftovers of an interrupted earlier run (same cluster name) would hide "from nothing".
    await provider.down();
    ipForwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    othersBefore = otherRampartTables();
  });

  afterAll(async () => {
    if (provider) await provider.down().catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('plan from nothing changes nothing and lists every container to create', async () => {
    const plan = actions(await provider.plan());
    expect(plan['container rpt-n1']).toBe('create');
    expect(plan['container rpt-n2']).toBe('create');
    expect(plan[`bridge ${BRIDGE}`]).toBe('create');
    expect(plan[`fence inet ${TABLE}`]).toBe('create');
    expect(sh('ip', ['link', 'show', 'dev', BRIDGE]).code).not.toBe(0);
    expect(await provider.describe()).toEqual([]);
  }, 60_000);

  test('up from nothing: both nodes answer SSH as the admin user with passwordless sudo', async () => {
    const res = await provider.up(events);
    hosts = res.hosts;
    const changes = actions(res.changes);
    expect(changes['container rpt-n1']).toBe('create');
    expect(changes['container rpt-n2']).toBe('create');
    expect(changes[`bridge ${BRIDGE}`]).toBe('create');
    expect(hosts.map((h) => [h.name, h.address, h.port, h.user, h.sshFrom])).toEqual([
      ['n1', '10.78.0.10', 22, 'ubuntu', '10.78.0.1/32'],
      ['n2', '10.78.0.11', 22, 'ubuntu', '10.78.0.1/32'],
    ]);
    expect(progress.some((m) => m.startsWith('creating n1'))).toBe(true);
    for (const h of hosts) {
      const r = ssh(h.address, 'sudo -n true && hostname');
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(h.name);
    }
    // the state files are private
    expect(statSync(join(dir, '.rampart', 'local.json')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, '.rampart', 'local-hostkeys', 'rpt-n1_ed25519')).mode & 0o777).toBe(0o600);
  }, 600_000);

  test('nodes run systemd and have their own identity (machine-id, SSH host keys)', async () => {
    const ids = new Set<string>();
    const hostKeys = new Set<string>();
    for (const h of hosts) {
      let state = '';
      for (let i = 0; i < 60; i++) {
        state = ssh(h.address, 'systemctl is-system-running').stdout.trim();
        if (state === 'running' || state === 'degraded') break;
        await Bun.sleep(1000);
      }
      expect(['running', 'degraded']).toContain(state);
      ids.add(ssh(h.address, 'cat /etc/machine-id').stdout.trim());
      hostKeys.add(ssh(h.address, 'cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.trim());
      expect(ssh(h.address, 'stat -c %a /').stdout.trim()).toBe('755');
    }
    expect(ids.size).toBe(2);
    expect([...ids].every((i) => /^[0-9a-f]{32}$/.test(i))).toBe(true);
    expect(hostKeys.size).toBe(2);
  }, 120_000);

  test('the fence holds the mirror addresses, the nodes pin the same ones and have no DNS', async () => {
    const mirrorAddrs = (await lookup(MIRROR, { all: true, family: 4 })).map((a) => a.address).sort();
    const table = sh('nft', ['list', 'table', 'inet', TABLE]);
    expect(table.code).toBe(0);
    for (const a of mirrorAddrs) expect(table.stdout).toContain(a);
    expect(table.stdout).toContain(`iifname "${BRIDGE}" ip daddr @mirror4 tcp dport { 80, 443 } accept`);
    expect(table.stdout).toMatch(new RegExp(`iifname "${BRIDGE}" counter packets \\d+ bytes \\d+ drop`));
    expect(table.stdout).toContain(`ip saddr 10.78.0.0/24 oifname != "${BRIDGE}" masquerade`);
    const n1 = hostOf('n1').address;
    const pinned = ssh(n1, 'cat /etc/hosts').stdout.split('\n').filter((l) => l.endsWith(` ${MIRROR}`)).map((l) => l.split(' ')[0]).sort();
    expect(pinned).toEqual(mirrorAddrs);
    expect(ssh(n1, 'cat /etc/resolv.conf').stdout).not.toMatch(/^\s*nameserver/m);
    expect(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim()).toBe('1');
  }, 60_000);

  test('a new node starts current: its image holds the -updates/-security lists with nothing pending, and its apt sources stay older than their stamp', () => {
    const n1 = hostOf('n1').address;
    expect(ssh(n1, 'ls /var/lib/apt/lists').stdout).toMatch(/bookworm-security_.*_Packages/);
    const pending = ssh(n1, "LC_ALL=C apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>/dev/null | grep -c '^Inst '");
    expect(pending.stdout.trim()).toBe('0');
    // sources.list newer than the stamp would make the first apply refresh the lists (roles/lib/apt.ts)
    const times = ssh(n1, 'stat -c %Y /etc/apt/sources.list /var/lib/rampart/apt-lists.stamp').stdout.trim().split('\n').map(Number);
    expect(times).toHaveLength(2);
    expect(times[0]).toBeLessThanOrEqual(times[1]);
  }, 60_000);

  test('apt-get update works inside a node (mirror reachable through the fence)', () => {
    const r = ssh(hostOf('n2').address, 'sudo -n apt-get -q update 2>&1');
    expect(r.stdout).toMatch(/bookworm-security/);
    expect(r.stdout).not.toMatch(/^(Err|W):/m);
    expect(r.code).toBe(0);
  }, 180_000);

  test('up again creates nothing: every change is ok', async () => {
    const t0 = Date.now();
    const res = await provider.up(events);
    const notOk = res.changes.filter((c) => c.action !== 'ok');
    expect(notOk).toEqual([]);
    expect(res.hosts).toEqual(hosts);
    expect((await provider.plan()).filter((c) => c.action !== 'ok')).toEqual([]);
    expect((await provider.describe()).map((h) => h.name)).toEqual(['n1', 'n2']);
    process.stderr.write(`  local: no-op up took ${Date.now() - t0} ms\n`);
  }, 120_000);

  test('a container destroyed by hand is recreated, a stopped one is started', async () => {
    const hostKeyBefore = ssh(hostOf('n2').address, 'cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.trim();
    expect(hostKeyBefore).toMatch(/^ssh-ed25519 /);
    expect(sh('lxc-destroy', ['-f', '-n', 'rpt-n2']).code).toBe(0);
    expect(sh('lxc-stop', ['-k', '-n', 'rpt-n1']).code).toBe(0);
    expect(await provider.describe()).toEqual([]);
    const plan = actions(await provider.plan());
    expect(plan['container rpt-n2']).toBe('create');
    expect(plan['container rpt-n1']).toBe('change');
    const res = await provider.up(events);
    const changes = actions(res.changes);
    expect(changes['container rpt-n2']).toBe('create');
    expect(changes['container rpt-n1']).toBe('change');
    expect(changes[`bridge ${BRIDGE}`]).toBe('ok');
    for (const h of res.hosts) expect(ssh(h.address, 'sudo -n true').code).toBe(0);
    // same identity: the engine's pinned host key still matches the recreated node
    expect(ssh(hostOf('n2').address, 'cat /etc/ssh/ssh_host_ed25519_key.pub').stdout.trim()).toBe(hostKeyBefore);
  }, 300_000);

  test('a bridge deleted under running nodes is recreated and their veths re-attached; a mangled mirror pin and apt sources are rewritten', async () => {
    const n1 = hostOf('n1').address;
    expect(ssh(n1, "sudo -n sh -c \"sed -i '/deb.debian.org/d' /etc/hosts; echo 'deb http://mirror.invalid/debian bookworm main' > /etc/apt/sources.list\"").code).toBe(0);
    expect(actions(await provider.plan())['container rpt-n1']).toBe('change');
    expect(sh('ip', ['link', 'delete', BRIDGE]).code).toBe(0);
    const changes = actions((await provider.up(events)).changes);
    expect(changes[`bridge ${BRIDGE}`]).toBe('create');
    expect(changes['container rpt-n1']).toBe('change');
    expect(changes['container rpt-n2']).toBe('change');
    for (const h of hosts) expect(ssh(h.address, 'true').code).toBe(0);
    expect(ssh(n1, 'cat /etc/hosts').stdout).toContain(` ${MIRROR}`);
    expect(ssh(n1, 'cat /etc/apt/sources.list').stdout).toBe(aptSources(MIRROR, 'bookworm'));
    expect((await provider.up()).changes.filter((c) => c.action !== 'ok')).toEqual([]);
  }, 120_000);

  test('a container destroyed by hand leaves the shared base layer intact', () => {
    const config = readFileSync('/var/lib/lxc/rpt-n1/config', 'utf8');
    const lower = /^lxc\.rootfs\.path = overlay:([^:]+):/m.exec(config)?.[1];
    expect(lower).toBeDefined();
    expect(existsSync(join(lower!, 'usr/sbin/sshd'))).toBe(true);
    expect(readFileSync(join(lower!, 'etc/machine-id'), 'utf8')).toBe('');
    // the node's own files live in its layer only
    expect(existsSync(join(lower!, 'home/ubuntu'))).toBe(false);
  });

  test('clear errors: a subnet already in use, a node that never answers SSH', async () => {
    const clash = new LocalProvider({ ...cluster, name: 'rpx', provider: { ...cluster.provider, local: { ...cluster.provider.local, bridge: 'rpx0' } } });
    const err = await clash.plan().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toContain(`10.78.0.0/24 is already used by interface ${BRIDGE}`);
    expect((err as ProviderError).hint).toMatch(/subnet/);
    // an unused address on the cluster's own bridge: nothing listens there
    const t0 = Date.now();
    const timeout = await waitForSsh('ghost', '10.78.0.99', 1500).catch((e: unknown) => e);
    expect(timeout).toBeInstanceOf(ProviderError);
    expect((timeout as ProviderError).message).toMatch(/node ghost \(10\.78\.0\.99\) did not answer SSH within 2 s/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  }, 30_000);

  test('not root: a ProviderError that says so', () => {
    const code = `import('${join(import.meta.dir, '../../providers/local.ts')}').then(async ({ LocalProvider }) => {
      try { await new LocalProvider(JSON.parse(process.env.RPT_CLUSTER)).plan(); console.log('no error'); }
      catch (e) { console.log(JSON.stringify({ name: e.name, message: e.message, hint: e.hint })); }
    })`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', code], {
      encoding: 'utf8', cwd: '/tmp', env: { PATH: process.env.PATH, HOME: '/tmp', RPT_CLUSTER: JSON.stringify(cluster) },
    });
    const err = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
    expect(err.name).toBe('ProviderError');
    expect(err.message).toMatch(/needs root/);
    expect(err.hint).toMatch(/as root/);
  });

  test('a container no longer in cluster.yaml: plan says delete, up leaves it, down removes it', async () => {
    const shrunk = new LocalProvider({ ...cluster, nodes: cluster.nodes.filter((n) => n.name === 'n1') });
    const plan = await shrunk.plan();
    expect(plan.find((p) => p.resource === 'container rpt-n2')?.action).toBe('delete');
    const res = await shrunk.up();
    expect(res.hosts.map((h) => h.name)).toEqual(['n1']);
    expect(sh('lxc-info', ['-s', '-n', 'rpt-n2']).stdout).toMatch(/RUNNING/);
    expect((await provider.describe()).map((h) => h.name)).toEqual(['n1', 'n2']);
  }, 120_000);

  test('down removes containers, bridge, fence and state and restores ip_forward; down again is a no-op', async () => {
    const items = await provider.down(events);
    const done = actions(items);
    expect(done['container rpt-n1']).toBe('delete');
    expect(done['container rpt-n2']).toBe('delete');
    expect(done[`bridge ${BRIDGE}`]).toBe('delete');
    expect(done[`fence inet ${TABLE}`]).toBe('delete');
    expect(sh('lxc-ls', ['-1']).stdout.split(/\s+/).filter((n) => n.startsWith(`${NAME}-`))).toEqual([]);
    expect(sh('ip', ['link', 'show', 'dev', BRIDGE]).code).not.toBe(0);
    expect(sh('nft', ['list', 'table', 'inet', TABLE]).code).not.toBe(0);
    expect(existsSync(join(dir, '.rampart', 'local.json'))).toBe(false);
    expect(existsSync(join(dir, '.rampart', 'local-hostkeys'))).toBe(false);
    // ip_forward is shared: only the last rampart cluster down puts it back.
    if (!othersBefore && !otherRampartTables()) {
      expect(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim()).toBe(ipForwardBefore);
    }
    expect(existsSync('/var/cache/rampart/bookworm-base.tar.zst')).toBe(true);
    expect(await provider.down(events)).toEqual([]);
  }, 300_000);
});
