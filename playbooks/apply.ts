// `npx zx apply`: create the nodes (provider.up), then converge every role.
import { Listr } from 'listr2';
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { formatPlan, formatRecap, listrOptions } from '../core/output.ts';
import { run } from '../core/run.ts';
import { FileSecretStore } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { KnownHosts } from '../core/ssh.ts';
import { ensureSshKey, ensureStateDir } from '../core/state.ts';
import type { Host, PlanItem } from '../core/types.ts';
import { providerFor } from '../providers/index.ts';

const HELP = `usage: npx zx apply [--check] [--limit host,...] [--json] [-f cluster.yaml]

Create the nodes of cluster.yaml and converge every role. A second run changes nothing.
  --check        dry run: show what would change (nodes and tasks), change nothing
  --limit LIST   run the roles on these hosts only (comma separated)
  --roles LIST   run only these roles (comma separated, e.g. base,iptables); nodes are still created
  --json         print one JSON object (per-host counts, per-task results) on stdout
  -f, --file     cluster file (default ./cluster.yaml or $RAMPART_CLUSTER)
Exit: 0 ok, 1 a task failed or a host was unreachable, 2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  return runMain(() => json, async () => {
    const flags = parseFlags(args, { check: { type: 'boolean', default: false }, limit: { type: 'string' }, roles: { type: 'string' } });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const check = Boolean(flags.check);
    const limit = flags.limit ? String(flags.limit).split(',').map((s) => s.trim()).filter(Boolean) : undefined;
    const unknown = limit?.filter((n) => !cluster.nodes.some((node) => node.name === n)) ?? [];
    if (unknown.length) throw new UsageError(`--limit names unknown host(s): ${unknown.join(', ')}`);
    const used = new Set(cluster.nodes.flatMap((n) => n.roles));
    const only = flags.roles ? String(flags.roles).split(',').map((s) => s.trim()).filter(Boolean) : undefined;
    const known = cluster.roles.order.map((r) => r.name);
    const badRoles = only?.filter((r) => !known.includes(r)) ?? [];
    if (badRoles.length) throw new UsageError(`--roles names unknown role(s): ${badRoles.join(', ')} (roles: ${known.join(', ')})`);
    const roles = cluster.roles.inOrder(only ? new Set([...used].filter((r) => only.includes(r))) : used);

    const paths = ensureStateDir(cluster.dir);
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
    // A node created in this run is a new machine with a new host key: pin it afresh.
    const created = new Set(changes.flatMap((c) => (c.newNode ? [c.newNode] : [])));
    knownHosts.forget(hosts.filter((h) => created.has(h.node.name)).map((h) => KnownHosts.id(h.jump ? h.privateAddress : h.address, h.port)));

    const report = await run({
      cluster, hosts, limit, roles, check,
      privateKey: key.privateKey, knownHosts, secrets: new FileSecretStore(cluster.dir), progress: !json,
    });
    report.provider = changes;
    report.providerMs = providerMs;
    if (json) {
      process.stdout.write(JSON.stringify(report) + '\n');
    } else {
      if (check) process.stderr.write(formatPlan(changes));
      process.stderr.write('\n' + formatRecap(report));
    }
    const bad = Object.values(report.hosts).some((h) => h.failed > 0 || h.unreachable);
    return bad ? EXIT.failed : EXIT.ok;
  });
}
