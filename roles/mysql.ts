// mysql: the database server on every DB node (MariaDB on Debian, MySQL 8 on
// Ubuntu): packages, option file, service, a server running that config, and
// (on the manager only: they replicate) users, grants and rampart's schemas.
import { fileFactCommand, fileState } from '../core/ssh.ts';
import type { Role, Task, TaskContext } from '../core/types.ts';
import { aptInstall, missingPackages, packagesFact } from './lib/apt.ts';
import { ACCOUNTS_FACT, parseAccounts, planAccounts } from './lib/mysql-accounts.ts';
import {
  assertUniqueServerIds, configPath, dbService, LIVE_VARIABLES_FACT, liveDrift, parseVariables, renderConfig, serverSettings,
} from './lib/mysql-config.ts';
import { dialectFor, OS_ID_FACT, type Dialect } from './lib/os.ts';
import { DB_PACKAGES } from './lib/packages.ts';

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

const packages: Task = {
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
  apply: async ({ conn }, diff) => {
    // wait (up to 10 min) for a package script left by a killed apply, then let dpkg finish anything interrupted
    await conn.exec(`for i in $(seq 600); do { ${APT_RUNNING}; } >/dev/null || break; sleep 1; done
{ ${APT_RUNNING}; } >/dev/null && { echo "apt/dpkg still running after 10 minutes" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a`);
    await aptInstall(conn, diff.data as string[]);
  },
};

function desiredConfig(ctx: TaskContext): { path: string; content: string } {
  const d = dialect(ctx);
  assertUniqueServerIds(ctx.hosts.filter((h) => h.node.db).map((h) => h.node.name));
  return { path: configPath(d), content: renderConfig(d, serverSettings(d, ctx.host, ctx.host.node.db!)) };
}

const config: Task = {
  name: 'server config',
  when: notDb,
  facts: () => ({
    os: OS_ID_FACT,
    mariadb: fileFactCommand(configPath('mariadb')),
    mysql: fileFactCommand(configPath('mysql')),
  }),
  check: (ctx) => {
    const want = desiredConfig(ctx);
    const have = ctx.facts[dialect(ctx)].stdout.trim();
    return have === fileState(want.content, '0644', 'root:root') ? null : { message: `write ${want.path}${have === 'absent' ? '' : ' (differs)'}` };
  },
  apply: async (ctx) => {
    const want = desiredConfig(ctx);
    await ctx.conn.writeFile(want.path, want.content, { mode: '0644', owner: 'root:root' });
  },
};

const service: Task = {
  name: 'server enabled and running',
  when: notDb,
  facts: () => ({
    os: OS_ID_FACT,
    state: 'for s in mariadb mysql; do printf "%s %s %s\\n" "$s" "$(systemctl is-enabled $s 2>/dev/null)" "$(systemctl is-active $s 2>/dev/null)"; done',
  }),
  check: (ctx) => {
    const unit = dbService(dialect(ctx));
    const line = ctx.facts.state.stdout.split('\n').find((l) => l.startsWith(`${unit} `)) ?? '';
    const [, enabled, active] = line.split(' ');
    if (enabled === 'enabled' && active === 'active') return null;
    return { message: `${unit}: ${enabled || 'not installed'}/${active || 'inactive'} -> enabled/active` };
  },
  apply: async (ctx) => {
    await ctx.conn.exec(`systemctl enable --now ${dbService(dialect(ctx))}`);
  },
};

// Restarting here, when the RUNNING server differs from the config (not merely
// when the file was rewritten), also repairs an apply killed between writing the
// file and restarting, and puts the binary log on before the first user is
// written (otherwise users created on a fresh manager would never replicate).
const running: Task = {
  name: 'server runs the config',
  when: notDb,
  facts: () => ({ os: OS_ID_FACT, vars: LIVE_VARIABLES_FACT }),
  check: (ctx) => {
    const d = dialect(ctx);
    if (ctx.facts.vars.code !== 0) return { message: 'server not answering: restart' };
    const drift = liveDrift(serverSettings(d, ctx.host, ctx.host.node.db!), parseVariables(ctx.facts.vars.stdout));
    return drift.length ? { message: `restart ${dbService(d)} (${drift.join(', ')})` } : null;
  },
  apply: async (ctx) => {
    await ctx.conn.exec(`systemctl restart ${dbService(dialect(ctx))}`);
  },
};

const accounts: Task = {
  name: 'users, grants and schemas',
  when: (ctx) => notDb(ctx) ?? (ctx.host.node.db === 'manager' ? null : 'written on the manager only (replicated)'),
  facts: () => ({ os: OS_ID_FACT, accounts: ACCOUNTS_FACT }),
  check: (ctx) => {
    if (ctx.facts.accounts.code !== 0) return { message: 'server not answering: create users and schemas' };
    const plan = planAccounts(dialect(ctx), ctx.cluster, ctx.hosts, parseAccounts(ctx.facts.accounts.stdout), (s) => ctx.secrets.get(s));
    return plan ? { message: plan.reasons.join('; ') } : null;
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

export const mysqlRole: Role = {
  name: 'mysql',
  tasks: [packages, config, service, running, accounts],
};
