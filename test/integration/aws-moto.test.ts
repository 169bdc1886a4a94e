// The AWS provider against a real EC2 API server: moto, on loopback inside a
// network namespace of its own (test/support/moto.ts). plan -> apply (up to
// the SSH wait, which must fail at once: the namespace has no route to the
// instances' public addresses) -> apply again -> plan -> rule change -> node
// removal -> `apply --check` -> teardown x2. Every check reads what the SERVER
// stored (DescribeSecurityGroups/-Rules, DescribeInstances, DescribeKeyPairs),
// not what the provider says it did. Everything that talks to the server runs
// inside the namespace: nothing leaves the machine.
//
// Needs root on Linux; skips elsewhere, fails instead when CI=true. The first
// run builds the moto root (debootstrap trixie + python3-moto, about a minute,
// cached in /var/cache/rampart/moto-trixie).

import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { PlanItem } from '../../core/types.ts';
import type { Call, DriverOutput, Stored } from '../support/aws-driver.ts';
import { ensureMotoRoot, motoAvailability, startMoto, type MotoServer } from '../support/moto.ts';

const ROOT = resolve(import.meta.dir, '../..');
const TSX = join(ROOT, 'node_modules/.bin/tsx');
const ZX = join(ROOT, 'node_modules/.bin/zx');
const DRIVER = join(ROOT, 'test/support/aws-driver.ts');
const FIXTURE = join(ROOT, 'test/fixtures/aws-moto-cluster.yaml');
/** Per test: a few seconds each when the machine is idle; room for a busy one (every step spawns Node). */
const STEP_MS = 180_000;

const avail = motoAvailability();
if (!avail.ok && process.env.CI === 'true') {
  test('EC2 API (moto) integration prerequisites', () => {
    throw new Error(`cannot run the moto integration test under CI: ${avail.reason}`);
  });
}

/** What the fixture's cluster must look like on the server: group -> [ingress, egress]. */
const RULES: Record<string, [string[], string[]]> = {
  gatekeeper: [['tcp/22-22 198.51.100.7/32', 'tcp/443-443 0.0.0.0/0'], ['all 0.0.0.0/0']],
  trustedhost: [['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/5000-5000 sg:rpmoto-gatekeeper'], ['tcp/443-443 0.0.0.0/0', 'tcp/5000-5000 sg:rpmoto-proxy', 'tcp/80-80 0.0.0.0/0']],
  proxy: [['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/5000-5000 sg:rpmoto-trustedhost'], ['all 0.0.0.0/0']],
  manager: [['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/3306-3306 sg:rpmoto-proxy', 'tcp/3306-3306 sg:rpmoto-worker1', 'tcp/3306-3306 sg:rpmoto-worker2'], ['all 0.0.0.0/0']],
  worker1: [['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/3306-3306 sg:rpmoto-proxy'], ['all 0.0.0.0/0']],
  worker2: [['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/3306-3306 sg:rpmoto-proxy'], ['all 0.0.0.0/0']],
};
const TYPES: Record<string, string> = { gatekeeper: 't2.large', trustedhost: 't2.large', proxy: 't2.large', manager: 't2.micro', worker1: 't2.micro', worker2: 't2.micro' };

describe.skipIf(!avail.ok)('AWS provider against a real EC2 API (moto)', () => {
  let moto: MotoServer;
  let dir: string;
  let file: string;

  /** Run a provider operation (or `stored`) inside the namespace; its JSON answer. */
  async function drive<T>(op: 'plan' | 'up' | 'down' | 'stored' | 'record' | 'calls'): Promise<DriverOutput<T>> {
    const r = await moto.run(TSX, [DRIVER, op, ...(['plan', 'up', 'down'].includes(op) ? [file] : [])], { timeoutMs: 100_000, cwd: ROOT });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(last) as DriverOutput<T>;
    } catch {
      throw new Error(`driver ${op} printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}\nmoto log tail:\n${moto.log().slice(-2000)}`);
    }
  }
  const stored = async (): Promise<Stored> => {
    const out = await drive<Stored>('stored');
    if (!out.ok) throw new Error(`reading the server failed: ${out.error?.message}`);
    return out.result!;
  };
  const plan = async (): Promise<PlanItem[]> => {
    const out = await drive<PlanItem[]>('plan');
    if (!out.ok) throw new Error(`plan failed: ${out.error?.message}`);
    return out.result!;
  };
  const todo = (items: PlanItem[]) => items.filter((i) => i.action !== 'ok').map((i) => `${i.action} ${i.resource}`).sort();
  const rulesOf = (s: Stored) => Object.fromEntries(s.groups.map((g) => [g.node ?? g.name, [g.ingress, g.egress]]));
  const live = (s: Stored) => s.instances.filter((i) => i.state !== 'terminated');
  /** The SSH wait is the last step of up(): it must fail at once (no route) and name the node. */
  const expectUnreachableSsh = (out: DriverOutput, s: Stored) => {
    const gk = live(s).find((i) => i.node === 'gatekeeper')!;
    expect(out.ok).toBe(false);
    expect(out.error!.name).toBe('ProviderError');
    expect(out.error!.message).toStartWith(`gatekeeper (${gk.publicIp}:22): SSH port unreachable: connect ENETUNREACH`);
    expect(out.error!.message).toContain('waiting will not help');
    expect(out.progress).toContain(`waiting for SSH (1 node(s) reached directly): gatekeeper ${gk.publicIp}:22`);
    expect(out.progress.at(-1)).toMatch(new RegExp(`^waiting for SSH \\(1 node\\(s\\) reached directly\\): gatekeeper ${gk.publicIp!.replaceAll('.', '\\.')}:22 \\d+ s of 60 s, last: ENETUNREACH`));
    expect(out.ms).toBeLessThan(15_000);
  };
  /** Run `up` with moto's recorder on: its answer and the revoke calls the server received. */
  const recordedUp = async () => {
    expect((await drive('record')).ok).toBe(true);
    const out = await drive('up');
    const recorded = await drive<Call[]>('calls');
    expect(recorded.ok).toBe(true);
    return { out, calls: recorded.result! };
  };
  const revokes = (calls: Call[]): Record<string, string>[] => calls.filter((c) => c.action.startsWith('Revoke'))
    .map((c): Record<string, string> => ({ action: c.action, ...c.params })).sort((a, b) => `${a.action}${a.GroupId}`.localeCompare(`${b.action}${b.GroupId}`));
  const edit = (change: (doc: ReturnType<typeof parseDocument>) => void) => {
    const doc = parseDocument(readFileSync(file, 'utf8'));
    change(doc);
    writeFileSync(file, doc.toString());
  };

  beforeAll(async () => {
    moto = await startMoto(await ensureMotoRoot());
    dir = mkdtempSync(join(tmpdir(), 'rampart-moto-'));
    file = join(dir, 'cluster.yaml');
    copyFileSync(FIXTURE, file);
  }, 900_000);

  afterAll(async () => {
    await moto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  let groupIds: Record<string, string>;
  let instanceIds: Record<string, string>;

  test('plan on an empty account: the key pair, 6 groups and 6 instances to create, and the hourly cost', async () => {
    const items = await plan();
    expect(todo(items)).toEqual([
      'create key-pair rampart-rpmoto',
      ...Object.keys(RULES).map((n) => `create instance ${n}`),
      ...Object.keys(RULES).map((n) => `create security-group rpmoto-${n}`),
    ].sort());
    const cost = items.find((i) => i.resource === 'hourly cost')!;
    expect(cost.info).toBe(true);
    expect(cost.detail).toStartWith('$0.3432/hour');
    const s = await stored();
    expect(s.groups).toEqual([]);
    expect(s.instances).toEqual([]);
    expect(s.keyPairs).toEqual([]);
  }, STEP_MS);

  test('apply stores exactly the declared rules, tagged instances and the key pair; the SSH wait fails at once naming the node', async () => {
    const out = await drive('up');
    const s = await stored();
    expectUnreachableSsh(out, s);

    expect(rulesOf(s)).toEqual(RULES);
    for (const g of s.groups) expect(g.cluster).toBe('rpmoto');
    // what DescribeSecurityGroupRules lists agrees with the groups (moto lists one record per merged rule)
    const all = s.groups.flatMap((g) => [...g.ingress.map((r) => `${g.name} ingress ${r}`), ...g.egress.map((r) => `${g.name} egress ${r}`)]);
    expect(s.ruleRecords.length).toBeGreaterThan(0);
    for (const rec of s.ruleRecords) expect(all).toContain(rec);

    expect(live(s).map((i) => i.node).sort()).toEqual(Object.keys(RULES).sort());
    for (const i of live(s)) {
      expect(i.state).toBe('running');
      expect(i.type).toBe(TYPES[i.node!]);
      expect(i.imageId).toBe('ami-785db401');
      expect(i.keyName).toBe('rampart-rpmoto');
      expect(i.groups).toEqual([`rpmoto-${i.node}`]);
      expect(i.publicIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(i.tags).toEqual({ 'rampart:cluster': 'rpmoto', 'rampart:node': i.node!, 'managed-by': 'rampart', Name: `rpmoto-${i.node}` });
    }
    expect(s.keyPairs).toEqual([{ name: 'rampart-rpmoto', tags: { 'rampart:cluster': 'rpmoto', 'managed-by': 'rampart', Name: 'rampart-rpmoto' } }]);
    groupIds = Object.fromEntries(s.groups.map((g) => [g.node!, g.id]));
    instanceIds = Object.fromEntries(live(s).map((i) => [i.node!, i.id]));
  }, STEP_MS);

  test('apply again creates nothing, and the plan after it has 0 changes', async () => {
    const out = await drive('up');
    const s = await stored();
    expectUnreachableSsh(out, s);
    expect(out.progress.filter((p) => /creating|launching|importing|rules$|attaching|terminating/.test(p))).toEqual([]);
    expect(Object.fromEntries(live(s).map((i) => [i.node!, i.id]))).toEqual(instanceIds);
    expect(s.instances).toHaveLength(6);
    expect(rulesOf(s)).toEqual(RULES);
    expect(todo(await plan())).toEqual([]);
  }, STEP_MS);

  test('a changed flow port is changed in place: same group ids, new rule in, old rule out, then 0 changes', async () => {
    edit((doc) => {
      doc.setIn(['services', 'proxy', 'port'], 5001);
      const flows = doc.getIn(['security', 'flows']) as { items: { get(k: string): unknown; set(k: string, v: unknown): void }[] };
      flows.items.find((f) => f.get('from') === 'trustedhost')!.set('port', 5001);
    });
    expect(todo(await plan())).toEqual(['change security-group rpmoto-proxy', 'change security-group rpmoto-trustedhost']);
    const { out, calls } = await recordedUp();
    const s = await stored();
    expectUnreachableSsh(out, s);
    // revoked by rule id, found with one DescribeSecurityGroupRules
    expect(calls.filter((c) => c.action === 'DescribeSecurityGroupRules')).toHaveLength(1);
    expect(revokes(calls)).toEqual([
      { action: 'RevokeSecurityGroupEgress', GroupId: groupIds.trustedhost, 'SecurityGroupRuleId.1': expect.stringMatching(/^sgr-/) },
      { action: 'RevokeSecurityGroupIngress', GroupId: groupIds.proxy, 'SecurityGroupRuleId.1': expect.stringMatching(/^sgr-/) },
    ]);
    expect(Object.fromEntries(s.groups.map((g) => [g.node!, g.id]))).toEqual(groupIds);
    expect(rulesOf(s)).toEqual({
      ...RULES,
      trustedhost: [RULES.trustedhost[0], ['tcp/443-443 0.0.0.0/0', 'tcp/5001-5001 sg:rpmoto-proxy', 'tcp/80-80 0.0.0.0/0']],
      proxy: [['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/5001-5001 sg:rpmoto-trustedhost'], ['all 0.0.0.0/0']],
    });
    expect(todo(await plan())).toEqual([]);
  }, STEP_MS);

  test('a removed node: its instance terminated, its group and every reference to it gone, the rest intact; then 0 changes', async () => {
    edit((doc) => {
      const nodes = doc.get('nodes') as { items: { get(k: string): unknown }[] };
      nodes.items = nodes.items.filter((n) => n.get('name') !== 'worker2');
      doc.setIn(['security', 'flows', 3, 'to'], ['manager', 'worker1']);
      doc.setIn(['security', 'flows', 4, 'from'], 'worker1');
    });
    expect(todo(await plan())).toEqual(['change security-group rpmoto-manager', 'delete instance worker2', 'delete security-group rpmoto-worker2']);
    const { out, calls } = await recordedUp();
    const s = await stored();
    expectUnreachableSsh(out, s);
    // moto lists the manager's three 3306 references as one rule: revoked by permission, with the stored description
    expect(revokes(calls)).toEqual([{
      action: 'RevokeSecurityGroupIngress', GroupId: groupIds.manager,
      'IpPermissions.1.IpProtocol': 'tcp', 'IpPermissions.1.FromPort': '3306', 'IpPermissions.1.ToPort': '3306',
      'IpPermissions.1.Groups.1.GroupId': groupIds.worker2, 'IpPermissions.1.Groups.1.Description': 'flow worker2 to manager:3306',
    }]);
    expect(s.instances.find((i) => i.id === instanceIds.worker2)!.state).toBe('terminated');
    expect(live(s).map((i) => i.node).sort()).toEqual(['gatekeeper', 'manager', 'proxy', 'trustedhost', 'worker1']);
    expect(s.groups.map((g) => g.node).sort()).toEqual(['gatekeeper', 'manager', 'proxy', 'trustedhost', 'worker1']);
    // The manager's 3306 references are one merged rule on moto: exactly worker2's peer went.
    expect(rulesOf(s).manager).toEqual([['tcp/22-22 sg:rpmoto-gatekeeper', 'tcp/3306-3306 sg:rpmoto-proxy', 'tcp/3306-3306 sg:rpmoto-worker1'], ['all 0.0.0.0/0']]);
    expect(rulesOf(s).worker1).toEqual(RULES.worker1);
    expect(todo(await plan())).toEqual([]);
  }, STEP_MS);

  test('apply --check on nodes that do not answer SSH prints the provider plan and names the hosts it could not inspect', async () => {
    const r = await moto.run(ZX, ['apply', '--check', '-f', file], { timeoutMs: 100_000, cwd: ROOT });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('provider: nothing to do\nprovider: hourly cost: $');
    expect(r.stderr).toContain('could not inspect (tasks not checked):');
    // the list runs to the first blank line (the endpoint line follows it)
    const after = r.stderr.slice(r.stderr.indexOf('could not inspect')).split('\n').slice(1);
    const listed = after.slice(0, after.findIndex((l) => l.trim() === ''));
    expect(listed.map((l) => l.split(':')[0].trim())).toEqual(['gatekeeper', 'trustedhost', 'proxy', 'manager', 'worker1']);
    for (const l of listed) expect(l).toContain('ENETUNREACH');
    // the plan comes before the engine's connect attempts, which give up after 10 s, not 60
    expect(r.stderr.indexOf('provider: nothing to do')).toBeLessThan(r.stderr.indexOf('connect and gather facts'));
  }, STEP_MS);

  test('teardown removes every instance, group and key pair; a second teardown has nothing to do', async () => {
    const out = await drive<PlanItem[]>('down');
    expect(out.ok).toBe(true);
    expect(out.result!.map((i) => `${i.action} ${i.resource}`).sort()).toEqual([
      'delete instance gatekeeper', 'delete instance manager', 'delete instance proxy', 'delete instance trustedhost', 'delete instance worker1',
      'delete key-pair rampart-rpmoto',
      'delete security-group rpmoto-gatekeeper', 'delete security-group rpmoto-manager', 'delete security-group rpmoto-proxy',
      'delete security-group rpmoto-trustedhost', 'delete security-group rpmoto-worker1',
    ]);
    const s = await stored();
    expect(s.groups).toEqual([]);
    expect(s.ruleRecords).toEqual([]);
    expect(s.keyPairs).toEqual([]);
    expect(s.instances).toHaveLength(6);
    expect(live(s)).toEqual([]);

    const again = await drive<PlanItem[]>('down');
    expect(again.ok).toBe(true);
    expect(again.result).toEqual([]);
    expect(await stored()).toEqual(s);
  }, STEP_MS);
});
