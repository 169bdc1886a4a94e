// `npx zx bench`: load through the gatekeeper (writes, then reads per proxy
// mode), statistics, service logs and dumps collected over SSH, the
// replication proof, sysbench standalone vs cluster, report.md + report.html.
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Listr } from 'listr2';
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { RampartError } from '../core/errors.ts';
import { listrOptions } from '../core/output.ts';
import { FileSecretStore, teamApiKey } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { connect, KnownHosts } from '../core/ssh.ts';
import { ensureSshKey, readJson, statePaths } from '../core/state.ts';
import type { Cluster, Connection, Host, ProxyMode, ServiceName } from '../core/types.ts';
import { providerFor } from '../providers/index.ts';
import { SECRETS } from '../roles/lib/names.ts';
import { gatekeeperEndpoint } from '../roles/lib/tls.ts';
import { clientApiKey } from '../roles/service.ts';
import { collectLogs, makeResultsDir, resultsDir, writeArtifacts, type ServiceLog } from './bench/collect.ts';
import { dbAlive, scalar, sql } from './bench/db.ts';
import { health, keepAliveAgent, LoadClient, queryOnce, rateUnderLimit, runPhase, type Expectation } from './bench/load.ts';
import { judge } from './bench/judge.ts';
import { countRows, proveReplication, syncWorkers, type DbNodes } from './bench/replication.ts';
import { accountWrites, benchLastName, cleanupSql, failoverSeen } from './bench/writes.ts';
import { writeReports } from './bench/report.ts';
import { phaseStats } from './bench/stats.ts';
import { runSysbench, type DbHost } from './bench/sysbench.ts';
import type { BenchSummary, Phase, PhaseStats, ReplicationProof, RequestRecord, SysbenchResult } from './bench/types.ts';

const HELP = `usage: npx zx bench [--writes N] [--reads N] [--concurrency N] [--modes LIST] [--rate R]
                    [--sysbench-time S | --no-sysbench] [--out DIR] [--json] [-f cluster.yaml]

Load the applied cluster through the gatekeeper as an external client: N writes
(INSERT into sakila.actor), then N reads per proxy mode; check every response,
account for every request in each service's log, prove replication (GTID
caught up, identical dumps, exactly N new rows), run sysbench standalone vs
cluster, and write results/<timestamp>/report.md + report.html.
  --writes N         writes (default bench.writes of cluster.yaml)
  --reads N          reads per mode (default bench.reads)
  --concurrency N    requests in flight (default bench.concurrency)
  --modes LIST       read modes, comma separated (default: the proxy's modes)
  --rate R           start at most R requests per second (default: 90% of the gatekeeper's
                     per-client rate limit of cluster.yaml; 0 = no cap)
  --sysbench-time S  seconds per sysbench run (default database.sysbench.time)
  --no-sysbench      skip sysbench
  --out DIR          write the results into DIR (default results/<timestamp> beside cluster.yaml)
  --json             print summary.json on stdout
  -f, --file         cluster file (default ./cluster.yaml or $RAMPART_CLUSTER)
Exit: 0 everything checked out, 1 a request failed or a check did not hold (the report says which),
2 usage, 3 invalid cluster.yaml, 4 no applied cluster / gatekeeper unreachable / key refused.
`;

/** The bench cannot start: nothing to load, nobody answering, the key refused. */
export class BenchError extends RampartError {}

interface Options {
  writes: number;
  reads: number;
  concurrency: number;
  modes: ProxyMode[];
  rate?: number;
  sysbenchTime: number;
  sysbench: boolean;
  out?: string;
}

function intFlag(v: unknown, name: string, def: number, min: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min} (got ${String(v)})`);
  return n;
}

export function benchOptions(flags: Record<string, unknown>, cluster: Cluster): Options {
  const enabled = cluster.services.proxy.modes;
  const modes = flags.modes === undefined ? enabled : String(flags.modes).split(',').map((m) => m.trim()).filter(Boolean);
  const bad = modes.filter((m) => !enabled.includes(m as ProxyMode));
  if (bad.length || modes.length === 0) throw new UsageError(`--modes: ${bad.join(', ') || 'empty'} not among the proxy's modes (${enabled.join(', ')})`);
  // Stay under the gatekeeper's per-client rate limit unless told otherwise (0 = no cap).
  const rate = flags.rate === undefined ? rateUnderLimit(cluster.services.gatekeeper.rateLimit) : Number(flags.rate);
  if (!(rate >= 0)) throw new UsageError(`--rate must be a number >= 0 (got ${String(flags.rate)})`);
  return {
    writes: intFlag(flags.writes, 'writes', cluster.bench.writes, 0),
    reads: intFlag(flags.reads, 'reads', cluster.bench.reads, 0),
    concurrency: intFlag(flags.concurrency, 'concurrency', cluster.bench.concurrency, 1),
    modes: modes as ProxyMode[],
    rate: rate > 0 ? rate : undefined,
    sysbenchTime: intFlag(flags['sysbench-time'], 'sysbench-time', cluster.database.sysbench.time, 1),
    sysbench: !flags['no-sysbench'],
    out: flags.out === undefined ? undefined : String(flags.out),
  };
}

const PHASE_LETTER: Record<Phase, string> = { write: 'w', direct: 'd', random: 'r', customized: 'c' };

interface Topology {
  gatekeeper: Host;
  services: { host: Host; service: ServiceName }[];
  manager: Host;
  workers: Host[];
}

function topology(cluster: Cluster, hosts: Host[]): Topology {
  const applyHint = `run \`npx zx apply -f ${cluster.file}\` first`;
  if (hosts.length === 0) throw new BenchError(`no applied cluster: no node of "${cluster.name}" exists (provider ${cluster.provider.type})`, applyHint);
  const byName = new Map(hosts.map((h) => [h.node.name, h]));
  const need = (name: string, what: string): Host => {
    const h = byName.get(name);
    if (!h) throw new BenchError(`${what} ${name} of "${cluster.name}" does not exist`, applyHint);
    return h;
  };
  const gkNode = cluster.nodes.find((n) => n.service === 'gatekeeper' && n.public) ?? cluster.nodes.find((n) => n.service === 'gatekeeper');
  if (!gkNode) throw new BenchError(`cluster.yaml has no gatekeeper node (a node with service: gatekeeper)`);
  const managerNode = cluster.nodes.find((n) => n.db === 'manager');
  if (!managerNode) throw new BenchError('cluster.yaml has no manager (a node with db: manager)');
  return {
    gatekeeper: need(gkNode.name, 'gatekeeper node'),
    services: cluster.nodes.filter((n) => n.service).map((n) => ({ host: need(n.name, `${n.service} node`), service: n.service! })),
    manager: need(managerNode.name, 'manager node'),
    workers: cluster.nodes.filter((n) => n.db === 'worker').map((n) => need(n.name, 'worker node')),
  };
}

/** The API key, without generating one: a missing key means the cluster was never applied. */
function apiKey(cluster: Cluster): string {
  if (teamApiKey(cluster.services.gatekeeper) !== null) return clientApiKey(cluster, new FileSecretStore(cluster.dir));
  const paths = statePaths(cluster.dir);
  const stored = readJson<Record<string, string>>(paths.secrets, {});
  if (!stored[SECRETS.apiKey]) {
    throw new BenchError(`no API key in ${paths.secrets}: the cluster was not applied from here`, `run \`npx zx apply -f ${cluster.file}\` first`);
  }
  return new FileSecretStore(cluster.dir).get(SECRETS.apiKey);
}

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  return runMain(() => json, async () => {
    const flags = parseFlags(args, {
      writes: { type: 'string' }, reads: { type: 'string' }, concurrency: { type: 'string' }, modes: { type: 'string' },
      rate: { type: 'string' }, 'sysbench-time': { type: 'string' }, 'no-sysbench': { type: 'boolean', default: false }, out: { type: 'string' },
    });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const opts = benchOptions(flags, cluster);
    const summary = await bench(cluster, opts, !json);
    if (json) process.stdout.write(JSON.stringify(summary) + '\n');
    else process.stdout.write(formatResult(summary));
    return summary.ok ? EXIT.ok : EXIT.failed;
  });
}

function formatResult(s: BenchSummary): string {
  const lines = s.phases.map((p) =>
    `${p.phase.padEnd(11)} ${String(p.count).padStart(6)} req  ${String(p.errors).padStart(4)} err  ${p.throughput.toFixed(0).padStart(6)} req/s  p50 ${p.p50.toFixed(2)} ms  p99 ${p.p99.toFixed(2)} ms  ${Object.entries(p.byNode).map(([n, c]) => `${n}=${c}`).join(' ')}`);
  if (s.incidents.length) lines.push('', ...s.incidents.map((i) => `! ${i}`));
  lines.push('', `${s.ok ? 'OK' : 'FAILED'}: report ${s.dir}/report.html (and report.md)`);
  return lines.join('\n') + '\n';
}

async function bench(cluster: Cluster, opts: Options, progress: boolean): Promise<BenchSummary> {
  const t0 = performance.now();
  const startedAt = new Date();
  const provider = await providerFor(cluster);
  const topo = topology(cluster, await provider.describe());
  const key = apiKey(cluster);
  // HTTPS, the gatekeeper's certificate verified against the cluster CA (or the system's roots for its own)
  const endpoint = gatekeeperEndpoint(cluster, topo.gatekeeper);
  const base = endpoint.url;
  const ca = endpoint.ca ? readFileSync(endpoint.ca, 'utf8') : undefined;
  const target = `${topo.gatekeeper.address}:${cluster.services.gatekeeper.port}`;
  const agent = keepAliveAgent(2, { ca });
  const client = new LoadClient(base, opts.concurrency, ca);
  const dir = opts.out ?? resultsDir(cluster.dir, startedAt);
  const runId = `b${startedAt.toISOString().replace(/[-:T]/g, '').slice(0, 14)}`;
  const schema = cluster.database.schema;

  const sshKey = ensureSshKey(cluster.dir);
  const knownHosts = new KnownHosts(statePaths(cluster.dir).knownHosts);
  const conns = new Map<string, Connection | null>();
  const incidents: string[] = [];
  const records: Record<string, RequestRecord[]> = {};
  const walls: Record<string, number> = {};
  const timings: Record<string, number> = {};
  let before: Record<string, number | null> = {};
  let proof = null as ReplicationProof | null;
  let cleanup = null as BenchSummary['cleanup'];
  let dumps: Record<string, string> = {};
  let logs: ServiceLog[] = [];
  let sysbench: SysbenchResult[] = [];
  let sysbenchOut: Record<string, string> = {};
  let loadStart = new Date();
  const dbNodes = (): DbNodes => ({
    manager: { name: topo.manager.node.name, conn: conns.get(topo.manager.node.name) ?? null },
    workers: topo.workers.map((w) => ({ name: w.node.name, conn: conns.get(w.node.name) ?? null })),
  });
  const dbNames = [topo.manager, ...topo.workers].map((h) => h.node.name);
  const workerNames = topo.workers.map((h) => h.node.name);

  const phaseTask = (phase: Phase, count: number) => ({
    title: `${phase === 'write' ? 'writes' : `reads (${phase})`}: ${count} at concurrency ${opts.concurrency}`,
    skip: () => count === 0,
    task: async (_: unknown, task: { output: string; title: string }) => {
      const expect: Expectation = phase === 'write'
        ? { type: 'write', nodes: dbNames }
        : { type: 'read', mode: phase, nodes: dbNames };
      let last = 0;
      const run = await runPhase({
        url: base, apiKey: key, refreshKey: () => apiKey(cluster), phase, count, concurrency: opts.concurrency, rate: opts.rate, client, expect,
        requestId: (i) => `${runId}-${PHASE_LETTER[phase]}-${i}`,
        body: phase === 'write'
          ? () => ({ sql: 'INSERT INTO actor (first_name, last_name) VALUES (?, ?)', params: [cluster.bench.firstName, benchLastName(cluster.bench.lastName, runId)] })
          : (i) => ({ sql: 'SELECT actor_id, first_name, last_name FROM actor WHERE actor_id = ?', params: [1 + (i % 200)], mode: phase }),
        onProgress: (done, errors) => {
          const now = performance.now();
          if (now - last < 100 && done < count) return;
          last = now;
          const width = 30;
          const filled = Math.round((done / count) * width);
          task.output = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${count}${errors ? `, ${errors} failed` : ''}`;
        },
      });
      records[phase] = run.records;
      walls[phase] = run.wallMs;
      const failed = run.records.filter((r) => !r.ok).length;
      task.title = `${phase === 'write' ? 'writes' : `reads (${phase})`}: ${count} in ${(run.wallMs / 1000).toFixed(2)} s, ${((count * 1000) / run.wallMs).toFixed(0)} req/s${failed ? `, ${failed} FAILED` : ''}`;
    },
  });

  try {
    await new Listr(
      [
        {
          title: `connect: SSH to ${topo.services.length + 1 + topo.workers.length} nodes`,
          task: async () => {
            const hosts = [...new Map([...topo.services.map((s) => s.host), topo.manager, ...topo.workers].map((h) => [h.node.name, h])).values()];
            await Promise.all(hosts.map(async (h) => {
              try {
                conns.set(h.node.name, await connect(h, { privateKey: sshKey.privateKey, knownHosts, retryForMs: 5_000 }));
              } catch (e) {
                conns.set(h.node.name, null);
                incidents.push(`${h.node.name}: no SSH connection (${(e as Error).message}); its logs/dumps are missing`);
              }
            }));
          },
        },
        {
          title: `gatekeeper ${target}: health and API key`,
          task: async () => {
            try {
              await health(agent, base);
            } catch (e) {
              throw new BenchError(`gatekeeper unreachable at ${target}: ${(e as Error).message}`, 'is the cluster applied and the gatekeeper service running? (`npx zx apply`)');
            }
            let res;
            try {
              res = await queryOnce(agent, base, key, { sql: 'SELECT COUNT(*) AS n FROM actor', mode: 'direct', request_id: `${runId}-preflight` });
            } catch (e) {
              throw new BenchError(`gatekeeper at ${target} did not answer a query: ${(e as Error).message}`);
            }
            if (res.status === 401) throw new BenchError(`the gatekeeper at ${target} refused the API key (401)`, `the key in .rampart/secrets.json (${SECRETS.apiKey}) differs from the deployed one: rerun \`npx zx apply\``);
            if (res.status !== 200) {
              const err = (res.json?.error ?? {}) as { code?: string; message?: string };
              throw new BenchError(`the gatekeeper at ${target} answered ${res.status} to a test query: ${err.code ?? ''} ${err.message ?? ''}`.trim(), 'check the services: `journalctl -u rampart-gatekeeper` (and trustedhost, proxy) on the nodes');
            }
          },
        },
        {
          title: 'baseline: replicas caught up, actor rows per DB node',
          task: async (_, task) => {
            try {
              const sync = await syncWorkers(dbNodes(), 120);
              for (const [w, why] of Object.entries(sync.workers)) if (why) incidents.push(`before the run: ${w} ${why}`);
            } catch (e) {
              incidents.push(`before the run: replicas not synchronised (${(e as Error).message})`);
            }
            before = await countRows(dbNodes(), schema);
            task.title = `baseline: ${Object.entries(before).map(([n, c]) => `${n} ${c ?? '?'}`).join(', ')} actor rows`;
            loadStart = new Date();
          },
        },
        phaseTask('write', opts.writes),
        ...opts.modes.map((m) => phaseTask(m, opts.reads)),
        {
          title: 'replication proof: GTID wait, row counts, dumps',
          task: async (_, task) => {
            const s = performance.now();
            const okWrites = (records.write ?? []).filter((r) => r.ok).length;
            ({ proof, dumps } = await proveReplication(dbNodes(), schema, before, okWrites, 60));
            timings.proof = performance.now() - s;
            task.title = `replication proof: ${proof?.ok ? 'ok' : 'FAILED'} (${okWrites} new rows expected on ${dbNames.length} nodes)`;
          },
        },
        {
          title: 'cleanup: this run\'s rows removed on the primary, the id space given back',
          task: async (_, task) => {
            // the primary is where the writes were acknowledged (cluster.yaml's manager unless a failover moved it);
            // never written on a read-only node (a replica: that would be an errant transaction)
            const acked = (records.write ?? []).filter((r) => r.ok && r.node);
            const primary = acked.length ? acked[acked.length - 1].node! : topo.manager.node.name;
            const conn = conns.get(primary);
            try {
              if (!conn) throw new Error('no SSH connection');
              if ((await scalar(conn, 'SELECT @@GLOBAL.read_only')) !== '0') throw new Error('it is read-only (not the primary)');
              const rows = await sql(conn, cleanupSql(schema, cluster.bench.firstName, benchLastName(cluster.bench.lastName, runId)));
              cleanup = { node: primary, removed: Number(rows[0]?.[0] ?? 0), nextId: Number(rows[1]?.[0] ?? 0) };
              task.title = `cleanup: ${cleanup.removed} row(s) of this run removed on ${primary}, next actor_id ${cleanup.nextId}`;
            } catch (e) {
              incidents.push(`cleanup: this run's rows were not removed on ${primary} (${(e as Error).message}); remove them with DELETE FROM ${schema}.actor WHERE last_name = '${benchLastName(cluster.bench.lastName, runId)}'`);
            }
          },
        },
        {
          title: 'collect: service logs',
          task: async () => {
            const s = performance.now();
            logs = await collectLogs(topo.services.map((x) => ({ node: x.host.node.name, service: x.service, conn: conns.get(x.host.node.name) ?? null })), loadStart);
            timings.collect = performance.now() - s;
          },
        },
        {
          title: `sysbench standalone vs cluster (${opts.sysbenchTime} s per run)`,
          skip: () => (!opts.sysbench ? 'skipped (--no-sysbench)' : false),
          task: async (_, task) => {
            const s = performance.now();
            const store = new FileSecretStore(cluster.dir);
            const hosts: DbHost[] = [];
            for (const h of [topo.manager, ...topo.workers]) {
              const conn = conns.get(h.node.name);
              if (conn) hosts.push({ name: h.node.name, role: h.node.db === 'manager' ? 'manager' : 'worker', conn });
            }
            const sb = cluster.database.sysbench;
            const run = await runSysbench(hosts, {
              password: store.get(SECRETS.mysqlSysbench),
              tables: sb.tables, tableSize: sb.tableSize, threads: sb.threads, time: opts.sysbenchTime,
            }, (m) => (task.output = m));
            sysbench = run.results;
            sysbenchOut = run.outputs;
            incidents.push(...run.notes);
            for (const r of sysbench) if (!r.ok) incidents.push(`sysbench ${r.setup} ${r.test} on ${r.node} failed: ${r.error}`);
            timings.sysbench = performance.now() - s;
          },
        },
      ],
      { ...listrOptions(progress), exitOnError: true } as never,
    ).run();

    // ------------------------------------------------------------ judge
    const s = performance.now();
    const phases: PhaseStats[] = (['write', ...opts.modes] as Phase[]).filter((p) => records[p]).map((p) => phaseStats(p, records[p], walls[p]));
    const all = Object.values(records).flat();

    // Database availability after the load: a worker down explains routing and a failed proof.
    const down: string[] = [];
    await Promise.all(dbNames.map(async (n) => {
      const c = conns.get(n);
      if (c && !(await dbAlive(c).catch(() => false))) down.push(n);
    }));
    const verdict = judge({
      phases, records: all, logs, manager: topo.manager.node.name, workers: workerNames, down, proof, sysbench,
      rateLimit: cluster.services.gatekeeper.rateLimit,
    });
    const { distribution, accounting, ok } = verdict;
    incidents.push(...verdict.incidents);

    const summary: BenchSummary = {
      cluster: cluster.name, startedAt: startedAt.toISOString(), wallMs: 0, target, concurrency: opts.concurrency, rate: opts.rate,
      writes: accountWrites(opts.writes, records.write ?? [], proof?.nodes ?? null), failover: failoverSeen(records.write ?? []), cleanup, reads: opts.reads, modes: opts.modes, phases, distribution, logs: accounting, replication: proof, sysbench,
      incidents: [...new Set(incidents)], timings, ok, dir,
    };
    makeResultsDir(dir);
    writeArtifacts(dir, { logs, dumps, sysbench: sysbenchOut, clusterFile: cluster.file });
    timings.load = Object.values(walls).reduce((a, b) => a + b, 0);
    timings.report = performance.now() - s;
    summary.wallMs = Math.round(performance.now() - t0);
    writeFileSync(join(dir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
    const files = writeReports(dir, summary);
    if (!existsSync(files.html)) throw new BenchError(`report not written: ${files.html}`);
    return summary;
  } finally {
    agent.destroy();
    client.close();
    for (const c of conns.values()) c?.close();
  }
}
