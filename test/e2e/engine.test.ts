// Issue 2 end to end on real LXC nodes, with the base role only (`--roles base`):
// apply from nothing, re-apply changes nothing, --check reports exactly a manual
// drift and changes nothing, apply repairs it, pinned host keys, a node deleted
// by hand is recreated, an invalid cluster.yaml creates nothing, teardown leaves
// nothing behind and is safe to rerun.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunReport } from '../../core/types.ts';
import { teardownSuite, e2eAvailable, onNode, testClusterFile, zx } from '../support/cluster.ts';

const RUN = e2eAvailable();
const NAME = 'rpeng';
const DIR = '/tmp/rampart-e2e-engine';
const NODES = ['gatekeeper', 'trustedhost', 'proxy', 'manager', 'worker1', 'worker2'];
const addr = (node: string) => `10.84.0.${10 + NODES.indexOf(node)}`;
let file = '';

/** Fail with the command's own output, not just its exit code. */
function ok(r: { code: number; stderr: string }, code = 0) {
  if (r.code !== code) throw new Error(`exit ${r.code} (wanted ${code}):\n${r.stderr.slice(-3000)}`);
}
const containers = () =>
  execFileSync('lxc-ls', ['-1'], { encoding: 'utf8' }).split('\n').filter((n) => n.startsWith(`${NAME}-`));
const changedTasks = (r: RunReport) =>
  r.results.filter((x) => x.status === 'changed').map((x) => `${x.host}|${x.role}|${x.task}`).sort();

describe.skipIf(!RUN)('engine + local provider + base role (6 LXC nodes)', () => {
  let ipForwardBefore = '';

  beforeAll(async () => {
    file = testClusterFile(DIR, NAME, '10.84.0.0/24');
    await zx('teardown', file); // start from nothing
    ipForwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
  }, 300_000);

  afterAll(() => teardownSuite(file), 300_000);

  test('apply from nothing creates 6 nodes and converges base', async () => {
    const r = await zx<RunReport>('apply', file, ['--roles', 'base']);
    ok(r);
    expect(Object.keys(r.json.hosts)).toEqual(NODES);
    for (const h of NODES) {
      expect(r.json.hosts[h]).toMatchObject({ failed: 0, unreachable: false });
      expect(r.json.hosts[h].changed).toBeGreaterThan(0);
    }
    const created = r.json.provider!.filter((p) => p.action === 'create' && p.resource.startsWith('container ')).length;
    expect(created).toBe(6);
    expect(containers().sort()).toEqual(NODES.map((n) => `${NAME}-${n}`).sort());
    // the base role really did its work on the node
    const out = onNode(file, addr('worker1'), 'hostname; cat /etc/timezone; systemctl is-system-running || true');
    const [hn, tz] = out.stdout.split('\n');
    expect(hn).toBe('worker1');
    expect(tz).toMatch(/^(Etc\/)?UTC$/); // tzdata's own scripts write Etc/UTC: the same zone
    expect(out.stdout).toMatch(/running|degraded/);
    // state folder: private
    const st = spawnSync('stat', ['-c', '%a', join(DIR, '.rampart'), join(DIR, '.rampart/id_ed25519'), join(DIR, '.rampart/known_hosts')], { encoding: 'utf8' });
    expect(st.stdout.trim().split('\n')).toEqual(['700', '600', '600']);
  }, 900_000);

  test('a second apply changes nothing on any host', async () => {
    const r = await zx<RunReport>('apply', file, ['--roles', 'base']);
    ok(r);
    for (const h of NODES) expect(r.json.hosts[h]).toMatchObject({ changed: 0, failed: 0 });
    expect(r.json.provider!.every((p) => p.action === 'ok')).toBe(true);
  }, 300_000);

  test('--check reports exactly a manual drift and changes nothing; apply repairs exactly it', async () => {
    onNode(file, addr('worker2'), 'ln -sfn /usr/share/zoneinfo/Europe/Paris /etc/localtime && echo Europe/Paris > /etc/timezone');
    onNode(file, addr('proxy'), 'rm /etc/ssh/sshd_config.d/50-rampart.conf');

    const check = await zx<RunReport>('apply', file, ['--roles', 'base', '--check']);
    ok(check);
    expect(check.json.check).toBe(true);
    // the handler the change would fire is listed too: the check says what the real run then does
    expect(changedTasks(check.json)).toEqual(['proxy|base|handler: reload sshd', 'proxy|base|sshd keys only', 'worker2|base|timezone']);
    // nothing was changed by --check
    expect(onNode(file, addr('worker2'), 'cat /etc/timezone').stdout.trim()).toBe('Europe/Paris');
    expect(onNode(file, addr('proxy'), 'test -e /etc/ssh/sshd_config.d/50-rampart.conf; echo $?').stdout.trim()).toBe('1');

    const fix = await zx<RunReport>('apply', file, ['--roles', 'base']);
    ok(fix);
    expect(changedTasks(fix.json)).toEqual(['proxy|base|handler: reload sshd', 'proxy|base|sshd keys only', 'worker2|base|timezone']);
    expect(onNode(file, addr('worker2'), 'cat /etc/timezone').stdout.trim()).toBe('UTC');

    const again = await zx<RunReport>('apply', file, ['--roles', 'base']);
    expect(changedTasks(again.json)).toEqual([]);
  }, 300_000);

  test('--limit converges only the named hosts', async () => {
    onNode(file, addr('worker1'), 'echo Europe/Paris > /etc/timezone');
    onNode(file, addr('worker2'), 'echo Europe/Paris > /etc/timezone');
    const r = await zx<RunReport>('apply', file, ['--roles', 'base', '--limit', 'worker1']);
    expect(Object.keys(r.json.hosts)).toEqual(['worker1']);
    expect(changedTasks(r.json)).toEqual(['worker1|base|timezone']);
    expect(onNode(file, addr('worker2'), 'cat /etc/timezone').stdout.trim()).toBe('Europe/Paris');
    await zx('apply', file, ['--roles', 'base', '--limit', 'worker2']);
  }, 300_000);

  test('a changed host key is refused with a clear error; the other hosts still run', async () => {
    const kh = join(DIR, '.rampart/known_hosts');
    const saved = readFileSync(kh, 'utf8');
    const forged = saved.split('\n').map((l) => (l.startsWith(`${addr('manager')} `) ? l.replace(/\S+$/, 'AAAAC3NzaC1lZDI1NTE5AAAAIBe5Ue0mT0Y3e1z6d0Zp1n8zO1jJ9Q9zj0cYQy7X2j5K') : l)).join('\n');
    writeFileSync(kh, forged);
    try {
      const r = await zx<RunReport>('apply', file, ['--roles', 'base']);
      expect(r.code).toBe(1);
      expect(r.json.hosts.manager.unreachable).toBe(true);
      const err = r.json.results.find((x) => x.host === 'manager' && x.status === 'failed')!;
      expect(err.message).toContain('host key mismatch');
      for (const h of NODES.filter((n) => n !== 'manager')) expect(r.json.hosts[h]).toMatchObject({ failed: 0, unreachable: false });
    } finally {
      writeFileSync(kh, saved, { mode: 0o600 });
    }
  }, 300_000);

  test('operator tools: --detailed-exitcode gates on drift, -v shows the commands, every run is logged, exec and facts, --limit groups', async () => {
    onNode(file, addr('worker1'), 'echo Europe/Paris > /etc/timezone');
    const pending = await zx<RunReport>('apply', file, ['--roles', 'base', '--check', '--detailed-exitcode']);
    expect(pending.code).toBe(2);
    expect(changedTasks(pending.json)).toEqual(['worker1|base|timezone']);
    // -v: the commands and their output on stderr (no --json: the plain rendering)
    const verbose = spawnSync(join(import.meta.dir, '../../node_modules/.bin/zx'), ['apply', '-f', file, '--roles', 'base', '--limit', 'workers', '-v'], { cwd: join(import.meta.dir, '../..'), encoding: 'utf8' });
    expect(verbose.status).toBe(0);
    expect(verbose.stderr).toContain('[worker1] facts (exit 0');
    expect(verbose.stderr).toMatch(/\[worker1\] exec \(exit 0, \d+ ms\)\n.*ln -sfn/);
    expect(verbose.stderr).not.toContain('[manager]');
    // --diff: a hand edit of a managed file shows as the changed lines; --json carries them
    onNode(file, addr('worker1'), "sed -i 's/^X11Forwarding no$/X11Forwarding yes/' /etc/ssh/sshd_config.d/50-rampart.conf");
    const edited = await zx<RunReport>('apply', file, ['--roles', 'base', '--check', '--diff', '--detailed-exitcode']);
    expect(edited.code).toBe(2);
    const sshd = edited.json.results.find((x) => x.host === 'worker1' && x.task === 'sshd keys only')!;
    expect(sshd.status).toBe('changed');
    expect(sshd.diff).toContain('--- /etc/ssh/sshd_config.d/50-rampart.conf (node)');
    expect(sshd.diff!.split('\n').filter((l) => /^[-+][^-+]/.test(l))).toEqual(['-X11Forwarding yes', '+X11Forwarding no']);
    expect(edited.json.results.find((x) => x.host === 'worker1' && x.task === 'handler: reload sshd')!.message).toBe('would run (notified)');
    ok(await zx('apply', file, ['--roles', 'base', '--limit', 'worker1']));
    const clean = await zx<RunReport>('apply', file, ['--roles', 'base', '--check', '--detailed-exitcode']);
    expect(clean.code).toBe(0);
    // the run log: one JSON line per command, 0600, named in the report
    expect(clean.json.log).toMatch(/\.rampart\/logs\/.*-apply-\d+\.jsonl$/);
    const logged = readFileSync(clean.json.log!, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { host: string; kind: string });
    expect(new Set(logged.filter((l) => l.kind === 'facts').map((l) => l.host))).toEqual(new Set(NODES));
    expect(spawnSync('stat', ['-c', '%a', clean.json.log!], { encoding: 'utf8' }).stdout.trim()).toBe('600');
    // ad-hoc commands and facts, over the same pinned connections
    const one = await zx<{ hosts: Record<string, { code: number; stdout: string }> }>('exec', file, ['--limit', 'worker1', '--', 'hostname']);
    expect(one.code).toBe(0);
    expect(one.json.hosts).toEqual({ worker1: expect.objectContaining({ code: 0, stdout: 'worker1\n' }) });
    const group = await zx<{ hosts: Record<string, { stdout: string }> }>('exec', file, ['--limit', 'workers', '--', 'cat /etc/timezone']);
    expect(Object.fromEntries(Object.entries(group.json.hosts).map(([h, r]) => [h, r.stdout]))).toEqual({ worker1: 'UTC\n', worker2: 'UTC\n' });
    const facts = await zx<{ facts: { role: string; task: string; key: string; stdout: string }[] }>('facts', file, ['worker2']);
    expect(facts.code).toBe(0);
    expect(facts.json.facts.find((f) => f.task === 'hostname')!.stdout).toBe('worker2\nworker2\n');
    const bad = await zx('exec', file, ['--limit', 'nosuchgroup', '--', 'true']);
    expect(bad.code).toBe(2);
    expect(JSON.stringify(bad.json)).toContain('groups: all, db, manager, workers');
  }, 300_000);

  test('pending security updates are drift: every managed package at its candidate, one held back is reported and upgraded', async () => {
    // after the applies above, the managed packages are at the candidate of the refreshed lists (security archive included)
    const managed = ['tzdata', 'ca-certificates', 'iproute2', 'iptables', 'curl', 'procps'];
    const policy = onNode(file, addr('worker1'), `for p in ${managed.join(' ')}; do apt-cache policy $p | awk -v p=$p '/Installed:/{i=$2} /Candidate:/{c=$2} END{print p, i, c}'; done`);
    for (const line of policy.stdout.trim().split('\n')) {
      const [p, installed, candidate] = line.split(' ');
      expect({ p, installed }).toEqual({ p, installed: candidate });
    }
    // hold one back: a managed package whose candidate comes from the security archive, to the version below it
    const pick = onNode(file, addr('worker1'), `for p in ${managed.join(' ')}; do apt-cache madison $p | awk -v p=$p 'NR==1 && $0 ~ /security/ {top=$3} NR>1 && top != "" && $3 != top {print p, $3; exit}'; done | head -n 1`).stdout.trim();
    if (!pick) throw new Error('no managed package has a security update on this mirror right now: cannot hold one back');
    const [pkg, older] = pick.split(' ');
    expect(onNode(file, addr('worker1'), `DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades ${pkg}=${older} >/dev/null 2>&1; dpkg-query -W -f='\${Version}' ${pkg}`).stdout.trim()).toBe(older);
    const check = await zx<RunReport>('apply', file, ['--roles', 'base', '--limit', 'worker1', '--check', '--diff', '--detailed-exitcode']);
    expect(check.code).toBe(2);
    const upd = check.json.results.find((x) => x.task === 'package lists and pending updates')!;
    expect(upd.message).toContain(pkg);
    expect(upd.diff).toContain(`${pkg}: ${older} -> `);
    const fix = await zx<RunReport>('apply', file, ['--roles', 'base', '--limit', 'worker1']);
    ok(fix);
    expect(changedTasks(fix.json)).toEqual(['worker1|base|package lists and pending updates']);
    expect(onNode(file, addr('worker1'), `apt-cache policy ${pkg} | awk '/Installed:/{i=$2} /Candidate:/{c=$2} END{print (i==c) ? "current" : i" < "c}'`).stdout.trim()).toBe('current');
    const again = await zx<RunReport>('apply', file, ['--roles', 'base', '--limit', 'worker1']);
    expect(changedTasks(again.json)).toEqual([]);
  }, 300_000);

  test('a node deleted by hand is recreated by the next apply', async () => {
    execFileSync('lxc-destroy', ['-f', '-n', `${NAME}-gatekeeper`]);
    const plan = await zx<RunReport & { provider: unknown }>('apply', file, ['--roles', 'base', '--check']);
    expect(plan.json.provider!.filter((p) => p.action !== 'ok').map((p) => `${p.action} ${p.resource}`)).toEqual([`create container ${NAME}-gatekeeper`]);
    // known after apply: the node that does not exist is listed with every task it would run
    expect(plan.json.hosts.gatekeeper).toMatchObject({ changed: 5, failed: 0, unreachable: false });
    expect(plan.json.results.filter((x) => x.host === 'gatekeeper').map((x) => `${x.task}: ${x.message}`)).toEqual(
      ['packages', 'package lists and pending updates', 'hostname', 'timezone', 'sshd keys only'].map((t) => `${t}: would run (the node does not exist yet: known after apply)`));

    const r = await zx<RunReport>('apply', file, ['--roles', 'base']);
    ok(r);
    expect(r.json.hosts.gatekeeper.changed).toBeGreaterThan(0);
    for (const h of NODES.filter((n) => n !== 'gatekeeper')) expect(r.json.hosts[h].changed).toBe(0);
  }, 600_000);

  test('an invalid cluster.yaml exits non-zero and creates nothing', async () => {
    const bad = testClusterFile(`${DIR}-bad`, 'rpbad', '10.85.0.0/24', (doc) => doc.setIn(['nodes', 4, 'db'], 'manager'));
    const r = await zx('apply', bad);
    expect(r.code).toBe(3);
    expect(JSON.stringify(r.json)).toMatch(/cluster\.yaml:\d+:\d+: .*manager/);
    expect(execFileSync('lxc-ls', ['-1'], { encoding: 'utf8' })).not.toContain('rpbad-');
    expect(existsSync('/sys/class/net/rpbad0')).toBe(false);
  }, 120_000);

  test('teardown removes every container, the bridge and the fence, restores ip_forward, and reruns cleanly', async () => {
    const r = await zx<{ removed: { action: string; resource: string }[] }>('teardown', file);
    expect(r.code).toBe(0);
    expect(containers()).toEqual([]);
    expect(existsSync(`/sys/class/net/${NAME}0`)).toBe(false);
    const nft = spawnSync('nft', ['list', 'tables'], { encoding: 'utf8' }).stdout;
    expect(nft).not.toContain(NAME);
    // ip_forward is shared by every rampart cluster on the host: the last one down restores it
    if (!/rampart_/.test(nft)) expect(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim()).toBe(ipForwardBefore);
    // pinned keys of the removed nodes are forgotten
    expect(readFileSync(join(DIR, '.rampart/known_hosts'), 'utf8')).not.toContain('10.84.0.');
    const again = await zx<{ removed: { action: string }[] }>('teardown', file);
    expect(again.code).toBe(0);
    expect(again.json.removed.filter((x) => x.action === 'delete')).toEqual([]);
  }, 300_000);
});
