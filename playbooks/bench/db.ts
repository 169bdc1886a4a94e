// SQL on a DB node over SSH, as root through the local socket (unix_socket /
// auth_socket: no password anywhere). The SQL goes through stdin.
import type { Connection } from '../../core/types.ts';
import type { Dialect } from '../../roles/lib/os.ts';

/** Run SQL with `mysql -N -B` (tab-separated rows, no header); returns the rows. */
export async function sql(conn: Connection, statement: string): Promise<string[][]> {
  const res = await conn.exec('mysql -N -B', { stdin: statement.endsWith(';') ? statement : `${statement};` });
  return res.stdout.split('\n').filter((l) => l.length > 0).map((l) => l.split('\t'));
}

/** One value: first column of the first row ('' when none). */
export async function scalar(conn: Connection, statement: string): Promise<string> {
  return (await sql(conn, statement))[0]?.[0] ?? '';
}

/** MariaDB or MySQL, from the server's own VERSION(). */
export async function dialectOf(conn: Connection): Promise<Dialect> {
  return /mariadb/i.test(await scalar(conn, 'SELECT VERSION()')) ? 'mariadb' : 'mysql';
}

/** The statement printing the manager's GTID position. */
export function gtidPositionSql(d: Dialect): string {
  return d === 'mariadb' ? 'SELECT @@GLOBAL.gtid_binlog_pos' : 'SELECT @@GLOBAL.gtid_executed';
}

/** SQL literal of a string (GTID sets hold only [0-9a-f:,-] and newlines; escaped anyway). */
export function sqlString(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '')}'`;
}

/**
 * The statement waiting for a replica to reach `position`, printing 0 when it
 * did. MariaDB: MASTER_GTID_WAIT (0 ok, -1 timeout); MySQL:
 * WAIT_FOR_EXECUTED_GTID_SET (0 ok, 1 timeout).
 */
export function gtidWaitSql(d: Dialect, position: string, timeoutSeconds: number): string {
  return d === 'mariadb'
    ? `SELECT MASTER_GTID_WAIT(${sqlString(position)}, ${timeoutSeconds})`
    : `SELECT WAIT_FOR_EXECUTED_GTID_SET(${sqlString(position)}, ${timeoutSeconds})`;
}

/** Is the database server answering on this node? */
export async function dbAlive(conn: Connection): Promise<boolean> {
  const res = await conn.exec('mysqladmin ping --connect-timeout=2 >/dev/null 2>&1', { check: false });
  return res.code === 0;
}
