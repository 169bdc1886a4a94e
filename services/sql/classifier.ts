// Read/write classification on the token stream: a read may go to any
// up-to-date replica, anything else (or anything we are unsure of) goes to
// the manager. Locking reads, SELECT ... INTO and session-bound functions are
// writes because they only make sense on the primary.

import { significant, tokenize, type Token } from './tokenizer.ts';

export type QueryType = 'read' | 'write';

export interface Classification {
  type: QueryType;
  /** The statement's main verb (SELECT, INSERT, ...; the verb after the CTEs for WITH), '' if none. */
  statement: string;
  /** Why a SELECT-like statement counts as a write. */
  reason?: string;
}

/** Verbs that never change data (served by replicas unless they lock or write into something). */
const READ_VERBS = new Set(['SELECT', 'SHOW', 'DESCRIBE', 'DESC', 'EXPLAIN', 'HELP', 'VALUES', 'TABLE']);

/** Functions whose result depends on the primary's session or that take locks / sequence values. */
const PRIMARY_FUNCTIONS = new Set([
  'GET_LOCK', 'RELEASE_LOCK', 'RELEASE_ALL_LOCKS', 'IS_USED_LOCK', 'IS_FREE_LOCK',
  'LAST_INSERT_ID', 'ROW_COUNT', 'FOUND_ROWS', 'NEXTVAL', 'SETVAL', 'LASTVAL',
  'MASTER_POS_WAIT', 'MASTER_GTID_WAIT', 'SOURCE_POS_WAIT',
]);

/** Index just past the parenthesised group that opens at `i` (tokens[i] is '('); tokens.length if unbalanced. */
export function skipParens(tokens: Token[], i: number): number {
  let depth = 0;
  for (; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.type !== 'punct') continue;
    if (t.value === '(') depth++;
    else if (t.value === ')') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return tokens.length;
}

function isName(t: Token | undefined): boolean {
  return t !== undefined && (t.type === 'word' || t.type === 'qident');
}

/**
 * Index of the statement's main verb in significant tokens: skips leading
 * parentheses and, for WITH, the common table expressions. -1 if none.
 */
export function mainVerbIndex(tokens: Token[]): number {
  let i = 0;
  while (tokens[i]?.type === 'punct' && tokens[i].value === '(') i++;
  if (tokens[i]?.type !== 'word') return -1;
  if (tokens[i].upper !== 'WITH') return i;
  i++;
  if (tokens[i]?.upper === 'RECURSIVE') i++;
  for (;;) {
    if (!isName(tokens[i])) return -1;
    i++;
    if (tokens[i]?.value === '(' && tokens[i].type === 'punct') i = skipParens(tokens, i); // column list
    if (tokens[i]?.upper !== 'AS') return -1;
    i++;
    if (tokens[i]?.value !== '(' || tokens[i].type !== 'punct') return -1;
    i = skipParens(tokens, i);
    if (tokens[i]?.type === 'punct' && tokens[i].value === ',') { i++; continue; }
    break;
  }
  while (tokens[i]?.type === 'punct' && tokens[i].value === '(') i++;
  return tokens[i]?.type === 'word' ? i : -1;
}

/** Classifies significant tokens (comments already removed). */
export function classifyTokens(tokens: Token[]): Classification {
  const v = mainVerbIndex(tokens);
  if (v === -1) return { type: 'write', statement: '' };
  const statement = tokens[v].upper;
  if (!READ_VERBS.has(statement)) return { type: 'write', statement };
  if (statement === 'EXPLAIN' || statement === 'DESCRIBE' || statement === 'DESC') {
    // EXPLAIN ANALYZE / ANALYZE runs the statement
    if (tokens.some((t) => t.type === 'word' && t.upper === 'ANALYZE')) return { type: 'write', statement, reason: 'EXPLAIN ANALYZE runs the statement' };
    return { type: 'read', statement };
  }
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.type !== 'word') continue;
    const next = tokens[i + 1];
    switch (t.upper) {
      case 'FOR':
        if (next?.type === 'word' && (next.upper === 'UPDATE' || next.upper === 'SHARE')) {
          return { type: 'write', statement, reason: `locking read (FOR ${next.upper})` };
        }
        break;
      case 'LOCK':
        if (next?.type === 'word' && next.upper === 'IN') return { type: 'write', statement, reason: 'locking read (LOCK IN SHARE MODE)' };
        break;
      case 'INTO':
        return { type: 'write', statement, reason: 'SELECT ... INTO' };
      default:
        if (PRIMARY_FUNCTIONS.has(t.upper) && next?.type === 'punct' && next.value === '(') {
          return { type: 'write', statement, reason: `${t.upper}() needs the primary` };
        }
    }
    // NEXT VALUE FOR seq (MariaDB sequences)
    if (t.upper === 'NEXT' && next?.upper === 'VALUE') return { type: 'write', statement, reason: 'sequence value' };
  }
  return { type: 'read', statement };
}

/** Classifies raw SQL. Input that does not tokenize counts as a write (the manager will report the error). */
export function classify(sql: string): Classification {
  try {
    return classifyTokens(significant(tokenize(sql)));
  } catch {
    return { type: 'write', statement: '' };
  }
}
