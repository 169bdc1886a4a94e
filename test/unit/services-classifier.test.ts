import { describe, expect, test } from 'bun:test';
import { classify } from '../../services/sql/classifier.ts';
import { tokenize, SqlSyntaxError } from '../../services/sql/tokenizer.ts';

// [sql, expected type]
const cases: Array<[string, 'read' | 'write']> = [
  ['SELECT 1', 'read'],
  ['select * from actor', 'read'],
  ['SeLeCt first_name FROM actor WHERE actor_id = 1', 'read'],
  ['   \n\t SELECT 1', 'read'],
  ['/* leading */ SELECT 1', 'read'],
  ['-- note\nSELECT 1', 'read'],
  ['# note\nSELECT 1', 'read'],
  ['/* UPDATE */ SELECT 1', 'read'],
  ['SELECT 1 -- FOR UPDATE', 'read'],
  ['SELECT 1 # FOR UPDATE', 'read'],
  ["SELECT 'FOR UPDATE' AS x", 'read'],
  ['SELECT "INTO OUTFILE" AS x', 'read'],
  ["SELECT 'it''s' AS x, 'a\\'b' AS y", 'read'],
  ['SELECT `update` FROM t', 'read'],
  ['SELECT `into` FROM `for`', 'read'],
  ['(SELECT 1)', 'read'],
  ['((SELECT 1)) UNION (SELECT 2)', 'read'],
  ['SELECT a FROM t UNION ALL SELECT b FROM u', 'read'],
  ['SELECT * FROM t WHERE id IN (SELECT id FROM u)', 'read'],
  ['SELECT COUNT(*) FROM t GROUP BY a HAVING COUNT(*) > 1 ORDER BY 1 LIMIT 5', 'read'],
  ['SELECT REPLACE(name, "a", "b") FROM t', 'read'],
  ['SELECT UPDATEXML(x, "/a", "b") FROM t', 'read'],
  ['SELECT updated_at FROM t', 'read'],
  ['SELECT t.for_update FROM t', 'read'],
  ['SELECT * FROM t FORCE INDEX (PRIMARY)', 'read'],
  ['SELECT * FROM t LOCK_TABLE', 'read'],
  ['WITH x AS (SELECT 1) SELECT * FROM x', 'read'],
  ['with recursive r(n) as (select 1 union all select n+1 from r where n < 5) select * from r', 'read'],
  ['WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b', 'read'],
  ['WITH a (x) AS (SELECT 1) (SELECT x FROM a)', 'read'],
  ['SHOW TABLES', 'read'],
  ['show full processlist', 'read'],
  ['DESCRIBE actor', 'read'],
  ['DESC actor', 'read'],
  ['EXPLAIN SELECT * FROM actor', 'read'],
  ['EXPLAIN UPDATE actor SET a = 1', 'read'],
  ['VALUES (1, 2)', 'read'],
  ['SELECT JSON_EXTRACT(doc, "$.a") FROM t', 'read'],
  ['SELECT doc->>"$.a" FROM t', 'read'],
  ['SELECT 1 FROM DUAL', 'read'],
  ['SELECT * FROM t WHERE name LIKE "%INSERT%"', 'read'],
  ['SELECT * FROM actor FOR UPDATE', 'write'],
  ['select * from actor for update nowait', 'write'],
  ['SELECT * FROM actor\nFOR\n/* x */ UPDATE', 'write'],
  ['SELECT * FROM actor LOCK IN SHARE MODE', 'write'],
  ['SELECT * FROM actor FOR SHARE', 'write'],
  ['SELECT * FROM actor INTO OUTFILE "/tmp/x"', 'write'],
  ['SELECT a INTO @x FROM t', 'write'],
  ['SELECT * INTO DUMPFILE "/tmp/y" FROM t', 'write'],
  ['WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE', 'write'],
  ['WITH x AS (SELECT id FROM t) UPDATE t SET a = 1 WHERE id IN (SELECT id FROM x)', 'write'],
  ['WITH x AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM x)', 'write'],
  ['WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x', 'write'],
  ['SELECT GET_LOCK("a", 1)', 'write'],
  ['SELECT LAST_INSERT_ID()', 'write'],
  ['SELECT NEXT VALUE FOR seq', 'write'],
  ['SELECT NEXTVAL(seq)', 'write'],
  ['INSERT INTO t VALUES (1)', 'write'],
  ['insert into t (a) select a from u', 'write'],
  ['/* SELECT */ INSERT INTO t VALUES (1)', 'write'],
  ['-- SELECT\nUPDATE t SET a = 1', 'write'],
  ['UPDATE t SET a = (SELECT 1)', 'write'],
  ['DELETE FROM t WHERE id = 1', 'write'],
  ['REPLACE INTO t VALUES (1)', 'write'],
  ['INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 2', 'write'],
  ['CALL proc()', 'write'],
  ['DO SLEEP(1)', 'write'],
  ['SET @a = 1', 'write'],
  ['CREATE TABLE t (a INT)', 'write'],
  ['DROP TABLE t', 'write'],
  ['LOCK TABLES t READ', 'write'],
  ['BEGIN', 'write'],
  ['EXPLAIN ANALYZE SELECT 1', 'write'],
  ['', 'write'],
  ['/* only a comment */', 'write'],
  ["SELECT 'unterminated", 'write'],
  ['WITH broken', 'write'],
];

describe('read/write classifier', () => {
  test('has at least 60 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
  });
  for (const [sql, type] of cases) {
    test(`${type}: ${JSON.stringify(sql)}`, () => {
      expect(classify(sql).type).toBe(type);
    });
  }
  test('names the main verb after CTEs', () => {
    expect(classify('WITH x AS (SELECT 1) UPDATE t SET a = 1').statement).toBe('UPDATE');
    expect(classify('/* hi */ (select 1)').statement).toBe('SELECT');
  });
});

describe('tokenizer', () => {
  test('keeps keywords inside strings, quoted identifiers and comments out of words', () => {
    const words = tokenize("SELECT 'DROP' , `DELETE`, \"GRANT\" /* ALTER */ -- LOAD\n# SLEEP\nFROM t")
      .filter((t) => t.type === 'word').map((t) => t.upper);
    expect(words).toEqual(['SELECT', 'FROM', 'T']);
  });
  test('unescapes strings and identifiers', () => {
    const t = tokenize("'a''b\\'c' `x``y`");
    expect(t.map((x) => [x.type, x.value])).toEqual([['string', "a'b'c"], ['qident', 'x`y']]);
  });
  test('`--` needs a following space to start a comment', () => {
    expect(tokenize('1--1').filter((t) => t.type === 'comment')).toEqual([]);
    expect(tokenize('1 -- 1').filter((t) => t.type === 'comment').length).toBe(1);
  });
  test('flags executable and hint comments', () => {
    expect(tokenize('/*!50000 x */ /*M!100000 y */ /*+ z */ /* w */').map((t) => t.executable)).toEqual([true, true, true, false]);
  });
  test('rejects unterminated strings, identifiers and comments', () => {
    for (const bad of ["'abc", '"abc', '`abc', '/* abc', "'abc\\'"]) expect(() => tokenize(bad)).toThrow(SqlSyntaxError);
  });
  test('reads variables, placeholders and multi-char operators', () => {
    expect(tokenize('@@global.x @a ? := <=> ->>').map((t) => [t.type, t.value])).toEqual([
      ['variable', '@@global.x'], ['variable', '@a'], ['param', '?'], ['op', ':='], ['op', '<=>'], ['op', '->>'],
    ]);
  });
});
