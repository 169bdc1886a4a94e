// The per-node firewall, as a pure function of cluster.yaml's security section
// and the hosts: an iptables-restore text for the filter table, plus the
// normalisation that lets it be compared with what `iptables-save` prints
// (legacy or nf_tables backend, counters, comments, implicit matches).
import { flowPolicy, type FlowPeer, type NodePolicy } from '../../core/flows.ts';
import type { Cluster, Host } from '../../core/types.ts';

/** Addresses apt needs on an egress-restricted node with `mirror: true` (resolved on the node). */
export interface MirrorAccess {
  /** IPv4 addresses of the hosts named in the node's apt sources. */
  addresses: string[];
  /** IPv4 DNS resolvers the node uses (not loopback); empty when names are pinned in /etc/hosts. */
  resolvers: string[];
  /** Sources with an explicit port (the package cache: http://<gateway>:3142/...): that port only. */
  endpoints?: { address: string; port: number }[];
}

export const RULES_PATH = '/etc/iptables/rules.v4';
export const RULES6_PATH = '/etc/iptables/rules.v6';
export const FIREWALL_UNIT = 'rampart-firewall.service';
export const FIREWALL_UNIT_PATH = `/etc/systemd/system/${FIREWALL_UNIT}`;

const ESTABLISHED = '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT';
const tcp = (port: number) => `-p tcp -m tcp --dport ${port}`;
const cidr = (address: string) => (address.includes('/') ? address : `${address}/32`);

/** The cluster's flow policy as these hosts see it (the jump host: the one others SSH through). */
export function policyOf(cluster: Cluster, hosts: Host[]): Map<string, NodePolicy> {
  const jump = hosts.find((h) => hosts.some((o) => o.jump?.address === h.address && o.name !== h.name))?.name;
  return flowPolicy({ nodes: cluster.nodes, flows: cluster.security.flows, egress: cluster.security.egress, ...(jump ? { jump } : {}) });
}

/** Does the node's OUTPUT get restricted (security.egress)? */
export function egressOf(cluster: Cluster, host: Pick<Host, 'name'>): { mirror: boolean } | null {
  const e = cluster.security.egress.find((x) => x.node === host.name);
  return e ? { mirror: e.mirror } : null;
}

/** A peer as an address this node's rules can match (null = anyone). */
function address(peer: FlowPeer, self: Host, hosts: Host[]): { cidr: string | null } {
  if (peer.kind === 'internet') return { cidr: null };
  if (peer.kind === 'controller') return { cidr: cidr(self.sshFrom) };
  const h = hosts.find((x) => x.name === peer.node);
  if (!h) throw new Error(`security flow names unknown node ${peer.node}`);
  return { cidr: cidr(h.privateAddress) };
}

/**
 * The node's ruleset in iptables-save's own canonical spelling, rendered from
 * the flow policy (core/flows.ts). SSH from the controller and established
 * traffic come first so a reload can never cut the connection that performs it.
 *
 * "Default DROP" is a final `-j DROP` rule, not the chain policy: a flush
 * (`iptables -F`) then opens the node instead of locking the controller out,
 * and the next apply (which still reaches it) closes it again.
 */
export function firewallRules(cluster: Cluster, host: Host, hosts: Host[], mirror: MirrorAccess = { addresses: [], resolvers: [] }): string {
  const policy = policyOf(cluster, hosts).get(host.name);
  if (!policy) throw new Error(`no node named ${host.name} in cluster.yaml`);
  // SSH: the controller's address as this node sees it (the jump host's on AWS)
  const input: string[] = [
    `-A INPUT -s ${cidr(host.sshFrom)} ${tcp(22)} -j ACCEPT`,
    `-A INPUT ${ESTABLISHED}`,
    '-A INPUT -i lo -j ACCEPT',
  ];
  for (const r of policy.ingress) {
    const src = address(r.peer, host, hosts).cidr;
    input.push(`-A INPUT${src ? ` -s ${src}` : ''} ${tcp(r.port)} -j ACCEPT`);
  }
  const output: string[] = [];
  const egress = policy.egress;
  if (egress) {
    // the SSH server's replies to the controller by port, not only by conntrack: on a node's
    // first load the live session is not tracked yet, and its replies would be dropped as NEW
    // (TCP then backs off for seconds); this also keeps --check/apply working after a conntrack flush
    output.push(`-A OUTPUT -d ${cidr(host.sshFrom)} -p tcp -m tcp --sport 22 -j ACCEPT`, `-A OUTPUT ${ESTABLISHED}`, '-A OUTPUT -o lo -j ACCEPT');
    for (const r of egress.to) {
      output.push(`-A OUTPUT -d ${address(r.peer, host, hosts).cidr} ${tcp(r.port)} -j ACCEPT`);
    }
    if (egress.mirror) {
      for (const r of uniqSorted(mirror.resolvers)) {
        output.push(`-A OUTPUT -d ${cidr(r)} -p udp -m udp --dport 53 -j ACCEPT`, `-A OUTPUT -d ${cidr(r)} ${tcp(53)} -j ACCEPT`);
      }
      for (const a of uniqSorted(mirror.addresses)) {
        output.push(`-A OUTPUT -d ${cidr(a)} ${tcp(80)} -j ACCEPT`, `-A OUTPUT -d ${cidr(a)} ${tcp(443)} -j ACCEPT`);
      }
      for (const e of mirror.endpoints ?? []) output.push(`-A OUTPUT -d ${cidr(e.address)} ${tcp(e.port)} -j ACCEPT`);
    }
  }
  return [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ...dedupe(input),
    '-A INPUT -j DROP',
    '-A FORWARD -j DROP',
    ...dedupe(output),
    ...(egress ? ['-A OUTPUT -j DROP'] : []),
    'COMMIT',
    '',
  ].join('\n');
}

/**
 * IPv6: the flows are IPv4 (private addresses), so nothing is let in but
 * ICMPv6 (neighbour discovery) and replies. Without it a node's sshd on [::]
 * would be reachable over link-local addresses past the IPv4 rules.
 */
export function firewallRules6(cluster: Cluster, host: Pick<Host, 'name'>): string {
  const egress = egressOf(cluster, host);
  return [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    `-A INPUT ${ESTABLISHED}`,
    '-A INPUT -i lo -j ACCEPT',
    '-A INPUT -p ipv6-icmp -j ACCEPT',
    '-A INPUT -j DROP',
    '-A FORWARD -j DROP',
    ...(egress ? [`-A OUTPUT ${ESTABLISHED}`, '-A OUTPUT -o lo -j ACCEPT', '-A OUTPUT -p ipv6-icmp -j ACCEPT', '-A OUTPUT -j DROP'] : []),
    'COMMIT',
    '',
  ].join('\n');
}

const dedupe = (lines: string[]) => [...new Set(lines)];
const uniqSorted = (xs: string[]) => [...new Set(xs.map((x) => x.trim()).filter(Boolean))].sort();

/** Canonical spelling of one rule line (whatever tool or backend wrote it). */
function normaliseRule(line: string): string {
  const t = line.trim().split(/\s+/);
  const out: string[] = [];
  for (let i = 0; i < t.length; i++) {
    const tok = t[i];
    // `-p tcp` implies `-m tcp` (iptables-save adds it, hand-written rules may not)
    if (tok === '-m' && (t[i + 1] === 'tcp' || t[i + 1] === 'udp') && out.at(-2) === '-p' && out.at(-1) === t[i + 1]) {
      i++;
      continue;
    }
    if ((tok === '-s' || tok === '-d' || tok === '--source' || tok === '--destination') && t[i + 1]) {
      out.push(tok.length > 2 ? (tok === '--source' ? '-s' : '-d') : tok, cidr(t[++i]));
      continue;
    }
    if ((tok === '--ctstate' || tok === '--state') && t[i + 1]) {
      out.push('--ctstate', t[++i].split(',').sort().join(','));
      continue;
    }
    if (tok === '-m' && t[i + 1] === 'state') {
      out.push('-m', 'conntrack');
      i++;
      continue;
    }
    out.push(tok);
  }
  return out.join(' ');
}

/**
 * The filter table of an iptables-save (or iptables-restore input) text, in a
 * form where equal rulesets compare equal: no comments, counters or other
 * tables; built-in chain policies and rules in order.
 */
export function normaliseRuleset(text: string): string {
  const lines: string[] = [];
  let inFilter = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      inFilter = line === '*filter';
      continue;
    }
    if (!inFilter) continue;
    if (line === 'COMMIT') {
      inFilter = false;
      continue;
    }
    if (line.startsWith(':')) {
      const [chain, policy] = line.slice(1).split(/\s+/);
      lines.push(`:${chain} ${policy}`);
      continue;
    }
    lines.push(normaliseRule(line));
  }
  // policies first in a fixed order, then rules in their order
  const chains = lines.filter((l) => l.startsWith(':')).sort();
  const rules = lines.filter((l) => !l.startsWith(':'));
  // an absent filter table (fresh nf_tables node) is the same as "all ACCEPT, no rules"
  if (chains.length === 0 && rules.length === 0) return ':FORWARD ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT';
  return [...chains, ...rules].join('\n');
}

export function sameRuleset(a: string, b: string): boolean {
  return normaliseRuleset(a) === normaliseRuleset(b);
}

/** Rules in `want` missing from `have` and extra ones, for a one-line message. */
export function rulesetDelta(want: string, have: string): { missing: number; extra: number; policies: string[] } {
  const w = normaliseRuleset(want).split('\n');
  const h = normaliseRuleset(have).split('\n');
  const hs = new Set(h);
  const ws = new Set(w);
  return {
    missing: w.filter((l) => !l.startsWith(':') && !hs.has(l)).length,
    extra: h.filter((l) => !l.startsWith(':') && !ws.has(l)).length,
    policies: w.filter((l) => l.startsWith(':') && !hs.has(l)).map((l) => l.slice(1)),
  };
}

// ------------------------------------------------------------ facts (shell, read only)

/** The live filter table (iptables-save of either backend; empty when none). */
export const LIVE_RULES_FACT = 'iptables-save -t filter 2>/dev/null || iptables-save 2>/dev/null';
export const LIVE_RULES6_FACT = 'ip6tables-save -t filter 2>/dev/null || ip6tables-save 2>/dev/null';

/**
 * Prints `addr <ip>` (`addr <ip> <port>` for a source with its own port) for every IPv4 address of the hosts in the node's apt
 * sources (one-line and deb822 formats) and `dns <ip>` for each non-loopback
 * IPv4 resolver (resolv.conf and systemd-resolved's upstream list).
 */
export const MIRROR_FACT = [
  `hosts=$( { grep -hE '^[[:space:]]*deb(-src)?[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; grep -hiE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null; } | grep -oE 'https?://[^/[:space:]]+' | sed -E 's#^https?://##; s#^[^@]*@##' | sort -u )`,
  // host[:port]: a source with its own port (the package cache) gets that port only, the others 80/443
  `for h in $hosts; do p=\${h##*:}; [ "$p" = "$h" ] && p=; getent ahostsv4 "\${h%:*}" | awk -v p="$p" '{print "addr " $1 (p == "" ? "" : " " p)}'; done | sort -u`,
  `cat /etc/resolv.conf /run/systemd/resolve/resolv.conf 2>/dev/null | awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ && $2 !~ /^127\\./ {print "dns " $2}' | sort -u`,
].join('\n');

export function parseMirrorFact(stdout: string): MirrorAccess {
  const addresses: string[] = [];
  const resolvers: string[] = [];
  const endpoints = new Map<string, { address: string; port: number }>();
  for (const line of stdout.split('\n')) {
    const [kind, ip, port] = line.trim().split(/\s+/);
    if (!ip || !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) continue;
    if (kind === 'addr' && port) {
      if (/^\d{1,5}$/.test(port) && Number(port) > 0 && Number(port) < 65536) endpoints.set(`${ip}:${port}`, { address: ip, port: Number(port) });
    } else if (kind === 'addr') addresses.push(ip);
    if (kind === 'dns') resolvers.push(ip);
  }
  const out: MirrorAccess = { addresses: uniqSorted(addresses), resolvers: uniqSorted(resolvers) };
  if (endpoints.size) out.endpoints = [...endpoints.keys()].sort().map((k) => endpoints.get(k)!);
  return out;
}

/** The oneshot unit that loads rules.v4 before any network interface comes up. */
export const FIREWALL_UNIT_TEXT = `# managed by rampart
[Unit]
Description=rampart firewall (iptables-restore ${RULES_PATH}, ip6tables-restore ${RULES6_PATH})
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/iptables-restore ${RULES_PATH}
ExecStart=/usr/sbin/ip6tables-restore ${RULES6_PATH}

[Install]
WantedBy=multi-user.target
`;
