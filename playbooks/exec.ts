// `npx zx exec [--limit ...] -- CMD`: run an ad-hoc command on the nodes in
// parallel over the same pinned, jump-aware SSH connections apply uses (as
// root, or as the login user with --no-sudo), output per host.
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { resolveLimit } from '../core/limit.ts';
import { RunLog } from '../core/runlog.ts';
import { FileSecretStore } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { connect, KnownHosts } from '../core/ssh.ts';
import { ensureSshKey, ensureStateDir } from '../core/state.ts';
import { providerFor } from '../providers/index.ts';

const HELP = `usage: npx zx exec [--limit host,group,...] [--no-sudo] [--json] [-f cluster.yaml] -- COMMAND...

Run COMMAND (a shell command line) on the cluster's running nodes in parallel, as root
(through sudo) unless --no-sudo, over the pinned SSH connections apply uses (through the
jump host on AWS). Output is printed per host.
  --limit LIST   hosts or groups (all, db, manager, workers, services, a service or role name)
  --json         one JSON object: { hosts: { NAME: { code, stdout, stderr, durationMs } } }
Exit: 0 the command exited 0 everywhere, 1 it failed (or a host was unreachable) somewhere,
2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

export interface ExecOutcome {
  code: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export async function main(args: string[]): Promise<never> {
  const dash = args.indexOf('--');
  const own = dash < 0 ? args : args.slice(0, dash);
  const command = dash < 0 ? '' : args.slice(dash + 1).join(' ');
  let json = own.includes('--json');
  return runMain(() => json, async () => {
    const flags = parseFlags(own, { limit: { type: 'string' }, 'no-sudo': { type: 'boolean', default: false } });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    if (!command.trim()) throw new UsageError('no command given', 'put it after --, e.g. npx zx exec --limit worker1 -- hostname');
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const limit = resolveLimit(cluster, flags.limit as string | undefined);
    const paths = ensureStateDir(cluster.dir);
    const key = ensureSshKey(cluster.dir);
    const runLog = new RunLog(paths.dir, 'exec', new FileSecretStore(cluster.dir).values());
    const provider = await providerFor(cluster);
    const hosts = (await provider.describe()).filter((h) => !limit || limit.includes(h.name));
    const missing = (limit ?? cluster.nodes.map((n) => n.name)).filter((n) => !hosts.some((h) => h.name === n));
    const knownHosts = new KnownHosts(paths.knownHosts);
    const out: Record<string, ExecOutcome> = {};
    await Promise.all(hosts.map(async (h) => {
      const t0 = Date.now();
      try {
        const conn = await connect(h, { privateKey: key.privateKey, knownHosts, retryForMs: 5_000, log: runLog.record });
        try {
          const r = await conn.exec(command, { sudo: !flags['no-sudo'], check: false });
          out[h.name] = { ...r, durationMs: Date.now() - t0 };
        } finally {
          conn.close();
        }
      } catch (e) {
        out[h.name] = { code: 255, stdout: '', stderr: (e as Error).message, durationMs: Date.now() - t0 };
      }
    }));
    for (const n of missing) out[n] = { code: 255, stdout: '', stderr: `${n} is not running (npx zx apply creates it)`, durationMs: 0 };
    const order = cluster.nodes.map((n) => n.name).filter((n) => n in out);
    if (json) {
      process.stdout.write(JSON.stringify({ command, hosts: Object.fromEntries(order.map((n) => [n, out[n]])), log: runLog.path }) + '\n');
    } else {
      for (const n of order) {
        const r = out[n];
        process.stdout.write(`${n} | exit ${r.code} | ${r.durationMs} ms\n${r.stdout}${r.stdout && !r.stdout.endsWith('\n') ? '\n' : ''}`);
        if (r.stderr.trim()) process.stderr.write(`${n} | stderr:\n${r.stderr}${r.stderr.endsWith('\n') ? '' : '\n'}`);
      }
    }
    return order.every((n) => out[n].code === 0) ? EXIT.ok : EXIT.failed;
  });
}
