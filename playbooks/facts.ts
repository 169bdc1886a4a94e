// `npx zx facts HOST`: what the roles see on a host: every fact command of the
// host's roles, read in the same single round trip apply uses, printed per
// role and task (no change is made).
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { gatherFacts, hostFactCommands } from '../core/run.ts';
import { RunLog } from '../core/runlog.ts';
import { FileSecretStore } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { connect, KnownHosts } from '../core/ssh.ts';
import { ensureSshKey, ensureStateDir } from '../core/state.ts';
import { providerFor } from '../providers/index.ts';

const HELP = `usage: npx zx facts HOST [--json] [-f cluster.yaml]

Print every fact the roles of HOST read (one SSH round trip; nothing is changed),
grouped by role and task: what apply and apply --check decide from.
  --json   one JSON object: { host, facts: [{ role, task, key, code, stdout }] }
Exit: 0 ok, 1 the host is unreachable, 2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  return runMain(() => json, async () => {
    const positional = args.filter((a, i) => !a.startsWith('-') && args[i - 1] !== '-f' && args[i - 1] !== '--file');
    const flags = parseFlags(args.filter((a) => !positional.includes(a)), {});
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const name = positional[0];
    if (!name || positional.length > 1) throw new UsageError('name one host', `e.g. npx zx facts ${cluster.nodes[0]?.name ?? 'manager'}`);
    const node = cluster.nodes.find((n) => n.name === name);
    if (!node) throw new UsageError(`no node named ${name}`, `nodes: ${cluster.nodes.map((n) => n.name).join(', ')}`);
    const paths = ensureStateDir(cluster.dir);
    const secrets = new FileSecretStore(cluster.dir, { persist: false }); // facts reads; it makes nothing
    const runLog = new RunLog(paths.dir, 'facts', secrets.values());
    const provider = await providerFor(cluster);
    const hosts = await provider.describe();
    const host = hosts.find((h) => h.name === name);
    if (!host) throw new UsageError(`${name} is not running`, 'npx zx apply creates and starts it');
    const conn = await connect(host, { privateKey: ensureSshKey(cluster.dir).privateKey, knownHosts: new KnownHosts(paths.knownHosts), retryForMs: 5_000 });
    try {
      const roles = cluster.roles.inOrder(new Set(node.roles));
      const cmds = hostFactCommands({ host, conn, cluster, hosts, check: true, secrets, notify: () => undefined }, roles);
      const facts = await gatherFacts(conn, cmds, runLog.record);
      const rows = [...cmds.keys()].map((id) => {
        const [role, task, key] = id.split('\u0000');
        const f = facts.get(id)!;
        return { role, task, key, code: f.code, stdout: runLog.mask(f.stdout) };
      });
      if (json) {
        process.stdout.write(JSON.stringify({ host: name, facts: rows }) + '\n');
      } else {
        let last = '';
        for (const r of rows) {
          const head = `${r.role} | ${r.task}`;
          if (head !== last) process.stdout.write(`\n== ${head}\n`);
          last = head;
          process.stdout.write(`-- ${r.key} (exit ${r.code})\n${r.stdout}${r.stdout && !r.stdout.endsWith('\n') ? '\n' : ''}`);
        }
      }
    } finally {
      conn.close();
    }
    return EXIT.ok;
  });
}
