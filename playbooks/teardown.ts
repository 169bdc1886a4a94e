// `npx zx teardown`: remove everything apply created (provider.down) and the
// pinned host keys of the removed nodes. The SSH key and secrets stay unless --purge.
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { rmSync } from 'node:fs';
import { Listr } from 'listr2';
import { clusterFile, EXIT, parseFlags, runMain } from '../core/cli.ts';
import { listrOptions } from '../core/output.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { KnownHosts } from '../core/ssh.ts';
import { statePaths } from '../core/state.ts';
import type { Host, PlanItem } from '../core/types.ts';
import { providerFor } from '../providers/index.ts';

const HELP = `usage: npx zx teardown [--purge] [--json] [-f cluster.yaml]

Stop and delete every node and network resource apply created. Safe to rerun.
  --purge   also delete the state folder (.rampart/: SSH key, secrets, pinned host keys)
  --json    print one JSON object on stdout
Exit: 0 ok, 2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  return runMain(() => json, async () => {
    const flags = parseFlags(args, { purge: { type: 'boolean', default: false } });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const started = Date.now();
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const provider = await providerFor(cluster);
    let removed: PlanItem[] = [];
    let hosts: Host[] = [];
    await new Listr(
      [
        {
          title: `provider ${provider.name}: down`,
          task: async (_, task) => {
            hosts = await provider.describe().catch(() => []);
            removed = await provider.down({ progress: (m) => (task.output = m) });
            const n = removed.filter((r) => r.action === 'delete').length;
            task.title = `provider ${provider.name}: ${n ? `removed ${n} resource(s)` : 'nothing to remove'}`;
          },
        },
      ],
      { ...listrOptions(!json), exitOnError: true } as never,
    ).run();
    const paths = statePaths(cluster.dir);
    // Forget the removed nodes' host keys: those described before down, and every
    // address cluster.yaml gives (a node that was not running is gone too).
    const ids = hosts.map((h) => KnownHosts.id(h.jump ? h.privateAddress : h.address, h.port));
    if (cluster.provider.type === 'local') ids.push(...cluster.nodes.flatMap((n) => (n.address ? [KnownHosts.id(n.address, 22)] : [])));
    new KnownHosts(paths.knownHosts).forget(ids);
    if (flags.purge) rmSync(paths.dir, { recursive: true, force: true });
    if (json) process.stdout.write(JSON.stringify({ removed, durationMs: Date.now() - started }) + '\n');
    else for (const r of removed.filter((x) => x.action === 'delete')) process.stderr.write(`removed ${r.resource}\n`);
    return EXIT.ok;
  });
}
