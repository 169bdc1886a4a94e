// Desired vs existing (pure): what up() has to do, and the plan it shows.
//
// The diff works in node space: rules that reference one of the cluster's
// security groups are translated to `{ kind: 'node' }` before comparing, so a
// group that does not exist yet can be planned for, and the executor resolves
// node -> group id only after creating the missing groups.
import type { Cluster, PlanItem } from '../../core/types.ts';
import { HOURLY_USD } from './prices.ts';
import { describeRule, hasPublicIp, INTERNET, ruleKey, type DesiredGroup, type Rule } from './rules.ts';

export interface ExistingInstance {
  id: string;
  /** Value of the rampart:node tag. */
  node: string;
  /** pending | running | stopping | stopped | shutting-down | terminated */
  state: string;
  type: string;
  imageId?: string;
  publicIp?: string;
  /** EC2's public DNS name (ec2-203-0-113-7.compute-1.amazonaws.com), when the VPC gives one. */
  publicDns?: string;
  privateIp?: string;
  groupIds: string[];
}

export interface ExistingGroup {
  id: string;
  node: string;
  name: string;
  /** Rules as AWS reports them; peers are `cidr` or `group` (ids), not yet nodes. */
  ingress: Rule[];
  egress: Rule[];
}

export interface ExistingKeyPair {
  name: string;
  /** OpenSSH public key as AWS stores it (DescribeKeyPairs IncludePublicKey). */
  publicKey?: string;
}

export interface ExistingState {
  instances: ExistingInstance[];
  groups: ExistingGroup[];
  keyPair?: ExistingKeyPair;
}

export interface RuleChange {
  node: string;
  authorize: Rule[];
  revoke: Rule[];
}

export interface Actions {
  importKey: boolean;
  /** The stored key differs from the project's key: delete, then import. */
  replaceKey: boolean;
  createGroups: string[];
  rules: RuleChange[];
  /** Nodes with no live instance: RunInstances. */
  runInstances: string[];
  /** Stopped (or stopping) instances of declared nodes: StartInstances. */
  startInstances: { node: string; id: string }[];
  /** Live instances whose security groups are not exactly their node's group. */
  setGroups: { node: string; id: string }[];
  /** Tagged instances / groups of nodes no longer in cluster.yaml. */
  terminate: { node: string; id: string }[];
  deleteGroups: { node: string; id: string }[];
}

/** States in which an instance counts as existing (terminated ones are recreated). */
export const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'];

/** The rule set a freshly created group has before we touch it. */
export function defaultEgress(): Rule[] {
  return [{ direction: 'egress', protocol: '-1', peer: { kind: 'cidr', cidr: INTERNET } }];
}

/** Rewrite rules that reference one of our groups to node peers. */
export function toNodeSpace(rules: Rule[], groupNodes: ReadonlyMap<string, string>): Rule[] {
  return rules.map((r) => {
    if (r.peer.kind !== 'group') return r;
    const node = groupNodes.get(r.peer.groupId);
    return node ? { ...r, peer: { kind: 'node', node } } : r;
  });
}

/** Authorize what is desired and missing; revoke what exists and is not desired. */
export function diffRules(desired: Rule[], existing: Rule[]): { authorize: Rule[]; revoke: Rule[] } {
  const want = new Set(desired.map(ruleKey));
  const have = new Set(existing.map(ruleKey));
  return {
    authorize: desired.filter((r) => !have.has(ruleKey(r))),
    revoke: existing.filter((r) => !want.has(ruleKey(r))),
  };
}

/** `type publicKey` without the comment: what AWS and OpenSSH both keep. */
export function keyMaterial(openssh: string): string {
  return openssh.trim().split(/\s+/).slice(0, 2).join(' ');
}

export interface PlanInput {
  cluster: Cluster;
  desired: DesiredGroup[];
  existing: ExistingState;
  keyName: string;
  publicKey: string;
  groupName: (node: string) => string;
}

export function computePlan(input: PlanInput): { actions: Actions; items: PlanItem[] } {
  const { cluster, desired, existing, keyName, publicKey, groupName } = input;
  const items: PlanItem[] = [];
  const declared = new Set(cluster.nodes.map((n) => n.name));
  const actions: Actions = {
    importKey: false, replaceKey: false, createGroups: [], rules: [], runInstances: [],
    startInstances: [], setGroups: [], terminate: [], deleteGroups: [],
  };

  // Key pair.
  if (!existing.keyPair) {
    actions.importKey = true;
    items.push({ action: 'create', resource: `key-pair ${keyName}`, detail: 'import the project public key (.rampart/id_ed25519.pub)' });
  } else if (existing.keyPair.publicKey && keyMaterial(existing.keyPair.publicKey) !== keyMaterial(publicKey)) {
    actions.replaceKey = true;
    items.push({ action: 'change', resource: `key-pair ${keyName}`, detail: 'stored key differs from .rampart/id_ed25519.pub: re-import (running instances keep the old key)' });
  } else {
    items.push({ action: 'ok', resource: `key-pair ${keyName}` });
  }

  // Security groups and their rules.
  const groupsByNode = new Map(existing.groups.filter((g) => declared.has(g.node)).map((g) => [g.node, g]));
  const groupNodes = new Map(existing.groups.map((g) => [g.id, g.node]));
  for (const want of desired) {
    const have = groupsByNode.get(want.node);
    const ingress = diffRules(want.ingress, have ? toNodeSpace(have.ingress, groupNodes) : []);
    const egress = want.egress
      ? diffRules(want.egress, have ? toNodeSpace(have.egress, groupNodes) : defaultEgress())
      : { authorize: [], revoke: [] };
    const change: RuleChange = { node: want.node, authorize: [...ingress.authorize, ...egress.authorize], revoke: [...ingress.revoke, ...egress.revoke] };
    const resource = `security-group ${groupName(want.node)}`;
    if (!have) {
      actions.createGroups.push(want.node);
      actions.rules.push(change);
      items.push({ action: 'create', resource, detail: rulesDetail(change) });
    } else if (change.authorize.length || change.revoke.length) {
      actions.rules.push(change);
      items.push({ action: 'change', resource, detail: rulesDetail(change) });
    } else {
      items.push({ action: 'ok', resource, detail: have.id });
    }
  }

  // Instances: one live instance per declared node.
  const live = existing.instances.filter((i) => LIVE_STATES.includes(i.state));
  for (const node of cluster.nodes) {
    const mine = live.filter((i) => i.node === node.name);
    const resource = `instance ${node.name}`;
    const inst = mine.find((i) => i.state === 'running' || i.state === 'pending') ?? mine[0];
    if (!inst) {
      actions.runInstances.push(node.name);
      const price = HOURLY_USD[node.type];
      items.push({ action: 'create', resource, newNode: node.name, detail: `${node.type}, ${hasPublicIp(cluster, node) ? 'public IP' : 'private only'}, ${price === undefined ? 'price unknown' : `$${price}/h`}` });
      continue;
    }
    for (const extra of mine) if (extra !== inst) {
      actions.terminate.push({ node: node.name, id: extra.id });
      items.push({ action: 'delete', resource: `instance ${node.name} ${extra.id}`, detail: 'duplicate instance for this node' });
    }
    const notes: string[] = [];
    const group = groupsByNode.get(node.name);
    if (!group || inst.groupIds.length !== 1 || inst.groupIds[0] !== group.id) {
      actions.setGroups.push({ node: node.name, id: inst.id });
      notes.push(`attach security group ${groupName(node.name)}`);
    }
    if (inst.state === 'stopped' || inst.state === 'stopping') {
      actions.startInstances.push({ node: node.name, id: inst.id });
      notes.push(`start (${inst.state})`);
    }
    if (inst.type !== node.type) {
      // Not applied: a resize needs stop/modify/start, which is a downtime
      // decision for the user; the plan says so.
      notes.push(`type is ${inst.type}, cluster.yaml says ${node.type}: not resized automatically (terminate it and apply again)`);
    }
    items.push({ action: notes.length ? 'change' : 'ok', resource, detail: [inst.id, ...notes].join('; ') });
  }

  // Leftovers of nodes removed from cluster.yaml.
  for (const inst of live) if (!declared.has(inst.node)) {
    actions.terminate.push({ node: inst.node, id: inst.id });
    items.push({ action: 'delete', resource: `instance ${inst.node}`, detail: `${inst.id}: node no longer in cluster.yaml` });
  }
  for (const g of existing.groups) if (!declared.has(g.node)) {
    actions.deleteGroups.push({ node: g.node, id: g.id });
    items.push({ action: 'delete', resource: `security-group ${g.name}`, detail: `${g.id}: node no longer in cluster.yaml` });
  }
  return { actions, items };
}

function rulesDetail(change: RuleChange): string {
  const parts = [
    ...change.authorize.map((r) => `+ ${r.direction} ${describeRule(r)}`),
    ...change.revoke.map((r) => `- ${r.direction} ${describeRule(r)}`),
  ];
  return parts.join('; ');
}
