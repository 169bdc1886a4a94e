// The flow policy, resolved once: who may open TCP connections to whom
// (security.flows), which nodes may only send to their own flows (and the
// package mirror: security.egress), where SSH comes from (the controller, or
// the jump host when SSH goes through one). The spec's SQL-path checks query
// it; the iptables rules (roles/lib/firewall.ts) and the AWS security groups
// (providers/aws/rules.ts) only render it. `internet`, `controller` and the
// jump rule mean the same thing everywhere because they are worked out here.

/** Where a connection comes from (ingress) or goes to (egress). */
export type FlowPeer =
  | { kind: 'internet' }
  | { kind: 'controller' }
  | { kind: 'node'; node: string };

export interface PortRule {
  port: number;
  peer: FlowPeer;
  /** Why the rule exists, e.g. `flow proxy to manager:3306`. */
  why: string;
}

export interface NodePolicy {
  node: string;
  /** SSH (port 22) comes from the controller, or only from the jump host. */
  ssh: FlowPeer;
  /** What may connect to this node, besides SSH. */
  ingress: PortRule[];
  /** null: outbound traffic is not restricted. Else only these (plus replies and loopback). */
  egress: {
    to: PortRule[];
    /** HTTP(S) to the package mirror (and DNS to the node's resolvers) is allowed. */
    mirror: boolean;
  } | null;
}

/** The parts of a cluster the policy depends on (spec passes its raw input, the renderers a Cluster). */
export interface FlowInput {
  nodes: readonly { name: string; public?: boolean }[];
  flows: readonly { from: readonly string[]; to: readonly string[]; port: number }[];
  egress: readonly { node: string; mirror: boolean }[];
  /** The node SSH goes through (AWS with jump: true), if any. */
  jump?: string;
}

/** Flow endpoints that are not nodes. */
export const RESERVED_PEERS = ['internet', 'controller'] as const;

const peerOf = (name: string): FlowPeer => (name === 'internet' ? { kind: 'internet' } : name === 'controller' ? { kind: 'controller' } : { kind: 'node', node: name });

export function flowPolicy(input: FlowInput): Map<string, NodePolicy> {
  const out = new Map<string, NodePolicy>();
  const restricted = new Map(input.egress.map((e) => [e.node, e]));
  for (const { name } of input.nodes) {
    const ingress: PortRule[] = [];
    const to: PortRule[] = [];
    for (const f of input.flows) {
      if (f.to.includes(name)) for (const from of f.from) ingress.push({ port: f.port, peer: peerOf(from), why: `flow ${from} to ${name}:${f.port}` });
      if (f.from.includes(name)) for (const dst of f.to) to.push({ port: f.port, peer: { kind: 'node', node: dst }, why: `flow ${name} to ${dst}:${f.port}` });
    }
    const limit = restricted.get(name);
    if (limit && input.jump === name) {
      // the jump host must still open SSH to the nodes behind it
      for (const other of input.nodes) if (other.name !== name) to.push({ port: 22, peer: { kind: 'node', node: other.name }, why: `ssh jump to ${other.name}` });
    }
    out.set(name, {
      node: name,
      ssh: input.jump && input.jump !== name ? { kind: 'node', node: input.jump } : { kind: 'controller' },
      ingress: dedupe(ingress),
      egress: limit ? { to: dedupe(to), mirror: limit.mirror } : null,
    });
  }
  return out;
}

/** May `src` (a node name) open `dst`:`port`? `internet` lets everyone; src null: does any flow reach it at all. */
export function allows(policy: Map<string, NodePolicy>, src: string | null, dst: string, port: number): boolean {
  return (policy.get(dst)?.ingress ?? []).some((r) =>
    r.port === port && (src === null || r.peer.kind === 'internet' || (r.peer.kind === 'node' && r.peer.node === src)));
}

const key = (r: PortRule) => `${r.port}|${r.peer.kind === 'node' ? `node:${r.peer.node}` : r.peer.kind}`;

function dedupe(rules: PortRule[]): PortRule[] {
  const seen = new Map<string, PortRule>();
  for (const r of rules) if (!seen.has(key(r))) seen.set(key(r), r);
  return [...seen.values()];
}
