// Runs one AWS provider operation, or reads what the EC2 API server stored,
// and prints one JSON line on stdout. The moto integration test runs it inside
// the server's network namespace (`ip netns exec NS tsx aws-driver.ts ...`),
// so the provider's SSH wait meets only loopback there.
//
//   node_modules/.bin/tsx test/support/aws-driver.ts plan|up|down CLUSTER_FILE
//   node_modules/.bin/tsx test/support/aws-driver.ts stored
//   node_modules/.bin/tsx test/support/aws-driver.ts record|calls   (moto's request recorder)
//
// The provider is built exactly as `npx zx apply` builds it (providerFor), with
// the SDK's default chain (AWS_ENDPOINT_URL_EC2 etc. from the environment), and
// on the same runtime: Node through tsx. (Bun 1.4 reports a connect that fails
// with ENETUNREACH as ECONNREFUSED, which would hide what the SSH wait must see.)
import '../../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import {
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupRulesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
} from '@aws-sdk/client-ec2';
import { loadCluster } from '../../core/spec.ts';
import { providerFor } from '../../providers/index.ts';

export interface DriverOutput<T = unknown> {
  ok: boolean;
  result?: T;
  error?: { name: string; message: string; hint?: string };
  progress: string[];
  ms: number;
}

/** What the server holds, in plain values (the test's ground truth). */
export interface Stored {
  groups: { id: string; name: string; node?: string; cluster?: string; ingress: string[]; egress: string[] }[];
  /** DescribeSecurityGroupRules, one line per record: `<group name> <direction> <proto>/<from>-<to> <peer>`. */
  ruleRecords: string[];
  instances: { id: string; node?: string; state: string; type?: string; imageId?: string; keyName?: string; publicIp?: string; groups: string[]; tags: Record<string, string> }[];
  keyPairs: { name: string; tags: Record<string, string> }[];
}

const tagMap = (tags: { Key?: string; Value?: string }[] | undefined) => Object.fromEntries((tags ?? []).map((t) => [t.Key ?? '', t.Value ?? '']));

async function stored(): Promise<Stored> {
  const ec2 = new EC2Client({});
  const sgs = (await ec2.send(new DescribeSecurityGroupsCommand({}))).SecurityGroups ?? [];
  const nameOf = new Map(sgs.map((g) => [g.GroupId ?? '', g.GroupName ?? '']));
  const peer = (cidr: string | undefined, group: string | undefined) => (group ? `sg:${nameOf.get(group) ?? group}` : cidr ?? '?');
  const ports = (proto: string | undefined, from?: number, to?: number) => (proto === '-1' ? 'all' : `${proto}/${from}-${to}`);
  const perms = (list: typeof sgs[number]['IpPermissions']) => (list ?? []).flatMap((p) => [
    ...(p.IpRanges ?? []).map((r) => `${ports(p.IpProtocol, p.FromPort, p.ToPort)} ${peer(r.CidrIp, undefined)}`),
    ...(p.UserIdGroupPairs ?? []).map((r) => `${ports(p.IpProtocol, p.FromPort, p.ToPort)} ${peer(undefined, r.GroupId)}`),
  ]).sort();
  const groups = sgs.filter((g) => g.GroupName !== 'default').map((g) => ({
    id: g.GroupId ?? '', name: g.GroupName ?? '', node: tagMap(g.Tags)['rampart:node'], cluster: tagMap(g.Tags)['rampart:cluster'],
    ingress: perms(g.IpPermissions), egress: perms(g.IpPermissionsEgress),
  }));
  // moto lists rules only for a filter; EC2 takes up to 200 group ids per filter.
  const ids = groups.map((g) => g.id);
  const rules = ids.length ? (await ec2.send(new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: ids }] }))).SecurityGroupRules ?? [] : [];
  const ruleRecords = rules.filter((r) => nameOf.get(r.GroupId ?? '') !== 'default').map((r) =>
    `${nameOf.get(r.GroupId ?? '')} ${r.IsEgress ? 'egress' : 'ingress'} ${ports(r.IpProtocol, r.FromPort, r.ToPort)} ${peer(r.CidrIpv4 ?? r.CidrIpv6 ?? r.PrefixListId, r.ReferencedGroupInfo?.GroupId)}`).sort();
  const reservations = (await ec2.send(new DescribeInstancesCommand({}))).Reservations ?? [];
  const instances = reservations.flatMap((r) => r.Instances ?? []).map((i) => ({
    id: i.InstanceId ?? '', node: tagMap(i.Tags)['rampart:node'], state: i.State?.Name ?? '?', type: i.InstanceType, imageId: i.ImageId,
    keyName: i.KeyName, publicIp: i.PublicIpAddress,
    groups: [...new Set([...(i.SecurityGroups ?? []), ...(i.NetworkInterfaces ?? []).flatMap((n) => n.Groups ?? [])].map((g) => nameOf.get(g.GroupId ?? '') ?? g.GroupId ?? ''))].sort(),
    tags: tagMap(i.Tags),
  }));
  const keyPairs = ((await ec2.send(new DescribeKeyPairsCommand({}))).KeyPairs ?? []).map((k) => ({ name: k.KeyName ?? '', tags: tagMap(k.Tags) }));
  return { groups, ruleRecords, instances, keyPairs };
}

/** One recorded EC2 request: its Action and its other query parameters. */
export interface Call {
  action: string;
  params: Record<string, string>;
}

const motoApi = (path: string, init?: RequestInit) => {
  const endpoint = process.env.AWS_ENDPOINT_URL_EC2;
  if (!endpoint) throw new Error('AWS_ENDPOINT_URL_EC2 is not set: record/calls need the moto server');
  return fetch(`${endpoint}/moto-api/recorder/${path}`, { method: 'POST', ...init });
};

/** The EC2 calls moto recorded since `record` (and stop recording). */
async function calls(): Promise<Call[]> {
  const text = await (await motoApi('download-recording', { method: 'GET' })).text();
  await motoApi('stop-recording');
  return text.split('\n').filter(Boolean).map((line) => {
    const entry = JSON.parse(line) as { body?: string; body_encoded?: boolean };
    const body = entry.body_encoded ? Buffer.from(entry.body ?? '', 'base64').toString('utf8') : entry.body ?? '';
    const params = Object.fromEntries(new URLSearchParams(body));
    const { Action = '?', Version: _v, ...rest } = params;
    return { action: Action, params: rest };
  });
}

async function main(): Promise<void> {
  const [op, file] = process.argv.slice(2);
  const progress: string[] = [];
  const events = { progress: (m: string) => progress.push(m) };
  const t0 = Date.now();
  const out = (o: Omit<DriverOutput, 'progress' | 'ms'>) => process.stdout.write(JSON.stringify({ ...o, progress, ms: Date.now() - t0 }) + '\n');
  try {
    let result: unknown;
    if (op === 'stored') result = await stored();
    else if (op === 'record') {
      await motoApi('reset-recording');
      await motoApi('start-recording');
    } else if (op === 'calls') result = await calls();
    else if (op === 'plan' || op === 'up' || op === 'down') {
      if (!file) throw new Error(`usage: aws-driver.ts ${op} CLUSTER_FILE`);
      const provider = await providerFor(loadCluster(file));
      result = op === 'plan' ? await provider.plan(events) : op === 'up' ? await provider.up(events) : await provider.down(events);
    } else throw new Error(`unknown operation '${op}' (plan, up, down, stored, record, calls)`);
    out({ ok: true, result });
  } catch (err) {
    const e = err as Error & { hint?: string };
    out({ ok: false, error: { name: e.name, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } });
  }
  process.exit(0);
}

await main();
