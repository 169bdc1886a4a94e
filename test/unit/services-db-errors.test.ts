// Database errors as the client sees them: stable codes, fitting statuses,
// and nothing internal (account, address, host name, routine the client did
// not name) in any client-facing message; the server's text goes to the log.

import { describe, expect, test } from 'bun:test';
import { buildHop } from '../../services/hop.ts';
import { flushLogs } from '../../services/http.ts';
import { dbError, errorDetail } from '../../services/proxy/db-errors.ts';

const ACCOUNT = 'rampart_app';
const ADDRESS = '10.77.0.12';
const err = (errno: number, code: string, sqlMessage: string) => Object.assign(new Error(sqlMessage), { errno, code, sqlMessage, sqlState: 'HY000' });

// [what, sql the client sent, error, status, code, text the message must show (or null)]
const CASES: Array<[string, string, Error, number, string, string | null]> = [
  ['routine denied', 'SELECT 1', err(1370, 'ER_PROCACCESS_DENIED_ERROR', `execute command denied to user '${ACCOUNT}'@'${ADDRESS}' for routine 'sakila.inventory_in_stock'`), 403, 'DB_ACCESS_DENIED', null],
  ['table denied', 'SELECT * FROM x', err(1142, 'ER_TABLEACCESS_DENIED_ERROR', `SELECT command denied to user '${ACCOUNT}'@'${ADDRESS}' for table 'x'`), 403, 'DB_ACCESS_DENIED', null],
  ['schema denied', 'SELECT 1', err(1044, 'ER_DBACCESS_DENIED_ERROR', `Access denied for user '${ACCOUNT}'@'${ADDRESS}' to database 'other'`), 403, 'DB_ACCESS_DENIED', null],
  ['unknown column', 'SELECT nope FROM actor', err(1054, 'ER_BAD_FIELD_ERROR', "Unknown column 'nope' in 'field list'"), 422, 'UNKNOWN_COLUMN', 'nope'],
  ['unknown table', 'SELECT * FROM sakila.nope', err(1146, 'ER_NO_SUCH_TABLE', "Table 'sakila.nope' doesn't exist"), 422, 'UNKNOWN_TABLE', 'sakila.nope'],
  ['unknown table, schema not written', 'SELECT * FROM nope', err(1146, 'ER_NO_SUCH_TABLE', "Table 'internaldb.nope' doesn't exist"), 422, 'UNKNOWN_TABLE', null],
  ['syntax', 'SELECT * FROM actor WHERE', err(1064, 'ER_PARSE_ERROR', "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '' at line 1"), 422, 'SQL_SYNTAX_ERROR', null],
  ['duplicate key', 'INSERT INTO actor (actor_id) VALUES (1)', err(1062, 'ER_DUP_ENTRY', "Duplicate entry '1' for key 'PRIMARY'"), 409, 'DUPLICATE_KEY', null],
  ['foreign key', 'DELETE FROM actor WHERE actor_id = 1', err(1451, 'ER_ROW_IS_REFERENCED_2', 'Cannot delete or update a parent row: a foreign key constraint fails (`sakila`.`film_actor`, CONSTRAINT `fk_film_actor_actor` FOREIGN KEY (`actor_id`) REFERENCES `actor` (`actor_id`))'), 409, 'CONSTRAINT_VIOLATION', null],
  ['check constraint', 'UPDATE t SET a = -1', err(4025, 'ER_CONSTRAINT_FAILED', 'CONSTRAINT `a_positive` failed for `sakila`.`t`'), 409, 'CONSTRAINT_VIOLATION', null],
  ['null', 'INSERT INTO actor (first_name) VALUES (NULL)', err(1048, 'ER_BAD_NULL_ERROR', "Column 'first_name' cannot be null"), 422, 'NULL_NOT_ALLOWED', 'first_name'],
  ['bad value', "INSERT INTO actor (actor_id) VALUES ('x')", err(1366, 'ER_TRUNCATED_WRONG_VALUE_FOR_FIELD', "Incorrect integer value: 'x' for column `sakila`.`actor`.`actor_id` at row 1"), 422, 'INVALID_VALUE', null],
  ['lock timeout', 'UPDATE actor SET a = 1', err(1205, 'ER_LOCK_WAIT_TIMEOUT', 'Lock wait timeout exceeded; try restarting transaction'), 503, 'LOCK_TIMEOUT', null],
  ['deadlock', 'UPDATE actor SET a = 1', err(1213, 'ER_LOCK_DEADLOCK', 'Deadlock found when trying to get lock; try restarting transaction'), 503, 'DEADLOCK', null],
  ['server statement timeout', 'SELECT 1', err(1969, 'ER_STATEMENT_TIMEOUT', 'Query execution was interrupted (max_statement_time exceeded)'), 503, 'QUERY_TIMEOUT', null],
  ['read-only (fenced) node: not executed', 'UPDATE actor SET a = 1', err(1290, 'ER_OPTION_PREVENTS_STATEMENT', 'The MariaDB server is running with the --read-only option so it cannot execute this statement'), 503, 'DB_UNAVAILABLE', null],
  ['any other server error', 'SELECT 1', err(1105, 'ER_UNKNOWN_ERROR', `Got error from host ${ADDRESS}: storage engine on /var/lib/mysql`), 422, 'SQL_ERROR', null],
  ['connection refused', 'SELECT 1', Object.assign(new Error(`connect ECONNREFUSED ${ADDRESS}:3306`), { code: 'ECONNREFUSED' }), 503, 'DB_UNAVAILABLE', null],
  ['client-side failure', 'SELECT 1', new Error(`something odd at ${ADDRESS}`), 503, 'DB_ERROR', null],
];

describe('database errors: stable codes, safe messages', () => {
  for (const [what, sql, e, status, code, shows] of CASES) {
    test(`${what}: ${status} ${code}`, () => {
      const h = dbError(e, { sql });
      expect([h.status, h.code]).toEqual([status, code]);
      for (const secret of [ACCOUNT, ADDRESS, '@', 'inventory_in_stock', 'internaldb', 'MariaDB', '/var/lib', 'PRIMARY', 'fk_film_actor']) {
        expect(h.message).not.toContain(secret);
      }
      if (shows) expect(h.message).toContain(shows);
      // the operator keeps the server's words, in the log only
      expect(h.detail).toContain((e as Error).message.slice(0, 20));
    });
  }
  test('the detail masks the values the client sent (the log holds no parameters)', () => {
    const h = dbError(err(1062, 'ER_DUP_ENTRY', "Duplicate entry 'alice@example.com' for key 'email'"), { sql: 'INSERT INTO c (email) VALUES (?)', params: ['alice@example.com'], type: 'write' });
    expect(h.detail).toBe("ER_DUP_ENTRY 1062: Duplicate entry '?' for key 'email'");
    // pieces of the statement go too; names (account, host, table) stay for the operator
    expect(errorDetail(err(1064, 'ER_PARSE_ERROR', "You have an error in your SQL syntax; near 'WHERE secret = 1' at line 1"))).toBe("ER_PARSE_ERROR 1064: You have an error in your SQL syntax; near '?' at line 1");
    expect(errorDetail(err(1054, 'ER_BAD_FIELD_ERROR', "Unknown column 'nope' in 'SELECT'"))).toBe("ER_BAD_FIELD_ERROR 1054: Unknown column 'nope' in '?'");
    expect(errorDetail(err(1142, 'ER_TABLEACCESS_DENIED_ERROR', `SELECT command denied to user '${ACCOUNT}'@'${ADDRESS}' for table 'sakila.x'`))).toContain(`'${ACCOUNT}'@'${ADDRESS}' for table 'sakila.x'`);
  });
  test('lock timeout, deadlock and unavailable say when to retry', () => {
    expect(dbError(CASES.find((c) => c[0] === 'deadlock')![2]).headers).toMatchObject({ 'retry-after': '1' });
  });
});

describe('a refused query: the answer carries the request id, the log the detail', () => {
  test('proxy-side database error', async () => {
    const lines: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (lines.push(String(chunk)), true)) as typeof process.stdout.write;
    try {
      const hop = buildHop({
        hop: 'proxy', maxBodyBytes: 4096, log: true,
        policy: { statements: ['SELECT'], schemas: ['sakila'] },
        admit: () => null,
        health: () => new Response('{}'),
        query: async (q) => { throw dbError(err(1370, 'ER_PROCACCESS_DENIED_ERROR', `execute command denied to user '${ACCOUNT}'@'${ADDRESS}' for routine 'x.y'`), q); },
      });
      const res = await hop.handle(new Request('http://localhost/query', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql: 'SELECT 1', request_id: 'req-42' }),
      }));
      flushLogs();
      const body = await res.json() as { error: { code: string; message: string; request_id: string } };
      expect(res.status).toBe(403);
      expect(body.error).toEqual({ code: 'DB_ACCESS_DENIED', message: 'the API may not run this statement on the database', request_id: 'req-42' });
      expect(JSON.stringify(body)).not.toContain(ADDRESS);
      const line = JSON.parse(lines.join('').trim().split('\n').pop()!) as Record<string, unknown>;
      expect(line).toMatchObject({ request_id: 'req-42', hop: 'proxy', status: 403, code: 'DB_ACCESS_DENIED' });
      expect(String(line.detail)).toContain(`'${ACCOUNT}'@'${ADDRESS}'`);
    } finally {
      process.stdout.write = write;
    }
  });
});
