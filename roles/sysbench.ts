// sysbench: the tool on every DB node, its 0600 option file (user, password,
// socket, table sizes: the bench playbook runs `sysbench --config-file=...`),
// and its tables prepared once on the manager, replicated to the workers.
// Bench plan: oltp_read_only on every node; oltp_read_write on the manager
// only (workers are read-only replicas).
import type { Role, Task } from '../core/types.ts';
import { aptInstall, missingPackages, packagesFact } from './lib/apt.ts';
import { fileTask } from './lib/files.ts';
import {
  parseSysbenchTables, SYSBENCH_DONE_QUERY, sysbenchDoneValue, SYSBENCH_OPTIONS_PATH, SYSBENCH_TABLES_FACT, sysbenchOptions,
  sysbenchPrepareScript, sysbenchProblem, waitForScript,
} from './lib/mysql-meta.ts';
import { SECRETS } from './lib/names.ts';

const notDb = ({ host }: { host: { node: { db?: string } } }) => (host.node.db ? null : 'not a DB node');

const pkg: Task = {
  name: 'sysbench package',
  when: notDb,
  facts: () => ({ pkgs: packagesFact(['sysbench']) }),
  check: ({ facts }) => (missingPackages(['sysbench'], facts.pkgs.stdout).length ? { message: 'install sysbench' } : null),
  apply: async ({ conn }) => {
    await aptInstall(conn, ['sysbench']);
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

export const sysbenchRole: Role = { name: 'sysbench', tasks: [pkg, options, prepared, replicated] };
