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

/** Is the database server answering on this node? */
export async function dbAlive(conn: Connection): Promise<boolean> {
  const res = await conn.exec('mysqladmin ping --connect-timeout=2 >/dev/null 2>&1', { check: false });
  return res.code === 0;
}
