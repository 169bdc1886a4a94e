// mysql: the database server on every DB node (MariaDB on Debian, MySQL 8 on
// Ubuntu): packages, option file, service, a server running that config, and
// (on the manager only: they replicate) users, grants and rampart's schemas.
import { HostError } from '../core/errors.ts';
import { fileFactCommand, shq } from '../core/ssh.ts';
import { defineRole } from '../core/roles.ts';
import type { Connection, Serial, Task, TaskContext, TaskWith } from '../core/types.ts';
import { catchUpScript, parseReplicaStatus, REPLICA_STATUS_FACT, replicaSource } from './lib/mysql-replication.ts';
import { SECRETS } from './lib/names.ts';
import { aptInstall, aptUpgrade, missingPackages, packagesFact, parsePendingUpgrades, PENDING_UPGRADES_FACT, refreshedUpgrades, splitRolled, wantedUpgrades, type PendingUpgrade } from './lib/apt.ts';
import { ACCOUNTS_FACT, parseAccounts, planAccounts } from './lib/mysql-accounts.ts';
import {
  assertUniqueServerIds, configPath, DB_TLS_PATHS, dbService, explainOverrides, LEGACY_CONFIG_PATHS, LIVE_VARIABLES_FACT, liveDrift, overridesFact, parseVariables,
  renderConfig, serverSettings, type ServerSetting,
} from './lib/mysql-config.ts';
import { DIALECT_SQL, INSTALL_GTIDS_ONLY_SQL, parseServerVersion, resetInstallGtidsSql, SERVER_VERSION_FACT, unsupportedVersion, versionText } from './lib/mysql-dialect.ts';
import { dialectFor, OS_ID_FACT, type Dialect } from './lib/os.ts';
import { files, staleFiles, unitRunning } from './lib/ops.ts';
import { nodeTls } from './lib/tls.ts';

/** The DB server's packages per dialect: the role's manifest `packages` (what base installs, what this role upgrades under its serial). */
export const DB_PACKAGES: Record<Dialect, string[]> = {
  mariadb: ['mariadb-server', 'mariadb-client'],
  mysql: ['mysql-server', 'mysql-client'],
};

type Ctx = Omit<TaskContext, 'facts'>;

const dialect = (ctx: TaskContext): Dialect => dialectFor(ctx.cluster, ctx.facts.os?.stdout ?? '');
const notDb = ({ host }: Ctx) => (host.node.db ? null : 'not a DB node');

/**
 * A package script still running on the node: the apt-get/dpkg of an apply
 * killed part-way keeps going (and its postinst restarts the server), and the
 * script around it may start another apt-get after its `apt-get update`, so the
 * script itself (recognised by its --force-confold) is waited for too.
 */
const APT_RUNNING = `pgrep -f 'force-confol[d]' || pgrep -x 'apt-get|dpkg' || pgrep -x apt`;

/** Prints `busy` while a package script runs, `audit` when dpkg was interrupted. */
const DPKG_STATE_FACT = `{ ${APT_RUNNING}; } >/dev/null && echo busy; [ -n "$(dpkg --audit 2>/dev/null)" ] && echo audit; true`;

const packages: TaskWith<string[]> = {
  name: 'server packages',
  when: notDb,
  facts: () => ({ os: OS_ID_FACT, pkgs: packagesFact([...DB_PACKAGES.mariadb, ...DB_PACKAGES.mysql]), dpkg: DPKG_STATE_FACT }),
  check: (ctx) => {
    const missing = missingPackages(DB_PACKAGES[dialect(ctx)], ctx.facts.pkgs.stdout);
    const state = ctx.facts.dpkg.stdout;
    const why = [
      ...(missing.length ? [`install ${missing.join(' ')}`] : []),
      ...(state.includes('busy') ? ['wait for a running apt/dpkg'] : []),
      ...(state.includes('audit') ? ['finish an interrupted dpkg'] : []),
    ];
    return why.length ? { message: why.join('; '), data: missing } : null;
  },
  apply: async ({ conn, cluster }, diff) => {
    // wait (up to 10 min) for a package script left by a killed apply, then let dpkg finish anything interrupted
    await conn.exec(`for i in $(seq 600); do { ${APT_RUNNING}; } >/dev/null || break; sleep 1; done
{ ${APT_RUNNING}; } >/dev/null && { echo "apt/dpkg still running after 10 minutes" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a`);
    await aptInstall(conn, diff.data, cluster.apt.cacheValidSeconds);
  },
};

/** The pending upgrades (apt.upgrades policy) of the DB server's packages and what they pull in (same source package). */
function serverUpgrades(ctx: Ctx, upgrades: PendingUpgrade[]): PendingUpgrade[] {
  return splitRolled(wantedUpgrades(upgrades, ctx.cluster.apt.upgrades), ctx.cluster.roles.rolledPackages(ctx.host.node, 'mysql')).rolled;
}

/**
 * A pending upgrade of the DB server is installed here, not by base: this role
 * rolls (`serial: rolling`), so one DB node at a time is upgraded, restarted,
 * checked to answer with its config, and (a worker) back in replication and
 * caught up before the next. base upgrades every other package.
 */
const upgrades: TaskWith<PendingUpgrade[]> = {
  name: 'server package upgrades',
  when: notDb,
  facts: () => ({ os: OS_ID_FACT, pending: PENDING_UPGRADES_FACT }),
  check: (ctx) => {
    const want = serverUpgrades(ctx, parsePendingUpgrades(ctx.facts.pending.stdout).upgrades);
    if (!want.length) return null;
    return {
      message: `upgrade ${want.map((u) => u.name).join(' ')} (one DB node at a time)`,
      data: want,
      detail: () => want.map((u) => `${u.name}: ${u.from} -> ${u.to}${u.security ? ' (security)' : ''}\n`).join(''),
    };
  },
  apply: async (ctx) => {
    // what the lists say now (base refreshed them in this run: within apt.cacheValidSeconds)
    const now = serverUpgrades(ctx, await refreshedUpgrades(ctx.conn, ctx.cluster.apt.cacheValidSeconds));
    if (!now.length) return 'nothing to upgrade';
    await aptUpgrade(ctx.conn, now.map((u) => u.name));
    const d = dialect(ctx);
    // the package's own scripts restart the server on an upgrade; a server still running the old binary is restarted here
    const pkg = DB_PACKAGES[d][0];
    const r = await ctx.conn.exec(`v=$(dpkg-query -W -f='\${Version}' ${pkg}); s=$(mysql -N -B -e 'SELECT VERSION()' 2>/dev/null || true); case "$v" in *"\${s%%-*}-"*) [ -n "$s" ] && echo same;; esac; true`);
    if (!r.stdout.includes('same')) await ctx.conn.exec(`systemctl restart ${dbService(d)}`);
    await verifyRunning(ctx, serverSettings(d, ctx.host, ctx.host.node.db!));
    return `upgraded ${now.map((u) => `${u.name} ${u.from} -> ${u.to}`).join(', ')}; ${dbService(d)} restarted on the new version, live variables as configured`;
  },
};

function desiredConfig(ctx: TaskContext): { path: string; content: string } {
  const d = dialect(ctx);
  assertUniqueServerIds(ctx.hosts.filter((h) => h.node.db).map((h) => h.node.name));
  return { path: configPath(d), content: renderConfig(d, serverSettings(d, ctx.host, ctx.host.node.db!, ctx.cluster.database.semiSync)) };
}

/** A leftover option file of an earlier version (MySQL's 60-rampart.cnf sorted before mysqld.cnf, so its bind_address was lost). */
const LEGACY_FACT = `for f in ${[...LEGACY_CONFIG_PATHS.mariadb, ...LEGACY_CONFIG_PATHS.mysql].map(shq).join(' ')}; do [ -e "$f" ] && echo "$f"; done; true`;

const config: TaskWith<string[]> = {
  name: 'server config',
  when: notDb,
  facts: () => ({
    os: OS_ID_FACT,
    mariadb: fileFactCommand(configPath('mariadb')),
    mysql: fileFactCommand(configPath('mysql')),
    legacy: LEGACY_FACT,
  }),
  check: (ctx) => {
    const want = desiredConfig(ctx);
    const have = ctx.facts[dialect(ctx)].stdout.trim();
    const legacy = ctx.facts.legacy.stdout.split('\n').filter((l) => LEGACY_CONFIG_PATHS[dialect(ctx)].includes(l.trim()));
    const stale = staleFiles([{ ...want, mode: '0644', owner: 'root:root' }], () => have);
    const todo = [
      ...stale.map((f) => `write ${f.path}${have === 'absent' ? '' : ' (differs)'}`),
      ...legacy.map((l) => `remove ${l.trim()} (read before the packaged defaults: its settings were lost)`),
    ];
    return todo.length ? { message: todo.join('; '), data: legacy } : null;
  },
  apply: async (ctx, diff) => {
    const want = desiredConfig(ctx);
    await ctx.conn.writeFile(want.path, want.content, { mode: '0644', owner: 'root:root' });
    const legacy = diff.data;
    if (legacy.length) await ctx.conn.exec(`rm -f ${legacy.map((l) => shq(l.trim())).join(' ')}`);
  },
};

/**
 * The server's certificate (from the cluster CA, naming its address) before the
 * option file names it. A running server loads new files without a restart
 * (FLUSH SSL / ALTER INSTANCE RELOAD TLS); connections open keep their session.
 */
const tlsFiles = files('server tls certificate', [
  { path: () => DB_TLS_PATHS.ca, content: (ctx) => nodeTls(ctx.cluster, ctx.host).ca, mode: '0644', owner: 'root:root' },
  { path: () => DB_TLS_PATHS.cert, content: (ctx) => nodeTls(ctx.cluster, ctx.host).cert, mode: '0644', owner: 'root:root' },
  { path: () => DB_TLS_PATHS.key, content: (ctx) => nodeTls(ctx.cluster, ctx.host).key, mode: '0600', owner: 'mysql:mysql' },
], {
  when: notDb,
  after: async ({ conn, cluster }) => {
    const d = dialectFor(cluster, (await conn.exec(OS_ID_FACT)).stdout);
    // a server not running yet (or not yet configured for TLS) reads them when it starts
    await conn.exec(`mysql -e ${shq(DIALECT_SQL[d].reloadTls)} 2>/dev/null || true`);
  },
});

const service = unitRunning({ among: ['mariadb', 'mysql'], pick: (ctx) => dbService(dialect(ctx)) }, {
  name: 'server enabled and running',
  when: notDb,
  facts: { os: OS_ID_FACT },
});

/** Read the live variables, waiting (bounded) for a server that is still starting. */
async function liveVariables(conn: Connection, timeoutS = 60): Promise<Map<string, string> | null> {
  const r = await conn.exec(`for i in $(seq ${timeoutS * 4}); do ${LIVE_VARIABLES_FACT} 2>/dev/null && exit 0; sleep 0.25; done; exit 1`, { check: false });
  return r.code === 0 ? parseVariables(r.stdout) : null;
}

/**
 * After a restart the live variables must be what the option file says; when
 * they are not, another option file read after ours overrides them: name it.
 */
async function verifyRunning(ctx: TaskContext, settings: ServerSetting[]): Promise<void> {
  const d = dialect(ctx);
  const unit = dbService(d);
  const live = await liveVariables(ctx.conn);
  if (!live) {
    const log = await ctx.conn.exec(`systemctl is-active ${unit}; journalctl -u ${unit} -n 15 --no-pager -o cat 2>/dev/null | cut -c1-300`, { check: false });
    throw new HostError(`${ctx.host.name}: ${unit} does not answer after the restart: ${log.stdout.trim().split('\n').join(' | ')}`, `journalctl -u ${unit} on ${ctx.host.name}`);
  }
  const drift = liveDrift(settings, live);
  if (!drift.length) return;
  const options = settings.filter((st) => drift.some((x) => x.startsWith(`${st.variable}:`))).map((st) => st.option);
  const why = explainOverrides(d, options, (await ctx.conn.exec(overridesFact(options), { check: false })).stdout);
  throw new HostError(
    `${ctx.host.name}: ${unit} was restarted but still runs ${drift.join(', ')}: ${why.join('; ')}`,
    `an option file read after ${configPath(d)} sets these again (my_print_defaults mysqld shows what the server reads); remove the line or give it rampart's value`,
  );
}

// Restarting here, when the RUNNING server differs from the config (not merely
// when the file was rewritten), also repairs an apply killed between writing the
// file and restarting, and puts the binary log on before the first user is
// written (otherwise users created on a fresh manager would never replicate).
// After the restart the live variables are read again: a setting another option
// file overrides fails here, naming that file, instead of restarting on every run.
const running: TaskWith<{ unsupported?: string; firstBinlog?: boolean }> = {
  name: 'server runs the config',
  when: notDb,
  facts: () => ({ os: OS_ID_FACT, vars: LIVE_VARIABLES_FACT, version: SERVER_VERSION_FACT }),
  check: (ctx) => {
    const d = dialect(ctx);
    const version = parseServerVersion(ctx.facts.version.stdout);
    const bad = version && unsupportedVersion(version, d);
    if (bad) return { message: `unsupported server: ${bad}`, data: { unsupported: bad } };
    if (ctx.facts.vars.code !== 0) return { message: 'server not answering: restart', data: {} };
    const drift = liveDrift(serverSettings(d, ctx.host, ctx.host.node.db!, ctx.cluster.database.semiSync), parseVariables(ctx.facts.vars.stdout));
    // the server's first config (its package's server_id and binary log name): see resetInstallGtidsSql
    const firstBinlog = d === 'mysql' && drift.some((x) => x.startsWith('server_id:') || x.startsWith('log_bin:'));
    return drift.length ? { message: `restart ${dbService(d)} (${drift.join(', ')})`, data: { firstBinlog }, detail: () => drift.map((x) => `${x}\n`).join('') } : null;
  },
  apply: async (ctx, diff) => {
    const bad = diff.data.unsupported;
    if (bad) throw new HostError(`${ctx.host.name}: ${bad}`, 'see the support matrix in the README (database.engine, provider.local.suite, provider.aws.ubuntu)');
    const d = dialect(ctx);
    await ctx.conn.exec(`systemctl restart ${dbService(d)}`);
    await verifyRunning(ctx, serverSettings(d, ctx.host, ctx.host.node.db!, ctx.cluster.database.semiSync));
    const version = parseServerVersion(ctx.facts.version.stdout);
    let reset = '';
    if (diff.data.firstBinlog) {
      const only = await ctx.conn.exec('mysql -N -B', { stdin: `${INSTALL_GTIDS_ONLY_SQL};\n` });
      if (only.stdout.trim() === '1') {
        await ctx.conn.exec('mysql', { stdin: resetInstallGtidsSql(version) });
        reset = '; the install-time GTIDs no binary log holds any more were reset';
      }
    }
    return `restarted${version ? ` ${versionText(version)}` : ''}; live variables as configured${reset}`;
  },
};

const accounts: Task = {
  name: 'users, grants and schemas',
  when: (ctx) => notDb(ctx) ?? (ctx.host.node.db === 'manager' ? null : 'written on the manager only (replicated)'),
  facts: () => ({ os: OS_ID_FACT, accounts: ACCOUNTS_FACT }),
  check: (ctx) => {
    if (ctx.facts.accounts.code !== 0) return { message: 'server not answering: create users and schemas' };
    const plan = planAccounts(dialect(ctx), ctx.cluster, ctx.hosts, parseAccounts(ctx.facts.accounts.stdout), (s) => ctx.secrets.get(s));
    return plan ? { message: plan.reasons.join('; '), detail: () => plan.reasons.map((r) => `${r}\n`).join('') } : null;
  },
  apply: async (ctx) => {
    // re-read now: the check may have run before the server was up
    const live = await ctx.conn.exec(ACCOUNTS_FACT);
    const plan = planAccounts(dialect(ctx), ctx.cluster, ctx.hosts, parseAccounts(live.stdout), (s) => ctx.secrets.get(s));
    if (!plan) return 'already as wanted';
    await ctx.conn.exec('mysql', { stdin: plan.sql });
    return plan.reasons.join('; ');
  },
};

/**
 * A change that restarts the server rolls: workers one at a time, each back in
 * replication and caught up with the manager (and given a few probe intervals
 * for the proxy to route reads to it again) before the next; the manager last,
 * so reads are always served by someone and writes stop only for the
 * manager's own restart. A host that fails stops the rollout.
 */
const rolling: Serial = {
  size: 1,
  order: (hosts) => [...hosts.filter((h) => h.node.db === 'worker'), ...hosts.filter((h) => h.node.db !== 'worker')],
  settle: async (ctx) => {
    if (ctx.host.node.db !== 'worker') return 'the manager answers with its config';
    const status = parseReplicaStatus((await ctx.conn.exec(REPLICA_STATUS_FACT, { check: false })).stdout);
    if (!status) return 'not a replica yet (the replication role makes it one)';
    if (!/^(Yes|Connecting)$/.test(status.ioRunning) && status.sqlRunning !== 'Yes') return 'replication is stopped (the replication role repairs it)';
    const d = dialectFor(ctx.cluster, (await ctx.conn.exec(OS_ID_FACT)).stdout);
    const r = await ctx.conn.exec(catchUpScript(d, replicaSource(ctx.hosts), 120), { stdin: `${ctx.secrets.get(SECRETS.mysqlRepl)}\n`, check: false });
    if (r.code !== 0) {
      throw new HostError(`${ctx.host.name}: not back in replication after the change: ${r.stderr.trim()}`, 'the rollout stopped before the next DB node; fix this one and apply again');
    }
    // the proxy's probes (every probeIntervalMs) route reads to it again once it answers caught up
    await new Promise((resolve) => setTimeout(resolve, 3 * ctx.cluster.services.proxy.probeIntervalMs));
    return `back in replication, caught up to GTID ${r.stdout.trim()}`;
  },
};

export const mysqlRole = defineRole({
  name: 'mysql',
  after: ['iptables'],
  requires: [{
    field: 'db',
    describe: '"db: manager" or "db: worker"',
    orphan: { at: 'roles', message: (i, db) => `nodes[${i}].roles must include mysql (the node has db: ${db})` },
  }],
  packages: ({ dialect }) => DB_PACKAGES[dialect],
  tasks: [packages, upgrades, tlsFiles, config, service, running, accounts],
  serial: rolling,
});
