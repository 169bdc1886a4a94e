// EC2's shapes of a rule <-> the flat Rule form (pure), and how to revoke a
// rule exactly.
//
// Revokes go by rule id (SecurityGroupRuleIds, from DescribeSecurityGroupRules):
// exact on EC2, where every peer is its own rule with its own id. A revoke by
// IpPermissions is not: EC2 answers one that matches nothing with success plus
// UnknownIpPermissions. One server does not list every peer: moto merges the
// group references of one protocol/port range into one rule (one id) and lists
// only its first peer, so revoking that id would drop the other peers too.
// Where the listing has fewer rules for a protocol/port range than
// DescribeSecurityGroups reported, those rules are revoked by IpPermissions
// carrying the stored description (moto matches on it; on EC2 the listing is
// complete, so this path is not taken there, and the API accepts descriptions
// in a revoke should it be). Every answer is checked either way (unrevoked()).
import type { IpPermission, SecurityGroupRule } from '@aws-sdk/client-ec2';
import { ProviderError } from '../../core/errors.ts';
import { ruleKey, type Rule } from './rules.ts';

/** Flatten AWS permissions (grouped by protocol/ports) into one rule per peer. */
export function fromPermissions(direction: Rule['direction'], perms: IpPermission[]): Rule[] {
  const rules: Rule[] = [];
  for (const p of perms) {
    const protocol = p.IpProtocol ?? '-1';
    const ports = protocol === '-1' ? {} : { fromPort: p.FromPort, toPort: p.ToPort };
    const add = (peer: Rule['peer'], description?: string) => rules.push({ direction, protocol, ...ports, peer, description });
    for (const r of p.IpRanges ?? []) if (r.CidrIp) add({ kind: 'cidr', cidr: r.CidrIp }, r.Description);
    for (const r of p.Ipv6Ranges ?? []) if (r.CidrIpv6) add({ kind: 'cidr', cidr: r.CidrIpv6 }, r.Description);
    for (const r of p.PrefixListIds ?? []) if (r.PrefixListId) add({ kind: 'cidr', cidr: r.PrefixListId }, r.Description);
    for (const r of p.UserIdGroupPairs ?? []) if (r.GroupId) add({ kind: 'group', groupId: r.GroupId }, r.Description);
  }
  return rules;
}

/** One rule as an AWS permission (peers must be resolved to group ids first). */
export function toPermission(r: Rule, withDescription: boolean): IpPermission {
  const Description = withDescription ? r.description : undefined;
  const perm: IpPermission = { IpProtocol: r.protocol };
  if (r.protocol !== '-1') {
    perm.FromPort = r.fromPort;
    perm.ToPort = r.toPort;
  }
  if (r.peer.kind === 'node') throw new ProviderError(`unresolved security group of node ${r.peer.node}`);
  if (r.peer.kind === 'group') perm.UserIdGroupPairs = [{ GroupId: r.peer.groupId, ...(Description ? { Description } : {}) }];
  else if (r.peer.cidr.startsWith('pl-')) perm.PrefixListIds = [{ PrefixListId: r.peer.cidr, ...(Description ? { Description } : {}) }];
  else if (r.peer.cidr.includes(':')) perm.Ipv6Ranges = [{ CidrIpv6: r.peer.cidr, ...(Description ? { Description } : {}) }];
  else perm.IpRanges = [{ CidrIp: r.peer.cidr, ...(Description ? { Description } : {}) }];
  return perm;
}

/** A DescribeSecurityGroupRules record as a flat rule (undefined: a peer kind we do not manage). */
export function fromRuleRecord(r: SecurityGroupRule): Rule | undefined {
  const protocol = r.IpProtocol ?? '-1';
  const ports = protocol === '-1' ? {} : { fromPort: r.FromPort, toPort: r.ToPort };
  const direction = r.IsEgress ? 'egress' : 'ingress';
  const cidr = r.CidrIpv4 ?? r.CidrIpv6 ?? r.PrefixListId;
  if (cidr) return { direction, protocol, ...ports, peer: { kind: 'cidr', cidr }, description: r.Description };
  const groupId = r.ReferencedGroupInfo?.GroupId;
  if (groupId) return { direction, protocol, ...ports, peer: { kind: 'group', groupId }, description: r.Description };
  return undefined;
}

/** Direction, protocol and ports: the part of a rule's identity without its peer. */
const rangeOf = (r: Rule) => ruleKey({ ...r, peer: { kind: 'cidr', cidr: '' } });

export interface RevokeCalls {
  ingressIds: string[];
  egressIds: string[];
  /** Rules the listing does not show one by one: revoked by permission, with the stored description. */
  ingress: IpPermission[];
  egress: IpPermission[];
}

/**
 * How to revoke `revoke` (peers resolved to group ids) from one group.
 * @param stored every rule of the group as DescribeSecurityGroups showed it (plus any just authorized)
 * @param listed the group's records from DescribeSecurityGroupRules
 */
export function planRevoke(revoke: Rule[], stored: Rule[], listed: SecurityGroupRule[]): RevokeCalls {
  const idOf = new Map<string, string>();
  const listedPerRange = new Map<string, number>();
  for (const rec of listed) {
    const rule = fromRuleRecord(rec);
    if (!rule || !rec.SecurityGroupRuleId) continue;
    idOf.set(ruleKey(rule), rec.SecurityGroupRuleId);
    listedPerRange.set(rangeOf(rule), (listedPerRange.get(rangeOf(rule)) ?? 0) + 1);
  }
  const storedPerRange = new Map<string, number>();
  for (const r of stored) storedPerRange.set(rangeOf(r), (storedPerRange.get(rangeOf(r)) ?? 0) + 1);
  const calls: RevokeCalls = { ingressIds: [], egressIds: [], ingress: [], egress: [] };
  for (const r of revoke) {
    const id = idOf.get(ruleKey(r));
    const complete = (listedPerRange.get(rangeOf(r)) ?? 0) >= (storedPerRange.get(rangeOf(r)) ?? 0);
    if (id && complete) (r.direction === 'ingress' ? calls.ingressIds : calls.egressIds).push(id);
    else (r.direction === 'ingress' ? calls.ingress : calls.egress).push(toPermission(r, true));
  }
  return calls;
}

/** What a revoke answer says it did not revoke (EC2 answers an unmatched revoke with success); undefined: all done. */
export function unrevoked(
  out: { Return?: boolean; UnknownIpPermissions?: IpPermission[]; RevokedSecurityGroupRules?: unknown[] },
  direction: Rule['direction'],
  asked: { ids?: string[]; perms?: IpPermission[] },
): Rule[] | string[] | undefined {
  const unknown = out.UnknownIpPermissions ?? [];
  if (unknown.length) return fromPermissions(direction, unknown);
  const revoked = out.RevokedSecurityGroupRules;
  const count = asked.ids?.length ?? fromPermissions(direction, asked.perms ?? []).length;
  if (out.Return === false || (revoked !== undefined && revoked.length < count)) {
    return asked.ids ?? fromPermissions(direction, asked.perms ?? []);
  }
  return undefined;
}
