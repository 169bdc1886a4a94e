// A small built-in price table: enough to warn what a cluster costs per hour.
// Source: AWS EC2 on-demand list prices, us-east-1, Linux, shared tenancy, as
// published in 2025 (these rates have not changed since at least 2019). Not
// fetched live: other regions cost somewhat more; check
// https://aws.amazon.com/ec2/pricing/on-demand/ before relying on them.
import { hasPublicIp } from './rules.ts';
import type { Cluster } from '../../core/types.ts';

export const PRICES_AS_OF = '2025 (us-east-1 on-demand Linux list prices)';
export const PRICE_REGION = 'us-east-1';

/** USD per instance-hour. */
export const HOURLY_USD: Readonly<Record<string, number>> = {
  't2.nano': 0.0058,
  't2.micro': 0.0116,
  't2.small': 0.023,
  't2.medium': 0.0464,
  't2.large': 0.0928,
  't2.xlarge': 0.1856,
  't2.2xlarge': 0.3712,
  't3.nano': 0.0052,
  't3.micro': 0.0104,
  't3.small': 0.0208,
  't3.medium': 0.0416,
  't3.large': 0.0832,
  't3.xlarge': 0.1664,
  't3.2xlarge': 0.3328,
  't3a.micro': 0.0094,
  't3a.small': 0.0188,
  't3a.medium': 0.0376,
  't3a.large': 0.0752,
  'm5.large': 0.096,
  'm5.xlarge': 0.192,
  'm5.2xlarge': 0.384,
  'm6i.large': 0.096,
  'm7i.large': 0.1008,
  'c5.large': 0.085,
  'c5.xlarge': 0.17,
  'r5.large': 0.126,
};

/** Every in-use public IPv4 address is billed (since February 2024). */
export const PUBLIC_IPV4_HOURLY_USD = 0.005;

export interface HourlyCost {
  /** Instances + public IPv4 addresses, USD per hour (unknown types count as 0). */
  total: number;
  instances: number;
  publicIpv4: number;
  perNode: { node: string; type: string; usd: number | null }[];
  /** Instance types missing from the table. */
  unknown: string[];
}

/**
 * What the declared instances cost per hour while they run.
 * @param publicIps how many nodes get a public IPv4 address
 */
export function hourlyCost(cluster: Cluster, publicIps = countPublicIps(cluster)): HourlyCost {
  const perNode = cluster.nodes.map((n) => ({ node: n.name, type: n.type, usd: HOURLY_USD[n.type] ?? null }));
  const instances = round4(perNode.reduce((s, n) => s + (n.usd ?? 0), 0));
  const publicIpv4 = round4(publicIps * PUBLIC_IPV4_HOURLY_USD);
  const unknown = [...new Set(perNode.filter((n) => n.usd === null).map((n) => n.type))];
  return { total: round4(instances + publicIpv4), instances, publicIpv4, perNode, unknown };
}

function countPublicIps(cluster: Cluster): number {
  return cluster.nodes.filter((n) => hasPublicIp(cluster, n)).length;
}

/** e.g. `$0.3182/hour (~$229/month): instances $0.3132 + 1 public IPv4 $0.0050; us-east-1 prices of 2025` */
export function formatCost(cluster: Cluster, cost: HourlyCost = hourlyCost(cluster)): string {
  const ips = Math.round(cost.publicIpv4 / PUBLIC_IPV4_HOURLY_USD);
  let s = `$${cost.total.toFixed(4)}/hour (~$${Math.round(cost.total * 730)}/month): ` +
    `${cluster.nodes.length} instances $${cost.instances.toFixed(4)} + ${ips} public IPv4 $${cost.publicIpv4.toFixed(4)}; ` +
    `prices: ${PRICES_AS_OF}`;
  const region = cluster.provider.aws.region;
  if (region && region !== PRICE_REGION) s += `; ${region} is usually a little dearer`;
  if (cost.unknown.length) s += `; no price for ${cost.unknown.join(', ')} (not counted)`;
  return s + '; EBS volumes and traffic extra';
}

function round4(n: number): number {
  return Math.round(n * 10000) / 10000;
}
