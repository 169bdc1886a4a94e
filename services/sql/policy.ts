// The SQL policy: an allow-list applied on the token stream by every hop.
// Exactly one statement whose verb is allowed, no executable comments, no
// variables, no file/lock/sleep functions, no SELECT ... INTO, every
// schema-qualified name inside the allowed schemas (system schemas never),
// no quoted name holding a dot, and no stored routine call unless
// allow-listed (services/sql/functions.ts tells built-ins from routines).

import { classifyTokens, mainVerbIndex, type QueryType } from './classifier.ts';
import { BUILTIN_FUNCTIONS, PAREN_KEYWORDS } from './functions.ts';
import { significant, SqlSyntaxError, tokenize, type Token } from './tokenizer.ts';

export interface SqlPolicy {
  /** Allowed statement verbs, upper case (WITH is judged by the verb after its CTEs). */
  statements: string[];
  /** Schemas that qualified names may use (case-insensitive). */
  schemas: string[];
  /**
   * Stored routines (`schema.name`) a query may call; any other routine
   * call is refused. An unqualified call matches an entry by its name (the
   * API's connections use the cluster's database as the default schema).
   */
  routines?: string[];
}

export const DEFAULT_POLICY: SqlPolicy = { statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: [] };

export type PolicyVerdict =
  | {
      ok: true;
      /** The SQL to run: the input without a trailing `;` (and anything after it, comments only). */
      sql: string;
      statement: string;
      type: QueryType;
      /** Number of `?` placeholders. */
      placeholders: number;
    }
  | { ok: false; status: 400 | 403; code: string; message: string };

const SYSTEM_SCHEMAS = new Set(['INFORMATION_SCHEMA', 'MYSQL', 'PERFORMANCE_SCHEMA', 'SYS']);

/** Functions that read files, sleep, take server locks or wait on replication. */
const DENIED_FUNCTIONS = new Set([
  'SLEEP', 'BENCHMARK', 'GET_LOCK', 'RELEASE_LOCK', 'RELEASE_ALL_LOCKS', 'IS_FREE_LOCK', 'IS_USED_LOCK',
  'LOAD_FILE', 'MASTER_POS_WAIT', 'MASTER_GTID_WAIT', 'SOURCE_POS_WAIT', 'WAIT_FOR_EXECUTED_GTID_SET',
  'WAIT_UNTIL_SQL_THREAD_AFTER_GTIDS', 'SYS_EXEC', 'SYS_EVAL', 'SYS_GET', 'SYS_SET',
]);

/** Keywords with no place in an application query, wherever they appear. */
const DENIED_WORDS = new Map<string, string>([
  ['OUTFILE', 'INTO OUTFILE is not allowed'],
  ['DUMPFILE', 'INTO DUMPFILE is not allowed'],
  ['INFILE', 'LOAD DATA INFILE is not allowed'],
  ['PROCEDURE', 'PROCEDURE clauses are not allowed'],
]);

/** After INSERT/REPLACE these modifiers may precede INTO. */
const INSERT_MODIFIERS = new Set(['LOW_PRIORITY', 'DELAYED', 'HIGH_PRIORITY', 'IGNORE']);

/** Keywords after which (at the same depth) a name is a table reference. */
const TABLE_INTRO = new Set(['FROM', 'JOIN', 'STRAIGHT_JOIN', 'UPDATE', 'INTO', 'TABLE', 'USING']);
/** Keywords that end a table-reference list at their depth. */
const TABLE_END = new Set([
  'WHERE', 'SET', 'GROUP', 'HAVING', 'ORDER', 'LIMIT', 'UNION', 'EXCEPT', 'INTERSECT', 'VALUES', 'VALUE',
  'SELECT', 'WINDOW', 'FOR', 'LOCK', 'RETURNING', 'DUPLICATE',
]);

const deny = (code: string, message: string): PolicyVerdict => ({ ok: false, status: 403, code, message });

function isName(t: Token | undefined): t is Token {
  return t !== undefined && (t.type === 'word' || t.type === 'qident');
}
function isPunct(t: Token | undefined, p: string): boolean {
  return t !== undefined && t.type === 'punct' && t.value === p;
}

/**
 * The routine a call names (`schema.name` or `name`), or null for a
 * built-in function or a keyword before a parenthesis. A quoted or
 * schema-qualified name is always a routine: built-ins are neither.
 */
function routineCall(parts: Token[]): string | null {
  const last = parts[parts.length - 1];
  if (parts.length === 1 && last.type === 'word' && (BUILTIN_FUNCTIONS.has(last.upper) || PAREN_KEYWORDS.has(last.upper))) return null;
  return parts.map((p) => p.value).join('.');
}

export type PolicyCheck = (sql: string) => PolicyVerdict;

/**
 * checkSql for one policy, remembering the verdicts of up to `size` texts
 * of at most `maxLength` characters (the oldest goes first): a verdict
 * depends only on the text and the policy, and applications send the same
 * statement texts again and again (the parameters travel apart).
 */
export function policyChecker(policy: SqlPolicy, size = 256, maxLength = 2048): PolicyCheck {
  const memo = new Map<string, PolicyVerdict>();
  return (sql) => {
    let v = memo.get(sql);
    if (v) return v;
    v = checkSql(sql, policy);
    if (sql.length <= maxLength) {
      if (memo.size >= size) memo.delete(memo.keys().next().value as string);
      memo.set(sql, v);
    }
    return v;
  };
}

/** Checks one SQL text against the policy. Never throws. */
export function checkSql(sql: string, policy: SqlPolicy): PolicyVerdict {
  let all: Token[];
  try {
    all = tokenize(sql);
  } catch (e) {
    if (e instanceof SqlSyntaxError) return { ok: false, status: 400, code: 'SQL_SYNTAX', message: e.message };
    throw e;
  }
  const exec = all.find((t) => t.type === 'comment' && t.executable);
  if (exec) return deny('EXECUTABLE_COMMENT', 'executable comments (/*! */, /*M! */, /*+ */) are not allowed');

  let tokens = significant(all);
  if (tokens.length === 0) return { ok: false, status: 400, code: 'EMPTY_SQL', message: 'sql holds no statement' };

  // Exactly one statement: a single trailing semicolon is tolerated and cut off.
  let text = sql;
  const semi = tokens.findIndex((t) => isPunct(t, ';'));
  if (semi !== -1) {
    if (semi !== tokens.length - 1) return deny('MULTIPLE_STATEMENTS', 'exactly one statement is allowed');
    text = sql.slice(0, tokens[semi].start);
    tokens = tokens.slice(0, semi);
    if (tokens.length === 0) return { ok: false, status: 400, code: 'EMPTY_SQL', message: 'sql holds no statement' };
  }

  const v = mainVerbIndex(tokens);
  if (v === -1) return deny('STATEMENT_NOT_ALLOWED', 'could not find an allowed statement verb');
  const verb = tokens[v].upper;
  const allowed = new Set(policy.statements.map((s) => s.toUpperCase()));
  if (!allowed.has(verb)) return deny('STATEMENT_NOT_ALLOWED', `${verb} statements are not allowed (allowed: ${[...allowed].join(', ')})`);

  const schemas = new Set(policy.schemas.map((s) => s.toUpperCase()));
  const routines = new Set((policy.routines ?? []).map((r) => r.toUpperCase()));
  const routineNames = new Set([...routines].map((r) => r.slice(r.indexOf('.') + 1)));
  // In WITH ... the names before the main verb at depth 0 are the CTEs' (`WITH x (a, b) AS (...)`).
  const cteEnd = tokens[0]?.upper === 'WITH' ? v : 0;
  let placeholders = 0;
  let callsRoutine = false;
  // Per parenthesis depth: are we in a table-reference list, an ON condition, or elsewhere?
  const clause: Array<'tables' | 'on' | 'other'> = ['other'];
  let depth = 0;

  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    const prev = tokens[i - 1];
    switch (t.type) {
      case 'param':
        placeholders++;
        continue;
      case 'variable':
        return deny('VARIABLE', `variables are not allowed (${t.value.startsWith('@@') ? 'system variable' : 'user variable'})`);
      case 'op':
        if (t.value === ':=') return deny('VARIABLE', 'assignments are not allowed');
        continue;
      case 'punct':
        if (t.value === '(') {
          depth++;
          // `FROM (a JOIN b)` keeps listing tables; a subquery's SELECT resets it.
          const opensTables = clause[depth - 1] === 'tables' &&
            ((prev?.type === 'word' && TABLE_INTRO.has(prev.upper)) || isPunct(prev, ',') || isPunct(prev, '('));
          clause[depth] = opensTables ? 'tables' : 'other';
        } else if (t.value === ')') {
          depth = Math.max(0, depth - 1);
        } else if (t.value === ',' && clause[depth] === 'on') {
          clause[depth] = 'tables'; // FROM a JOIN b ON cond, c
        }
        continue;
      case 'string':
      case 'number':
      case 'comment':
        continue;
    }
    // t is a name (word or quoted identifier)
    if (t.type === 'word') {
      const u = t.upper;
      const denied = DENIED_WORDS.get(u);
      if (denied) return deny('FORBIDDEN_CLAUSE', denied);
      if (u === 'INTO') {
        let j = i - 1;
        while (j >= 0 && tokens[j].type === 'word' && INSERT_MODIFIERS.has(tokens[j].upper)) j--;
        const owner = tokens[j];
        if (!(owner?.type === 'word' && (owner.upper === 'INSERT' || owner.upper === 'REPLACE'))) {
          return deny('FORBIDDEN_CLAUSE', 'SELECT ... INTO is not allowed');
        }
      }
      if (TABLE_INTRO.has(u)) { clause[depth] = 'tables'; continue; }
      if (u === 'ON') { clause[depth] = 'on'; continue; }
      if (TABLE_END.has(u)) { clause[depth] = 'other'; continue; }
    }
    if (SYSTEM_SCHEMAS.has(t.upper)) return deny('SCHEMA_NOT_ALLOWED', `the ${t.value.toLowerCase()} schema is not allowed`);
    // `sakila.actor` in backticks is one name, a table literally called "sakila.actor": never a schema.table
    if (t.type === 'qident' && t.value.includes('.')) {
      return deny('NAME_NOT_ALLOWED', `quoted name \`${t.value}\` holds a dot: quote each part (\`schema\`.\`table\`)`);
    }
    if (isPunct(prev, '.')) continue; // inner part of a chain, judged at its head

    // The dotted chain starting here: a.b, a.b.c, a.*, a.b.*
    const parts: Token[] = [t];
    let j = i + 1;
    while (isPunct(tokens[j], '.') && (isName(tokens[j + 1]) || tokens[j + 1]?.value === '*')) {
      parts.push(tokens[j + 1]);
      j += 2;
    }
    const last = parts[parts.length - 1];
    const isCall = isPunct(tokens[j], '(');
    if (isCall && last.type !== 'op' && DENIED_FUNCTIONS.has(last.upper)) {
      return deny('FUNCTION_NOT_ALLOWED', `${last.upper.toLowerCase()}() is not allowed`);
    }
    const inTablePosition = clause[depth] === 'tables' && (
      (prev?.type === 'word' && (TABLE_INTRO.has(prev.upper) || INSERT_MODIFIERS.has(prev.upper) || prev.upper === 'QUICK')) ||
      isPunct(prev, ',') || isPunct(prev, '('));
    if (parts.length > 1) {
      // schema.table.column, schema.table.*, schema.func(), or schema.table in a table list
      const qualifiesSchema = parts.length >= 3 || (isCall && parts.length === 2) || inTablePosition;
      if (qualifiesSchema && !schemas.has(t.upper)) {
        return deny('SCHEMA_NOT_ALLOWED', `schema ${t.value} is not allowed (allowed: ${policy.schemas.join(', ') || 'none'})`);
      }
    }
    if (isCall && !inTablePosition && !(i < cteEnd && depth === 0) && !(prev?.type === 'word' && prev.upper === 'AS')) {
      const routine = routineCall(parts);
      if (routine) {
        const name = routine.toUpperCase();
        const listed = parts.length === 1 ? routineNames.has(name) : routines.has(name);
        if (!listed) return deny('ROUTINE_NOT_ALLOWED', `calling the stored routine ${routine}() is not allowed (allow-list it in services.gatekeeper.routines)`);
        callsRoutine = true;
      }
    }
  }

  const cls = classifyTokens(tokens);
  // a routine's body may write whatever the statement around it looks like: the manager runs it
  return { ok: true, sql: text, statement: verb, type: callsRoutine ? 'write' : cls.type, placeholders };
}
