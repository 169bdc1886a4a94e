// AwsProvider against an in-memory EC2 behind aws-sdk-client-mock (the only
// mock): apply, apply again, partial state, changed rules, teardown, errors,
// plan. The fake keeps AWS's semantics that matter here (duplicate authorize
// and delete of a referenced group fail; every rule has its own id; a revoke
// by permission that matches nothing "succeeds" with UnknownIpPermissions, as
// EC2's does), so the order and the exact difference of the calls are really
// exercised. What a real EC2 API stores is checked in test/integration/aws-moto.test.ts.
// No network: every EC2Client.send is intercepted; the controller address is injected.
import { afterAll, afterEach, beforeEach, describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ProviderError } from '../../core/errors.ts';
import { formatPlan } from '../../core/output.ts';
import { loadCluster } from '../../core/spec.ts';
import type { Cluster } from '../../core/types.ts';
import { archOf, AwsProvider, desiredGroups, formatCost, fromPermissions, hourlyCost, toPermission, waitForTcp } from '../../providers/aws.ts';
import { diffRules } from '../../providers/aws/plan.ts';
import { fromRuleRecord, planRevoke } from '../../providers/aws/permissions.ts';
import { HOURLY_USD, PRICES_AS_OF, PUBLIC_IPV4_HOURLY_USD } from '../../providers/aws/prices.ts';
import { describeRule, RULE_DESCRIPTION, ruleKey, type Rule } from '../../providers/aws/rules.ts';
import {
  AuthorizeSecurityGroupEgressCommand,
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupRulesCommand,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  EC2Client,
  EC2ServiceException,
  ImportKeyPairCommand,
  ModifyInstanceAttributeCommand,
  RevokeSecurityGroupEgressCommand,
  RevokeSecurityGroupIngressCommand,
  RunInstancesCommand,
  StartInstancesCommand,
  TerminateInstancesCommand,
  type Filter,
  type Instance,
  type IpPermission,
  type SecurityGroup,
  type SecurityGroupRule,
  type Tag,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';

function awsError(name: string, message: string): EC2ServiceException {
  return new EC2ServiceException({ name, message, $fault: 'client', $metadata: { httpStatusCode: 400 } });
}

/** Flat rule: one permission with exactly one peer. */
interface FlatRule {
  /** sgr-...: set when stored. */
  id?: string;
  proto: string;
  from?: number;
  to?: number;
  cidr?: string;
  group?: string;
  description?: string;
}

interface FakeGroup {
  id: string;
  name: string;
  vpcId: string;
  tags: Tag[];
  ingress: FlatRule[];
  egress: FlatRule[];
}

interface FakeInstance {
  id: string;
  type: string;
  imageId: string;
  state: string;
  tags: Tag[];
  groups: string[];
  privateIp: string;
  publicIp?: string;
  keyName?: string;
}

function flatten(perms: IpPermission[] = []): FlatRule[] {
  const out: FlatRule[] = [];
  for (const p of perms) {
    const base = { proto: p.IpProtocol ?? '-1', ...(p.IpProtocol === '-1' ? {} : { from: p.FromPort, to: p.ToPort }) };
    for (const r of p.IpRanges ?? []) out.push({ ...base, cidr: r.CidrIp, description: r.Description });
    for (const g of p.UserIdGroupPairs ?? []) out.push({ ...base, group: g.GroupId, description: g.Description });
  }
  return out;
}

const same = (a: FlatRule, b: FlatRule) => a.proto === b.proto && a.from === b.from && a.to === b.to && a.cidr === b.cidr && a.group === b.group;

/** AWS groups rules by protocol/ports when it describes them; do the same. */
function group(rules: FlatRule[]): IpPermission[] {
  const byKey = new Map<string, IpPermission>();
  for (const r of rules) {
    const key = `${r.proto}|${r.from}|${r.to}`;
    let p = byKey.get(key);
    if (!p) {
      p = { IpProtocol: r.proto, ...(r.proto === '-1' ? {} : { FromPort: r.from, ToPort: r.to }), IpRanges: [], UserIdGroupPairs: [], Ipv6Ranges: [], PrefixListIds: [] };
      byKey.set(key, p);
    }
    if (r.cidr) p.IpRanges!.push({ CidrIp: r.cidr, Description: r.description });
    if (r.group) p.UserIdGroupPairs!.push({ GroupId: r.group, UserId: '123456789012', Description: r.description });
  }
  return [...byKey.values()];
}

function matches(tags: Tag[], filters: Filter[] = [], extra: Record<string, string> = {}): boolean {
  return filters.every((f) => {
    if (f.Name?.startsWith('tag:')) {
      const key = f.Name.slice(4);
      return tags.some((t) => t.Key === key && f.Values?.includes(t.Value ?? ''));
    }
    const v = extra[f.Name ?? ''];
    return v === undefined || (f.Values ?? []).includes(v);
  });
}

class FakeEc2 {
  readonly mock = mockClient(EC2Client);
  readonly client = new EC2Client({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDTESTONLY', secretAccessKey: 'not-a-secret' } });
  instances: FakeInstance[] = [];
  groups: FakeGroup[] = [];
  keyPairs: { name: string; publicKey: string; tags: Tag[] }[] = [];
  /** Account quota on running instances. */
  instanceLimit = Infinity;
  /** Describe an instance's groups only on its network interface (as moto does for a launch with NetworkInterfaces). */
  groupsOnInterfaceOnly = false;
  private seq = 0;

  constructor() {
    this.install();
  }

  /** Forget recorded calls (the world stays). */
  resetHistory(): void {
    this.mock.resetHistory();
  }

  /** Names of the commands sent since the last resetHistory(), in order. */
  commands(): string[] {
    return this.mock.calls().map((c) => (c.args[0] as object).constructor.name.replace(/Command$/, ''));
  }

  inputs<T extends object>(name: string): T[] {
    return this.mock.calls().filter((c) => (c.args[0] as object).constructor.name === `${name}Command`).map((c) => (c.args[0] as unknown as { input: T }).input);
  }

  groupOf(node: string): FakeGroup | undefined {
    return this.groups.find((g) => g.tags.some((t) => t.Key === 'rampart:node' && t.Value === node));
  }

  instanceOf(node: string): FakeInstance | undefined {
    return this.instances.find((i) => i.state !== 'terminated' && i.tags.some((t) => t.Key === 'rampart:node' && t.Value === node));
  }

  private id(prefix: string): string {
    this.seq += 1;
    return `${prefix}-${this.seq.toString(16).padStart(17, '0')}`;
  }

  private describeInstance(i: FakeInstance): Instance {
    return {
      InstanceId: i.id, InstanceType: i.type as Instance['InstanceType'], ImageId: i.imageId, KeyName: i.keyName,
      State: { Name: i.state as NonNullable<Instance['State']>['Name'] }, Tags: i.tags,
      SecurityGroups: this.groupsOnInterfaceOnly ? [] : i.groups.map((g) => ({ GroupId: g, GroupName: this.groups.find((x) => x.id === g)?.name })),
      NetworkInterfaces: [{ Attachment: { DeviceIndex: 0 }, Groups: i.groups.map((g) => ({ GroupId: g })) }],
      PrivateIpAddress: i.privateIp, PublicIpAddress: i.publicIp,
      ...(i.publicIp ? { PublicDnsName: `ec2-${i.publicIp.replaceAll('.', '-')}.compute-1.amazonaws.com` } : {}),
    };
  }

  private describeGroup(g: FakeGroup): SecurityGroup {
    return { GroupId: g.id, GroupName: g.name, VpcId: g.vpcId, Tags: g.tags, IpPermissions: group(g.ingress), IpPermissionsEgress: group(g.egress) };
  }

  private findGroup(id: string | undefined): FakeGroup {
    const g = this.groups.find((x) => x.id === id);
    if (!g) throw awsError('InvalidGroup.NotFound', `The security group '${id}' does not exist`);
    return g;
  }

  private authorize(list: FlatRule[], perms: IpPermission[] | undefined): void {
    const add = flatten(perms);
    for (const r of add) {
      if (r.group) this.findGroup(r.group);
      if (list.some((x) => same(x, r))) throw awsError('InvalidPermission.Duplicate', 'the specified rule already exists');
    }
    list.push(...add.map((r) => ({ ...r, id: this.id('sgr') })));
  }

  /** By rule id (an unknown id fails, as on EC2) or by permission (unmatched: success plus UnknownIpPermissions, as on EC2). */
  private revoke(list: FlatRule[], input: { IpPermissions?: IpPermission[]; SecurityGroupRuleIds?: string[] }): { Return: boolean; UnknownIpPermissions?: IpPermission[] } {
    if (input.SecurityGroupRuleIds) {
      for (const id of input.SecurityGroupRuleIds) if (!list.some((x) => x.id === id)) throw awsError('InvalidSecurityGroupRuleId.NotFound', `The security group rule ID '${id}' does not exist`);
      for (const id of input.SecurityGroupRuleIds) list.splice(list.findIndex((x) => x.id === id), 1);
      return { Return: true };
    }
    const unknown: FlatRule[] = [];
    for (const r of flatten(input.IpPermissions)) {
      const at = list.findIndex((x) => same(x, r));
      if (at < 0) unknown.push(r);
      else list.splice(at, 1);
    }
    return unknown.length ? { Return: false, UnknownIpPermissions: group(unknown) } : { Return: true };
  }

  private describeRules(g: FakeGroup): SecurityGroupRule[] {
    const one = (r: FlatRule, egress: boolean): SecurityGroupRule => ({
      SecurityGroupRuleId: r.id, GroupId: g.id, IsEgress: egress, IpProtocol: r.proto, FromPort: r.from ?? -1, ToPort: r.to ?? -1,
      ...(r.cidr ? { CidrIpv4: r.cidr } : {}), ...(r.group ? { ReferencedGroupInfo: { GroupId: r.group } } : {}), Description: r.description,
    });
    return [...g.ingress.map((r) => one(r, false)), ...g.egress.map((r) => one(r, true))];
  }

  private install(): void {
    const m = this.mock;
    m.on(DescribeVpcsCommand).callsFake(() => ({ Vpcs: [{ VpcId: 'vpc-0default', IsDefault: true }] }));
    m.on(DescribeSubnetsCommand).callsFake(() => ({
      Subnets: [
        { SubnetId: 'subnet-0bbb', VpcId: 'vpc-0default', AvailabilityZone: 'us-east-1b', DefaultForAz: true },
        { SubnetId: 'subnet-0aaa', VpcId: 'vpc-0default', AvailabilityZone: 'us-east-1a', DefaultForAz: true },
      ],
    }));
    m.on(DescribeImagesCommand).callsFake(() => ({
      Images: [
        { ImageId: 'ami-0older', Name: 'ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101', CreationDate: '2025-01-01T00:00:00.000Z' },
        { ImageId: 'ami-0newest', Name: 'ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20260301', CreationDate: '2026-03-01T00:00:00.000Z' },
        { ImageId: 'ami-0middle', Name: 'ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250601', CreationDate: '2025-06-01T00:00:00.000Z' },
      ],
    }));

    m.on(DescribeKeyPairsCommand).callsFake((input) => {
      const names = input.Filters?.find((f: Filter) => f.Name === 'key-name')?.Values ?? [];
      return { KeyPairs: this.keyPairs.filter((k) => names.includes(k.name)).map((k) => ({ KeyName: k.name, KeyPairId: `key-${k.name}`, Tags: k.tags, PublicKey: input.IncludePublicKey ? k.publicKey : undefined })) };
    });
    m.on(ImportKeyPairCommand).callsFake((input) => {
      if (this.keyPairs.some((k) => k.name === input.KeyName)) throw awsError('InvalidKeyPair.Duplicate', `The keypair '${input.KeyName}' already exists.`);
      const publicKey = new TextDecoder().decode(input.PublicKeyMaterial);
      this.keyPairs.push({ name: input.KeyName, publicKey, tags: input.TagSpecifications?.[0]?.Tags ?? [] });
      return { KeyName: input.KeyName };
    });
    m.on(DeleteKeyPairCommand).callsFake((input) => {
      this.keyPairs = this.keyPairs.filter((k) => k.name !== input.KeyName);
      return {};
    });

    m.on(DescribeSecurityGroupsCommand).callsFake((input) => ({
      SecurityGroups: this.groups.filter((g) => matches(g.tags, input.Filters)).map((g) => this.describeGroup(g)),
    }));
    m.on(CreateSecurityGroupCommand).callsFake((input) => {
      if (this.groups.some((g) => g.name === input.GroupName && g.vpcId === input.VpcId)) throw awsError('InvalidGroup.Duplicate', `The security group '${input.GroupName}' already exists for VPC '${input.VpcId}'`);
      const g: FakeGroup = {
        id: this.id('sg'), name: input.GroupName, vpcId: input.VpcId, tags: input.TagSpecifications?.[0]?.Tags ?? [],
        ingress: [], egress: [{ id: this.id('sgr'), proto: '-1', cidr: '0.0.0.0/0' }], // AWS's default egress
      };
      this.groups.push(g);
      return { GroupId: g.id };
    });
    m.on(AuthorizeSecurityGroupIngressCommand).callsFake((input) => { this.authorize(this.findGroup(input.GroupId).ingress, input.IpPermissions); return { Return: true }; });
    m.on(AuthorizeSecurityGroupEgressCommand).callsFake((input) => { this.authorize(this.findGroup(input.GroupId).egress, input.IpPermissions); return { Return: true }; });
    m.on(RevokeSecurityGroupIngressCommand).callsFake((input) => this.revoke(this.findGroup(input.GroupId).ingress, input));
    m.on(RevokeSecurityGroupEgressCommand).callsFake((input) => this.revoke(this.findGroup(input.GroupId).egress, input));
    m.on(DescribeSecurityGroupRulesCommand).callsFake((input) => {
      const ids = input.Filters?.find((f: Filter) => f.Name === 'group-id')?.Values;
      return { SecurityGroupRules: this.groups.filter((g) => !ids || ids.includes(g.id)).flatMap((g) => this.describeRules(g)) };
    });
    m.on(DeleteSecurityGroupCommand).callsFake((input) => {
      const g = this.findGroup(input.GroupId);
      const usedByInstance = this.instances.some((i) => i.state !== 'terminated' && i.groups.includes(g.id));
      const referenced = this.groups.some((o) => o !== g && [...o.ingress, ...o.egress].some((r) => r.group === g.id));
      if (usedByInstance || referenced) throw awsError('DependencyViolation', `resource ${g.id} has a dependent object`);
      this.groups = this.groups.filter((x) => x !== g);
      return {};
    });

    m.on(RunInstancesCommand).callsFake((input) => {
      const live = this.instances.filter((i) => i.state !== 'terminated' && i.state !== 'shutting-down').length;
      if (live >= this.instanceLimit) {
        throw awsError('InstanceLimitExceeded', `You have requested more instances (${live + 1}) than your current instance limit of ${this.instanceLimit} allows for the specified instance type.`);
      }
      const nic = input.NetworkInterfaces?.[0];
      const n = this.instances.length + 10;
      const inst: FakeInstance = {
        id: this.id('i'), type: input.InstanceType, imageId: input.ImageId, state: 'pending', keyName: input.KeyName,
        tags: input.TagSpecifications?.find((t: { ResourceType?: string }) => t.ResourceType === 'instance')?.Tags ?? [],
        groups: nic?.Groups ?? input.SecurityGroupIds ?? [],
        privateIp: `172.31.0.${n}`, publicIp: nic?.AssociatePublicIpAddress ? `198.51.100.${n}` : undefined,
      };
      this.instances.push(inst);
      return { Instances: [this.describeInstance(inst)] };
    });
    m.on(DescribeInstancesCommand).callsFake((input) => {
      let list: FakeInstance[];
      if (input.InstanceIds) {
        // Polling by id: time passes, instances move on.
        for (const i of this.instances) if (input.InstanceIds.includes(i.id)) {
          if (i.state === 'pending') i.state = 'running';
          else if (i.state === 'shutting-down') i.state = 'terminated';
        }
        list = this.instances.filter((i) => input.InstanceIds.includes(i.id));
      } else {
        list = this.instances.filter((i) => matches(i.tags, input.Filters, { 'instance-state-name': i.state }));
      }
      return { Reservations: list.map((i) => ({ Instances: [this.describeInstance(i)] })) };
    });
    m.on(TerminateInstancesCommand).callsFake((input) => {
      for (const i of this.instances) if (input.InstanceIds.includes(i.id) && i.state !== 'terminated') i.state = 'shutting-down';
      return {};
    });
    m.on(StartInstancesCommand).callsFake((input) => {
      for (const i of this.instances) if (input.InstanceIds.includes(i.id)) i.state = 'pending';
      return {};
    });
    m.on(ModifyInstanceAttributeCommand).callsFake((input) => {
      const i = this.instances.find((x) => x.id === input.InstanceId);
      if (i && input.Groups) i.groups = input.Groups;
      return {};
    });
  }
}

// ---------------------------------------------------------------- the tests

const REPO = resolve(import.meta.dir, '../..');
const CONTROLLER_IP = '203.0.113.7';
const CONTROLLER = `${CONTROLLER_IP}/32`;
const stateDir = mkdtempSync(join(tmpdir(), 'rampart-aws-test-'));
// the reference cluster as a fixture (never the repo's own cluster.yaml, which is the user's to edit)
const base = loadCluster(join(REPO, 'test/fixtures/cluster.yaml'));
const MUTATING = /^(Create|Run|Import|Authorize|Revoke|Delete|Terminate|Modify|Start|Stop)/;

/** The reference cluster switched to aws, with its state folder in a temp dir. */
function awsCluster(change?: (c: Cluster) => void): Cluster {
  const c = structuredClone(base);
  c.dir = stateDir;
  c.provider.type = 'aws';
  change?.(c);
  return c;
}

let fake: FakeEc2;
let sshWaited: string[];
function provider(cluster = awsCluster(), client = fake.client): AwsProvider {
  return new AwsProvider(cluster, {
    client,
    controllerIp: async () => CONTROLLER_IP,
    pollMs: 0,
    waitForSsh: async (h) => { sshWaited.push(h.name); },
  });
}

beforeEach(() => {
  fake = new FakeEc2();
  sshWaited = [];
});
afterEach(() => fake.mock.restore());
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

type Perm = IpPermission;
const ingressOf = (node: string) => flatRules(fake.groupOf(node)!.ingress);
const egressOf = (node: string) => flatRules(fake.groupOf(node)!.egress);
/** `tcp/3306<-sg:proxy` style strings, group ids translated back to node names. */
function flatRules(rules: { proto: string; from?: number; cidr?: string; group?: string }[]): string[] {
  const nodeOf = (id: string) => fake.groups.find((g) => g.id === id)?.tags.find((t) => t.Key === 'rampart:node')?.Value ?? id;
  return rules.map((r) => `${r.proto === '-1' ? 'all' : `${r.proto}/${r.from}`}:${r.group ? `sg:${nodeOf(r.group)}` : r.cidr}`).sort();
}
function permStrings(perms: Perm[] | undefined): string[] {
  const nodeOf = (id: string) => fake.groups.find((g) => g.id === id)?.tags.find((t) => t.Key === 'rampart:node')?.Value ?? id;
  return (perms ?? []).flatMap((p) => [
    ...(p.IpRanges ?? []).map((r) => `${p.IpProtocol}/${p.FromPort}:${r.CidrIp}`),
    ...(p.UserIdGroupPairs ?? []).map((g) => `${p.IpProtocol}/${p.FromPort}:sg:${nodeOf(g.GroupId!)}`),
  ]).sort();
}

describe('fresh apply', () => {
  test('imports the key, creates one SG per node with least-privilege rules, runs one instance per node', async () => {
    const cluster = awsCluster();
    const { hosts, changes } = await provider(cluster).up();
    const cmds = fake.commands();

    // Finding what exists: one call each, filtered by the cluster tag.
    expect(cmds.slice(0, 3).sort()).toEqual(['DescribeInstances', 'DescribeKeyPairs', 'DescribeSecurityGroups']);
    const [find] = fake.inputs<{ Filters: Filter[] }>('DescribeInstances');
    expect(find.Filters).toContainEqual({ Name: 'tag:rampart:cluster', Values: ['rampart'] });

    // Key pair: the project's public key, never a private one.
    const [imp] = fake.inputs<{ KeyName: string; PublicKeyMaterial: Uint8Array }>('ImportKeyPair');
    const pub = readFileSync(join(stateDir, '.rampart', 'id_ed25519.pub'), 'utf8').trim();
    expect(imp.KeyName).toBe('rampart-rampart');
    expect(new TextDecoder().decode(imp.PublicKeyMaterial)).toBe(pub);
    expect(new TextDecoder().decode(imp.PublicKeyMaterial)).not.toContain('PRIVATE');

    // Newest Canonical image of the current Ubuntu LTS (26.04) by default.
    const [img] = fake.inputs<{ Owners: string[]; Filters: Filter[] }>('DescribeImages');
    expect(img.Owners).toEqual(['099720109477']);
    expect(img.Filters).toContainEqual({ Name: 'name', Values: ['ubuntu/images/hvm-ssd-gp3/ubuntu-resolute-26.04-amd64-server-*'] });

    // One SG per node in the default VPC, tagged.
    const sgs = fake.inputs<{ GroupName: string; VpcId: string; TagSpecifications: { Tags: Tag[] }[] }>('CreateSecurityGroup');
    expect(sgs.map((s) => s.GroupName).sort()).toEqual(cluster.nodes.map((n) => `rampart-${n.name}`).sort());
    for (const s of sgs) {
      expect(s.VpcId).toBe('vpc-0default');
      expect(s.TagSpecifications[0].Tags).toContainEqual({ Key: 'managed-by', Value: 'rampart' });
    }

    // RunInstances per node with its type, the AMI, its SG, the key, tags; only the gatekeeper is public.
    const runs = fake.inputs<RunInput>('RunInstances');
    expect(runs).toHaveLength(cluster.nodes.length);
    for (const node of cluster.nodes) {
      const run = runs.find((r) => r.TagSpecifications[0].Tags.some((t) => t.Key === 'rampart:node' && t.Value === node.name))!;
      expect(run.InstanceType).toBe(node.type);
      expect(run.ImageId).toBe('ami-0newest');
      expect(run.KeyName).toBe('rampart-rampart');
      expect(run.MinCount).toBe(1);
      expect(run.MaxCount).toBe(1);
      expect(run.NetworkInterfaces[0].Groups).toEqual([fake.groupOf(node.name)!.id]);
      expect(run.NetworkInterfaces[0].SubnetId).toBe('subnet-0aaa');
      // every node needs a route to the Ubuntu mirror (no NAT in a default VPC); its security group still admits nothing
      expect(run.NetworkInterfaces[0].AssociatePublicIpAddress).toBe(true);
      expect(run.MetadataOptions.HttpTokens).toBe('required');
      for (const spec of run.TagSpecifications) {
        expect(spec.Tags).toEqual(expect.arrayContaining([
          { Key: 'rampart:cluster', Value: 'rampart' }, { Key: 'rampart:node', Value: node.name },
          { Key: 'managed-by', Value: 'rampart' }, { Key: 'Name', Value: `rampart-${node.name}` },
        ]));
      }
    }
    expect(runs.find((r) => r.InstanceType === 't2.large')).toBeDefined();
    expect(runs.filter((r) => r.InstanceType === 't2.micro')).toHaveLength(3);

    // Ordering: key and groups exist before any instance is launched.
    expect(cmds.indexOf('ImportKeyPair')).toBeLessThan(cmds.indexOf('RunInstances'));
    expect(cmds.lastIndexOf('CreateSecurityGroup')).toBeLessThan(cmds.indexOf('RunInstances'));
    expect(cmds.lastIndexOf('AuthorizeSecurityGroupIngress')).toBeLessThan(cmds.indexOf('RunInstances'));
    expect(changes.filter((c) => c.action === 'create')).toHaveLength(1 + 6 + 6);
    expect(sshWaited.sort()).toEqual(cluster.nodes.map((n) => n.name).sort());

    // Parallel: every instance is launched before the first wait, and one poll covers all six.
    const polls = fake.inputs<{ InstanceIds?: string[] }>('DescribeInstances').filter((i) => i.InstanceIds);
    expect(polls[0].InstanceIds!.sort()).toEqual(fake.instances.map((i) => i.id).sort());
    expect(cmds.lastIndexOf('RunInstances')).toBeLessThan(cmds.indexOf('DescribeInstances', 3));
  });

  test('security-group rules generated from the default cluster.yaml', async () => {
    await provider().up();
    expect(ingressOf('gatekeeper')).toEqual([`tcp/22:${CONTROLLER}`, 'tcp/443:0.0.0.0/0']);
    expect(ingressOf('trustedhost')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/5000:sg:gatekeeper']);
    expect(ingressOf('proxy')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/5000:sg:trustedhost']);
    // 3306 on the manager: the proxy's and the workers' groups (replication), nothing else.
    expect(ingressOf('manager')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/3306:sg:proxy', 'tcp/3306:sg:worker1', 'tcp/3306:sg:worker2']);
    expect(ingressOf('worker1')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/3306:sg:proxy']);

    // The only thing open to the world is the gatekeeper's port 443, in what we sent as well.
    const sent = fake.inputs<{ GroupId: string; IpPermissions: Perm[] }>('AuthorizeSecurityGroupIngress');
    const open = sent.flatMap((s) => permStrings(s.IpPermissions).filter((p) => p.endsWith('0.0.0.0/0')).map((p) => `${s.GroupId}:${p}`));
    expect(open).toEqual([`${fake.groupOf('gatekeeper')!.id}:tcp/443:0.0.0.0/0`]);

    // Every rule carries a description made only of the characters AWS accepts.
    const described = [...sent, ...fake.inputs<{ IpPermissions: Perm[] }>('AuthorizeSecurityGroupEgress')]
      .flatMap((s) => s.IpPermissions.flatMap((p) => [...(p.IpRanges ?? []), ...(p.UserIdGroupPairs ?? [])].map((r) => r.Description ?? '')));
    expect(described.length).toBeGreaterThan(10);
    for (const d of described) {
      expect(d.length).toBeGreaterThan(0);
      expect(d).toMatch(RULE_DESCRIPTION);
    }

    // trustedhost may only talk to the proxy (+ the apt mirror over HTTP/S); the default allow-all is gone.
    expect(egressOf('trustedhost')).toEqual(['tcp/443:0.0.0.0/0', 'tcp/5000:sg:proxy', 'tcp/80:0.0.0.0/0']);
    // Nodes not listed under security.egress keep AWS's default egress.
    expect(egressOf('proxy')).toEqual(['all:0.0.0.0/0']);
  });

  test('hands the engine the hosts: public node direct, the others through it', async () => {
    const { hosts } = await provider().up();
    const gk = hosts.find((h) => h.name === 'gatekeeper')!;
    const gkInst = fake.instanceOf('gatekeeper')!;
    expect(gk).toMatchObject({ address: gkInst.publicIp, privateAddress: gkInst.privateIp, port: 22, user: 'ubuntu', sshFrom: CONTROLLER });
    // DescribeInstances' PublicDnsName reaches the host (the gatekeeper's certificate names it)
    expect(gk.publicDns).toBe(`ec2-${gkInst.publicIp!.replaceAll('.', '-')}.compute-1.amazonaws.com`);
    expect(gk.jump).toBeUndefined();
    const mgr = hosts.find((h) => h.name === 'manager')!;
    const mgrInst = fake.instanceOf('manager')!;
    // it has a public IP for egress (apt), but is reached over SSH only through the gatekeeper
    expect(mgrInst.publicIp).toBeDefined();
    expect(mgr).toMatchObject({ address: mgrInst.privateIp, privateAddress: mgrInst.privateIp, user: 'ubuntu', sshFrom: `${gkInst.privateIp}/32` });
    expect(mgr.jump).toEqual({ address: gkInst.publicIp!, port: 22, user: 'ubuntu' });
    expect(hosts.map((h) => h.name)).toEqual(base.nodes.map((n) => n.name));
  });

  test('jump: false gives every node a public IP and SSH from the controller only', async () => {
    const { hosts } = await provider(awsCluster((c) => { c.provider.aws.jump = false; })).up();
    for (const run of fake.inputs<RunInput>('RunInstances')) expect(run.NetworkInterfaces[0].AssociatePublicIpAddress).toBe(true);
    expect(ingressOf('manager')).toContain(`tcp/22:${CONTROLLER}`);
    expect(ingressOf('manager')).not.toContain('tcp/22:sg:gatekeeper');
    for (const h of hosts) {
      expect(h.jump).toBeUndefined();
      expect(h.sshFrom).toBe(CONTROLLER);
    }
  });

  test('an explicit AMI, subnet and sshCidr are used as given', async () => {
    fake.mock.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-0c0ffee', VpcId: 'vpc-0mine' }] });
    await provider(awsCluster((c) => {
      c.provider.aws.ami = 'ami-0123456789abcdef0';
      c.provider.aws.subnetId = 'subnet-0c0ffee';
      c.provider.aws.sshCidr = '192.0.2.0/28';
    })).up();
    expect(fake.commands()).not.toContain('DescribeImages');
    expect(fake.commands()).not.toContain('DescribeVpcs');
    const runs = fake.inputs<RunInput>('RunInstances');
    expect(new Set(runs.map((r) => r.ImageId))).toEqual(new Set(['ami-0123456789abcdef0']));
    expect(new Set(runs.map((r) => r.NetworkInterfaces[0].SubnetId))).toEqual(new Set(['subnet-0c0ffee']));
    expect(fake.inputs<{ VpcId: string }>('CreateSecurityGroup')[0].VpcId).toBe('vpc-0mine');
    expect(ingressOf('gatekeeper')).toContain('tcp/22:192.0.2.0/28');
  });
});

describe('apply again', () => {
  test('second apply is describe-only: three Describe calls, nothing created', async () => {
    const first = await provider().up();
    fake.resetHistory();
    const second = await provider().up();
    expect(fake.commands().sort()).toEqual(['DescribeInstances', 'DescribeKeyPairs', 'DescribeSecurityGroups']);
    expect(second.changes).toEqual([]);
    expect(second.hosts).toEqual(first.hosts);
  });

  test('a terminated instance is recreated: exactly one RunInstances', async () => {
    await provider().up();
    fake.instanceOf('worker2')!.state = 'terminated';
    fake.resetHistory();
    const { changes, hosts } = await provider().up();
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual(['RunInstances']);
    const [run] = fake.inputs<RunInput>('RunInstances');
    expect(run.TagSpecifications[0].Tags).toContainEqual({ Key: 'rampart:node', Value: 'worker2' });
    expect(run.NetworkInterfaces[0].Groups).toEqual([fake.groupOf('worker2')!.id]);
    expect(changes).toEqual([{ action: 'create', resource: 'instance worker2', newNode: 'worker2', detail: `t2.micro, public IP, $${HOURLY_USD['t2.micro']}/h` }]);
    expect(hosts.find((h) => h.name === 'worker2')!.privateAddress).toBe(fake.instanceOf('worker2')!.privateIp);
  });

  test('a changed instance type is shown in the plan but not applied (a resize is a downtime decision)', async () => {
    await provider().up();
    fake.resetHistory();
    const bigger = awsCluster((c) => { c.nodes.find((n) => n.name === 'manager')!.type = 't3.large'; });
    const items = await provider(bigger).plan();
    const item = items.find((i) => i.resource === 'instance manager')!;
    expect(item.action).toBe('change');
    expect(item.detail).toContain('type is t2.micro, cluster.yaml says t3.large: not resized automatically');
    await provider(bigger).up();
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([]);
  });

  test('a stopped instance is started, not replaced', async () => {
    await provider().up();
    const proxy = fake.instanceOf('proxy')!;
    proxy.state = 'stopped';
    fake.resetHistory();
    const { hosts } = await provider().up();
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual(['StartInstances']);
    expect(fake.inputs<{ InstanceIds: string[] }>('StartInstances')[0].InstanceIds).toEqual([proxy.id]);
    expect(proxy.state).toBe('running');
    expect(hosts.map((h) => h.name)).toContain('proxy');
  });

  test('a missing security group: exactly one CreateSecurityGroup plus its rules, re-attached', async () => {
    await provider().up();
    const old = fake.groupOf('manager')!;
    fake.groups = fake.groups.filter((g) => g !== old);
    fake.resetHistory();
    await provider().up();
    const mutating = fake.commands().filter((c) => MUTATING.test(c));
    expect(mutating).toEqual(['CreateSecurityGroup', 'AuthorizeSecurityGroupIngress', 'ModifyInstanceAttribute']);
    const [created] = fake.inputs<{ GroupName: string }>('CreateSecurityGroup');
    expect(created.GroupName).toBe('rampart-manager');
    const fresh = fake.groupOf('manager')!;
    const [auth] = fake.inputs<{ GroupId: string; IpPermissions: Perm[] }>('AuthorizeSecurityGroupIngress');
    expect(auth.GroupId).toBe(fresh.id);
    expect(permStrings(auth.IpPermissions)).toEqual(['tcp/22:sg:gatekeeper', 'tcp/3306:sg:proxy', 'tcp/3306:sg:worker1', 'tcp/3306:sg:worker2']);
    expect(fake.instanceOf('manager')!.groups).toEqual([fresh.id]);
  });

  test('a changed flow is updated in place: authorize the new port, revoke the old, nothing else', async () => {
    await provider().up();
    fake.resetHistory();
    const changed = awsCluster((c) => { c.security.flows.find((f) => f.from.includes('trustedhost'))!.port = 5001; });
    const { changes } = await provider(changed).up();
    expect(fake.commands().filter((c) => MUTATING.test(c)).sort()).toEqual([
      'AuthorizeSecurityGroupEgress', 'AuthorizeSecurityGroupIngress', 'RevokeSecurityGroupEgress', 'RevokeSecurityGroupIngress',
    ]);
    expect(ingressOf('proxy')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/5001:sg:trustedhost']);
    expect(egressOf('trustedhost')).toEqual(['tcp/443:0.0.0.0/0', 'tcp/5001:sg:proxy', 'tcp/80:0.0.0.0/0']);
    // revoked by rule id (one each), every authorize before the first revoke
    const revokes = [...fake.inputs<{ SecurityGroupRuleIds?: string[]; IpPermissions?: Perm[] }>('RevokeSecurityGroupIngress'), ...fake.inputs<{ SecurityGroupRuleIds?: string[]; IpPermissions?: Perm[] }>('RevokeSecurityGroupEgress')];
    expect(revokes.map((r) => [r.SecurityGroupRuleIds?.length, r.IpPermissions])).toEqual([[1, undefined], [1, undefined]]);
    const cmds = fake.commands();
    expect(Math.max(cmds.lastIndexOf('AuthorizeSecurityGroupIngress'), cmds.lastIndexOf('AuthorizeSecurityGroupEgress'))).toBeLessThan(cmds.indexOf('DescribeSecurityGroupRules'));
    expect(cmds.filter((c) => c === 'DescribeSecurityGroupRules')).toHaveLength(1);
    expect(changes.map((c) => `${c.action} ${c.resource}`).sort()).toEqual(['change security-group rampart-proxy', 'change security-group rampart-trustedhost']);
    expect(changes.find((c) => c.resource.endsWith('proxy'))!.detail).toBe('+ ingress tcp/5001 from sg(trustedhost); - ingress tcp/5000 from sg(trustedhost)');
  });

  test('a rule added by hand (3306 open to the world) is revoked', async () => {
    await provider().up();
    fake.groupOf('manager')!.ingress.push({ id: 'sgr-0byhand', proto: 'tcp', from: 3306, to: 3306, cidr: '0.0.0.0/0' });
    fake.resetHistory();
    await provider().up();
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual(['RevokeSecurityGroupIngress']);
    // by its rule id, looked up in one DescribeSecurityGroupRules of that group
    expect(fake.inputs<{ Filters: Filter[] }>('DescribeSecurityGroupRules')).toEqual([{ Filters: [{ Name: 'group-id', Values: [fake.groupOf('manager')!.id] }] }]);
    expect(fake.inputs('RevokeSecurityGroupIngress')).toEqual([{ GroupId: fake.groupOf('manager')!.id, SecurityGroupRuleIds: ['sgr-0byhand'] }]);
    expect(ingressOf('manager')).not.toContain('tcp/3306:0.0.0.0/0');
  });

  test('a node removed from cluster.yaml is terminated and its group deleted', async () => {
    await provider().up();
    const gone = fake.instanceOf('worker2')!;
    fake.resetHistory();
    const smaller = awsCluster((c) => {
      c.nodes = c.nodes.filter((n) => n.name !== 'worker2');
      for (const f of c.security.flows) { f.from = f.from.filter((n) => n !== 'worker2'); f.to = f.to.filter((n) => n !== 'worker2'); }
      c.security.flows = c.security.flows.filter((f) => f.from.length && f.to.length);
    });
    const { changes } = await provider(smaller).up();
    expect(gone.state).toBe('terminated');
    expect(fake.groupOf('worker2')).toBeUndefined();
    expect(ingressOf('manager')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/3306:sg:proxy', 'tcp/3306:sg:worker1']);
    expect(changes.filter((c) => c.action === 'delete').map((c) => c.resource).sort()).toEqual(['instance worker2', 'security-group rampart-worker2']);
  });
});

describe('rule changes that EC2 does not make', () => {
  const changed = () => awsCluster((c) => { c.security.flows.find((f) => f.from.includes('trustedhost'))!.port = 5001; });

  test('a revoke EC2 answers with success but UnknownIpPermissions fails the apply, naming the group and the rule', async () => {
    await provider().up();
    sshWaited = [];
    fake.mock.on(RevokeSecurityGroupIngressCommand).resolves({
      Return: false,
      UnknownIpPermissions: [{ IpProtocol: 'tcp', FromPort: 5000, ToPort: 5000, UserIdGroupPairs: [{ GroupId: fake.groupOf('trustedhost')!.id }] }],
    });
    const err = (await provider(changed()).up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err).toBeInstanceOf(ProviderError);
    expect(err.message).toBe(`AWS RevokeSecurityGroupIngress on security group rampart-proxy (${fake.groupOf('proxy')!.id}) answered success but did not revoke: `
      + `ingress tcp/5000 from ${fake.groupOf('trustedhost')!.id}; that rule is still in place`);
    expect(err.hint).toContain('apply --check');
    expect(sshWaited).toEqual([]); // stopped there
  });

  test('a revoke answered with Return false alone fails too', async () => {
    await provider().up();
    fake.mock.on(RevokeSecurityGroupEgressCommand).resolves({ Return: false });
    const err = (await provider(changed()).up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err).toBeInstanceOf(ProviderError);
    expect(err.message).toMatch(/^AWS RevokeSecurityGroupEgress on security group rampart-trustedhost \(sg-[0-9a-f]+\) answered success but did not revoke: rule sgr-[0-9a-f]+; that rule is still in place$/);
  });

  test('a listing that merges peers (as moto does) is revoked by permission with the stored description, exactly', async () => {
    await provider().up();
    // Like moto: the manager's three 3306 group references listed as one rule showing its first peer only.
    const manager = fake.groupOf('manager')!;
    fake.mock.on(DescribeSecurityGroupRulesCommand).callsFake(() => ({
      SecurityGroupRules: [{ SecurityGroupRuleId: 'sgr-0merged', GroupId: manager.id, IsEgress: false, IpProtocol: 'tcp', FromPort: 3306, ToPort: 3306, ReferencedGroupInfo: { GroupId: fake.groupOf('proxy')!.id } }],
    }));
    fake.resetHistory();
    const smaller = awsCluster((c) => {
      c.nodes = c.nodes.filter((n) => n.name !== 'worker2');
      for (const f of c.security.flows) { f.from = f.from.filter((n) => n !== 'worker2'); f.to = f.to.filter((n) => n !== 'worker2'); }
      c.security.flows = c.security.flows.filter((f) => f.from.length && f.to.length);
    });
    await provider(smaller).up();
    const revokes = fake.inputs<{ GroupId: string; SecurityGroupRuleIds?: string[]; IpPermissions?: Perm[] }>('RevokeSecurityGroupIngress').filter((r) => r.GroupId === manager.id);
    expect(revokes).toEqual([{ GroupId: manager.id, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 3306, ToPort: 3306, UserIdGroupPairs: [{ GroupId: expect.any(String), Description: 'flow worker2 to manager:3306' }] }] }]);
    expect(ingressOf('manager')).toEqual(['tcp/22:sg:gatekeeper', 'tcp/3306:sg:proxy', 'tcp/3306:sg:worker1']);
  });

  test('rule changes of several groups all finish before the first failure is reported', async () => {
    await provider().up();
    let egressDone = false;
    fake.mock.on(AuthorizeSecurityGroupIngressCommand).rejects(awsError('RulesPerSecurityGroupLimitExceeded', 'too many rules'));
    fake.mock.on(AuthorizeSecurityGroupEgressCommand).callsFake(async () => {
      await new Promise((r) => setTimeout(r, 30));
      egressDone = true;
      return { Return: true };
    });
    const err = (await provider(changed()).up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err.message).toContain('AuthorizeSecurityGroupIngress failed: RulesPerSecurityGroupLimitExceeded');
    expect(egressDone).toBe(true);
    expect(fake.commands()).not.toContain('RevokeSecurityGroupIngress');
  });
});

describe('reading what exists', () => {
  test('groups shown only on the network interface (as moto shows them) count: a second apply changes nothing', async () => {
    fake.groupsOnInterfaceOnly = true;
    await provider().up();
    fake.resetHistory();
    const { changes } = await provider().up();
    expect(changes).toEqual([]);
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([]);
  });

  test('provider.aws.ubuntu: 24.04 picks Canonical\'s newest noble image', async () => {
    await provider(awsCluster((c) => { c.provider.aws.ubuntu = '24.04'; })).up();
    const [img] = fake.inputs<{ Filters: Filter[] }>('DescribeImages');
    expect(img.Filters).toContainEqual({ Name: 'name', Values: ['ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*'] });
  });

  test('no image of the chosen release: the error and its hint follow provider.aws.ubuntu', async () => {
    fake.mock.on(DescribeImagesCommand).resolves({ Images: [] });
    const err = (await provider(awsCluster((c) => { c.provider.aws.ubuntu = '24.04'; })).up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err.message).toBe('no Ubuntu 24.04 (noble) x86_64 image from Canonical in this region');
    expect(err.hint).toContain('an Ubuntu 24.04 AMI id');
    fake.mock.on(RunInstancesCommand).rejects(awsError('InvalidAMIID.NotFound', "The image id '[ami-0bad]' does not exist"));
    const bad = (await provider(awsCluster((c) => { c.provider.aws.ami = 'ami-0bad'; })).up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(bad.hint).toContain('newest Ubuntu 26.04 image');
  });

  test('the SSH wait reports each node it waits for in the progress line', async () => {
    const progress: string[] = [];
    await new AwsProvider(awsCluster(), {
      client: fake.client, controllerIp: async () => CONTROLLER_IP, pollMs: 0,
      waitForSsh: async (h, status) => { if (!h.jump) status(`${h.name} ${h.address}:22 3 s of 600 s, last: ETIMEDOUT`); },
    }).up({ progress: (m) => progress.push(m) });
    const gk = fake.instanceOf('gatekeeper')!;
    expect(progress).toContain(`waiting for SSH (1 node(s) reached directly): gatekeeper ${gk.publicIp}:22`);
    expect(progress).toContain(`waiting for SSH (1 node(s) reached directly): gatekeeper ${gk.publicIp}:22 3 s of 600 s, last: ETIMEDOUT`);
  });
});

describe('teardown', () => {
  test('terminate -> wait -> revoke cross-references -> delete groups -> delete key; then nothing left', async () => {
    await provider().up();
    fake.resetHistory();
    const removed = await provider().down();
    const cmds = fake.commands();
    const terminate = cmds.indexOf('TerminateInstances');
    const firstDelete = cmds.indexOf('DeleteSecurityGroup');
    expect(cmds.filter((c) => c === 'TerminateInstances')).toHaveLength(1);
    expect(fake.inputs<{ InstanceIds: string[] }>('TerminateInstances')[0].InstanceIds).toHaveLength(6);
    // waited: a DescribeInstances by id between terminate and the first group deletion
    const waits = cmds.map((c, i) => (c === 'DescribeInstances' && i > terminate && i < firstDelete ? i : -1)).filter((i) => i >= 0);
    expect(waits.length).toBeGreaterThan(0);
    expect(cmds.lastIndexOf('RevokeSecurityGroupIngress')).toBeLessThan(firstDelete);
    expect(cmds.lastIndexOf('RevokeSecurityGroupEgress')).toBeLessThan(firstDelete);
    // cross-references revoked by rule id, never by a permission that could silently match nothing
    for (const r of [...fake.inputs<{ SecurityGroupRuleIds?: string[]; IpPermissions?: Perm[] }>('RevokeSecurityGroupIngress'), ...fake.inputs<{ SecurityGroupRuleIds?: string[]; IpPermissions?: Perm[] }>('RevokeSecurityGroupEgress')]) {
      expect(r.IpPermissions).toBeUndefined();
      expect(r.SecurityGroupRuleIds!.length).toBeGreaterThan(0);
    }
    expect(cmds.filter((c) => c === 'DeleteSecurityGroup')).toHaveLength(6);
    expect(cmds.indexOf('DeleteKeyPair')).toBe(cmds.length - 1);
    expect(fake.groups).toEqual([]);
    expect(fake.keyPairs).toEqual([]);
    expect(fake.instances.every((i) => i.state === 'terminated')).toBe(true);
    expect(removed.filter((r) => r.action === 'delete')).toHaveLength(6 + 6 + 1);

    fake.resetHistory();
    expect(await provider().down()).toEqual([]);
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([]);
  });

  test('a group still held by a vanishing network interface (DependencyViolation) is deleted on retry; one that stays held fails with advice', async () => {
    await provider().up();
    const manager = fake.groupOf('manager')!.id; // released after two refusals
    const stuck = fake.groupOf('proxy')!.id;     // never released
    let refusals = 2;
    const deleteCalls: string[] = [];
    fake.mock.on(DeleteSecurityGroupCommand).callsFake((input: { GroupId: string }) => {
      deleteCalls.push(input.GroupId);
      if (input.GroupId === stuck || (input.GroupId === manager && refusals-- > 0)) throw awsError('DependencyViolation', `resource ${input.GroupId} has a dependent object`);
      fake.groups = fake.groups.filter((g) => g.id !== input.GroupId);
      return {};
    });
    const err = (await new AwsProvider(awsCluster(), { client: fake.client, controllerIp: async () => CONTROLLER_IP, pollMs: 1, timeoutMs: 300 })
      .down().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err).toBeInstanceOf(ProviderError);
    expect(err.message).toBe(`AWS DeleteSecurityGroup failed: DependencyViolation: resource ${stuck} has a dependent object`);
    expect(err.hint).toContain('run teardown again');
    expect(deleteCalls.filter((id) => id === manager)).toHaveLength(3);
    expect(deleteCalls.filter((id) => id === stuck).length).toBeGreaterThan(1);
    // every other group was deleted all the same (settle-all), only the held one is left
    expect(fake.groups.map((g) => g.id)).toEqual([stuck]);
  });

  test('a key pair rampart did not import is left alone', async () => {
    fake.keyPairs.push({ name: 'mine', publicKey: readFileSync(join(stateDir, '.rampart', 'id_ed25519.pub'), 'utf8'), tags: [] });
    const cluster = awsCluster((c) => { c.provider.aws.keyName = 'mine'; });
    await provider(cluster).up();
    expect(fake.commands()).not.toContain('ImportKeyPair');
    await provider(cluster).down();
    expect(fake.keyPairs.map((k) => k.name)).toEqual(['mine']);
  });
});

describe('errors', () => {
  const AWS_ENV = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_DEFAULT_PROFILE',
      'AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE', 'AWS_EC2_METADATA_DISABLED', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN',
    'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_CREDENTIAL_PROVIDER', 'AWS_REGION', 'AWS_DEFAULT_REGION'];
  /** Run with an empty AWS environment: no env keys, no shared files, no instance metadata (so no network). */
  async function withoutAwsEnv<T>(fn: () => Promise<T>): Promise<T> {
    const saved = Object.fromEntries(AWS_ENV.map((k) => [k, process.env[k]]));
    try {
      for (const k of AWS_ENV) delete process.env[k];
      process.env.AWS_SHARED_CREDENTIALS_FILE = join(stateDir, 'no-such-credentials');
      process.env.AWS_CONFIG_FILE = join(stateDir, 'no-such-config');
      process.env.AWS_EC2_METADATA_DISABLED = 'true';
      return await fn();
    } finally {
      for (const k of AWS_ENV) if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
    }
  }

  test('no credentials anywhere: clear ProviderError before any EC2 call', async () => {
    const err = await withoutAwsEnv(() => provider(awsCluster(), new EC2Client({ region: 'us-east-1' })).plan().then(() => null, (e: unknown) => e));
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toStartWith('no AWS credentials: set AWS_PROFILE or run aws sso login');
    expect((err as ProviderError).hint).toContain('aws sso login');
    expect(fake.commands()).toEqual([]);
  });

  test('a profile that does not exist is reported as missing credentials', async () => {
    const err = await withoutAwsEnv(() => provider(awsCluster(), new EC2Client({ region: 'us-east-1', profile: 'nope' })).up().then(() => null, (e: unknown) => e));
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toStartWith('no AWS credentials');
    expect(fake.commands()).toEqual([]);
  });

  test('no region anywhere: clear ProviderError before any EC2 call', async () => {
    const creds = { accessKeyId: 'AKIDTESTONLY', secretAccessKey: 'not-a-secret' };
    const err = await withoutAwsEnv(() => provider(awsCluster(), new EC2Client({ credentials: creds })).describe().then(() => null, (e: unknown) => e));
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toBe('no AWS region');
    expect((err as ProviderError).hint).toContain('provider.aws.region');
    expect(fake.commands()).toEqual([]);
  });

  test('quota exceeded: clear error naming call, code and fix; the launches that fit finish; a later apply adds only the rest', async () => {
    fake.instanceLimit = 5;
    const err = await provider().up().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    const e = err as ProviderError;
    expect(e.message).toContain('AWS RunInstances failed: InstanceLimitExceeded');
    expect(e.message).toContain('current instance limit of 5');
    expect(e.hint).toContain('quota');
    expect(fake.instances).toHaveLength(5);

    fake.instanceLimit = 10; // quota raised
    fake.resetHistory();
    const { hosts } = await provider().up();
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual(['RunInstances']);
    expect(hosts).toHaveLength(6);
  });

  test('unauthorized names the call and the missing permission advice', async () => {
    fake.mock.on(DescribeInstancesCommand).rejects(awsError('UnauthorizedOperation', 'You are not authorized to perform this operation. Encoded authorization failure message: abc'));
    const err = await provider().plan().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toBe('AWS DescribeInstances failed: UnauthorizedOperation: You are not authorized to perform this operation. Encoded authorization failure message: abc');
    expect((err as ProviderError).hint).toContain('decode-authorization-message');
  });

  test('rejected credentials (AuthFailure) are reported as such', async () => {
    fake.mock.on(DescribeKeyPairsCommand).rejects(awsError('AuthFailure', 'AWS was not able to validate the provided access credentials'));
    const err = (await provider().up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err.message).toContain('DescribeKeyPairs failed: AuthFailure');
    expect(err.hint).toContain('credentials');
  });

  test('an instance that dies while starting fails the apply with its state reason', async () => {
    fake.mock.on(DescribeInstancesCommand).callsFake((input: { InstanceIds?: string[] }) => ({
      Reservations: input.InstanceIds ? [{ Instances: [{ InstanceId: input.InstanceIds[0], State: { Name: 'terminated' }, StateReason: { Message: 'Server.InsufficientInstanceCapacity' }, Tags: [{ Key: 'rampart:node', Value: 'gatekeeper' }] }] }] : [],
    }));
    const err = (await provider().up().then(() => null, (e: unknown) => e)) as ProviderError;
    expect(err).toBeInstanceOf(ProviderError);
    expect(err.message).toContain('Server.InsufficientInstanceCapacity');
  });

  test('jump: true without a public node is a clear error', () => {
    const c = awsCluster((x) => { for (const n of x.nodes) n.public = false; });
    expect(() => desiredGroups(c, CONTROLLER)).toThrow(/no node has `public: true`/);
  });
});

describe('plan', () => {
  test('on an empty account: only Describe calls, everything to create, hourly cost shown', async () => {
    const cluster = awsCluster();
    const progress: string[] = [];
    const items = await provider(cluster).plan({ progress: (m) => progress.push(m) });
    expect(fake.commands().filter((c) => !c.startsWith('Describe'))).toEqual([]);
    expect(fake.commands().sort()).toEqual(['DescribeInstances', 'DescribeKeyPairs', 'DescribeSecurityGroups']);
    expect(items.filter((i) => i.action === 'create').map((i) => i.resource)).toEqual([
      'key-pair rampart-rampart', ...cluster.nodes.map((n) => `security-group rampart-${n.name}`), ...cluster.nodes.map((n) => `instance ${n.name}`),
    ]);
    const cost = hourlyCost(cluster);
    const expected = cluster.nodes.reduce((s, n) => s + HOURLY_USD[n.type], 0) + cluster.nodes.length * PUBLIC_IPV4_HOURLY_USD;
    expect(cost.total).toBeCloseTo(expected, 6);
    expect(cost.unknown).toEqual([]);
    const line = items.find((i) => i.resource === 'hourly cost')!;
    expect(line.detail).toStartWith(`$${expected.toFixed(4)}/hour`);
    expect(line.detail).toContain(PRICES_AS_OF);
    expect(progress).toContain(`hourly cost: ${line.detail}`);
    // and in the plan as printed (which otherwise shows only changes)
    expect(line.info).toBe(true);
    expect(formatPlan(items)).toEndWith(`provider: hourly cost: ${line.detail}\n`);
    expect(fake.groups).toEqual([]);
    expect(fake.instances).toEqual([]);
  });

  test('after apply everything is ok; a drift shows as a change without being fixed', async () => {
    await provider().up();
    fake.groupOf('gatekeeper')!.ingress.push({ id: 'sgr-0byhand', proto: 'tcp', from: 22, to: 22, cidr: '0.0.0.0/0' });
    fake.resetHistory();
    const items = await provider().plan();
    expect(fake.commands().filter((c) => MUTATING.test(c))).toEqual([]);
    expect(items.filter((i) => i.action !== 'ok')).toEqual([
      { action: 'change', resource: 'security-group rampart-gatekeeper', detail: '- ingress tcp/22 from 0.0.0.0/0' },
    ]);
    expect(ingressOf('gatekeeper')).toContain('tcp/22:0.0.0.0/0');
  });

  test('unknown instance types are named, not silently priced', () => {
    const c = awsCluster((x) => { x.nodes[0].type = 'z9.huge'; });
    const cost = hourlyCost(c);
    expect(cost.unknown).toEqual(['z9.huge']);
    expect(formatCost(c)).toContain('no price for z9.huge');
  });
});

describe('pure parts', () => {
  test('diffRules is keyed on protocol, ports and peer (descriptions ignored)', () => {
    const r = (port: number, cidr: string, description?: string) => ({ direction: 'ingress' as const, protocol: 'tcp', fromPort: port, toPort: port, peer: { kind: 'cidr' as const, cidr }, description });
    const d = diffRules([r(22, '1.2.3.4/32', 'a'), r(80, '0.0.0.0/0')], [r(22, '1.2.3.4/32', 'b'), r(3306, '0.0.0.0/0')]);
    expect(d.authorize).toEqual([r(80, '0.0.0.0/0')]);
    expect(d.revoke).toEqual([r(3306, '0.0.0.0/0')]);
  });

  test('AWS permissions round-trip through the flat rule form', () => {
    const perm: IpPermission = { IpProtocol: 'tcp', FromPort: 3306, ToPort: 3306, IpRanges: [{ CidrIp: '10.0.0.0/8' }], UserIdGroupPairs: [{ GroupId: 'sg-1' }, { GroupId: 'sg-2' }] };
    const rules = fromPermissions('ingress', [perm]);
    expect(rules.map(ruleKey)).toEqual(['ingress|tcp|3306-3306|cidr:10.0.0.0/8', 'ingress|tcp|3306-3306|group:sg-1', 'ingress|tcp|3306-3306|group:sg-2']);
    expect(rules.map((x) => toPermission(x, false))).toEqual([
      { IpProtocol: 'tcp', FromPort: 3306, ToPort: 3306, IpRanges: [{ CidrIp: '10.0.0.0/8' }] },
      { IpProtocol: 'tcp', FromPort: 3306, ToPort: 3306, UserIdGroupPairs: [{ GroupId: 'sg-1' }] },
      { IpProtocol: 'tcp', FromPort: 3306, ToPort: 3306, UserIdGroupPairs: [{ GroupId: 'sg-2' }] },
    ]);
  });

  test('desiredGroups: controller flows use the controller /32; a restricted jump host may still SSH onwards', () => {
    const c = awsCluster((x) => {
      x.security.flows.push({ from: ['controller'], to: ['proxy'], port: 9100 });
      x.security.egress.push({ node: 'gatekeeper', mirror: false });
    });
    const groups = new Map(desiredGroups(c, CONTROLLER).map((g) => [g.node, g]));
    const show = (rules: Rule[] | null) => (rules ?? []).map(describeRule).sort();
    expect(show(groups.get('proxy')!.ingress)).toEqual(['tcp/22 from sg(gatekeeper)', `tcp/9100 from ${CONTROLLER}`, 'tcp/5000 from sg(trustedhost)'].sort());
    expect(show(groups.get('gatekeeper')!.egress)).toEqual([
      'tcp/22 to sg(manager)', 'tcp/22 to sg(proxy)', 'tcp/22 to sg(trustedhost)', 'tcp/22 to sg(worker1)', 'tcp/22 to sg(worker2)', 'tcp/5000 to sg(trustedhost)',
    ]);
    expect(groups.get('manager')!.egress).toBeNull();
  });

  test('planRevoke: by id when the listing shows every rule of the range; by permission with the description when it merged them', () => {
    const sg = (groupId: string, description: string): Rule => ({ direction: 'ingress', protocol: 'tcp', fromPort: 22, toPort: 22, peer: { kind: 'group', groupId }, description });
    const old = sg('sg-old', 'ssh via old'), added = sg('sg-new', 'ssh via new');
    const rec = (id: string, groupId: string) => ({ SecurityGroupRuleId: id, GroupId: 'sg-me', IsEgress: false, IpProtocol: 'tcp', FromPort: 22, ToPort: 22, ReferencedGroupInfo: { GroupId: groupId } });
    // EC2: one record per peer
    expect(planRevoke([old], [old, added], [rec('sgr-1', 'sg-old'), rec('sgr-2', 'sg-new')])).toEqual({ ingressIds: ['sgr-1'], egressIds: [], ingress: [], egress: [] });
    // moto: the peer just authorized was merged into the old rule (one id, first peer shown): revoking that id would drop both
    expect(planRevoke([old], [old, added], [rec('sgr-1', 'sg-old')])).toEqual({
      ingressIds: [], egressIds: [], egress: [],
      ingress: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, UserIdGroupPairs: [{ GroupId: 'sg-old', Description: 'ssh via old' }] }],
    });
    // a rule the listing does not show at all is not skipped: it goes by permission, and its answer is checked
    expect(planRevoke([old], [old], []).ingress).toHaveLength(1);
    expect(fromRuleRecord({ IsEgress: true, IpProtocol: '-1', FromPort: -1, ToPort: -1, CidrIpv4: '0.0.0.0/0' })).toEqual({ direction: 'egress', protocol: '-1', peer: { kind: 'cidr', cidr: '0.0.0.0/0' }, description: undefined });
  });

  test('archOf picks arm64 for Graviton types', () => {
    expect(archOf('t2.micro')).toBe('x86_64');
    expect(archOf('m5.large')).toBe('x86_64');
    expect(archOf('t4g.small')).toBe('arm64');
    expect(archOf('c6gn.large')).toBe('arm64');
  });

  test('waitForTcp resolves on an open loopback port; on a closed one it names the node and the last error', async () => {
    const server = createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await waitForTcp({ node: 'gatekeeper', address: '127.0.0.1', port }, { timeoutMs: 2000, retryMs: 10 });
    await new Promise<void>((r) => server.close(() => r()));
    const status: string[] = [];
    const err = await waitForTcp({ node: 'gatekeeper', address: '127.0.0.1', port }, { timeoutMs: 150, retryMs: 10, onStatus: (l) => status.push(l) }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).message).toBe(`gatekeeper (127.0.0.1:${port}) did not answer SSH within 0 s (last: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:${port})`);
    expect((err as ProviderError).hint).toContain('provider.aws.sshTimeoutSeconds');
    expect(status.length).toBeGreaterThan(0);
    expect(status[0]).toMatch(new RegExp(`^gatekeeper 127\\.0\\.0\\.1:${port} \\d+ s of 0 s, last: ECONNREFUSED$`));
  });

  test('waitForTcp gives up at once when this machine has no route (ENETUNREACH), and waits through timeouts (a booting node)', async () => {
    let attempts = 0;
    const unreachable = async () => { attempts++; return { code: 'ENETUNREACH', message: 'connect ENETUNREACH 198.51.100.7:22' }; };
    const t0 = Date.now();
    const err = (await waitForTcp({ node: 'gatekeeper', address: '198.51.100.7', port: 22 }, { timeoutMs: 600_000, probe: unreachable }).then(() => null, (e: unknown) => e)) as ProviderError;
    expect(Date.now() - t0).toBeLessThan(2000); // no retry: one would first sleep the default 2 s
    expect(attempts).toBe(1);
    expect(err).toBeInstanceOf(ProviderError);
    expect(err.message).toBe('gatekeeper (198.51.100.7:22): SSH port unreachable: connect ENETUNREACH 198.51.100.7:22: this machine has no route to that network; waiting will not help');

    // A timeout is what a booting node looks like: waited for, until the limit.
    let n = 0;
    const slowBoot = async () => (++n < 3 ? { code: 'ETIMEDOUT', message: 'no answer within 5 s' } : undefined);
    await waitForTcp({ node: 'manager', address: '198.51.100.8', port: 22 }, { timeoutMs: 600_000, retryMs: 1, probe: slowBoot });
    expect(n).toBe(3);
  });
});

interface RunInput {
  ImageId: string;
  InstanceType: string;
  MinCount: number;
  MaxCount: number;
  KeyName: string;
  NetworkInterfaces: { SubnetId: string; Groups: string[]; AssociatePublicIpAddress: boolean }[];
  MetadataOptions: { HttpTokens: string };
  TagSpecifications: { ResourceType: string; Tags: Tag[] }[];
}
