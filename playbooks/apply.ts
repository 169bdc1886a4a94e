// `npx zx apply`: create the nodes (provider.up), then converge every role.
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { Listr } from 'listr2';
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { resolveLimit } from '../core/limit.ts';
import { RunLog } from '../core/runlog.ts';
import { formatPlan, formatRecap, listrOptions } from '../core/output.ts';
import { plannedResults, recapOf, run } from '../core/run.ts';
import { FileSecretStore, teamApiKey } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { HostError } from '../core/errors.ts';
import { Connections, KnownHosts } from '../core/ssh.ts';
import { ensureSshKey, ensureStateDir } from '../core/state.ts';
import { dryRunTls } from '../core/tls.ts';
import type { Host, PlanItem, RunReport } from '../core/types.ts';
import { providerFor } from '../providers/index.ts';
import { gatekeeperEndpoint } from '../roles/lib/tls.ts';
import { livePrimary, parseTopology, TOPOLOGY_FACT, withLivePrimary, type NodeTopology } from '../roles/lib/mysql-replication.ts';

const HELP = `usage: npx zx apply [--check] [--limit host,...] [--json] [-v|-vv] [--detailed-exitcode] [-f cluster.yaml]

Create the nodes of cluster.yaml and converge every role. A second run changes nothing.
  --check        dry run: show what would change (nodes and tasks), change nothing
  --limit LIST   run the roles on these hosts or groups only (comma separated; groups: all, db,
                 manager, workers, services, a service name, a role name)
  --roles LIST   run only these roles (comma separated, e.g. base,iptables); nodes are still created
  --serial N     every role runs N hosts at a time (the DB roles roll one at a time by default:
                 workers first, each back in replication, the manager last)
  --diff         show what changes in detail: unified diffs of managed files, firewall lines, old -> new
  -v, -vv        print each command sent and its output (secrets masked); -vv also every fact
  --detailed-exitcode   exit 0 nothing to do, 2 changes (pending with --check, made without), 1 any error
  --json         print one JSON object (per-host counts, per-task results) on stdout
  -f, --file     cluster file (default ./cluster.yaml or $RAMPART_CLUSTER)
Every run writes .rampart/logs/<time>-apply-<pid>.jsonl: every command, its result and duration.
Exit: 0 ok, 1 a task failed or a host was unreachable, 2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

/** How long --check keeps retrying an SSH connect before it reports the host as not inspected. */
const CHECK_CONNECT_RETRY_MS = 10_000;

/** --check: the nodes whose tasks could not be checked, and why. */
function notInspected(nodes: string[], hosts: Host[], report: RunReport): string {
  const lines: string[] = [];
  for (const name of nodes) {
    if (!hosts.some((h) => h.name === name)) lines.push(`  ${name}: not running yet (see the provider plan above; its tasks are listed as known after apply)`);
    else if (report.hosts[name]?.unreachable) {
      const why = report.results.find((r) => r.host === name && r.role === 'connect')?.message ?? 'unreachable';
      lines.push(`  ${name}: ${why.startsWith(`${name}: `) ? why.slice(name.length + 2) : why}`);
    }
  }
  return lines.length ? `\ncould not inspect (tasks not checked):\n${lines.join('\n')}\n` : '';
}

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  const detailed = args.includes('--detailed-exitcode');
  return runMain(() => json, async () => {
    const flags = parseFlags(args, {
      check: { type: 'boolean', default: false }, limit: { type: 'string' }, roles: { type: 'string' },
      'detailed-exitcode': { type: 'boolean', default: false }, verbose: { type: 'boolean', short: 'v', multiple: true }, diff: { type: 'boolean', default: false }, serial: { type: 'string' },
    });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const check = Boolean(flags.check);
    const verbosity = (flags.verbose as boolean[] | undefined)?.length ?? 0;
    const serial = flags.serial === undefined ? undefined : Number(flags.serial);
    if (serial !== undefined && !(Number.isInteger(serial) && serial >= 1)) throw new UsageError(`--serial takes a whole number of hosts >= 1 (got ${String(flags.serial)})`);
    const limit = resolveLimit(cluster, flags.limit as string | undefined);
    const used = new Set(cluster.nodes.flatMap((n) => n.roles));
    const only = flags.roles ? String(flags.roles).split(',').map((s) => s.trim()).filter(Boolean) : undefined;
    const known = cluster.roles.order.map((r) => r.name);
    const badRoles = only?.filter((r) => !known.includes(r)) ?? [];
    if (badRoles.length) throw new UsageError(`--roles names unknown role(s): ${badRoles.join(', ')} (roles: ${known.join(', ')})`);
    const roles = cluster.roles.inOrder(only ? new Set([...used].filter((r) => only.includes(r))) : used);

    const paths = ensureStateDir(cluster.dir);
    // a dry run stores no secret and issues no certificate: both only for this run, compared, then dropped
    const secrets = new FileSecretStore(cluster.dir, { persist: !check });
    if (check) dryRunTls(cluster.dir);
    // the team's own API key is a secret too: masked like the generated ones
    const ownKey = [teamApiKey(cluster.services.gatekeeper) ?? ''].filter(Boolean);
    const runLog = new RunLog(paths.dir, 'apply', [...secrets.values(), ...ownKey], json ? 0 : verbosity);
    const key = ensureSshKey(cluster.dir);
    const knownHosts = new KnownHosts(paths.knownHosts);
    const provider = await providerFor(cluster);

    let hosts: Host[] = [];
    let changes: PlanItem[] = [];
    const providerStart = Date.now();
    await new Listr(
      [
        {
          title: `provider ${provider.name}: ${check ? 'plan' : 'up'} (${cluster.nodes.length} nodes)`,
          task: async (_, task) => {
            const events = { progress: (m: string) => (task.output = m) };
            if (check) {
              changes = await provider.plan(events);
              hosts = await provider.describe();
            } else {
              ({ hosts, changes } = await provider.up(events));
            }
            const todo = changes.filter((c) => c.action !== 'ok').length;
            task.title = `provider ${provider.name}: ${hosts.length} hosts, ${todo} ${check ? 'planned' : 'made'} change(s)`;
          },
        },
      ],
      { ...listrOptions(!json), exitOnError: true } as never,
    ).run();

    const providerMs = Date.now() - providerStart;
    // The provider plan first: it stands even when hosts then cannot be inspected.
    if (check && !json) process.stderr.write(formatPlan(changes));
    // A node created in this run is a new machine with a new host key: pin it afresh.
    const created = new Set(changes.flatMap((c) => (c.newNode ? [c.newNode] : [])));
    knownHosts.forget(hosts.filter((h) => created.has(h.node.name)).map((h) => KnownHosts.id(h.jump ? h.privateAddress : h.address, h.port)));

    // cluster.yaml's manager is the preferred primary; after a failover the live one is elsewhere
    // and the roles follow it (it is never demoted by apply; the old manager rejoins as a replica)
    const preferred = cluster.nodes.find((n) => n.db === 'manager')?.name;
    let primary: RunReport['primary'];
    // only roles that place the primary need it: `--roles base --limit workers` contacts the workers alone
    // one SSH connection per host for the whole run: the topology read's, then the roles'
    // (a dry run does not wait for booting nodes: it says which ones it could not inspect)
    const conns = new Connections({ privateKey: key.privateKey, knownHosts, log: runLog.record, ...(check ? { retryForMs: CHECK_CONNECT_RETRY_MS } : {}) });
    if (preferred && roles.some((r) => !PRIMARY_BLIND_ROLES.has(r.name))) {
      const topo = await readTopology(hosts.filter((h) => h.node.db), conns, check ? CHECK_CONNECT_RETRY_MS : 5_000);
      const live = livePrimary(preferred, topo);
      if (!live.ok) throw new HostError(live.reason, 'make every other DB node read-only (SET GLOBAL read_only = ON), then apply again');
      primary = { live: live.primary, preferred, moved: live.moved };
      if (live.moved) {
        hosts = withLivePrimary(hosts, live.primary);
        if (!json) process.stderr.write(`primary: ${live.primary} (live, after a failover; cluster.yaml prefers ${preferred}, which ${check ? 'would rejoin' : 'rejoins'} as a replica; npx zx switchover moves it back)\n`);
      }
    }

    const report = await run({
      cluster, hosts, limit, roles, check,
      privateKey: key.privateKey, knownHosts, secrets, progress: !json && verbosity === 0, log: runLog.record, diff: Boolean(flags.diff), serial,
      connect: (h) => conns.get(h),
    }).finally(() => conns.close());
    report.provider = changes;
    report.providerMs = providerMs;
    if (primary) report.primary = primary;
    report.log = runLog.path;
    const gk = hosts.find((h) => h.node.service === 'gatekeeper');
    if (gk) report.endpoint = gatekeeperEndpoint(cluster, gk);
    // a managed file's diff may show a credential it holds: masked like the run log
    for (const r of report.results) if (r.diff) r.diff = runLog.mask(r.diff);
    if (check) {
      // nodes the plan would create: list what would run on them instead of leaving them out
      const absent = cluster.nodes.filter((n) => !hosts.some((h) => h.name === n.name) && (!limit || limit.includes(n.name)));
      const planned = plannedResults(cluster, absent, roles, secrets);
      report.results.push(...planned);
      for (const n of absent) report.hosts[n.name] = recapOf(n.name, planned, false);
    }
    if (json) {
      process.stdout.write(JSON.stringify(report) + '\n');
    } else {
      process.stderr.write('\n' + formatRecap(report));
      if (check) process.stderr.write(notInspected(cluster.nodes.map((n) => n.name), hosts, report));
      // the provider's facts about the run (a stale base image...): the plan shows them, apply says them too
      else process.stderr.write(changes.filter((c) => c.info).map((c) => `provider: ${c.resource}: ${c.detail ?? ''}\n`).join(''));
      if (report.endpoint) {
        const { url, ca } = report.endpoint;
        process.stderr.write(`\nendpoint: ${url}  (CA: ${ca ?? 'your own certificate, services.gatekeeper.tls'})\n`);
      }
    }
    const bad = Object.values(report.hosts).some((h) => h.failed > 0 || h.unreachable);
    if (bad) return EXIT.failed;
    const changed = report.results.some((r) => r.status === 'changed') || changes.some((c) => c.action !== 'ok');
    return detailed && changed ? EXIT.changes : EXIT.ok;
  }, { detailedExitcode: detailed });
}

/**
 * Built-in roles that never look at which DB node is the primary (the host's
 * OS, the firewall rendered from the flows by node name). Any other role,
 * user roles included, may, so apply reads the live topology first: on every
 * DB node, even under --limit (a limited worker must not be pointed at a
 * demoted manager).
 */
const PRIMARY_BLIND_ROLES: ReadonlySet<string> = new Set(['base', 'iptables']);

/**
 * What TOPOLOGY_FACT prints on every running DB node (code 255 and no output:
 * not reachable), over the command's kept connections (the roles then use the
 * same ones: one SSH handshake per node).
 */
export async function readTopologyOutput(dbHosts: Host[], conns: Connections, retryForMs?: number): Promise<{ host: Host; code: number; stdout: string }[]> {
  return Promise.all(dbHosts.map(async (host) => {
    try {
      const r = await (await conns.get(host, retryForMs)).exec(TOPOLOGY_FACT, { sudo: true, check: false });
      return { host, code: r.code, stdout: r.stdout };
    } catch {
      return { host, code: 255, stdout: '' };
    }
  }));
}

/** read_only and the replication source of every running DB node (a node that cannot be read counts as unknown). */
export async function readTopology(dbHosts: Host[], conns: Connections, retryForMs?: number): Promise<NodeTopology[]> {
  return (await readTopologyOutput(dbHosts, conns, retryForMs)).map((o) => parseTopology(o.host.name, o.host.privateAddress, o.code, o.stdout));
}
