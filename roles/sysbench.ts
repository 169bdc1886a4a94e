// sysbench: the tool on every DB node, its 0600 option file (user, password,
// socket, table sizes: the bench playbook runs `sysbench --config-file=...`),
// and its tables prepared once on the manager, replicated to the workers.
// Bench plan: oltp_read_only on every node; oltp_read_write on the manager
// only (workers are read-only replicas).
import { fileFactCommand } from '../core/ssh.ts';
import { defineRole } from '../core/roles.ts';
import type { DatabaseSpec, Task, TaskContext } from '../core/types.ts';
import { aptInstall, missingPackages, packagesFact } from './lib/apt.ts';
import { fileTask } from './lib/files.ts';
import {
  parseSysbenchTables, SYSBENCH_DONE_QUERY, sysbenchDoneValue, SYSBENCH_OPTIONS_PATH, SYSBENCH_TABLES_FACT, sysbenchOptions,
  sysbenchPrepareScript, sysbenchProblem, waitForScript,
} from './lib/mysql-meta.ts';
import { SECRETS } from './lib/names.ts';
import { staleFiles } from './lib/ops.ts';
import { dialectFor, OS_ID_FACT, type Dialect } from './lib/os.ts';

/**
 * How sysbench gets onto a DB node. Debian's sysbench links libmariadb3, which
 * depends on mariadb-common, which Oracle's mysql-server conflicts with: next to
 * MySQL on Debian, this role unpacks the archive's sysbench and libmariadb3
 * under /opt/rampart/sysbench (its other libraries from apt) and runs it
 * through a wrapper. Ubuntu's sysbench links libmysqlclient: apt.
 */
export function sysbenchFromApt(osId: string, dialect: Dialect): boolean {
  return !(dialect === 'mysql' && osId.trim() === 'debian');
}

const notDb = ({ host }: { host: { node: { db?: string } } }) => (host.node.db ? null : 'not a DB node');

/** Where the archive's sysbench is unpacked next to Oracle MySQL on Debian (see sysbenchFromApt). */
export const SYSBENCH_UNPACKED = '/opt/rampart/sysbench';
export const SYSBENCH_WRAPPER = '/usr/local/bin/sysbench';
export const SYSBENCH_WRAPPER_TEXT = `#!/bin/sh
# managed by rampart: Debian's sysbench and its libmariadb3, unpacked in ${SYSBENCH_UNPACKED}
# (installing libmariadb3 would pull in mariadb-common, which mysql-server conflicts with)
d=${SYSBENCH_UNPACKED}
lib=$(echo "$d"/usr/lib/*-linux-gnu)
export LD_LIBRARY_PATH="$lib" MARIADB_PLUGIN_DIR="$lib/libmariadb3/plugin" LUA_PATH="$d/usr/share/sysbench/?.lua;;"
exec "$d/usr/bin/sysbench" "$@"
`;

/**
 * Unpack sysbench + libmariadb3 from the archive (apt-get download, dpkg -x) and
 * install sysbench's other dependencies with apt. Into a new folder, swapped in
 * whole: a killed run leaves the old tree or none.
 */
export const SYSBENCH_UNPACK_SCRIPT = `set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get -o DPkg::Lock::Timeout=600 update -q
deps=$(apt-cache depends sysbench | awk '($1 == "Depends:" || $1 == "|Depends:") && $2 !~ /^</ {print $2}' | grep -vx -e libmariadb3 -e libc6 | sort -u)
[ -z "$deps" ] || apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $deps
w=$(mktemp -d); trap 'rm -rf "$w" ${SYSBENCH_UNPACKED}.new' EXIT
cd "$w" && apt-get download -q sysbench libmariadb3 >/dev/null
rm -rf ${SYSBENCH_UNPACKED}.new && mkdir -p ${SYSBENCH_UNPACKED}.new
for f in "$w"/*.deb; do dpkg -x "$f" ${SYSBENCH_UNPACKED}.new; done
rm -rf ${SYSBENCH_UNPACKED} && mv ${SYSBENCH_UNPACKED}.new ${SYSBENCH_UNPACKED}`;

const fromApt = (ctx: TaskContext) => sysbenchFromApt(ctx.facts.os.stdout, dialectFor(ctx.cluster, ctx.facts.os.stdout));

const pkg: Task = {
  name: 'sysbench package',
  when: notDb,
  facts: () => ({
    os: OS_ID_FACT,
    pkgs: packagesFact(['sysbench']),
    wrapper: fileFactCommand(SYSBENCH_WRAPPER),
    // the unpacked sysbench must really start (its libraries found)
    runs: `${SYSBENCH_WRAPPER} --version 2>&1 | head -n 1`,
  }),
  check: (ctx) => {
    if (fromApt(ctx)) return missingPackages(['sysbench'], ctx.facts.pkgs.stdout).length ? { message: 'install sysbench' } : null;
    const todo = [
      ...(/^sysbench \d/.test(ctx.facts.runs.stdout) ? [] : [`unpack sysbench + libmariadb3 in ${SYSBENCH_UNPACKED} (libmariadb3 would pull in mariadb-common, which mysql-server conflicts with)`]),
      ...staleFiles([{ path: SYSBENCH_WRAPPER, content: SYSBENCH_WRAPPER_TEXT, mode: '0755', owner: 'root:root' }], () => ctx.facts.wrapper.stdout).map((f) => `write ${f.path}`),
    ];
    return todo.length ? { message: todo.join('; ') } : null;
  },
  apply: async (ctx) => {
    if (fromApt(ctx)) return void (await aptInstall(ctx.conn, ['sysbench'], ctx.cluster.apt.cacheValidSeconds));
    await ctx.conn.exec(SYSBENCH_UNPACK_SCRIPT);
    await ctx.conn.writeFile(SYSBENCH_WRAPPER, SYSBENCH_WRAPPER_TEXT, { mode: '0755', owner: 'root:root' });
    const v = await ctx.conn.exec(`${SYSBENCH_WRAPPER} --version`);
    return `unpacked ${v.stdout.trim()} in ${SYSBENCH_UNPACKED} (wrapper ${SYSBENCH_WRAPPER})`;
  },
};

const options = fileTask({
  name: 'sysbench option file',
  when: notDb,
  path: () => SYSBENCH_OPTIONS_PATH,
  content: ({ cluster, secrets }) => sysbenchOptions(cluster.database.sysbench, secrets.get(SECRETS.mysqlSysbench)),
  mode: '0600',
  owner: 'root:root',
});

const prepared: Task = {
  name: 'sysbench tables prepared on the manager',
  when: ({ host }) => (host.node.db === 'manager' ? null : host.node.db ? 'prepared on the manager, replicated here' : 'not a DB node'),
  facts: () => ({ tables: SYSBENCH_TABLES_FACT }),
  check: ({ facts, cluster }) => {
    const p = sysbenchProblem(parseSysbenchTables(facts.tables.stdout), cluster.database.sysbench);
    return p ? { message: `prepare ${cluster.database.sysbench.tables} x ${cluster.database.sysbench.tableSize}: ${p}` } : null;
  },
  apply: async ({ conn, cluster }) => {
    await conn.exec(sysbenchPrepareScript(cluster.database.sysbench));
    const st = parseSysbenchTables((await conn.exec(SYSBENCH_TABLES_FACT, { check: false })).stdout);
    const p = sysbenchProblem(st, cluster.database.sysbench);
    if (p) throw new Error(`sysbench prepare finished but ${p}`);
    return `prepared ${st.tables} tables x ${cluster.database.sysbench.tableSize} rows`;
  },
};

const replicated: Task = {
  name: 'sysbench tables replicated',
  when: ({ host }) => (host.node.db === 'worker' ? null : host.node.db ? 'the manager prepares them' : 'not a DB node'),
  facts: () => ({ tables: SYSBENCH_TABLES_FACT }),
  check: ({ facts, cluster }) => {
    const p = sysbenchProblem(parseSysbenchTables(facts.tables.stdout), cluster.database.sysbench);
    return p ? { message: `wait for replication: ${p}` } : null;
  },
  apply: async ({ conn, cluster }) => {
    await conn.exec(waitForScript('the sysbench tables', SYSBENCH_DONE_QUERY, sysbenchDoneValue(cluster.database.sysbench), 300));
    const st = parseSysbenchTables((await conn.exec(SYSBENCH_TABLES_FACT, { check: false })).stdout);
    const p = sysbenchProblem(st, cluster.database.sysbench);
    if (p) throw new Error(`sysbench tables replicated but ${p}`);
    return `replicated ${st.tables} tables`;
  },
};

export const sysbenchRole = defineRole<DatabaseSpec['sysbench']>({
  name: 'sysbench',
  // prepared once on the manager, carried to the workers by replication
  after: ['replication'],
  requires: [{ role: 'mysql' }],
  packages: ({ osId, dialect }) => (sysbenchFromApt(osId, dialect) ? ['sysbench'] : []),
  settings: {
    at: ['database', 'sysbench'],
    schema: {
      "type": "object",
      "additionalProperties": false,
      "default": {},
      "properties": {
        "tables": {
          "type": "integer",
          "minimum": 1,
          "maximum": 100,
          "default": 10
        },
        "tableSize": {
          "type": "integer",
          "minimum": 1,
          "maximum": 10000000,
          "default": 10000
        },
        "threads": {
          "type": "integer",
          "minimum": 1,
          "maximum": 256,
          "default": 4
        },
        "time": {
          "type": "integer",
          "minimum": 1,
          "maximum": 3600,
          "default": 10
        }
      }
    },
  },
  tasks: [pkg, options, prepared, replicated],
});
