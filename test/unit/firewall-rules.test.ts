// The firewall as generated from the repo's cluster.yaml: exact rules per
// node, and the comparison with live iptables-save output.
import { describe, expect, test } from 'bun:test';
import type { Cluster, Host } from '../../core/types.ts';
import {
  FIREWALL_UNIT_TEXT, firewallRules, firewallRules6, normaliseRuleset, parseMirrorFact, rulesetDelta, sameRuleset,
} from '../../roles/lib/firewall.ts';

import { cluster, host, hosts, ip } from '../support/hosts.ts';
const mirror = { addresses: ['151.101.2.132', '151.101.66.132'], resolvers: [] };
const rulesOf = (name: string) => firewallRules(cluster, host(name), hosts, mirror).split('\n');

// policies stay ACCEPT: "default DROP" is a final -j DROP rule, so a flush cannot lock the controller out
const HEAD = () => [
  '*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]',
  '-A INPUT -s 10.77.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT',
  '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
  '-A INPUT -i lo -j ACCEPT',
];

describe('ruleset per node (repo cluster.yaml)', () => {
  test('gatekeeper: 443 from anywhere, nothing else; OUTPUT open', () => {
    expect(rulesOf('gatekeeper')).toEqual([...HEAD(), '-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT', '-A INPUT -j DROP', '-A FORWARD -j DROP', 'COMMIT', '']);
  });

  test('trustedhost: 5000 from the gatekeeper only; OUTPUT only to proxy:5000 and the mirror', () => {
    expect(rulesOf('trustedhost')).toEqual([
      ...HEAD(),
      `-A INPUT -s ${ip.gatekeeper}/32 -p tcp -m tcp --dport 5000 -j ACCEPT`,
      '-A INPUT -j DROP',
      '-A FORWARD -j DROP',
      '-A OUTPUT -d 10.77.0.1/32 -p tcp -m tcp --sport 22 -j ACCEPT',
      '-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-A OUTPUT -o lo -j ACCEPT',
      `-A OUTPUT -d ${ip.proxy}/32 -p tcp -m tcp --dport 5000 -j ACCEPT`,
      '-A OUTPUT -d 151.101.2.132/32 -p tcp -m tcp --dport 80 -j ACCEPT',
      '-A OUTPUT -d 151.101.2.132/32 -p tcp -m tcp --dport 443 -j ACCEPT',
      '-A OUTPUT -d 151.101.66.132/32 -p tcp -m tcp --dport 80 -j ACCEPT',
      '-A OUTPUT -d 151.101.66.132/32 -p tcp -m tcp --dport 443 -j ACCEPT',
      '-A OUTPUT -j DROP',
      'COMMIT', '',
    ]);
  });

  test('proxy: 5000 from the trusted host only', () => {
    expect(rulesOf('proxy')).toEqual([...HEAD(), `-A INPUT -s ${ip.trustedhost}/32 -p tcp -m tcp --dport 5000 -j ACCEPT`, '-A INPUT -j DROP', '-A FORWARD -j DROP', 'COMMIT', '']);
  });

  test('manager: 3306 only from the proxy and the workers', () => {
    expect(rulesOf('manager')).toEqual([
      ...HEAD(),
      `-A INPUT -s ${ip.proxy}/32 -p tcp -m tcp --dport 3306 -j ACCEPT`,
      `-A INPUT -s ${ip.worker1}/32 -p tcp -m tcp --dport 3306 -j ACCEPT`,
      `-A INPUT -s ${ip.worker2}/32 -p tcp -m tcp --dport 3306 -j ACCEPT`,
      '-A INPUT -j DROP',
      '-A FORWARD -j DROP',
      'COMMIT', '',
    ]);
  });

  test('workers: 3306 only from the proxy', () => {
    for (const w of ['worker1', 'worker2']) {
      expect(rulesOf(w)).toEqual([...HEAD(), `-A INPUT -s ${ip.proxy}/32 -p tcp -m tcp --dport 3306 -j ACCEPT`, '-A INPUT -j DROP', '-A FORWARD -j DROP', 'COMMIT', '']);
    }
  });

  test('SSH from the controller and established traffic are the first rules on every node', () => {
    for (const h of hosts) expect(rulesOf(h.name).slice(4, 6)).toEqual(HEAD().slice(4, 6));
  });

  test('egress with resolvers: DNS to them only; controller flows use sshFrom', () => {
    const c: Cluster = {
      ...cluster,
      security: {
        flows: [...cluster.security.flows, { from: ['controller'], to: ['proxy'], port: 5000 }],
        egress: [{ node: 'proxy', mirror: true }],
      },
    };
    const rules = firewallRules(c, host('proxy'), hosts, { addresses: ['192.0.2.7'], resolvers: ['192.0.2.53'] });
    expect(rules).toContain('-A INPUT -s 10.77.0.1/32 -p tcp -m tcp --dport 5000 -j ACCEPT');
    expect(rules).toContain(`-A OUTPUT -d ${ip.manager}/32 -p tcp -m tcp --dport 3306 -j ACCEPT`);
    expect(rules).toContain('-A OUTPUT -d 192.0.2.53/32 -p udp -m udp --dport 53 -j ACCEPT');
    expect(rules).toContain('-A OUTPUT -d 192.0.2.53/32 -p tcp -m tcp --dport 53 -j ACCEPT');
    expect(rules).toContain('-A OUTPUT -d 192.0.2.7/32 -p tcp -m tcp --dport 443 -j ACCEPT');
    expect(rules.trimEnd().split('\n').at(-2)).toBe('-A OUTPUT -j DROP');
  });

  test('egress without mirror opens no mirror or DNS rule even when addresses are known', () => {
    const c: Cluster = { ...cluster, security: { ...cluster.security, egress: [{ node: 'trustedhost', mirror: false }] } };
    const rules = firewallRules(c, host('trustedhost'), hosts, { addresses: ['192.0.2.7'], resolvers: ['192.0.2.53'] });
    expect(rules).not.toContain('192.0.2.');
    expect(rules).toContain(`-A OUTPUT -d ${ip.proxy}/32 -p tcp -m tcp --dport 5000 -j ACCEPT`);
  });

  test('an egress-restricted jump host may still open SSH to the nodes reached through it', () => {
    const jumped: Host[] = hosts.map((h) => (h.name === 'gatekeeper'
      ? { ...h, address: '198.51.100.7' }
      : { ...h, sshFrom: `${ip.gatekeeper}/32`, jump: { address: '198.51.100.7', port: 22, user: 'ubuntu' } }));
    const c: Cluster = { ...cluster, security: { ...cluster.security, egress: [{ node: 'gatekeeper', mirror: false }] } };
    const rules = firewallRules(c, jumped.find((h) => h.name === 'gatekeeper')!, jumped).split('\n');
    for (const n of ['trustedhost', 'proxy', 'manager', 'worker1', 'worker2']) {
      expect(rules).toContain(`-A OUTPUT -d ${ip[n]}/32 -p tcp -m tcp --dport 22 -j ACCEPT`);
    }
    expect(rules).toContain(`-A OUTPUT -d ${ip.trustedhost}/32 -p tcp -m tcp --dport 5000 -j ACCEPT`);
    // and the nodes behind it accept SSH from the bastion only
    expect(firewallRules(c, jumped.find((h) => h.name === 'proxy')!, jumped)).toContain(`-A INPUT -s ${ip.gatekeeper}/32 -p tcp -m tcp --dport 22 -j ACCEPT`);
  });

  test('IPv6: closed but for ICMPv6, loopback and replies; OUTPUT restricted on egress nodes', () => {
    expect(firewallRules6(cluster, host('manager')).split('\n')).toEqual([
      '*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]',
      '-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-A INPUT -i lo -j ACCEPT', '-A INPUT -p ipv6-icmp -j ACCEPT',
      '-A INPUT -j DROP', '-A FORWARD -j DROP',
      'COMMIT', '',
    ]);
    const th = firewallRules6(cluster, host('trustedhost'));
    expect(th).toContain('-A OUTPUT -p ipv6-icmp -j ACCEPT');
    expect(th.split('\n').filter((l) => l.startsWith('-A OUTPUT'))).toHaveLength(4);
    expect(th).toContain('-A OUTPUT -j DROP');
  });

  test('the boot unit restores both families before the network comes up', () => {
    expect(FIREWALL_UNIT_TEXT).toContain('ExecStart=/usr/sbin/iptables-restore /etc/iptables/rules.v4\n');
    expect(FIREWALL_UNIT_TEXT).toContain('ExecStart=/usr/sbin/ip6tables-restore /etc/iptables/rules.v6\n');
    expect(FIREWALL_UNIT_TEXT).toContain('Before=network-pre.target');
    expect(FIREWALL_UNIT_TEXT).toContain('DefaultDependencies=no');
  });

  test('an unknown node in a flow is an error', () => {
    const c: Cluster = { ...cluster, security: { flows: [{ from: ['ghost'], to: ['proxy'], port: 1 }], egress: [] } };
    expect(() => firewallRules(c, host('proxy'), hosts)).toThrow(/ghost/);
  });
});

// What iptables-save 1.8.9 (nf_tables backend, Debian 12 node) printed for the manager's ruleset after iptables-restore.
const LIVE_MANAGER = `# Generated by iptables-save v1.8.9 (nf_tables) on Sat Nov 21 12:40:16 2026
*filter
:INPUT ACCEPT [12:720]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [310:40210]
-A INPUT -s 10.77.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -s 10.77.0.12/32 -p tcp -m tcp --dport 3306 -j ACCEPT
-A INPUT -s 10.77.0.14/32 -p tcp -m tcp --dport 3306 -j ACCEPT
-A INPUT -s 10.77.0.15/32 -p tcp -m tcp --dport 3306 -j ACCEPT
-A INPUT -j DROP
-A FORWARD -j DROP
COMMIT
# Completed on Sat Nov 21 13:02:11 2026
`;

describe('comparison with the live ruleset', () => {
  const want = firewallRules(cluster, host('manager'), hosts);

  test('a live iptables-save of the same ruleset compares equal (comments, counters ignored)', () => {
    expect(sameRuleset(want, LIVE_MANAGER)).toBe(true);
  });

  test('other tables and hand-written spellings do not matter', () => {
    const alt = LIVE_MANAGER
      .replace('-s 10.77.0.12/32 -p tcp -m tcp --dport 3306', '-s 10.77.0.12 -p tcp --dport 3306')
      .replace('--ctstate RELATED,ESTABLISHED', '--ctstate ESTABLISHED,RELATED')
      + '*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n';
    expect(sameRuleset(want, alt)).toBe(true);
  });

  test('a flushed table differs: missing rules are counted', () => {
    const flushed = LIVE_MANAGER.split('\n').filter((l) => !l.startsWith('-A')).join('\n');
    expect(sameRuleset(want, flushed)).toBe(false);
    expect(rulesetDelta(want, flushed)).toEqual({ missing: 8, extra: 0, policies: [] });
  });

  test('an extra rule, a changed policy, or a reordering differs', () => {
    const extra = LIVE_MANAGER.replace('-A INPUT -j DROP', '-A INPUT -p tcp -m tcp --dport 5000 -j ACCEPT\n-A INPUT -j DROP');
    expect(sameRuleset(want, extra)).toBe(false);
    expect(rulesetDelta(want, extra).extra).toBe(1);
    const closed = LIVE_MANAGER.replace(':INPUT ACCEPT', ':INPUT DROP');
    expect(sameRuleset(want, closed)).toBe(false);
    expect(rulesetDelta(want, closed).policies).toEqual(['INPUT ACCEPT']);
    const lines = LIVE_MANAGER.split('\n');
    [lines[5], lines[6]] = [lines[6], lines[5]];
    expect(sameRuleset(want, lines.join('\n'))).toBe(false);
  });

  test('no filter table at all (fresh nf_tables node) reads as everything open', () => {
    expect(normaliseRuleset('')).toBe(':FORWARD ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT');
    expect(sameRuleset(want, '')).toBe(false);
  });
});

describe('mirror fact', () => {
  test('parses addresses and resolvers, ignores junk and IPv6', () => {
    const f = parseMirrorFact('addr 151.101.66.132\naddr 151.101.2.132\naddr 2a04:4e42::644\ndns 10.0.0.2\nwarning: foo\naddr 151.101.2.132\n');
    expect(f).toEqual({ addresses: ['151.101.2.132', '151.101.66.132'], resolvers: ['10.0.0.2'] });
  });

  test('a source with its own port (the package cache on the gateway) is admitted on that port only', () => {
    const f = parseMirrorFact('addr 10.77.0.1 3142\naddr 10.77.0.1 3142\naddr 10.77.0.1 99999x\n');
    expect(f).toEqual({ addresses: [], resolvers: [], endpoints: [{ address: '10.77.0.1', port: 3142 }] });
    const out = firewallRules(cluster, host('trustedhost'), hosts, f).split('\n').filter((l) => l.startsWith('-A OUTPUT'));
    expect(out).toContain('-A OUTPUT -d 10.77.0.1/32 -p tcp -m tcp --dport 3142 -j ACCEPT');
    expect(out.filter((l) => / --dport (80|443) /.test(l))).toEqual([]);
    expect(out.at(-1)).toBe('-A OUTPUT -j DROP');
  });
});
