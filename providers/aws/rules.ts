// Security-group rules generated from cluster.yaml's security section (pure).
//
// Least privilege: one security group per node; a flow between nodes
// references the source node's group (never a CIDR); only `from: internet`
// opens 0.0.0.0/0; SSH comes from the controller's /32 (or, when jumping,
// only from the jump host's group).
import type { Cluster, NodeSpec } from '../../core/types.ts';
import { ProviderError } from '../../core/errors.ts';

/** Where a rule's traffic comes from (ingress) or goes to (egress). */
export type Peer =
  | { kind: 'node'; node: string }        // that node's security group
  | { kind: 'cidr'; cidr: string }
  | { kind: 'group'; groupId: string };   // a group that is not one of ours

export interface Rule {
  direction: 'ingress' | 'egress';
  /** 'tcp' | 'udp' | '-1' (all) | anything AWS reports. */
  protocol: string;
  fromPort?: number;
  toPort?: number;
  peer: Peer;
  /** Why the rule exists (stored as the rule description; not part of its identity). */
  description?: string;
}

export interface DesiredGroup {
  node: string;
  ingress: Rule[];
  /** null: egress is not managed (the group keeps AWS's default allow-all). */
  egress: Rule[] | null;
}

export const INTERNET = '0.0.0.0/0';

/** Identity of a rule: direction, protocol, port range and peer (description excluded). */
export function ruleKey(r: Rule): string {
  const ports = r.protocol === '-1' ? 'all' : `${r.fromPort ?? ''}-${r.toPort ?? ''}`;
  const peer = r.peer.kind === 'node' ? `node:${r.peer.node}` : r.peer.kind === 'cidr' ? `cidr:${r.peer.cidr}` : `group:${r.peer.groupId}`;
  return `${r.direction}|${r.protocol}|${ports}|${peer}`;
}

/** One-line human form, e.g. `tcp/3306 from sg(proxy)`. */
export function describeRule(r: Rule): string {
  const ports = r.protocol === '-1' ? 'all traffic' : r.fromPort === r.toPort ? `${r.protocol}/${r.fromPort}` : `${r.protocol}/${r.fromPort}-${r.toPort}`;
  const peer = r.peer.kind === 'node' ? `sg(${r.peer.node})` : r.peer.kind === 'cidr' ? r.peer.cidr : r.peer.groupId;
  return `${ports} ${r.direction === 'ingress' ? 'from' : 'to'} ${peer}`;
}

/** The node SSH goes through when `jump` is on (the first public node), else undefined. */
export function jumpNode(cluster: Cluster): NodeSpec | undefined {
  if (!cluster.provider.aws.jump) return undefined;
  const pub = cluster.nodes.find((n) => n.public);
  if (!pub) {
    throw new ProviderError(
      'provider.aws.jump is true but no node has `public: true`',
      'mark the gatekeeper `public: true` in cluster.yaml, or set provider.aws.jump: false (SSH then goes to every node directly)',
    );
  }
  return pub;
}

/**
 * Whether a node gets a public IPv4 address. Every node does: a default VPC has
 * no NAT gateway, so without one a node could not reach the Ubuntu mirror (apt).
 * A public address opens nothing by itself: inbound traffic is what the node's
 * security group allows (with `jump`, SSH only from the gatekeeper's group).
 * A NAT gateway would cost about 10x the per-node public IPv4 charge.
 */
export function hasPublicIp(_cluster: Cluster, _node: NodeSpec): boolean {
  return true;
}

/** Characters AWS accepts in a rule description (anything else fails the whole call). */
export const RULE_DESCRIPTION = /^[a-zA-Z0-9 ._\-:/()#,@[\]+=&;{}!$*]{0,255}$/;

function tcp(direction: Rule['direction'], port: number, peer: Peer, description: string): Rule {
  return { direction, protocol: 'tcp', fromPort: port, toPort: port, peer, description: description.replace(/[^a-zA-Z0-9 ._\-:/()#,@[\]+=&;{}!$*]/g, ' ').slice(0, 255) };
}

function peerOf(source: string, controllerCidr: string): Peer {
  if (source === 'internet') return { kind: 'cidr', cidr: INTERNET };
  if (source === 'controller') return { kind: 'cidr', cidr: controllerCidr };
  return { kind: 'node', node: source };
}

function dedupe(rules: Rule[]): Rule[] {
  const seen = new Map<string, Rule>();
  for (const r of rules) if (!seen.has(ruleKey(r))) seen.set(ruleKey(r), r);
  return [...seen.values()];
}

/**
 * The security group every node should have.
 * @param controllerCidr where the controller's SSH comes from (x.x.x.x/32)
 */
export function desiredGroups(cluster: Cluster, controllerCidr: string): DesiredGroup[] {
  const names = new Set(cluster.nodes.map((n) => n.name));
  const jump = jumpNode(cluster);
  const restricted = new Map(cluster.security.egress.map((e) => [e.node, e]));

  return cluster.nodes.map((node) => {
    const ingress: Rule[] = [];
    // SSH: from the controller, or only from the jump host when jumping.
    if (!jump || jump.name === node.name) ingress.push(tcp('ingress', 22, { kind: 'cidr', cidr: controllerCidr }, 'ssh from the controller'));
    else ingress.push(tcp('ingress', 22, { kind: 'node', node: jump.name }, `ssh via ${jump.name} (jump host)`));

    for (const flow of cluster.security.flows) {
      if (!flow.to.includes(node.name)) continue;
      for (const from of flow.from) {
        if (from !== 'internet' && from !== 'controller' && !names.has(from)) {
          throw new ProviderError(`security.flows: unknown node '${from}' in from`, 'use a node name, internet or controller');
        }
        ingress.push(tcp('ingress', flow.port, peerOf(from, controllerCidr), `flow ${from} to ${node.name}:${flow.port}`));
      }
    }

    let egress: Rule[] | null = null;
    const limit = restricted.get(node.name);
    if (limit) {
      egress = [];
      for (const flow of cluster.security.flows) {
        if (!flow.from.includes(node.name)) continue;
        for (const to of flow.to) egress.push(tcp('egress', flow.port, { kind: 'node', node: to }, `flow ${node.name} to ${to}:${flow.port}`));
      }
      // The jump host must still open SSH to the nodes behind it.
      if (jump && jump.name === node.name) {
        for (const other of cluster.nodes) if (other.name !== node.name) egress.push(tcp('egress', 22, { kind: 'node', node: other.name }, `ssh jump to ${other.name}`));
      }
      // Package mirrors sit behind changing addresses: HTTP(S) anywhere is the
      // narrowest a security group can say. DNS to the VPC resolver needs no
      // rule (security groups do not filter Amazon-provided DNS).
      if (limit.mirror) {
        egress.push(tcp('egress', 80, { kind: 'cidr', cidr: INTERNET }, 'apt mirror (http)'));
        egress.push(tcp('egress', 443, { kind: 'cidr', cidr: INTERNET }, 'apt mirror (https)'));
      }
      egress = dedupe(egress);
    }
    return { node: node.name, ingress: dedupe(ingress), egress };
  });
}
