// Database errors as the API tells them: a stable code, a fitting status and
// a message that names nothing internal (no account, address, host name or
// server wording). The server's own text goes to the proxy's log line, with
// the request id the client's answer carries, for correlation.

import { HttpError } from '../http.ts';
import type { QueryType } from '../sql/classifier.ts';
import { isTimeout, isUnavailable, wasSent, type MysqlLikeError } from './nodes.ts';

interface Mapped {
  status: number;
  code: string;
  message: string;
  /** Quote the one name the server's message is about, when the client's own SQL holds it. */
  name?: RegExp;
  headers?: Record<string, string>;
}

const RETRY = { 'retry-after': '1' };
const INVALID_VALUE: Mapped = { status: 422, code: 'INVALID_VALUE', message: 'a value does not fit its column', name: /column '([^']+)'/ };
const CONSTRAINT: Mapped = { status: 409, code: 'CONSTRAINT_VIOLATION', message: 'the statement violates a constraint' };
const ACCESS: Mapped = { status: 403, code: 'DB_ACCESS_DENIED', message: 'the API may not run this statement on the database' };

/** MariaDB/MySQL error numbers (both servers share them below 1900) -> the API's error. */
const BY_ERRNO = new Map<number, Mapped>([
  [1054, { status: 422, code: 'UNKNOWN_COLUMN', message: 'unknown column', name: /Unknown column '([^']+)'/ }],
  [1146, { status: 422, code: 'UNKNOWN_TABLE', message: 'unknown table', name: /Table '([^']+)' doesn't exist/ }],
  [1109, { status: 422, code: 'UNKNOWN_TABLE', message: 'unknown table', name: /Unknown table '([^']+)'/ }],
  [1049, { status: 422, code: 'UNKNOWN_SCHEMA', message: 'unknown schema' }],
  [1305, { status: 422, code: 'UNKNOWN_FUNCTION', message: 'unknown function', name: /FUNCTION (\S+) does not exist/ }],
  [1064, { status: 422, code: 'SQL_SYNTAX_ERROR', message: 'the database could not parse the statement' }],
  [1149, { status: 422, code: 'SQL_SYNTAX_ERROR', message: 'the database could not parse the statement' }],
  [1052, { status: 422, code: 'AMBIGUOUS_COLUMN', message: 'a column name is ambiguous: qualify it', name: /Column '([^']+)'/ }],
  [1136, { status: 422, code: 'COLUMN_COUNT_MISMATCH', message: 'the number of values does not match the number of columns' }],
  [1241, { status: 422, code: 'OPERAND_MISMATCH', message: 'an operand has the wrong number of columns' }],
  [1242, { status: 422, code: 'SUBQUERY_ROWS', message: 'a subquery returned more than one row' }],
  [1210, { status: 422, code: 'PARAMS_MISMATCH', message: 'the parameters do not match the statement\'s placeholders' }],
  [1111, { status: 422, code: 'INVALID_GROUPING', message: 'invalid use of a group function' }],
  [1055, { status: 422, code: 'INVALID_GROUPING', message: 'a selected column is not in GROUP BY' }],
  [1062, { status: 409, code: 'DUPLICATE_KEY', message: 'a row with the same unique key exists' }],
  [1586, { status: 409, code: 'DUPLICATE_KEY', message: 'a row with the same unique key exists' }],
  [1451, CONSTRAINT], [1452, CONSTRAINT], [1216, CONSTRAINT], [1217, CONSTRAINT], [3819, CONSTRAINT], [4025, CONSTRAINT],
  [1048, { status: 422, code: 'NULL_NOT_ALLOWED', message: 'a column that may not be NULL got NULL', name: /Column '([^']+)'/ }],
  [1364, { status: 422, code: 'MISSING_VALUE', message: 'a column without a default got no value', name: /Field '([^']+)'/ }],
  [1366, INVALID_VALUE], [1292, INVALID_VALUE], [1264, INVALID_VALUE], [1406, INVALID_VALUE], [1265, INVALID_VALUE], [1367, INVALID_VALUE],
  [1365, { status: 422, code: 'DIVISION_BY_ZERO', message: 'division by 0' }],
  [1205, { status: 503, code: 'LOCK_TIMEOUT', message: 'the statement waited too long for a lock and was rolled back; retry', headers: RETRY }],
  [1213, { status: 503, code: 'DEADLOCK', message: 'the statement was chosen as a deadlock victim and rolled back; retry', headers: RETRY }],
  [3024, { status: 503, code: 'QUERY_TIMEOUT', message: 'the query did not finish in time' }],
  [1969, { status: 503, code: 'QUERY_TIMEOUT', message: 'the query did not finish in time' }],
  [1142, ACCESS], [1143, ACCESS], [1044, ACCESS], [1227, ACCESS], [1370, ACCESS], [1045, ACCESS],
  // a read-only (fenced or demoted) primary refuses the write before running it
  [1290, { status: 503, code: 'DB_UNAVAILABLE', message: 'the database is read-only right now: not executed, safe to retry', headers: RETRY }],
  [1836, { status: 503, code: 'DB_UNAVAILABLE', message: 'the database is read-only right now: not executed, safe to retry', headers: RETRY }],
]);

/**
 * What the log line gets: the server's error, never sent to the client. The
 * log holds no SQL and no parameter values, so of the server's quoted parts
 * only names stay (accounts, hosts, tables, columns): a value the client
 * sent (`Duplicate entry 'x'`) or a piece of the statement (`near '...'`,
 * `in 'SELECT'`) becomes '?'.
 */
export function errorDetail(e: unknown, params: readonly unknown[] = []): string {
  const err = e as MysqlLikeError;
  const sent = new Set(params.filter((p) => p !== null && typeof p !== 'object').map(String));
  const text = (err?.sqlMessage ?? err?.message ?? String(e)).replace(/'((?:[^'\\]|\\.)*)'/g, (quoted, inner: string) =>
    /^[A-Za-z0-9_$.-]{1,64}$/.test(inner) && !/^[A-Z ]+$/.test(inner) && !sent.has(inner) ? quoted : "'?'");
  return `${err?.code ?? 'ERROR'}${err?.errno ? ` ${err.errno}` : ''}: ${text}`.slice(0, 500);
}

/** 503 DB_UNAVAILABLE: the statement was not executed anywhere; safe to retry. */
export function notExecuted(why: string, detail?: string): HttpError {
  return new HttpError(503, 'DB_UNAVAILABLE', `${why}: not executed, safe to retry`, RETRY, detail);
}

/** Errors a server answers before running anything (too many connections, shutting down at connect). */
function refusedBeforeRunning(err: MysqlLikeError): boolean {
  return err?.code === 'ER_CON_COUNT_ERROR' || err?.code === 'ER_TOO_MANY_USER_CONNECTIONS';
}

/** The statement an error is about: the client's SQL and parameters, and whether it reads or writes. */
export interface Statement {
  sql?: string;
  params?: readonly unknown[];
  type?: QueryType;
}

/**
 * The API's error for a database error. A name from the server's message is
 * quoted back only when the client's own `sql` holds it, so nothing the
 * client did not write can leak through it; `params` are masked in the
 * detail. The outcome of a write is said exactly: 503 DB_UNAVAILABLE means
 * it was NOT executed (no connection, or the node refused it before running
 * it: safe to retry); 504 OUTCOME_UNKNOWN means the connection died or timed
 * out after the statement was sent, so it may have committed.
 */
export function dbError(e: unknown, q: Statement = {}): HttpError {
  const { sql = '', params = [], type = 'read' } = q;
  const detail = errorDetail(e, params);
  const err = e as MysqlLikeError;
  if (type === 'write' && wasSent(e) && (isTimeout(e) || isUnavailable(e)) && !refusedBeforeRunning(err)) {
    return new HttpError(504, 'OUTCOME_UNKNOWN', 'the connection to the database was lost after the write was sent: it may or may not have been committed; check before retrying', undefined, detail);
  }
  if (isTimeout(e)) return new HttpError(503, 'QUERY_TIMEOUT', 'the query did not finish in time', undefined, detail);
  if (isUnavailable(e)) return notExecuted('no database node could serve the statement', detail);
  const m = typeof err?.errno === 'number' ? BY_ERRNO.get(err.errno) : undefined;
  if (!m) {
    if (typeof err?.errno === 'number' && err.errno < 2000) {
      return new HttpError(422, 'SQL_ERROR', `the database refused the statement (error ${err.errno})`, undefined, detail);
    }
    return new HttpError(503, 'DB_ERROR', 'the database failed to run the statement', undefined, detail);
  }
  const name = m.name?.exec(err.sqlMessage ?? '')?.[1];
  const shown = name && sqlMentions(sql, name) ? `${m.message}: ${name}` : m.message;
  return new HttpError(m.status, m.code, shown, m.headers, detail);
}

/** Does the client's SQL spell every dotted part of `name` (so quoting it back tells the client nothing new)? */
function sqlMentions(sql: string, name: string): boolean {
  const lower = sql.toLowerCase();
  const n = name.toLowerCase();
  if (n.length === 0 || n.length > 128) return false;
  return n.split('.').every((part) => lower.includes(part));
}
