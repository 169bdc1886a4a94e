// Completion markers (rows of rampart.meta written on the manager after a full
// load, in the same replicated stream), the Sakila verification and the
// sysbench option file, as pure functions.
import { shq } from '../../core/ssh.ts';
import { META_TABLE, SYSBENCH_SCHEMA } from './mysql-accounts.ts';
import { sqlString } from './mysql-dialect.ts';
import { REPLICA_STATUS_FACT } from './mysql-replication.ts';

export const SAKILA_MARKER = 'sakila';
export const SYSBENCH_MARKER = 'sysbench';

/** Expected Sakila v1.5 content; actor only grows (the bench inserts actors). */
export const SAKILA_EXPECTED = { actorMin: 200, film: 1000, rental: 16044 };

/** Prints `marker<TAB>value` (or nothing) and `counts<TAB>actor<TAB>film<TAB>rental` (or nothing when absent). */
export function sakilaFact(schema: string): string {
  const q = [
    `SELECT 'marker', v FROM ${META_TABLE} WHERE k='${SAKILA_MARKER}'`,
    `SELECT 'counts', (SELECT COUNT(*) FROM \`${schema}\`.actor), (SELECT COUNT(*) FROM \`${schema}\`.film), (SELECT COUNT(*) FROM \`${schema}\`.rental)`,
  ];
  return `mysql -N -B --force -e ${shq(q.join('; '))}`;
}

export interface SakilaState {
  marker: string | null;
  counts: { actor: number; film: number; rental: number } | null;
}

export function parseSakila(out: string): SakilaState {
  const st: SakilaState = { marker: null, counts: null };
  for (const line of out.split('\n')) {
    const f = line.split('\t');
    if (f[0] === 'marker') st.marker = f[1] ?? '';
    if (f[0] === 'counts') st.counts = { actor: Number(f[1]), film: Number(f[2]), rental: Number(f[3]) };
  }
  return st;
}

export function countsLine(c: SakilaState['counts']): string {
  return c ? `actor=${c.actor} film=${c.film} rental=${c.rental}` : 'no sakila tables';
}

/** Why the Sakila data is not as loaded (null = complete and marked). */
export function sakilaProblem(st: SakilaState, sha256: string): string | null {
  if (st.marker === null) return st.counts ? `incomplete load (${countsLine(st.counts)}, no completion marker)` : 'not loaded';
  if (st.marker !== sha256) return `loaded from another tarball (${st.marker.slice(0, 12)})`;
  if (!st.counts) return 'marker present but tables missing';
  const c = st.counts;
  if (c.actor < SAKILA_EXPECTED.actorMin || c.film !== SAKILA_EXPECTED.film || c.rental !== SAKILA_EXPECTED.rental) {
    return `unexpected counts ${countsLine(c)} (want actor>=${SAKILA_EXPECTED.actorMin} film=${SAKILA_EXPECTED.film} rental=${SAKILA_EXPECTED.rental})`;
  }
  return null;
}

/**
 * Load script for the manager. Serialised by a lock (a killed apply's load may
 * still be running on the node); the marker is checked again under the lock;
 * the schema file starts with DROP SCHEMA, so a partial earlier load is replaced;
 * the marker is written only after both files loaded.
 */
export function sakilaLoadScript(tarball: string, sha256: string, schema: string): string {
  const del = `DELETE FROM ${META_TABLE} WHERE k='${SAKILA_MARKER}'`;
  const mark = `INSERT INTO ${META_TABLE} (k, v) VALUES ('${SAKILA_MARKER}', ${sqlString(sha256)}) ON DUPLICATE KEY UPDATE v=VALUES(v), at=CURRENT_TIMESTAMP`;
  return `set -euo pipefail
exec 9>/run/lock/rampart-sakila.lock
flock 9
f=${shq(tarball)}
trap 'rm -rf "$d" "$f"' EXIT
d=$(mktemp -d)
echo ${shq(`${sha256}  `)}"$f" | sha256sum -c --quiet -
if [ "$(mysql -N -B -e ${shq(`SELECT v FROM ${META_TABLE} WHERE k='${SAKILA_MARKER}'`)})" = ${shq(sha256)} ] && mysql -N -B -e ${shq(`SELECT COUNT(*) FROM \`${schema}\`.rental`)} >/dev/null 2>&1; then echo already loaded; exit 0; fi
tar xzf "$f" -C "$d"
mysql -e ${shq(del)}
mysql < "$d"/sakila-db/sakila-schema.sql
mysql < "$d"/sakila-db/sakila-data.sql
mysql -e ${shq(mark)}`;
}

/**
 * What moves while a replica receives and applies (either dialect: SHOW
 * REPLICA STATUS's file positions, under their MariaDB or MySQL names).
 */
export const REPLICA_PROGRESS = `${REPLICA_STATUS_FACT} 2>/dev/null | grep -E '^ *(Relay_Log_File|Relay_Log_Pos|Read_(Master|Source)_Log_Pos|Exec_(Master|Source)_Log_Pos):'`;

/** The longest a worker waits for the manager's marker, however steadily replication moves. */
export const WAIT_CAP_S = 1800;

/**
 * Script for a worker: wait until `query` prints `expected` here, i.e. the
 * manager's completion marker (and what it vouches for) has been replicated.
 * Replication applies in order, so once the marker is here, everything written
 * before it is too. Polls the local server only. It gives up when replication
 * made no progress for `stallS` seconds (a loaded machine only makes the wait
 * longer), or after WAIT_CAP_S.
 */
export function waitForScript(what: string, query: string, expected: string, stallS: number, capS = WAIT_CAP_S): string {
  return `last=; stall=$((SECONDS + ${stallS})); cap=$((SECONDS + ${capS}))
until [ "$(mysql -N -B -e ${shq(query)} 2>/dev/null)" = ${shq(expected)} ]; do
  now=$(${REPLICA_PROGRESS})
  if [ "$now" != "$last" ]; then last=$now; stall=$((SECONDS + ${stallS})); fi
  if [ $SECONDS -ge $stall ]; then echo "${what} did not arrive from the manager: replication made no progress for ${stallS} s (is it running?)" >&2; exit 1; fi
  if [ $SECONDS -ge $cap ]; then echo "${what} did not arrive from the manager within ${capS} s" >&2; exit 1; fi
  sleep 0.25
done`;
}

/** Prints `<marker>/<rental rows>` once the load is complete. */
export function sakilaDoneQuery(schema: string): string {
  return `SELECT CONCAT(v, '/', (SELECT COUNT(*) FROM \`${schema}\`.rental)) FROM ${META_TABLE} WHERE k='${SAKILA_MARKER}'`;
}
export const sakilaDoneValue = (sha256: string) => `${sha256}/${SAKILA_EXPECTED.rental}`;

// ---------------------------------------------------------------- sysbench

export const SYSBENCH_OPTIONS_PATH = '/etc/rampart/sysbench.cfg';

export interface SysbenchSpec {
  tables: number;
  tableSize: number;
  threads: number;
  time: number;
}

/**
 * sysbench --config-file content (0600 root): connection and run options, so
 * the password never reaches an argv. (sysbench 1.0 reads only its general
 * options from this file; the test's own options go on the command line, see
 * sysbenchCommand.)
 */
export function sysbenchOptions(spec: SysbenchSpec, password: string): string {
  return [
    'db-driver=mysql',
    'mysql-socket=/run/mysqld/mysqld.sock',
    'mysql-user=sbtest',
    `mysql-password=${password}`,
    `mysql-db=${SYSBENCH_SCHEMA}`,
    `threads=${spec.threads}`,
    `time=${spec.time}`,
    '',
  ].join('\n');
}

/**
 * How to start sysbench on a DB node: /usr/local/bin first, where the sysbench
 * role puts its wrapper next to Oracle MySQL on Debian (sudo's secure_path on
 * Debian sid leaves /usr/local/bin out).
 */
export const SYSBENCH_BIN = 'PATH=/usr/local/bin:$PATH sysbench';

/**
 * The sysbench command line for a test and action (no secret in it), e.g.
 * oltp_read_only run on any DB node, oltp_read_write run on the manager only:
 * workers are read-only replicas.
 */
export function sysbenchCommand(spec: SysbenchSpec, test: 'oltp_read_only' | 'oltp_read_write', action: 'prepare' | 'run' | 'cleanup'): string {
  return `${SYSBENCH_BIN} --config-file=${SYSBENCH_OPTIONS_PATH} ${test} --tables=${spec.tables} --table_size=${spec.tableSize} ${action}`;
}

export const sysbenchMarkerValue = (spec: SysbenchSpec) => `${spec.tables}x${spec.tableSize}`;

/** Prints `<marker>/<number of sbtestN tables>`. */
export const SYSBENCH_DONE_QUERY = `SELECT CONCAT((SELECT COALESCE(MAX(v), '') FROM ${META_TABLE} WHERE k='${SYSBENCH_MARKER}'), '/', (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='${SYSBENCH_SCHEMA}' AND TABLE_NAME REGEXP '^sbtest[0-9]+$'))`;
export const sysbenchDoneValue = (spec: SysbenchSpec) => `${sysbenchMarkerValue(spec)}/${spec.tables}`;

/** Prints `marker<TAB>v` and `tables<TAB>n` (sbtestN tables present). */
export const SYSBENCH_TABLES_FACT = `mysql -N -B --force -e ${shq(
  `SELECT 'marker', v FROM ${META_TABLE} WHERE k='${SYSBENCH_MARKER}'; SELECT 'tables', COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='${SYSBENCH_SCHEMA}' AND TABLE_NAME REGEXP '^sbtest[0-9]+$'`,
)}`;

export function parseSysbenchTables(out: string): { marker: string | null; tables: number } {
  let marker: string | null = null;
  let tables = 0;
  for (const line of out.split('\n')) {
    const f = line.split('\t');
    if (f[0] === 'marker') marker = f[1] ?? '';
    if (f[0] === 'tables') tables = Number(f[1]) || 0;
  }
  return { marker, tables };
}

export function sysbenchProblem(st: { marker: string | null; tables: number }, spec: SysbenchSpec): string | null {
  const want = sysbenchMarkerValue(spec);
  if (st.marker !== want) return st.marker ? `prepared as ${st.marker}, want ${want}` : st.tables ? `incomplete prepare (${st.tables} tables, no marker)` : 'not prepared';
  if (st.tables !== spec.tables) return `${st.tables} tables, want ${spec.tables}`;
  return null;
}

/** Prepare on the manager, under a lock, from scratch; marker last. */
export function sysbenchPrepareScript(spec: SysbenchSpec): string {
  const want = sysbenchMarkerValue(spec);
  return `set -euo pipefail
exec 9>/run/lock/rampart-sysbench.lock
flock 9
if [ "$(mysql -N -B -e ${shq(SYSBENCH_DONE_QUERY)})" = ${shq(sysbenchDoneValue(spec))} ]; then echo already prepared; exit 0; fi
mysql -e ${shq(`DELETE FROM ${META_TABLE} WHERE k='${SYSBENCH_MARKER}'`)}
# drop whatever a killed or different prepare left (every sbtest table)
for t in $(mysql -N -B -e ${shq(`SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='${SYSBENCH_SCHEMA}'`)}); do
  mysql -e "DROP TABLE IF EXISTS \\\`${SYSBENCH_SCHEMA}\\\`.\\\`$t\\\`"
done
${sysbenchCommand(spec, 'oltp_read_write', 'prepare')} >/dev/null
mysql -e ${shq(`INSERT INTO ${META_TABLE} (k, v) VALUES ('${SYSBENCH_MARKER}', '${want}') ON DUPLICATE KEY UPDATE v=VALUES(v), at=CURRENT_TIMESTAMP`)}`;
}
