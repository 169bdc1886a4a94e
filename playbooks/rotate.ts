// `npx zx rotate`: new generated secrets without a failed request. Every
// credential goes through an overlap: the receiver accepts old + new, the
// sender switches to new, the receiver drops old. The services take each step
// by re-reading their config on SIGHUP (no restart: nothing in flight is
// dropped); the DB accounts get ALTER USER on the manager (replicated), with
// MySQL's RETAIN / DISCARD OLD PASSWORD where the dialect has them, and the
// proxy logs in with either password meanwhile (MariaDB has no dual password);
// the replicas are re-pointed with the new replication password. What rotates
// comes from the accounts' definition (roles/lib/mysql-accounts.ts) and the
// hop chain (roles/service.ts), so a new account joins without new code.
// An interrupted rotation is resumed by the next run (its old and new values
// are kept 0600 in .rampart/rotation.json until it completes).
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Listr } from 'listr2';
import { clusterFile, EXIT, parseFlags, runMain, UsageError } from '../core/cli.ts';
import { RampartError } from '../core/errors.ts';
import { listrOptions } from '../core/output.ts';
import { RunLog } from '../core/runlog.ts';
import { FileSecretStore, secretsWith, teamApiKey } from '../core/secrets.ts';
import { loadClusterWithRoles } from '../core/spec.ts';
import { shq } from '../core/ssh.ts';
import { ensureStateDir, readJson, writeFileAtomic } from '../core/state.ts';
import type { Cluster, Connection, Host, ServiceName } from '../core/types.ts';
import { callerOf, SERVICE_NAMES } from '../services/contract.ts';
import { RELOAD_FAILED, RELOADED } from '../services/config.ts';
import { type Account, desiredAccounts, managerHost, passwordChangeSql, passwordDiscardSql, workerHosts } from '../roles/lib/mysql-accounts.ts';
import { DIALECT_SQL } from '../roles/lib/mysql-dialect.ts';
import { SYSBENCH_OPTIONS_PATH, sysbenchOptions } from '../roles/lib/mysql-meta.ts';
import { catchUpScript, changeSourceSql, replicaSource } from '../roles/lib/mysql-replication.ts';
import { SECRETS } from '../roles/lib/names.ts';
import { dialectFor, OS_ID_FACT, type Dialect } from '../roles/lib/os.ts';
import { configPath, configText, INBOUND_SECRET, SERVICE_USER, unitName, type Overlap } from '../roles/service.ts';
import { runningCluster } from './running.ts';

const HELP = `usage: npx zx rotate [--only api-key,hops,db] [--check] [--grace SECONDS] [--json] [-f cluster.yaml]

Rotate the generated secrets of a running cluster with no failed request: the
gatekeeper's API key, the internal hop credentials and the DB accounts' passwords.
Each goes through an overlap (the receiver accepts old and new, the sender switches,
the receiver drops the old); services reload their config on SIGHUP, nothing restarts.
A team-supplied API key (services.gatekeeper.apiKeyFile / apiKeyEnv) is left alone.
  --only LIST      api-key, hops, db (default: all)
  --check          list what would rotate, change nothing
  --grace SECONDS  how long the old API key is still accepted after the new one is
                   stored in .rampart/secrets.json, for clients to pick it up (default 10)
  --json           one JSON object on stdout
Exit: 0 ok, 1 failed (rerun to resume), 2 usage, 3 invalid cluster.yaml, 4 provider error.
`;

export const GROUPS = ['api-key', 'hops', 'db'] as const;
export type Group = (typeof GROUPS)[number];

export class RotateError extends RampartError {}

/** One secret to rotate. */
export interface Item {
  secret: string;
  group: Group;
  /** What it is, for the output (never the value). */
  what: string;
  /** The DB accounts whose password it is (db only). */
  accounts: Account[];
}

export interface Plan {
  items: Item[];
  /** What is not rotated, and why. */
  skipped: string[];
}

/** What rotates (pure): the API key unless the team's own, each hop's inbound credential, each DB account's password. */
export function rotationPlan(d: Dialect, cluster: Cluster, hosts: Host[], only: ReadonlySet<Group> = new Set(GROUPS)): Plan {
  const items: Item[] = [];
  const skipped: string[] = [];
  if (only.has('api-key')) {
    const gk = cluster.services.gatekeeper;
    if (teamApiKey(gk) !== null) {
      skipped.push(`API key: the team's own (services.gatekeeper.${gk.apiKeyFile ? 'apiKeyFile' : 'apiKeyEnv'}); change it there, then npx zx apply`);
    } else {
      items.push({ secret: SECRETS.apiKey, group: 'api-key', what: 'gatekeeper API key (X-API-Key)', accounts: [] });
    }
  }
  if (only.has('hops')) {
    for (const s of SERVICE_NAMES) {
      const secret = INBOUND_SECRET[s];
      if (secret && hosts.some((h) => h.node.service === s)) items.push({ secret, group: 'hops', what: `${callerOf(s)} -> ${s} credential`, accounts: [] });
    }
  }
  if (only.has('db') && managerHost(hosts)) {
    const bySecret = new Map<string, Account[]>();
    for (const a of desiredAccounts(d, cluster, hosts)) bySecret.set(a.secret, [...(bySecret.get(a.secret) ?? []), a]);
    for (const [secret, accounts] of bySecret) {
      const users = [...new Set(accounts.map((a) => a.user))].join(', ');
      items.push({ secret, group: 'db', what: `DB password of ${users} (${accounts.length} account${accounts.length === 1 ? '' : 's'}, used by ${accounts[0].usedBy})`, accounts });
    }
  }
  return { items, skipped };
}

export type Step =
  | { kind: 'configs'; phase: 'accept' | 'switch' | 'final' }
  | { kind: 'alter' }
  | { kind: 'replicas caught up' }
  | { kind: 'repoint replicas' }
  | { kind: 'tool option files' }
  | { kind: 'store' }
  | { kind: 'grace' }
  | { kind: 'discard old passwords' };

/**
 * The order that keeps every link working (pure): configs accepting both (the
 * proxy able to log in with both) -> ALTER USER -> the replicas have it ->
 * replication re-pointed -> new values stored (clients read them) -> senders
 * switch -> grace for API clients -> receivers drop the old -> DISCARD OLD PASSWORD.
 */
export function rotationSteps(d: Dialect, plan: Plan): Step[] {
  const db = plan.items.filter((i) => i.group === 'db');
  const steps: Step[] = [];
  const configs = plan.items.some((i) => i.group !== 'db' || i.accounts.some((a) => a.usedBy === 'proxy'));
  if (configs) steps.push({ kind: 'configs', phase: 'accept' });
  if (db.length) steps.push({ kind: 'alter' }, { kind: 'replicas caught up' });
  if (db.some((i) => i.accounts.some((a) => a.usedBy === 'replication'))) steps.push({ kind: 'repoint replicas' });
  if (db.some((i) => i.accounts.some((a) => a.usedBy === 'tool'))) steps.push({ kind: 'tool option files' });
  steps.push({ kind: 'store' });
  if (configs) steps.push({ kind: 'configs', phase: 'switch' });
  if (plan.items.some((i) => i.group === 'api-key')) steps.push({ kind: 'grace' });
  if (configs) steps.push({ kind: 'configs', phase: 'final' });
  if (db.length && passwordDiscardSql(d, db.flatMap((i) => i.accounts))) steps.push({ kind: 'discard old passwords' });
  return steps;
}

/** The overlap a config phase renders with (`store` holds the new values). */
export function phaseOverlap(phase: 'accept' | 'switch' | 'final', old: Record<string, string>): Overlap | undefined {
  return phase === 'final' ? undefined : { previous: old, send: phase === 'accept' ? 'old' : 'new' };
}

/** Node-side: SIGHUP the service and wait for its journal line saying the new config is live (or why not). */
export function reloadScript(s: ServiceName, timeoutS = 30): string {
  const unit = unitName(s);
  const pattern = `^${s}: (${RELOADED}|${RELOAD_FAILED})`;
  return `set -u
pid=$(systemctl show -p MainPID --value ${unit})
[ "\${pid:-0}" -gt 0 ] || { echo "${unit} is not running (npx zx apply starts it)"; exit 1; }
count() { journalctl _PID="$pid" -o cat --no-pager 2>/dev/null | grep -cE ${shq(pattern)}; }
before=$(count)
kill -HUP "$pid"
end=$(( $(date +%s) + ${timeoutS} ))
while [ "$(date +%s)" -lt "$end" ]; do
  if [ "$(count)" -gt "$before" ]; then
    line=$(journalctl _PID="$pid" -o cat --no-pager | grep -E ${shq(pattern)} | tail -n 1)
    echo "$line"
    case "$line" in *${shq(RELOADED)}*) exit 0 ;; *) exit 1 ;; esac
  fi
  sleep 0.2
done
echo "${s}: no reload within ${timeoutS} s (pid $pid)"
exit 1`;
}

const newSecret = () => randomBytes(24).toString('base64url');

interface Pending {
  old: Record<string, string>;
  next: Record<string, string>;
}

export async function main(args: string[]): Promise<never> {
  let json = args.includes('--json');
  return runMain(() => json, async () => {
    const flags = parseFlags(args, { only: { type: 'string' }, check: { type: 'boolean', default: false }, grace: { type: 'string', default: '10' } });
    json = Boolean(flags.json);
    if (flags.help) {
      process.stdout.write(HELP);
      return EXIT.ok;
    }
    const only = flags.only ? String(flags.only).split(',').map((s) => s.trim()).filter(Boolean) : [...GROUPS];
    const bad = only.filter((g) => !(GROUPS as readonly string[]).includes(g));
    if (bad.length) throw new UsageError(`--only names unknown group(s): ${bad.join(', ')} (groups: ${GROUPS.join(', ')})`);
    const grace = Number(flags.grace);
    if (!Number.isFinite(grace) || grace < 0) throw new UsageError(`--grace must be a number of seconds >= 0 (got ${flags.grace})`);
    const started = Date.now();
    const cluster = await loadClusterWithRoles(clusterFile(flags.file as string | undefined));
    const paths = ensureStateDir(cluster.dir);
    const store = new FileSecretStore(cluster.dir);
    const pendingPath = join(paths.dir, 'rotation.json');
    const resumed = existsSync(pendingPath) ? readJson<Pending | null>(pendingPath, null) : null;
    const runLog = new RunLog(paths.dir, 'rotate', [...store.values(), ...Object.values(resumed?.next ?? {}), teamApiKey(cluster.services.gatekeeper) ?? ''].filter(Boolean));
    const { hosts, conns } = await runningCluster(cluster, runLog, (missing) => new RotateError(`not running: ${missing.join(', ')}`, 'npx zx apply first; a rotation needs every node'));
    const conn = (h: Host): Promise<Connection> => conns.get(h);
    try {
      const manager = managerHost(hosts);
      const d: Dialect = manager ? dialectFor(cluster, (await (await conn(manager)).exec(OS_ID_FACT)).stdout) : 'mariadb';
      const plan = rotationPlan(d, cluster, hosts, new Set(only as Group[]));
      const steps = rotationSteps(d, plan);
      if (flags.check) {
        if (json) process.stdout.write(JSON.stringify({ check: true, rotate: plan.items.map((i) => i.what), skipped: plan.skipped, steps: steps.map(stepTitle) }) + '\n');
        else {
          for (const i of plan.items) process.stdout.write(`would rotate: ${i.what}\n`);
          for (const s of plan.skipped) process.stdout.write(`left alone: ${s}\n`);
        }
        return EXIT.ok;
      }
      // a rotation that stopped half way is finished with the same values (every step can run again)
      const pending: Pending = resumed ?? { old: {}, next: {} };
      for (const i of plan.items) {
        if (pending.next[i.secret]) continue;
        pending.old[i.secret] = store.get(i.secret);
        pending.next[i.secret] = newSecret();
      }
      writeFileAtomic(pendingPath, JSON.stringify(pending) + '\n', 0o600);
      const masked = new RunLog(paths.dir, 'rotate', [...store.values(), ...Object.values(pending.next), ...Object.values(pending.old)]);
      // reconnect with the log that masks the new values too
      conns.reset({ ...conns.options, log: masked.record });
      const next = secretsWith(store, pending.next);
      const services = hosts.filter((h) => h.node.service);
      const dbAccounts = plan.items.filter((i) => i.group === 'db').flatMap((i) => i.accounts);
      const mysql = async (h: Host, sql: string): Promise<string> => (await (await conn(h)).exec('mysql -N -B', { stdin: sql })).stdout.trim();
      const run: Record<Step['kind'], (s: Step, set: (m: string) => void) => Promise<void>> = {
        configs: async (s, set) => {
          const phase = (s as Extract<Step, { kind: 'configs' }>).phase;
          const overlap = phaseOverlap(phase, pending.old);
          await Promise.all(services.map(async (h) => {
            const svc = h.node.service as ServiceName;
            const c = await conn(h);
            await c.writeFile(configPath(svc), configText(cluster, h, hosts, next, overlap), { mode: '0600', owner: `${SERVICE_USER}:${SERVICE_USER}` });
            const r = await c.exec(reloadScript(svc), { check: false });
            if (r.code !== 0) throw new RotateError(`${h.name}: ${r.stdout.trim() || r.stderr.trim()}`, 'rerun npx zx rotate to resume (the old secrets still work)');
            set(`${h.name} reloaded`);
          }));
        },
        alter: async () => {
          await mysql(manager!, passwordChangeSql(d, dbAccounts, (secret) => pending.next[secret]));
        },
        'replicas caught up': async () => {
          const pos = await mysql(manager!, `${DIALECT_SQL[d].gtidPosition};\n`);
          await Promise.all(workerHosts(hosts).map(async (w) => {
            const r = await mysql(w, `${DIALECT_SQL[d].gtidWait(pos, 60)};\n`);
            if (r !== '0') throw new RotateError(`${w.name}: did not apply the password change within 60 s (GTID ${pos})`, 'check replication (npx zx apply repairs it), then rerun npx zx rotate');
          }));
        },
        'repoint replicas': async () => {
          const src = replicaSource(hosts);
          const pw = pending.next[SECRETS.mysqlRepl] ?? store.get(SECRETS.mysqlRepl);
          // one replica at a time: the proxy keeps reads on the others (a stopped replica gets none)
          for (const w of workerHosts(hosts)) {
            const c = await conn(w);
            await c.exec('mysql', { stdin: changeSourceSql(d, src, pw) });
            // logs in to the manager with the new password and waits until caught up
            await c.exec(catchUpScript(d, src), { stdin: `${pw}\n` });
          }
        },
        'tool option files': async () => {
          // sysbench reads its password from the 0600 option file the sysbench role writes
          const pw = pending.next[SECRETS.mysqlSysbench];
          if (!pw) return;
          await Promise.all(hosts.filter((h) => h.node.db && h.node.roles.includes('sysbench')).map(async (h) => {
            await (await conn(h)).writeFile(SYSBENCH_OPTIONS_PATH, sysbenchOptions(cluster.database.sysbench, pw), { mode: '0600', owner: 'root:root' });
          }));
        },
        store: async () => {
          store.setAll(pending.next);
        },
        grace: async (_s, set) => {
          set(`old API key accepted for ${grace} s more`);
          await new Promise((r) => setTimeout(r, grace * 1000));
        },
        'discard old passwords': async () => {
          const sql = passwordDiscardSql(d, dbAccounts);
          if (sql) await mysql(manager!, sql);
        },
      };
      await new Listr(
        steps.map((s) => ({
          title: stepTitle(s),
          task: async (_: unknown, task: { output: string }) => run[s.kind](s, (m) => (task.output = m)),
        })),
        { ...listrOptions(!json), exitOnError: true } as never,
      ).run();
      rmSync(pendingPath, { force: true });
      const durationMs = Date.now() - started;
      if (json) process.stdout.write(JSON.stringify({ rotated: plan.items.map((i) => i.what), skipped: plan.skipped, resumed: Boolean(resumed), durationMs, log: masked.path }) + '\n');
      else {
        for (const i of plan.items) process.stderr.write(`rotated: ${i.what}\n`);
        for (const s of plan.skipped) process.stderr.write(`left alone: ${s}\n`);
        process.stderr.write(`rotation done in ${(durationMs / 1000).toFixed(1)} s${resumed ? ' (resumed)' : ''}\n`);
      }
      return EXIT.ok;
    } finally {
      conns.close();
    }
  });
}

function stepTitle(s: Step): string {
  switch (s.kind) {
    case 'configs':
      return { accept: 'services accept old and new (reload)', switch: 'senders switch to new (reload)', final: 'services drop the old (reload)' }[s.phase];
    case 'alter': return 'ALTER USER on the manager';
    case 'replicas caught up': return 'replicas have the new passwords';
    case 'repoint replicas': return 'replication re-pointed with its new password';
    case 'tool option files': return 'sysbench option files';
    case 'store': return 'new secrets stored (.rampart/secrets.json)';
    case 'grace': return 'grace for API clients';
    case 'discard old passwords': return 'DISCARD OLD PASSWORD';
  }
}
