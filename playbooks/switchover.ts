// `npx zx switchover [--to NODE]`: move the primary gracefully, 0 failed writes.
// The live primary is found as apply finds it (the topology read); the target
// must be a healthy, caught-up replica of it with no errant transactions. Then:
// the proxy holds new writes (its config's `control` section, re-read on SIGHUP:
// queued up to --hold-ms, the writes in flight finish, its automatic failover
// paused) -> the old primary is set read_only (fence) -> the target applies
// every GTID of the old primary -> the target is promoted -> the old primary
// and the other replicas are re-pointed at it with the replication role's own
// CHANGE MASTER / CHANGE REPLICATION SOURCE (password through stdin) -> the
// proxy gets the config naming the new primary, without `control`: the held
// writes run there. Anything failing before the promotion is undone (the old
// primary writable again, the writes released to it): nothing is lost.
// A second `npx zx apply` reports changed=0: it follows the live primary.
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { Listr } from 'listr2';
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { RampartError } from '../core/errors.ts';
import { listrOptions } from '../core/output.ts';
import { RunLog } from '../core/runlog.ts';
import { FileSecretStore } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { ensureStateDir } from '../core/state.ts';
import type { Connection, Host } from '../core/types.ts';
import { count, errant, format, minus, parseGtidSet, type GtidSet } from '../services/proxy/gtid.ts';
import { ACCOUNTS_FACT, parseAccounts, planAccounts } from '../roles/lib/mysql-accounts.ts';
import { configPath as mysqlConfigPath, renderConfig, serverSettings } from '../roles/lib/mysql-config.ts';
import { DIALECT_SQL } from '../roles/lib/mysql-dialect.ts';
import { changeSourceSql, livePrimary, parseReplicaStatus, parseTopology, replicaSource, withLivePrimary, type ReplicaStatus } from '../roles/lib/mysql-replication.ts';
import { SECRETS } from '../roles/lib/names.ts';
import { dialectFor, OS_ID_FACT, type Dialect } from '../roles/lib/os.ts';
import { configPath, configText, SERVICE_USER } from '../roles/service.ts';
import { readTopologyOutput } from './apply.ts';
import { reloadScript } from './rotate.ts';
import { runningCluster } from './running.ts';

const HELP = `usage: npx zx switchover [--to NODE] [--check] [--hold-ms MS] [--json] [-f cluster.yaml]

Move the primary to NODE (default: cluster.yaml's \`db: manager\`) with no failed write:
the proxy holds new writes (queued, not refused), the old primary turns read_only, NODE
applies every transaction of it and is promoted, the other DB nodes replicate from it,
then the proxy sends the held writes there. Refused (nothing changed) when NODE is not a
replicating, caught-up replica of the live primary or has errant transactions.
  --to NODE      the DB node to promote (default: cluster.yaml's db: manager)
  --check        say what would be done, change nothing
  --hold-ms MS   longest a write waits in the proxy's queue; past it: 503 not executed,
                 safe to retry (default 10000)
  --json         one JSON object on stdout
Exit: 0 done (or nothing to do), 1 refused or failed, 2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

/** A refused or failed switchover exits 1, like a failed task (README). */
export class SwitchoverError extends RampartError {
  override readonly exitCode = 1;
}

/** What the switchover reads on each DB node. */
export interface NodeFacts {
  name: string;
  address: string;
  /** null: the server did not answer. */
  readOnly: boolean | null;
  replica: ReplicaStatus | null;
  /** Seconds_Behind_Master / _Source (null: unknown). */
  lagSeconds: number | null;
  /** GTIDs applied (gtid_current_pos / gtid_executed) and the server's own origin. */
  executed: string;
  self: string;
}

export const STEPS = ['hold writes', 'fence the old primary', 'target caught up', 'promote the target', 'accounts for the new primary', 're-point the replicas', 'proxy: new primary, release writes', 'server option files', 'verify'] as const;
export type StepName = (typeof STEPS)[number];

export type SwitchPlan =
  | { action: 'none'; primary: string; message: string }
  | { action: 'refuse'; primary: string; reason: string; hint: string }
  | { action: 'switch'; from: string; to: string; replicas: string[]; steps: readonly StepName[] };

/**
 * The decision (pure). The target's GTIDs must be read before the primary's:
 * then whatever the target has that the primary lacks was written on the target.
 */
export function switchoverPlan(d: Dialect, primary: string, target: string, nodes: NodeFacts[], maxLagSeconds: number): SwitchPlan {
  const p = nodes.find((n) => n.name === primary);
  const t = nodes.find((n) => n.name === target);
  const refuse = (reason: string, hint: string): SwitchPlan => ({ action: 'refuse', primary, reason, hint });
  if (!t) return refuse(`${target} is not a DB node (DB nodes: ${nodes.map((n) => n.name).join(', ')})`, 'pass --to one of them');
  if (target === primary) return { action: 'none', primary, message: `${target} is already the primary: nothing to do` };
  if (!p || p.readOnly === null) return refuse(`the primary ${primary} does not answer`, 'a dead primary is replaced by the proxy\'s automatic failover, not by a switchover');
  if (t.readOnly === null) return refuse(`${target} does not answer`, 'start it (npx zx apply), then try again');
  if (!t.replica || t.replica.sourceHost !== p.address) {
    return refuse(`${target} is not a replica of the primary ${primary}${t.replica ? ` (it replicates from ${t.replica.sourceHost})` : ''}`, 'npx zx apply makes it one');
  }
  if (t.replica.ioRunning !== 'Yes' || t.replica.sqlRunning !== 'Yes' || t.replica.sqlErrno !== 0) {
    const why = t.replica.sqlErrno ? `SQL error ${t.replica.sqlErrno}: ${t.replica.sqlError}` : `IO=${t.replica.ioRunning || 'No'} SQL=${t.replica.sqlRunning || 'No'}`;
    return refuse(`${target} is not replicating (${why})`, 'npx zx apply repairs replication (or says why it cannot)');
  }
  if (t.lagSeconds === null || t.lagSeconds > maxLagSeconds) {
    return refuse(`${target} is not caught up (lag ${t.lagSeconds ?? 'unknown'} s, services.proxy.maxLagSeconds ${maxLagSeconds})`, 'wait for it to catch up, then try again');
  }
  const gd = d === 'mariadb' ? 'mariadb' : 'mysql';
  const te: GtidSet = parseGtidSet(gd, t.executed);
  const pe = parseGtidSet(gd, p.executed);
  const extra = minus(te, pe);
  const origins = new Set([p.self, ...pe.origin.values()]);
  const empty = parseGtidSet(gd, '');
  const byOrigin = errant({ name: t.name, executed: te, received: empty, self: t.self }, origins, []);
  if (count(extra) > 0 || count(byOrigin) > 0) {
    return refuse(`${target} has errant transactions ${format(count(extra) > 0 ? extra : byOrigin)} (written on it, not on the primary ${primary})`, 'compare them with the primary and re-seed the replica (drop the node and apply again); they are never discarded silently');
  }
  return { action: 'switch', from: primary, to: target, replicas: nodes.filter((n) => n.name !== target).map((n) => n.name), steps: STEPS };
}

function lagOf(text: string): number | null {
  const m = /^\s*Seconds_Behind_(?:Master|Source):\s*(\d+)\s*$/m.exec(text);
  return m ? Number(m[1]) : null;
}

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  return runMain(() => json, async () => {
    const flags = parseFlags(args, { to: { type: 'string' }, check: { type: 'boolean', default: false }, 'hold-ms': { type: 'string', default: '10000' } });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const holdMs = Number(flags['hold-ms']);
    if (!Number.isInteger(holdMs) || holdMs < 1000) throw new UsageError(`--hold-ms must be a whole number of milliseconds >= 1000 (got ${String(flags['hold-ms'])})`);
    const started = Date.now();
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const preferred = cluster.nodes.find((n) => n.db === 'manager')?.name;
    if (!preferred) throw new UsageError('cluster.yaml has no `db: manager` node: nothing to switch over');
    const target = (flags.to as string | undefined) ?? preferred;
    if (!cluster.nodes.some((n) => n.name === target && n.db)) throw new UsageError(`--to ${target}: not a DB node of cluster.yaml (DB nodes: ${cluster.nodes.filter((n) => n.db).map((n) => n.name).join(', ')})`);
    const paths = ensureStateDir(cluster.dir);
    const store = new FileSecretStore(cluster.dir);
    const runLog = new RunLog(paths.dir, 'switchover', store.values());
    const { hosts, conns } = await runningCluster(cluster, runLog, (missing) => new SwitchoverError(`not running: ${missing.join(', ')}`, 'npx zx apply first'));
    const conn = (h: Host): Promise<Connection> => conns.get(h);
    const byName = (n: string) => hosts.find((h) => h.name === n)!;
    const mysql = async (h: Host, sql: string): Promise<string> => (await (await conn(h)).exec('mysql -N -B', { stdin: sql })).stdout.trim();
    try {
      const dbHosts = hosts.filter((h) => h.node.db);
      const d: Dialect = dialectFor(cluster, (await (await conn(dbHosts[0])).exec(OS_ID_FACT)).stdout);
      const sql = DIALECT_SQL[d];
      // one round trip per node gives the topology and each replica's status (and lag)
      const outputs = await readTopologyOutput(dbHosts, conns);
      const topo = outputs.map((o) => parseTopology(o.host.name, o.host.privateAddress, o.code, o.stdout));
      const live = livePrimary(preferred, topo);
      if (!live.ok) throw new SwitchoverError(live.reason, 'make every other DB node read-only (SET GLOBAL read_only = ON), then try again');
      const primary = live.primary;
      // the target first, then the others, the primary last (see switchoverPlan)
      const order = [target, ...dbHosts.map((h) => h.name).filter((n) => n !== target && n !== primary), primary];
      const facts: NodeFacts[] = [];
      for (const name of order) {
        const h = byName(name);
        const tp = topo.find((x) => x.name === name)!;
        const out = outputs.find((o) => o.host.name === name)!;
        const st = await (await conn(h)).exec(`mysql -E -e ${JSON.stringify(sql.failover.state)}`, { check: false });
        const get = (k: string) => new RegExp(`^\\s*${k}:\\s*(.*)$`, 'm').exec(st.stdout)?.[1]?.trim() ?? '';
        facts.push({ name, address: h.privateAddress, readOnly: st.code === 0 ? tp.readOnly : null, replica: out.code === 0 ? parseReplicaStatus(out.stdout) : null, lagSeconds: lagOf(out.stdout), executed: get('executed'), self: get('self') });
      }
      const plan = switchoverPlan(d, primary, target, facts, cluster.services.proxy.maxLagSeconds);
      if (plan.action !== 'switch') {
        const ok = plan.action === 'none';
        const message = ok ? plan.message : `refused: ${plan.reason}`;
        if (json) process.stdout.write(JSON.stringify(ok ? { check: Boolean(flags.check), primary, action: 'none', message } : { primary, action: 'refuse', reason: plan.reason, hint: plan.hint }) + '\n');
        else process.stderr.write(`${message}\n${ok ? '' : `hint: ${plan.hint}\nnothing changed\n`}`);
        return ok ? EXIT.ok : EXIT.failed;
      }
      if (flags.check) {
        if (json) process.stdout.write(JSON.stringify({ check: true, action: 'switch', from: plan.from, to: plan.to, replicas: plan.replicas, steps: plan.steps, hold_ms: holdMs }) + '\n');
        else process.stdout.write(`would move the primary ${plan.from} -> ${plan.to} (writes held at most ${holdMs} ms):\n${plan.steps.map((s) => `  ${s}`).join('\n')}\n`);
        return EXIT.ok;
      }

      const proxyHost = hosts.find((h) => h.node.service === 'proxy');
      const old = byName(plan.from);
      const next = byName(plan.to);
      /** The proxy's config as apply renders it for `primaryName`, plus the switchover's control section (or none). */
      const proxyConfig = async (primaryName: string, hold: boolean): Promise<void> => {
        if (!proxyHost) return;
        const view = withLivePrimary(hosts, primaryName);
        const base = JSON.parse(configText(cluster, proxyHost, view, store)) as Record<string, unknown>;
        const text = JSON.stringify(hold ? { ...base, control: { holdWrites: true, holdMs } } : base, null, 2) + '\n';
        const c = await conn(proxyHost);
        await c.writeFile(configPath('proxy'), text, { mode: '0600', owner: `${SERVICE_USER}:${SERVICE_USER}` });
        const r = await c.exec(reloadScript('proxy'), { check: false });
        if (r.code !== 0) throw new SwitchoverError(`${proxyHost.name}: ${r.stdout.trim() || r.stderr.trim()}`, 'see the proxy\'s journal (journalctl -u rampart-proxy)');
      };
      let fenced = false;
      let promoted = false;
      let heldAt = 0;
      let releasedAt = 0;
      let position = '';
      const waitS = Math.max(1, Math.floor(holdMs / 2000));
      const run: Record<StepName, () => Promise<void>> = {
        'hold writes': async () => {
          await proxyConfig(plan.from, true);
          heldAt = Date.now();
        },
        'fence the old primary': async () => {
          fenced = true;
          await mysql(old, sql.failover.fence.map((s) => `${s};`).join('\n') + '\n');
        },
        'target caught up': async () => {
          position = await mysql(old, `${sql.gtidPosition};\n`);
          const r = await mysql(next, `${sql.gtidWait(position, waitS)};\n`);
          if (r !== '0') throw new SwitchoverError(`${next.name} did not apply ${plan.from}'s transactions (${position}) within ${waitS} s`, 'check its replication, then try again');
        },
        'promote the target': async () => {
          await mysql(next, sql.failover.promote.map((s) => `${s};`).join('\n') + '\n');
          promoted = true;
        },
        'accounts for the new primary': async () => {
          // the mysql role's accounts as apply renders them for the new topology (a replication
          // account from the old primary's address...), written on the new primary (replicated)
          const c = await conn(next);
          const live = parseAccounts((await c.exec(ACCOUNTS_FACT)).stdout);
          const acc = planAccounts(d, cluster, withLivePrimary(hosts, plan.to), live, (s) => store.get(s));
          if (acc) await c.exec('mysql', { stdin: acc.sql });
        },
        're-point the replicas': async () => {
          const src = replicaSource(withLivePrimary(hosts, plan.to));
          const pw = store.get(SECRETS.mysqlRepl);
          await Promise.all(plan.replicas.map(async (n) => {
            const h = byName(n);
            const adopt = n === plan.from && sql.failover.demotedPosition ? `${sql.stopReplica};\n${sql.failover.demotedPosition};\n` : '';
            await (await conn(h)).exec('mysql', { stdin: adopt + changeSourceSql(d, src, pw) });
          }));
        },
        'proxy: new primary, release writes': async () => {
          await proxyConfig(plan.to, false);
          releasedAt = Date.now();
        },
        'server option files': async () => {
          // read_only & co. already set at run time; the mysql role's option file says the same for the next start
          const view = withLivePrimary(hosts, plan.to);
          await Promise.all([plan.from, plan.to].map(async (n) => {
            const h = view.find((x) => x.name === n)!;
            await (await conn(h)).writeFile(mysqlConfigPath(d), renderConfig(d, serverSettings(d, h, h.node.db!, cluster.database.semiSync)), { mode: '0644', owner: 'root:root' });
          }));
        },
        verify: async () => {
          const deadline = Date.now() + 20_000;
          let why = '';
          for (;;) {
            const outs = await readTopologyOutput(dbHosts, conns);
            const t = outs.map((o) => parseTopology(o.host.name, o.host.privateAddress, o.code, o.stdout));
            const np = livePrimary(plan.to, t);
            const lagging: string[] = [];
            for (const n of plan.replicas) {
              const o = outs.find((x) => x.host.name === n)!;
              const s = o.code === 0 ? parseReplicaStatus(o.stdout) : null;
              if (!s || s.sourceHost !== next.privateAddress || s.ioRunning !== 'Yes' || s.sqlRunning !== 'Yes') lagging.push(`${n} (${s ? `IO=${s.ioRunning} SQL=${s.sqlRunning} from ${s.sourceHost}${s.ioError ? `: ${s.ioError}` : ''}` : 'not a replica'})`);
            }
            const nt = t.find((x) => x.name === plan.to);
            if (np.ok && np.primary === plan.to && nt?.readOnly === false && lagging.length === 0) return;
            why = `${nt?.readOnly !== false ? `${plan.to} is not writable; ` : ''}${lagging.length ? `not replicating from ${plan.to}: ${lagging.join(', ')}` : ''}`;
            if (Date.now() > deadline) throw new SwitchoverError(`after the switchover: ${why}`, 'npx zx apply converges the replicas on the live primary');
            await new Promise((r) => setTimeout(r, 500));
          }
        },
      };
      try {
        await new Listr(
          plan.steps.map((s) => ({ title: s === 'promote the target' ? `promote ${plan.to}` : s === 'fence the old primary' ? `fence ${plan.from} (read_only)` : s, task: () => run[s]() })),
          { ...listrOptions(!json), exitOnError: true } as never,
        ).run();
      } catch (e) {
        const err = e as Error & { hint?: string };
        let undone = '';
        if (!promoted) {
          // before the promotion: the old primary takes the writes again, nothing was lost
          try {
            if (fenced) await mysql(old, sql.failover.unfence.map((s) => `${s};`).join('\n') + '\n');
            if (heldAt) await proxyConfig(plan.from, false);
            undone = `undone: ${plan.from} is the primary again and the held writes went to it (nothing lost)`;
          } catch (e2) {
            undone = `the undo failed too (${(e2 as Error).message}): make ${plan.from} writable (${sql.failover.unfence.join('; ')}) and run npx zx apply`;
          }
        } else if (!releasedAt) {
          // promoted: the proxy must follow the new primary whatever else failed
          await proxyConfig(plan.to, false).catch(() => undefined);
          undone = `${plan.to} is the primary now; npx zx apply converges the rest`;
        }
        throw new SwitchoverError(`switchover ${plan.from} -> ${plan.to} failed: ${err.message}${undone ? `; ${undone}` : ''}`, err.hint ?? 'npx zx apply reports the live topology');
      }
      const durationMs = Date.now() - started;
      const heldMs = releasedAt - heldAt;
      if (json) process.stdout.write(JSON.stringify({ from: plan.from, to: plan.to, position, durationMs, heldMs, log: runLog.path }) + '\n');
      else process.stderr.write(`primary: ${plan.from} -> ${plan.to} in ${(durationMs / 1000).toFixed(1)} s (writes held ${(heldMs / 1000).toFixed(1)} s)\n`);
      return EXIT.ok;
    } finally {
      conns.close();
    }
  });
}
