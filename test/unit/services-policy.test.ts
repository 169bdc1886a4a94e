import { describe, expect, test } from 'bun:test';
import { checkSql, policyChecker } from '../../services/sql/policy.ts';

const policy = { statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: ['sakila'] };

// [sql, expected status, expected code]
const hostile: Array<[string, 400 | 403, string]> = [
  ['DROP TABLE actor', 403, 'STATEMENT_NOT_ALLOWED'],
  ['drop table actor', 403, 'STATEMENT_NOT_ALLOWED'],
  ['/* SELECT */ DROP TABLE actor', 403, 'STATEMENT_NOT_ALLOWED'],
  ['-- SELECT\nDROP TABLE actor', 403, 'STATEMENT_NOT_ALLOWED'],
  ['ALTER TABLE actor ADD x INT', 403, 'STATEMENT_NOT_ALLOWED'],
  ['CREATE TABLE x (a INT)', 403, 'STATEMENT_NOT_ALLOWED'],
  ['TRUNCATE actor', 403, 'STATEMENT_NOT_ALLOWED'],
  ['RENAME TABLE actor TO a2', 403, 'STATEMENT_NOT_ALLOWED'],
  ["GRANT ALL ON *.* TO 'x'@'%'", 403, 'STATEMENT_NOT_ALLOWED'],
  ["REVOKE SELECT ON sakila.* FROM 'app'", 403, 'STATEMENT_NOT_ALLOWED'],
  ['SET GLOBAL read_only = 0', 403, 'STATEMENT_NOT_ALLOWED'],
  ['set @@global.general_log = 1', 403, 'STATEMENT_NOT_ALLOWED'],
  ["LOAD DATA INFILE '/etc/passwd' INTO TABLE actor", 403, 'STATEMENT_NOT_ALLOWED'],
  ['LOAD XML LOCAL INFILE "x" INTO TABLE actor', 403, 'STATEMENT_NOT_ALLOWED'],
  ['LOCK TABLES actor WRITE', 403, 'STATEMENT_NOT_ALLOWED'],
  ['FLUSH PRIVILEGES', 403, 'STATEMENT_NOT_ALLOWED'],
  ['SHUTDOWN', 403, 'STATEMENT_NOT_ALLOWED'],
  ['KILL 1', 403, 'STATEMENT_NOT_ALLOWED'],
  ['CALL rewards_report(1, 2, @x)', 403, 'STATEMENT_NOT_ALLOWED'],
  ['DO SLEEP(10)', 403, 'STATEMENT_NOT_ALLOWED'],
  ['HANDLER actor OPEN', 403, 'STATEMENT_NOT_ALLOWED'],
  ["PREPARE s FROM 'DROP TABLE actor'", 403, 'STATEMENT_NOT_ALLOWED'],
  ['SHOW GRANTS', 403, 'STATEMENT_NOT_ALLOWED'],
  ['REPLACE INTO actor VALUES (1)', 403, 'STATEMENT_NOT_ALLOWED'],
  ['WITH x AS (SELECT 1) REPLACE INTO actor SELECT * FROM x', 403, 'STATEMENT_NOT_ALLOWED'],
  ['USE mysql', 403, 'STATEMENT_NOT_ALLOWED'],
  ['SELECT 1; DROP TABLE actor', 403, 'MULTIPLE_STATEMENTS'],
  ['SELECT 1;DROP TABLE actor;', 403, 'MULTIPLE_STATEMENTS'],
  ["SELECT * FROM actor WHERE first_name = 'x'; DELETE FROM actor", 403, 'MULTIPLE_STATEMENTS'],
  ['SELECT 1 ; ; ', 403, 'MULTIPLE_STATEMENTS'],
  ['SELECT 1 /*! ; DROP TABLE actor */', 403, 'EXECUTABLE_COMMENT'],
  ['/*!50000 DROP TABLE actor */', 403, 'EXECUTABLE_COMMENT'],
  ['SELECT /*!32302 1/0, */ 1 FROM actor', 403, 'EXECUTABLE_COMMENT'],
  ['SELECT 1 /*M!100000 , SLEEP(5) */', 403, 'EXECUTABLE_COMMENT'],
  ['SELECT /*+ MAX_EXECUTION_TIME(1) */ 1', 403, 'EXECUTABLE_COMMENT'],
  ['SELECT SLEEP(5)', 403, 'FUNCTION_NOT_ALLOWED'],
  ['select sleep (5)', 403, 'FUNCTION_NOT_ALLOWED'],
  ['SELECT `SLEEP`(5)', 403, 'FUNCTION_NOT_ALLOWED'],
  ['SELECT * FROM actor WHERE actor_id = 1 AND SLEEP/**/(5)', 403, 'FUNCTION_NOT_ALLOWED'],
  ["SELECT BENCHMARK(100000000, MD5('a'))", 403, 'FUNCTION_NOT_ALLOWED'],
  ["SELECT GET_LOCK('a', 100)", 403, 'FUNCTION_NOT_ALLOWED'],
  ["SELECT RELEASE_LOCK('a')", 403, 'FUNCTION_NOT_ALLOWED'],
  ["SELECT LOAD_FILE('/etc/shadow')", 403, 'FUNCTION_NOT_ALLOWED'],
  ["SELECT MASTER_POS_WAIT('log', 4)", 403, 'FUNCTION_NOT_ALLOWED'],
  ['UPDATE actor SET first_name = SLEEP(1)', 403, 'FUNCTION_NOT_ALLOWED'],
  ["SELECT * FROM actor INTO OUTFILE '/tmp/a'", 403, 'FORBIDDEN_CLAUSE'],
  ["SELECT * INTO DUMPFILE '/tmp/a' FROM actor", 403, 'FORBIDDEN_CLAUSE'],
  ['SELECT first_name INTO @x FROM actor LIMIT 1', 403, 'FORBIDDEN_CLAUSE'],
  ['SELECT first_name FROM actor LIMIT 1 INTO x', 403, 'FORBIDDEN_CLAUSE'],
  ['SELECT * FROM actor PROCEDURE ANALYSE()', 403, 'FORBIDDEN_CLAUSE'],
  ['SELECT @@version', 403, 'VARIABLE'],
  ['SELECT @@GLOBAL.secure_file_priv', 403, 'VARIABLE'],
  ['SELECT @a := 1', 403, 'VARIABLE'],
  ['SELECT * FROM mysql.user', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM `mysql`.`user`', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM MySQL . user', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT table_name FROM information_schema.tables', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM INFORMATION_SCHEMA.PROCESSLIST', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM performance_schema.threads', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM sys.session', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM actor WHERE actor_id IN (SELECT user FROM mysql.user)', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM actor UNION SELECT user, password, 1, 2 FROM mysql.user', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM otherdb.secrets', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM `otherdb`.`secrets`', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT a.* FROM actor a JOIN otherdb.t b ON a.actor_id = b.id', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM actor, otherdb.t', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM actor a JOIN film f ON a.x = f.y, otherdb.t', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT otherdb.t.secret FROM actor', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT otherdb.f(1)', 403, 'SCHEMA_NOT_ALLOWED'],
  ['UPDATE otherdb.t SET a = 1', 403, 'SCHEMA_NOT_ALLOWED'],
  ['UPDATE LOW_PRIORITY IGNORE otherdb.t SET a = 1', 403, 'SCHEMA_NOT_ALLOWED'],
  ['INSERT INTO otherdb.t VALUES (1)', 403, 'SCHEMA_NOT_ALLOWED'],
  ['INSERT IGNORE INTO otherdb.t VALUES (1)', 403, 'SCHEMA_NOT_ALLOWED'],
  ['DELETE FROM otherdb.t', 403, 'SCHEMA_NOT_ALLOWED'],
  ['DELETE FROM actor USING actor, otherdb.t', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM (SELECT * FROM otherdb.t) x', 403, 'SCHEMA_NOT_ALLOWED'],
  ['SELECT * FROM (actor JOIN otherdb.t)', 403, 'SCHEMA_NOT_ALLOWED'],
  // stored routines run with their definer's rights: refused unless allow-listed
  ['SELECT sakila.inventory_in_stock(1)', 403, 'ROUTINE_NOT_ALLOWED'],
  ['SELECT inventory_in_stock(1)', 403, 'ROUTINE_NOT_ALLOWED'],
  ['select Inventory_In_Stock (1)', 403, 'ROUTINE_NOT_ALLOWED'],
  ['SELECT `inventory_in_stock`(1)', 403, 'ROUTINE_NOT_ALLOWED'],
  ['SELECT `sakila`.`inventory_in_stock`(1)', 403, 'ROUTINE_NOT_ALLOWED'],
  ['SELECT * FROM customer WHERE get_customer_balance(customer_id, NOW()) > 0', 403, 'ROUTINE_NOT_ALLOWED'],
  ['UPDATE actor SET first_name = sakila.f(1) WHERE actor_id = 1', 403, 'ROUTINE_NOT_ALLOWED'],
  ['SELECT * FROM actor WHERE actor_id IN (SELECT f(1))', 403, 'ROUTINE_NOT_ALLOWED'],
  // a quoted name with a dot is one identifier, never schema.table
  ['SELECT * FROM `sakila.actor`', 403, 'NAME_NOT_ALLOWED'],
  ['SELECT * FROM `mysql.user`', 403, 'NAME_NOT_ALLOWED'],
  ['SELECT `sakila.actor`.first_name FROM actor', 403, 'NAME_NOT_ALLOWED'],
  ['INSERT INTO `other.t` VALUES (1)', 403, 'NAME_NOT_ALLOWED'],
  ["SELECT 'unterminated", 400, 'SQL_SYNTAX'],
  ['SELECT 1 /* unterminated', 400, 'SQL_SYNTAX'],
  ['SELECT `unterminated', 400, 'SQL_SYNTAX'],
  ['SELECT 1\u0000; DROP TABLE actor', 400, 'SQL_SYNTAX'],
  ['', 400, 'EMPTY_SQL'],
  ['  /* nothing */ -- at all', 400, 'EMPTY_SQL'],
  [';', 400, 'EMPTY_SQL'],
];

const allowed: Array<[string, 'read' | 'write']> = [
  ['SELECT * FROM actor', 'read'],
  ["SELECT * FROM actor WHERE first_name = 'DROP TABLE x; --'", 'read'],
  ["SELECT * FROM actor WHERE last_name = 'SLEEP(5)' -- comment", 'read'],
  ['SELECT `select`, `drop` FROM `actor`', 'read'],
  ['SELECT a.first_name FROM actor AS a JOIN film_actor fa ON a.actor_id = fa.actor_id', 'read'],
  ['SELECT sakila.actor.first_name FROM sakila.actor', 'read'],
  ['SELECT * FROM sakila.actor a, sakila.film f', 'read'],
  ['select count(*) from rental where rental_date > ?', 'read'],
  ['WITH x AS (SELECT actor_id FROM actor) SELECT * FROM x', 'read'],
  ['SELECT * FROM actor FOR UPDATE', 'write'],
  ['SELECT 1;', 'read'],
  ['SELECT 1; -- trailing comment', 'read'],
  ['INSERT INTO actor (first_name, last_name) VALUES (?, ?)', 'write'],
  ['INSERT INTO sakila.actor (first_name) VALUES ("x") ON DUPLICATE KEY UPDATE first_name = "y"', 'write'],
  ['UPDATE actor SET last_name = ? WHERE actor_id = ?', 'write'],
  ['DELETE FROM actor WHERE actor_id = ?', 'write'],
  ['SELECT REPLACE(first_name, "A", "B") FROM actor', 'read'],
  ['SELECT * FROM actor WHERE first_name = "mysql.user"', 'read'],
  // built-in functions and keywords before a parenthesis are not routine calls
  ['SELECT COUNT(DISTINCT(actor_id)), CONCAT_WS(",", first_name, last_name), DATE_FORMAT(NOW(), "%Y") FROM actor', 'read'],
  ['SELECT CAST(actor_id AS CHAR(10)), CONVERT(actor_id, DECIMAL(10,2)), CAST(x AS UNSIGNED) FROM actor', 'read'],
  ['WITH RECURSIVE c (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT * FROM c', 'read'],
  ['WITH a (x) AS (SELECT 1), b (y) AS (SELECT 2) SELECT * FROM a, b', 'read'],
  ['SELECT * FROM (SELECT 1, 2) AS dt (a, b)', 'read'],
  ['SELECT * FROM film_text WHERE MATCH (title, description) AGAINST ("drama")', 'read'],
  ['SELECT first_name FROM actor WHERE (actor_id, first_name) IN ((1, "A"))', 'read'],
  ['SELECT ROW_NUMBER() OVER (PARTITION BY last_name ORDER BY actor_id), RANK() OVER w FROM actor WINDOW w AS (ORDER BY actor_id)', 'read'],
  ['SELECT * FROM actor a JOIN film_actor fa USING (actor_id)', 'read'],
  ['SELECT * FROM actor WHERE EXISTS (SELECT 1) AND NOT (actor_id = 1) OR (actor_id = 2)', 'read'],
  ['SELECT TRIM(LEADING "x" FROM first_name), EXTRACT(YEAR FROM last_update), DATE_ADD(last_update, INTERVAL 1 DAY) FROM actor', 'read'],
  ['SELECT JSON_OBJECT("a", actor_id), IFNULL(first_name, ""), LEFT(last_name, 2) FROM actor FORCE INDEX (PRIMARY)', 'read'],
  ['INSERT INTO actor(first_name, last_name) VALUES (UPPER(?), LOWER(?)) ON DUPLICATE KEY UPDATE last_name = VALUES(last_name)', 'write'],
  ['SELECT * FROM actor WHERE actor_id = ANY (SELECT actor_id FROM film_actor)', 'read'],
];

describe('SQL policy: hostile inputs', () => {
  test('at least 40 hostile inputs', () => {
    expect(hostile.length).toBeGreaterThanOrEqual(40);
  });
  for (const [sql, status, code] of hostile) {
    test(`${status} ${code}: ${JSON.stringify(sql)}`, () => {
      const v = checkSql(sql, policy);
      expect(v.ok).toBe(false);
      if (!v.ok) {
        expect(v.status).toBe(status);
        expect(v.code).toBe(code);
        expect(v.message.length).toBeGreaterThan(5);
      }
    });
  }
});

describe('SQL policy: allow-listed routines', () => {
  const withRoutines = { ...policy, routines: ['sakila.inventory_in_stock'] };
  test('an allow-listed routine passes, qualified or not, and runs on the manager (its body may write)', () => {
    expect(checkSql('SELECT sakila.inventory_in_stock(?)', withRoutines)).toMatchObject({ ok: true, type: 'write' });
    expect(checkSql('SELECT INVENTORY_IN_STOCK(1)', withRoutines)).toMatchObject({ ok: true, type: 'write' });
  });
  test('the list names exact routines: another name or schema stays refused', () => {
    expect(checkSql('SELECT sakila.get_customer_balance(1, NOW())', withRoutines)).toMatchObject({ ok: false, code: 'ROUTINE_NOT_ALLOWED' });
    expect(checkSql('SELECT other.inventory_in_stock(1)', { ...withRoutines, schemas: ['sakila', 'other'] })).toMatchObject({ ok: false, code: 'ROUTINE_NOT_ALLOWED' });
    expect(checkSql('SELECT SLEEP(1)', { ...withRoutines, routines: ['sakila.sleep'] })).toMatchObject({ ok: false, code: 'FUNCTION_NOT_ALLOWED' });
  });
});

describe('SQL policy: legitimate queries pass', () => {
  for (const [sql, type] of allowed) {
    test(JSON.stringify(sql), () => {
      const v = checkSql(sql, policy);
      expect(v).toMatchObject({ ok: true, type });
    });
  }
  test('cuts a trailing semicolon and counts placeholders', () => {
    expect(checkSql('UPDATE actor SET a = ? WHERE b = ?; ', policy)).toMatchObject({ ok: true, sql: 'UPDATE actor SET a = ? WHERE b = ?', placeholders: 2 });
  });
  test('statement types come from the configuration', () => {
    const readOnly = { statements: ['SELECT'], schemas: ['sakila'] };
    expect(checkSql('DELETE FROM actor', readOnly)).toMatchObject({ ok: false, status: 403, code: 'STATEMENT_NOT_ALLOWED' });
    expect(checkSql('SELECT 1', readOnly).ok).toBe(true);
    expect(checkSql('SHOW TABLES', { statements: ['SHOW'], schemas: [] }).ok).toBe(true);
  });
});

describe('policyChecker (remembered verdicts)', () => {
  test('gives checkSql\'s verdict for every text, the second time too', () => {
    const check = policyChecker(policy, 8);
    const texts = [...hostile.map(([sql]) => sql), 'SELECT * FROM actor WHERE actor_id = ?', 'SELECT 1; DELETE FROM actor'];
    for (let round = 0; round < 2; round++) for (const sql of texts) expect(check(sql)).toEqual(checkSql(sql, policy));
  });
  test('stays bounded, and never keeps long texts', () => {
    let calls = 0;
    const counting = { ...policy, get statements() { calls++; return policy.statements; } };
    const check = policyChecker(counting, 2, 20);
    const run = (sql: string): number => { const before = calls; check(sql); return calls - before; };
    expect(run('SELECT 1')).toBeGreaterThan(0);
    expect(run('SELECT 1')).toBe(0); // remembered
    run('SELECT 2');
    run('SELECT 3'); // evicts SELECT 1, the oldest
    expect(run('SELECT 1')).toBeGreaterThan(0);
    const long = `SELECT '${'x'.repeat(30)}'`;
    run(long);
    expect(run(long)).toBeGreaterThan(0); // too long to keep
  });
});
