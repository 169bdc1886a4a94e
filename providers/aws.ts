// AWS provider: EC2 instances, one security group per node, an imported key
// pair. Finds what exists by tag (three Describe calls), diffs it against
// cluster.yaml (providers/aws/plan.ts) and changes only the difference.
import { randomUUID } from 'node:crypto';
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
import { ProviderError } from '../core/errors.ts';
import { ensureSshKey } from '../core/state.ts';
import type { Cluster, Host, NodeSpec, PlanItem, Provider, ProviderEvents, UbuntuRelease } from '../core/types.ts';
import { awsError, noCredentials } from './aws/errors.ts';
import { fromPermissions, planRevoke, toPermission, unrevoked } from './aws/permissions.ts';
import { computePlan, defaultEgress, LIVE_STATES, type Actions, type ExistingGroup, type ExistingInstance, type ExistingState } from './aws/plan.ts';
import { formatCost } from './aws/prices.ts';
import { describeRule, desiredGroups, hasPublicIp, jumpNode, type Rule } from './aws/rules.ts';
import { waitForTcp } from './aws/ssh-wait.ts';

export { hourlyCost, formatCost } from './aws/prices.ts';
export { desiredGroups } from './aws/rules.ts';
export { fromPermissions, toPermission } from './aws/permissions.ts';
export { waitForTcp } from './aws/ssh-wait.ts';

/** Canonical's AWS account: the only owner whose Ubuntu images we trust. */
export const CANONICAL_OWNER = '099720109477';
/** The Ubuntu LTS releases provider.aws.ubuntu may name (26.04 ships MySQL 8.4, 24.04 MySQL 8.0). */
export const UBUNTU: Readonly<Record<UbuntuRelease, { codename: string }>> = {
  '26.04': { codename: 'resolute' },
  '24.04': { codename: 'noble' },
};
/** Name pattern of Canonical's server images of a release, e.g. ubuntu/images/hvm-ssd-gp3/ubuntu-resolute-26.04-amd64-server-*. */
export function ubuntuImageName(release: UbuntuRelease, arch: 'amd64' | 'arm64'): string {
  return `ubuntu/images/hvm-ssd-gp3/ubuntu-${UBUNTU[release].codename}-${release}-${arch}-server-*`;
}
const SSH_USER = 'ubuntu';

export interface AwsProviderOptions {
  /** EC2 client to use (tests pass a mocked one); default: built from provider.aws / the SDK chain. */
  client?: EC2Client;
  /** The controller's public IPv4 address (default: asks https://checkip.amazonaws.com). */
  controllerIp?: () => Promise<string>;
  /** First poll interval in ms (backs off x1.5 up to 8x); default 2000. */
  pollMs?: number;
  /** How long to wait for instances to run / terminate; default 10 minutes. */
  timeoutMs?: number;
  /**
   * Wait until a host answers SSH, reporting a one-line status now and then; default: TCP port 22
   * of the hosts reached directly, for up to provider.aws.sshTimeoutSeconds. Aborted when another host failed.
   */
  waitForSsh?: (host: Host, status: (line: string) => void, signal: AbortSignal) => Promise<void>;
}

interface Network {
  vpcId: string;
  subnetId: string;
}

export class AwsProvider implements Provider {
  readonly name = 'aws' as const;
  private readonly client: EC2Client;
  private readonly pollMs: number;
  private readonly timeoutMs: number;
  private readonly controllerIp: () => Promise<string>;
  private readonly waitForSsh: NonNullable<AwsProviderOptions['waitForSsh']>;
  private controllerCidrCache?: Promise<string>;

  constructor(private readonly cluster: Cluster, opts: AwsProviderOptions = {}) {
    const spec = cluster.provider.aws;
    this.client = opts.client ?? new EC2Client({
      ...(spec.region ? { region: spec.region } : {}),
      ...(spec.profile ? { profile: spec.profile } : {}),
      maxAttempts: 5,
    });
    this.pollMs = opts.pollMs ?? 2000;
    this.timeoutMs = opts.timeoutMs ?? 10 * 60_000;
    this.controllerIp = opts.controllerIp ?? detectPublicIp;
    this.waitForSsh = opts.waitForSsh ?? ((host, onStatus, signal) => (host.jump
      ? Promise.resolve() // reached through the jump host: the engine's connect retries cover it
      : waitForTcp({ node: host.name, address: host.address, port: host.port }, { timeoutMs: spec.sshTimeoutSeconds * 1000, onStatus, signal })));
  }

  // ------------------------------------------------------------ names

  get keyName(): string {
    return this.cluster.provider.aws.keyName ?? `rampart-${this.cluster.name}`;
  }

  groupName(node: string): string {
    return `${this.cluster.name}-${node}`;
  }

  private tags(node?: string): Tag[] {
    const tags: Tag[] = [{ Key: 'rampart:cluster', Value: this.cluster.name }];
    if (node) tags.push({ Key: 'rampart:node', Value: node });
    tags.push({ Key: 'managed-by', Value: 'rampart' }, { Key: 'Name', Value: node ? `${this.cluster.name}-${node}` : this.keyName });
    return tags;
  }

  // ------------------------------------------------------------ provider

  /** The plan, plus an `info` item `hourly cost` (shown with the plan; also sent as a progress line). */
  async plan(events?: ProviderEvents): Promise<PlanItem[]> {
    await this.ensureCredentials();
    const existing = await this.readState();
    const { items } = await this.diff(existing);
    const cost = this.costItem();
    events?.progress?.(`hourly cost: ${cost.detail}`);
    return [...items, cost];
  }

  async up(events?: ProviderEvents): Promise<{ hosts: Host[]; changes: PlanItem[] }> {
    const say = (m: string) => events?.progress?.(m);
    await this.ensureCredentials();
    const existing = await this.readState();
    const { actions, items } = await this.diff(existing);
    const changes = items.filter((i) => i.action !== 'ok');
    const publicKey = ensureSshKey(this.cluster.dir).publicKey;

    const needNetwork = actions.createGroups.length > 0 || actions.runInstances.length > 0;
    const [network, amis] = await Promise.all([
      needNetwork ? this.network() : Promise.resolve(undefined),
      actions.runInstances.length ? this.amis(actions.runInstances) : Promise.resolve(new Map<string, string>()),
    ]);

    // Key pair.
    if (actions.replaceKey) {
      say(`key pair ${this.keyName}: re-importing`);
      await this.call('DeleteKeyPair', (c) => c.send(new DeleteKeyPairCommand({ KeyName: this.keyName })));
    }
    if (actions.importKey || actions.replaceKey) {
      say(`key pair ${this.keyName}: importing the project public key`);
      await this.call('ImportKeyPair', (c) => c.send(new ImportKeyPairCommand({
        KeyName: this.keyName,
        PublicKeyMaterial: new TextEncoder().encode(publicKey),
        TagSpecifications: [{ ResourceType: 'key-pair', Tags: this.tags() }],
      })));
    }

    // Security groups: create the missing ones, then fix every rule set.
    const groupIds = new Map(existing.groups.map((g) => [g.node, g.id]));
    await settleAll(actions.createGroups.map(async (node) => {
      say(`security group ${this.groupName(node)}: creating`);
      const out = await this.call('CreateSecurityGroup', (c) => c.send(new CreateSecurityGroupCommand({
        GroupName: this.groupName(node),
        Description: `rampart ${this.cluster.name}: ${node}`,
        VpcId: network!.vpcId,
        TagSpecifications: [{ ResourceType: 'security-group', Tags: this.tags(node) }],
      })));
      if (!out.GroupId) throw new ProviderError(`CreateSecurityGroup returned no GroupId for ${node}`);
      groupIds.set(node, out.GroupId);
    }));
    const resolve = (r: Rule): Rule => {
      if (r.peer.kind !== 'node') return r;
      const id = groupIds.get(r.peer.node);
      if (!id) throw new ProviderError(`no security group for node ${r.peer.node}`);
      return { ...r, peer: { kind: 'group', groupId: id } };
    };
    // Authorize everything before revoking anything, so an in-place change never leaves a gap.
    const changed = actions.rules.map((change) => ({
      node: change.node, GroupId: groupIds.get(change.node)!, auth: change.authorize.map(resolve), revoke: change.revoke.map(resolve),
    }));
    await settleAll(changed.map(async ({ node, GroupId, auth, revoke }) => {
      const perms = (dir: Rule['direction']) => auth.filter((r) => r.direction === dir).map((r) => toPermission(r, true));
      if (auth.length || revoke.length) say(`security group ${this.groupName(node)}: +${auth.length} -${revoke.length} rules`);
      const ingress = perms('ingress');
      if (ingress.length) await this.call('AuthorizeSecurityGroupIngress', (c) => c.send(new AuthorizeSecurityGroupIngressCommand({ GroupId, IpPermissions: ingress })));
      const egress = perms('egress');
      if (egress.length) await this.call('AuthorizeSecurityGroupEgress', (c) => c.send(new AuthorizeSecurityGroupEgressCommand({ GroupId, IpPermissions: egress })));
    }));
    const before = new Map(existing.groups.map((g) => [g.id, [...g.ingress, ...g.egress]]));
    await this.revokeRules(changed.filter((c) => c.revoke.length).map(({ node, GroupId, auth, revoke }) => ({
      id: GroupId, name: this.groupName(node), revoke, stored: [...(before.get(GroupId) ?? defaultEgress()), ...auth],
    })));

    // Instances: repair, start, create, all in parallel.
    const waitIds: string[] = [];
    const byNode = new Map(this.cluster.nodes.map((n) => [n.name, n]));
    await settleAll([
      ...actions.setGroups.map(async ({ node, id }) => {
        say(`instance ${node}: attaching security group ${this.groupName(node)}`);
        await this.call('ModifyInstanceAttribute', (c) => c.send(new ModifyInstanceAttributeCommand({ InstanceId: id, Groups: [groupIds.get(node)!] })));
      }),
      ...actions.startInstances.map(async ({ node, id }) => {
        say(`instance ${node}: starting`);
        await this.waitStates([id], ['stopped', 'running', 'pending']);
        await this.call('StartInstances', (c) => c.send(new StartInstancesCommand({ InstanceIds: [id] })));
        waitIds.push(id);
      }),
      ...actions.runInstances.map(async (name) => {
        const node = byNode.get(name)!;
        say(`instance ${name}: launching ${node.type}`);
        const out = await this.call('RunInstances', (c) => c.send(new RunInstancesCommand(this.runInput(node, network!, amis.get(archOf(node.type))!, groupIds.get(name)!))));
        const id = out.Instances?.[0]?.InstanceId;
        if (!id) throw new ProviderError(`RunInstances returned no instance for ${name}`);
        waitIds.push(id);
      }),
    ]);
    for (const i of existing.instances) if (i.state === 'pending' && !waitIds.includes(i.id)) waitIds.push(i.id);

    // Leftovers of removed nodes.
    if (actions.terminate.length) {
      say(`terminating ${actions.terminate.map((t) => t.node).join(', ')}`);
      await this.call('TerminateInstances', (c) => c.send(new TerminateInstancesCommand({ InstanceIds: actions.terminate.map((t) => t.id) })));
    }

    const doomed = new Set(actions.terminate.map((t) => t.id));
    let instances = existing.instances.filter((i) => LIVE_STATES.includes(i.state) && byNode.has(i.node) && !doomed.has(i.id));
    if (waitIds.length) {
      say(`waiting for ${waitIds.length} instance(s) to run`);
      const running = await this.waitStates(waitIds, ['running']);
      instances = [...instances.filter((i) => !running.has(i.id)), ...running.values()];
    }
    if (actions.terminate.length) await this.waitStates(actions.terminate.map((t) => t.id), ['terminated']);
    if (actions.deleteGroups.length) {
      // Re-read: the rule changes above already revoked some references.
      const now = await this.readGroups();
      await this.deleteGroups(now.filter((g) => actions.deleteGroups.some((d) => d.id === g.id)), now, say);
    }

    const hosts = this.hosts(instances, await this.controllerCidr());
    if (hosts.length !== this.cluster.nodes.length) {
      const have = new Set(hosts.map((h) => h.name));
      throw new ProviderError(`instances not running: ${this.cluster.nodes.filter((n) => !have.has(n.name)).map((n) => n.name).join(', ')}`, 'run apply again; check the EC2 console for their state reason');
    }
    await this.waitForAllSsh(hosts, say);
    return { hosts, changes };
  }

  async describe(): Promise<Host[]> {
    await this.ensureCredentials();
    const instances = (await this.readInstances()).filter((i) => i.state === 'running');
    return this.hosts(instances, await this.controllerCidr());
  }

  async down(events?: ProviderEvents): Promise<PlanItem[]> {
    const say = (m: string) => events?.progress?.(m);
    await this.ensureCredentials();
    const state = await this.readState();
    const items: PlanItem[] = [];
    const live = state.instances.filter((i) => LIVE_STATES.includes(i.state));
    if (live.length) {
      say(`terminating ${live.map((i) => i.node).join(', ')}`);
      await this.call('TerminateInstances', (c) => c.send(new TerminateInstancesCommand({ InstanceIds: live.map((i) => i.id) })));
      for (const i of live) items.push({ action: 'delete', resource: `instance ${i.node}`, detail: i.id });
    }
    const dying = state.instances.filter((i) => i.state !== 'terminated').map((i) => i.id);
    if (dying.length) {
      say(`waiting for ${dying.length} instance(s) to terminate`);
      await this.waitStates(dying, ['terminated']);
    }
    if (state.groups.length) {
      await this.deleteGroups(state.groups, state.groups, say);
      for (const g of state.groups) items.push({ action: 'delete', resource: `security-group ${g.name}`, detail: g.id });
    }
    if (state.keyPair && this.ownsKeyPair) {
      say(`deleting key pair ${this.keyName}`);
      await this.call('DeleteKeyPair', (c) => c.send(new DeleteKeyPairCommand({ KeyName: this.keyName })));
      items.push({ action: 'delete', resource: `key-pair ${this.keyName}` });
    }
    return items;
  }

  // ------------------------------------------------------------ reading

  /** Whether the key pair found carries our managed-by tag (only then teardown deletes it). */
  private ownsKeyPair = false;

  private async readState(): Promise<ExistingState> {
    const [instances, groups, keyPair] = await Promise.all([this.readInstances(), this.readGroups(), this.readKeyPair()]);
    return { instances, groups, keyPair };
  }

  private clusterFilter(): Filter {
    return { Name: 'tag:rampart:cluster', Values: [this.cluster.name] };
  }

  private async readInstances(): Promise<ExistingInstance[]> {
    const found: ExistingInstance[] = [];
    let NextToken: string | undefined;
    do {
      const out = await this.call('DescribeInstances', (c) => c.send(new DescribeInstancesCommand({
        Filters: [this.clusterFilter(), { Name: 'instance-state-name', Values: [...LIVE_STATES, 'shutting-down'] }],
        NextToken,
      })));
      for (const r of out.Reservations ?? []) for (const i of r.Instances ?? []) {
        const inst = toInstance(i);
        if (inst) found.push(inst);
      }
      NextToken = out.NextToken;
    } while (NextToken);
    return found;
  }

  private async readGroups(): Promise<ExistingGroup[]> {
    const found: ExistingGroup[] = [];
    let NextToken: string | undefined;
    do {
      const out = await this.call('DescribeSecurityGroups', (c) => c.send(new DescribeSecurityGroupsCommand({ Filters: [this.clusterFilter()], NextToken })));
      for (const g of out.SecurityGroups ?? []) {
        const group = toGroup(g);
        if (group) found.push(group);
      }
      NextToken = out.NextToken;
    } while (NextToken);
    return found;
  }

  private async readKeyPair(): Promise<ExistingState['keyPair']> {
    const out = await this.call('DescribeKeyPairs', (c) => c.send(new DescribeKeyPairsCommand({
      Filters: [{ Name: 'key-name', Values: [this.keyName] }],
      IncludePublicKey: true,
    })));
    const kp = out.KeyPairs?.find((k) => k.KeyName === this.keyName);
    if (!kp) return undefined;
    this.ownsKeyPair = (kp.Tags ?? []).some((t) => t.Key === 'managed-by' && t.Value === 'rampart');
    return { name: this.keyName, publicKey: kp.PublicKey };
  }

  private async diff(existing: ExistingState) {
    const desired = desiredGroups(this.cluster, await this.controllerCidr());
    const publicKey = ensureSshKey(this.cluster.dir).publicKey;
    const result = computePlan({ cluster: this.cluster, desired, existing, keyName: this.keyName, publicKey, groupName: (n) => this.groupName(n) });
    if (result.actions.replaceKey && !this.ownsKeyPair) {
      throw new ProviderError(
        `key pair ${this.keyName} exists with another public key and was not imported by rampart`,
        'set provider.aws.keyName to a new name, or delete that key pair in the EC2 console',
      );
    }
    return result;
  }

  private costItem(): PlanItem {
    return { action: 'ok', info: true, resource: 'hourly cost', detail: formatCost(this.cluster) };
  }

  /** The default VPC and one of its default subnets, unless cluster.yaml names them. */
  private async network(): Promise<Network> {
    const spec = this.cluster.provider.aws;
    const fixedSubnet = spec.subnetId;
    if (fixedSubnet) {
      const out = await this.call('DescribeSubnets', (c) => c.send(new DescribeSubnetsCommand({ SubnetIds: [fixedSubnet] })));
      const vpcId = out.Subnets?.[0]?.VpcId;
      if (!vpcId) throw new ProviderError(`subnet ${spec.subnetId} not found`, 'check provider.aws.subnetId and the region');
      if (spec.vpcId && spec.vpcId !== vpcId) throw new ProviderError(`subnet ${spec.subnetId} is in ${vpcId}, not in provider.aws.vpcId ${spec.vpcId}`, 'make provider.aws.vpcId and subnetId agree');
      return { vpcId, subnetId: fixedSubnet };
    }
    let vpcId = spec.vpcId;
    if (!vpcId) {
      const out = await this.call('DescribeVpcs', (c) => c.send(new DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] })));
      vpcId = out.Vpcs?.[0]?.VpcId;
      if (!vpcId) throw new ProviderError('this region has no default VPC', 'set provider.aws.vpcId and provider.aws.subnetId (a subnet with a route to an internet gateway)');
    }
    const out = await this.call('DescribeSubnets', (c) => c.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpcId] }] })));
    const subnets = [...(out.Subnets ?? [])].sort((a, b) =>
      Number(b.DefaultForAz ?? false) - Number(a.DefaultForAz ?? false) || (a.AvailabilityZone ?? '').localeCompare(b.AvailabilityZone ?? ''));
    const subnetId = subnets[0]?.SubnetId;
    if (!subnetId) throw new ProviderError(`VPC ${vpcId} has no subnet`, 'set provider.aws.subnetId');
    return { vpcId, subnetId };
  }

  /** AMI per CPU architecture needed by the nodes to create. */
  private async amis(nodes: string[]): Promise<Map<string, string>> {
    const types = this.cluster.nodes.filter((n) => nodes.includes(n.name)).map((n) => n.type);
    const archs = [...new Set(types.map(archOf))];
    const { ami: explicit, ubuntu } = this.cluster.provider.aws;
    if (explicit) return new Map(archs.map((a) => [a, explicit]));
    const found = await Promise.all(archs.map(async (arch) => {
      const out = await this.call('DescribeImages', (c) => c.send(new DescribeImagesCommand({
        Owners: [CANONICAL_OWNER],
        Filters: [
          { Name: 'name', Values: [ubuntuImageName(ubuntu, arch === 'arm64' ? 'arm64' : 'amd64')] },
          { Name: 'state', Values: ['available'] },
          { Name: 'architecture', Values: [arch] },
        ],
      })));
      const newest = [...(out.Images ?? [])].sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? ''))[0];
      if (!newest?.ImageId) {
        throw new ProviderError(`no Ubuntu ${ubuntu} (${UBUNTU[ubuntu].codename}) ${arch} image from Canonical in this region`,
          `set provider.aws.ami to an Ubuntu ${ubuntu} AMI id, or provider.aws.ubuntu to another release (${Object.keys(UBUNTU).join(', ')})`);
      }
      return [arch, newest.ImageId] as const;
    }));
    return new Map(found);
  }

  private runInput(node: NodeSpec, network: Network, imageId: string, groupId: string) {
    return {
      ImageId: imageId,
      InstanceType: node.type as RunInstancesCommand['input']['InstanceType'],
      MinCount: 1,
      MaxCount: 1,
      KeyName: this.keyName,
      NetworkInterfaces: [{
        DeviceIndex: 0,
        SubnetId: network.subnetId,
        Groups: [groupId],
        AssociatePublicIpAddress: hasPublicIp(this.cluster, node),
        DeleteOnTermination: true,
      }],
      // IMDSv2 only: no token-less metadata reads from a compromised service.
      MetadataOptions: { HttpTokens: 'required' as const, HttpEndpoint: 'enabled' as const },
      TagSpecifications: [
        { ResourceType: 'instance' as const, Tags: this.tags(node.name) },
        { ResourceType: 'volume' as const, Tags: this.tags(node.name) },
      ],
      // Idempotent across the SDK's own retries of this one call.
      ClientToken: randomUUID(),
    };
  }

  // ------------------------------------------------------------ hosts

  private hosts(instances: ExistingInstance[], controllerCidr: string): Host[] {
    const jump = jumpNode(this.cluster);
    const jumpInst = jump && instances.find((i) => i.node === jump.name && i.state === 'running');
    const hosts: Host[] = [];
    for (const node of this.cluster.nodes) {
      const inst = instances.find((i) => i.node === node.name && i.state === 'running');
      if (!inst?.privateIp) continue;
      if (!jump || node.name === jump.name) {
        if (!inst.publicIp) throw new ProviderError(`instance ${node.name} (${inst.id}) has no public IP`, 'its subnet must allow public IPs; terminate it and apply again');
        hosts.push({
          name: node.name, address: inst.publicIp, privateAddress: inst.privateIp, port: 22, user: SSH_USER, sshFrom: controllerCidr, node,
          ...(inst.publicDns ? { publicDns: inst.publicDns } : {}),
        });
      } else {
        if (!jumpInst?.publicIp || !jumpInst.privateIp) continue; // unreachable without its jump host
        hosts.push({
          name: node.name, address: inst.privateIp, privateAddress: inst.privateIp, port: 22, user: SSH_USER,
          sshFrom: `${jumpInst.privateIp}/32`, jump: { address: jumpInst.publicIp, port: 22, user: SSH_USER }, node,
        });
      }
    }
    return hosts;
  }

  // ------------------------------------------------------------ helpers

  private controllerCidr(): Promise<string> {
    const fixed = this.cluster.provider.aws.sshCidr;
    if (fixed) return Promise.resolve(fixed);
    this.controllerCidrCache ??= this.controllerIp().then((ip) => {
      if (!/^(\d{1,3}\.){3}\d{1,3}$/.test(ip.trim())) throw new ProviderError(`controller address detection returned '${ip.trim()}'`, 'set provider.aws.sshCidr (e.g. 203.0.113.7/32)');
      return `${ip.trim()}/32`;
    });
    return this.controllerCidrCache;
  }

  /** Fail early and clearly when no region or no credentials can be found (resolves locally, no EC2 call). */
  private async ensureCredentials(): Promise<void> {
    try {
      await this.client.config.region();
    } catch {
      throw new ProviderError('no AWS region', 'set provider.aws.region in cluster.yaml, AWS_REGION, or a region in the AWS profile');
    }
    try {
      const provider = this.client.config.credentials;
      await provider();
    } catch (err) {
      const e = err as { message?: string };
      throw noCredentials(e.message);
    }
  }

  /** Run one EC2 call; failures become ProviderErrors naming the call and the AWS code. */
  private async call<T>(name: string, fn: (client: EC2Client) => Promise<T>): Promise<T> {
    try {
      return await fn(this.client);
    } catch (err) {
      throw awsError(name, err, { ubuntu: this.cluster.provider.aws.ubuntu });
    }
  }

  /** Poll until every instance is in one of `states`; backs off; fails on a dead instance. */
  private async waitStates(ids: string[], states: string[]): Promise<Map<string, ExistingInstance>> {
    const done = new Map<string, ExistingInstance>();
    let pending = [...ids];
    let delay = this.pollMs;
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      if (pending.length) {
        const seen = new Set<string>();
        try {
          const out = await this.call('DescribeInstances', (c) => c.send(new DescribeInstancesCommand({ InstanceIds: pending })));
          for (const r of out.Reservations ?? []) for (const i of r.Instances ?? []) {
            const inst = toInstance(i);
            if (!inst) continue;
            seen.add(inst.id);
            if (states.includes(inst.state)) done.set(inst.id, inst);
            else if (!states.includes('terminated') && (inst.state === 'terminated' || inst.state === 'shutting-down')) {
              throw new ProviderError(`instance ${inst.node} (${inst.id}) is ${inst.state}: ${i.StateReason?.Message ?? 'no reason given'}`, 'check the EC2 console; apply again to recreate it');
            }
          }
        } catch (err) {
          // Just-created instances may not be visible yet (eventual consistency).
          if (!(err instanceof ProviderError && /InvalidInstanceID\.NotFound/.test(err.message))) throw err;
        }
        // A terminated instance may vanish from Describe altogether.
        if (states.includes('terminated')) for (const id of pending) if (!seen.has(id) && !done.has(id)) done.set(id, { id, node: '', state: 'terminated', type: '', groupIds: [] });
        pending = pending.filter((id) => !done.has(id));
      }
      if (!pending.length) return done;
      if (Date.now() > deadline) throw new ProviderError(`timed out waiting for ${pending.join(', ')} to be ${states.join('/')}`, 'check the EC2 console, then run the command again');
      await sleep(delay);
      delay = Math.min(Math.max(delay * 1.5, 1), this.pollMs * 8);
    }
  }

  /**
   * Revoke rules (peers resolved to group ids) from several groups: rule ids from one
   * DescribeSecurityGroupRules call, every answer checked (see providers/aws/permissions.ts).
   * @param changes per group: what to revoke, and every rule the group has (to tell whether the listing is complete)
   */
  private async revokeRules(changes: { id: string; name: string; revoke: Rule[]; stored: Rule[] }[]): Promise<void> {
    if (!changes.length) return;
    const listed = new Map<string, SecurityGroupRule[]>();
    let NextToken: string | undefined;
    do {
      const out = await this.call('DescribeSecurityGroupRules', (c) => c.send(new DescribeSecurityGroupRulesCommand({
        Filters: [{ Name: 'group-id', Values: changes.map((g) => g.id) }], NextToken,
      })));
      for (const r of out.SecurityGroupRules ?? []) if (r.GroupId) listed.set(r.GroupId, [...(listed.get(r.GroupId) ?? []), r]);
      NextToken = out.NextToken;
    } while (NextToken);
    await settleAll(changes.map(async (g) => {
      const calls = planRevoke(g.revoke, g.stored, listed.get(g.id) ?? []);
      const jobs: { direction: Rule['direction']; ids?: string[]; perms?: IpPermission[] }[] = [
        { direction: 'ingress', ids: calls.ingressIds }, { direction: 'ingress', perms: calls.ingress },
        { direction: 'egress', ids: calls.egressIds }, { direction: 'egress', perms: calls.egress },
      ];
      for (const job of jobs) {
        if (!job.ids?.length && !job.perms?.length) continue;
        const input = { GroupId: g.id, ...(job.ids ? { SecurityGroupRuleIds: job.ids } : { IpPermissions: job.perms }) };
        const call = job.direction === 'ingress' ? 'RevokeSecurityGroupIngress' : 'RevokeSecurityGroupEgress';
        const out = await this.call(call, (c) => (job.direction === 'ingress'
          ? c.send(new RevokeSecurityGroupIngressCommand(input))
          : c.send(new RevokeSecurityGroupEgressCommand(input))));
        const left = unrevoked(out, job.direction, job);
        if (left) {
          const what = left.map((r) => (typeof r === 'string' ? `rule ${r}` : `${r.direction} ${describeRule(r)}`)).join(', ');
          throw new ProviderError(
            `AWS ${call} on security group ${g.name} (${g.id}) answered success but did not revoke: ${what}; that rule is still in place`,
            'run `npx zx apply --check` to see the group as AWS has it now and apply again; if it stays, remove the rule in the EC2 console',
          );
        }
      }
    }));
  }

  /** Wait until every host answers SSH; one progress line names each node, its address, the time and the last error. */
  private async waitForAllSsh(hosts: Host[], say: (m: string) => void): Promise<void> {
    const status = new Map(hosts.filter((h) => !h.jump).map((h) => [h.name, `${h.name} ${h.address}:${h.port}`]));
    const show = () => say(`waiting for SSH (${status.size} node(s) reached directly): ${[...status.values()].join('; ')}`);
    show();
    const abort = new AbortController();
    await Promise.all(hosts.map((h) => this.waitForSsh(h, (line) => { status.set(h.name, line); show(); }, abort.signal).catch((err: unknown) => {
      abort.abort();
      throw err;
    })));
  }

  /** Delete groups: first revoke every rule that references one of our groups, then delete (retrying while AWS releases interfaces). */
  private async deleteGroups(toDelete: ExistingGroup[], all: ExistingGroup[], say: (m: string) => void): Promise<void> {
    const doomed = new Set(toDelete.map((g) => g.id));
    const refs = (rules: Rule[]) => rules.filter((r) => r.peer.kind === 'group' && doomed.has(r.peer.groupId));
    await this.revokeRules(all.map((g) => ({ id: g.id, name: g.name, revoke: refs([...g.ingress, ...g.egress]), stored: [...g.ingress, ...g.egress] })).filter((g) => g.revoke.length));
    await settleAll(toDelete.map(async (g) => {
      say(`deleting security group ${g.name}`);
      let delay = this.pollMs;
      const deadline = Date.now() + this.timeoutMs;
      for (;;) {
        try {
          await this.call('DeleteSecurityGroup', (c) => c.send(new DeleteSecurityGroupCommand({ GroupId: g.id })));
          return;
        } catch (err) {
          if (err instanceof ProviderError && /InvalidGroup\.NotFound/.test(err.message)) return;
          if (!(err instanceof ProviderError && /DependencyViolation/.test(err.message)) || Date.now() > deadline) throw err;
          await sleep(delay);
          delay = Math.min(Math.max(delay * 1.5, 1), this.pollMs * 8);
        }
      }
    }));
  }
}

// ------------------------------------------------------------ conversions

function tagValue(tags: Tag[] | undefined, key: string): string | undefined {
  return tags?.find((t) => t.Key === key)?.Value;
}

function toInstance(i: Instance): ExistingInstance | undefined {
  if (!i.InstanceId) return undefined;
  return {
    id: i.InstanceId,
    node: tagValue(i.Tags, 'rampart:node') ?? '',
    state: i.State?.Name ?? 'unknown',
    type: i.InstanceType ?? '',
    imageId: i.ImageId,
    publicIp: i.PublicIpAddress,
    ...(i.PublicDnsName ? { publicDns: i.PublicDnsName } : {}),
    privateIp: i.PrivateIpAddress,
    groupIds: instanceGroups(i),
  };
}

/**
 * The instance's security groups: those of its primary network interface (where a
 * launch with NetworkInterfaces puts them, and where moto shows them only) and
 * Instance.SecurityGroups (which EC2 fills from that same interface).
 */
function instanceGroups(i: Instance): string[] {
  const primary = i.NetworkInterfaces?.find((n) => n.Attachment?.DeviceIndex === 0) ?? (i.NetworkInterfaces?.length === 1 ? i.NetworkInterfaces[0] : undefined);
  const ids = [...(i.SecurityGroups ?? []), ...(primary?.Groups ?? [])].map((g) => g.GroupId ?? '').filter(Boolean);
  return [...new Set(ids)];
}

function toGroup(g: SecurityGroup): ExistingGroup | undefined {
  const node = tagValue(g.Tags, 'rampart:node');
  if (!g.GroupId || !node) return undefined;
  return {
    id: g.GroupId,
    node,
    name: g.GroupName ?? node,
    ingress: fromPermissions('ingress', g.IpPermissions ?? []),
    egress: fromPermissions('egress', g.IpPermissionsEgress ?? []),
  };
}

/** Graviton types (t4g, m7g, c6gn, ...) need arm64 images. */
export function archOf(type: string): 'x86_64' | 'arm64' {
  return /^[a-z]+\d+g[a-z]*\./.test(type) ? 'arm64' : 'x86_64';
}

/** Like Promise.all, but lets every call finish (no launch left running unawaited) before throwing the first error. */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length) throw failed[0].reason;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ------------------------------------------------------------ network probes (not used by tests)

/** The controller's public IPv4 address as AWS sees it. */
export async function detectPublicIp(): Promise<string> {
  try {
    const res = await fetch('https://checkip.amazonaws.com', { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return (await res.text()).trim();
  } catch (err) {
    throw new ProviderError(`could not detect this machine's public address (${(err as Error).message})`, 'set provider.aws.sshCidr in cluster.yaml (e.g. 203.0.113.7/32)');
  }
}
