// Security-group rules generated from cluster.yaml's security section (pure).
//
// Least privilege: one security group per node; a flow between nodes
// references the source node's group (never a CIDR); only `from: internet`
// opens 0.0.0.0/0; SSH comes from the controller's /32 (or, when jumping,
// only from the jump host's group).
import { flowPolicy, RESERVED_PEERS, type FlowPeer } from '../../core/flows.ts';
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
  for (const flow of cluster.security.flows) {
    for (const from of flow.from) {
      if (!(RESERVED_PEERS as readonly string[]).includes(from) && !names.has(from)) {
        throw new ProviderError(`security.flows: unknown node '${from}' in from`, 'use a node name, internet or controller');
      }
    }
  }
  // the flow policy, resolved once (core/flows.ts); a security group only renders it
  const policy = flowPolicy({ nodes: cluster.nodes, flows: cluster.security.flows, egress: cluster.security.egress, ...(jump ? { jump: jump.name } : {}) });
  const peer = (p: FlowPeer): Peer => (p.kind === 'internet' ? { kind: 'cidr', cidr: INTERNET } : p.kind === 'controller' ? { kind: 'cidr', cidr: controllerCidr } : { kind: 'node', node: p.node });

  return cluster.nodes.map((node) => {
    const p = policy.get(node.name)!;
    const ingress: Rule[] = [p.ssh.kind === 'node'
      ? tcp('ingress', 22, peer(p.ssh), `ssh via ${p.ssh.node} (jump host)`)
      : tcp('ingress', 22, { kind: 'cidr', cidr: controllerCidr }, 'ssh from the controller')];
    for (const r of p.ingress) ingress.push(tcp('ingress', r.port, peer(r.peer), r.why));

    let egress: Rule[] | null = null;
    if (p.egress) {
      egress = p.egress.to.map((r) => tcp('egress', r.port, peer(r.peer), r.why));
      // Package mirrors sit behind changing addresses: HTTP(S) anywhere is the
      // narrowest a security group can say. DNS to the VPC resolver needs no
      // rule (security groups do not filter Amazon-provided DNS).
      if (p.egress.mirror) {
        egress.push(tcp('egress', 80, { kind: 'cidr', cidr: INTERNET }, 'apt mirror (http)'));
        egress.push(tcp('egress', 443, { kind: 'cidr', cidr: INTERNET }, 'apt mirror (https)'));
      }
      egress = dedupe(egress);
    }
    return { node: node.name, ingress: dedupe(ingress), egress };
  });
}
