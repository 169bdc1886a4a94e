// The cluster's own network on the host: a Linux bridge holding the subnet's
// .1, and an nftables table of its own that fences the nodes' egress to
// their subnet and the package mirror (resolved at run time), with NAT out.
// lxc-net/lxcbr0 is NOT used: its NAT lets nodes reach any address.
import { lookup } from 'node:dns/promises';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { ProviderError } from '../../core/errors.ts';
import { run } from './exec.ts';

// ------------------------------------------------------------------ subnet

export interface Subnet {
  cidr: string;      // normalized network, e.g. 10.77.0.0/24
  prefix: number;
  gateway: string;   // .1: the host on the bridge
  /** Node address by index (.10 + index). */
  nodeAddress(index: number): string;
  contains(ip: string): boolean;
}

function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new ProviderError(`not an IPv4 address: ${ip}`);
  }
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr);
  if (!m || Number(m[2]) < 8 || Number(m[2]) > 28) {
    throw new ProviderError(`provider.local.subnet ${cidr} is not an IPv4 CIDR between /8 and /28`, 'use e.g. 10.77.0.0/24');
  }
  const prefix = Number(m[2]);
  const size = 2 ** (32 - prefix);
  const base = ipToInt(m[1]) - (ipToInt(m[1]) % size);
  const last = base + size - 1; // broadcast
  return {
    cidr: `${intToIp(base)}/${prefix}`,
    prefix,
    gateway: intToIp(base + 1),
    nodeAddress(index: number): string {
      const n = base + 10 + index;
      if (n >= last) throw new ProviderError(`subnet ${cidr} has no room for node #${index + 1} (.10 + index)`, 'use a larger subnet or set `address` on the node');
      return intToIp(n);
    },
    contains(ip: string): boolean {
      const n = ipToInt(ip);
      return n > base && n < last;
    },
  };
}

// ------------------------------------------------------------------ mirror

/** All IPv4 addresses of the mirror, sorted (stable for comparisons). */
export async function resolveMirror(mirror: string): Promise<string[]> {
  try {
    const addrs = await lookup(mirror, { all: true, family: 4 });
    const list = [...new Set(addrs.map((a) => a.address))];
    list.sort((a, b) => ipToInt(a) - ipToInt(b));
    if (list.length === 0) throw new Error('no IPv4 address');
    return list;
  } catch (e) {
    throw new ProviderError(`cannot resolve the package mirror ${mirror}: ${(e as Error).message}`,
      'the host must resolve provider.local.mirror (the nodes reach it through the fence, pinned in their /etc/hosts)');
  }
}

// ------------------------------------------------------------------ bridge

export type BridgeState = 'missing' | 'incomplete' | 'ok';

interface IpAddrInfo {
  ifname: string;
  operstate?: string;
  flags?: string[];
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

async function addrs(): Promise<IpAddrInfo[]> {
  const res = await run('ip', ['-j', 'addr', 'show']);
  return JSON.parse(res.stdout) as IpAddrInfo[];
}

export async function bridgeState(bridge: string, subnet: Subnet): Promise<BridgeState> {
  const all = await addrs();
  const me = all.find((i) => i.ifname === bridge);
  for (const i of all) {
    if (i.ifname === bridge) continue;
    for (const a of i.addr_info ?? []) {
      if (a.family === 'inet' && subnet.contains(a.local)) {
        throw new ProviderError(`subnet ${subnet.cidr} is already used by interface ${i.ifname} (${a.local})`,
          'pick another provider.local.subnet in cluster.yaml');
      }
    }
  }
  if (!me) return 'missing';
  const hasAddr = (me.addr_info ?? []).some((a) => a.family === 'inet' && a.local === subnet.gateway && a.prefixlen === subnet.prefix);
  const up = (me.flags ?? []).includes('UP');
  return hasAddr && up ? 'ok' : 'incomplete';
}

export async function ensureBridge(bridge: string, subnet: Subnet): Promise<BridgeState> {
  if (bridge.length > 15) throw new ProviderError(`bridge name ${bridge} is longer than 15 characters`, 'shorten provider.local.bridge');
  const state = await bridgeState(bridge, subnet);
  if (state === 'ok') return state;
  if (state === 'missing') await run('ip', ['link', 'add', 'name', bridge, 'type', 'bridge']);
  await run('ip', ['addr', 'replace', `${subnet.gateway}/${subnet.prefix}`, 'dev', bridge]);
  await run('ip', ['link', 'set', bridge, 'up']);
  return state;
}

export async function bridgeExists(bridge: string): Promise<boolean> {
  const res = await run('ip', ['link', 'show', 'dev', bridge], { check: false });
  return res.code === 0;
}

export async function deleteBridge(bridge: string): Promise<boolean> {
  if (!(await bridgeExists(bridge))) return false;
  await run('ip', ['link', 'delete', bridge, 'type', 'bridge']);
  return true;
}

// ------------------------------------------------------------------ fence

export function fenceTable(clusterName: string): string {
  return `rampart_${clusterName.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/**
 * The fence as an nft script; the digest in its comment tells whether the live table matches.
 * `mirrorAddrs` null = the nodes use the package cache on the controller (their gateway, not
 * forwarded traffic): nothing leaves the subnet, so no mirror rule and no NAT.
 */
export function fenceRuleset(table: string, bridge: string, subnet: Subnet, mirrorAddrs: string[] | null): string {
  const body = [
    ...(mirrorAddrs ? [`  set mirror4 { type ipv4_addr; elements = { ${mirrorAddrs.join(', ')} } }`] : []),
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    '    ct state established,related accept',
    `    iifname "${bridge}" ip daddr ${subnet.cidr} accept`,
    ...(mirrorAddrs ? [`    iifname "${bridge}" ip daddr @mirror4 tcp dport { 80, 443 } accept`] : []),
    `    iifname "${bridge}" counter drop`,
    `    oifname "${bridge}" counter drop`,
    '  }',
    ...(mirrorAddrs ? [
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      `    ip saddr ${subnet.cidr} oifname != "${bridge}" masquerade`,
      '  }',
    ] : []),
  ].join('\n');
  const digest = createHash('sha256').update(body).digest('hex').slice(0, 16);
  return `table inet ${table} {\n  comment "rampart fence ${digest}"\n${body}\n}\n`;
}

export type FenceState = 'missing' | 'differs' | 'ok';

export async function fenceState(table: string, desired: string): Promise<FenceState> {
  const res = await run('nft', ['list', 'table', 'inet', table], { check: false });
  if (res.code !== 0) return 'missing';
  const want = /comment "(rampart fence [0-9a-f]+)"/.exec(desired)?.[1];
  const have = /comment "(rampart fence [0-9a-f]+)"/.exec(res.stdout)?.[1];
  return want && want === have ? 'ok' : 'differs';
}

/** Replace the table atomically (one nft transaction). */
export async function applyFence(table: string, ruleset: string): Promise<void> {
  const script = `table inet ${table}\ndelete table inet ${table}\n${ruleset}`;
  await run('nft', ['-f', '-'], { input: script, hint: 'the kernel needs nf_tables (nft) support' });
}

export async function deleteFence(table: string): Promise<boolean> {
  const res = await run('nft', ['list', 'table', 'inet', table], { check: false });
  if (res.code !== 0) return false;
  await run('nft', ['delete', 'table', 'inet', table]);
  return true;
}

/** Fence tables of other rampart clusters on this host. */
export async function otherFences(table: string): Promise<string[]> {
  const res = await run('nft', ['list', 'tables'], { check: false });
  return res.stdout.split('\n')
    .map((l) => /^table inet (rampart_\S+)/.exec(l.trim())?.[1])
    .filter((t): t is string => !!t && t !== table);
}

// ------------------------------------------------------------------ ip_forward
// Shared by every rampart cluster on the host: the first one that turns it on
// records what it found under /run (gone at reboot, like the setting); the
// last one down restores it.

const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
const HOST_RECORD_DIR = '/run/rampart';
const HOST_RECORD = `${HOST_RECORD_DIR}/ip_forward.found`;

export async function ipForward(): Promise<string> {
  return (await readFile(IP_FORWARD, 'utf8')).trim();
}

/** Turn forwarding on if off; returns the value found. */
export async function enableIpForward(): Promise<string> {
  const found = await ipForward();
  if (found !== '1') {
    await mkdir(HOST_RECORD_DIR, { recursive: true, mode: 0o700 });
    await writeFile(HOST_RECORD, found, { mode: 0o600, flag: 'wx' }).catch(() => undefined);
    await writeFile(IP_FORWARD, '1');
  }
  return found;
}

/**
 * Put ip_forward back to what was found before any rampart cluster turned it
 * on, unless other clusters still need it. Returns the value written, or null.
 */
export async function restoreIpForward(table: string, foundByThisCluster: string | undefined): Promise<string | null> {
  if ((await otherFences(table)).length > 0) return null;
  const hostFound = (await readFile(HOST_RECORD, 'utf8').catch(() => '')).trim();
  const target = hostFound || foundByThisCluster;
  await rm(HOST_RECORD, { force: true });
  if (!target || target === (await ipForward())) return null;
  await writeFile(IP_FORWARD, target);
  return target;
}
