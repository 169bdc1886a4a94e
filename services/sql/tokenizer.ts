// A small MySQL/MariaDB lexer: enough of the real grammar (strings with
// escapes, quoted identifiers, the three comment forms, executable comments,
// operators) that the SQL policy and the read/write classifier never mistake
// a keyword inside a string, an identifier or a comment for a real one.

export type TokenType =
  | 'word'      // unquoted identifier or keyword (upper-cased in `upper`)
  | 'qident'    // `quoted identifier` (value without the backticks)
  | 'string'    // '...' or "..." (value unescaped)
  | 'number'
  | 'variable'  // @name, @'name', @@name, @@global.name
  | 'param'     // ? placeholder
  | 'punct'     // ( ) , ; .
  | 'op'        // any other operator (=, :=, <=>, ->>, ...)
  | 'comment';  // /* */, -- , #

export interface Token {
  type: TokenType;
  /** Raw text for words/ops/punct; unquoted text for strings/qidents; body for comments. */
  value: string;
  /** Upper-cased value for words (keyword comparisons); same as value otherwise. */
  upper: string;
  /** Offset of the token's first character in the input. */
  start: number;
  /** For comments: an executable (`/*!`, `/*M!`) or hint (`/*+`) comment, which the server would run. */
  executable?: boolean;
}

export class SqlSyntaxError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} at offset ${offset}`);
    this.name = 'SqlSyntaxError';
  }
}

const MULTI_OPS = ['<=>', '->>', ':=', '<=', '>=', '<>', '!=', '||', '&&', '<<', '>>', '->'];

function isIdentStart(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 36 || c >= 0x80;
}
function isIdentPart(c: number): boolean {
  return isIdentStart(c) || (c >= 48 && c <= 57);
}
function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}
function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12;
}

/** Reads a quoted run starting at `i` (the opening quote); returns [unescaped, next index]. */
function readQuoted(sql: string, i: number, quote: string, backslash: boolean): [string, number] {
  const start = i;
  let out = '';
  i++;
  for (;;) {
    if (i >= sql.length) throw new SqlSyntaxError(`unterminated ${quote === '`' ? 'quoted identifier' : 'string'}`, start);
    const ch = sql[i];
    if (backslash && ch === '\\') {
      if (i + 1 >= sql.length) throw new SqlSyntaxError('unterminated string', start);
      out += sql[i + 1];
      i += 2;
      continue;
    }
    if (ch === quote) {
      if (sql[i + 1] === quote) { out += quote; i += 2; continue; }
      return [out, i + 1];
    }
    out += ch;
    i++;
  }
}

export function tokenize(sql: string): Token[] {
  const tokens: Token[] = [];
  const n = sql.length;
  let i = 0;
  const push = (type: TokenType, value: string, start: number, upper = value): void => {
    tokens.push({ type, value, upper, start });
  };
  while (i < n) {
    const c = sql.charCodeAt(i);
    const ch = sql[i];
    if (isSpace(c)) { i++; continue; }
    if (c === 0) throw new SqlSyntaxError('NUL byte', i);

    // Comments. `-- ` needs a space/control char (or the end) after the dashes, as in MySQL.
    if (ch === '#' || (ch === '-' && sql[i + 1] === '-' && (i + 2 >= n || sql.charCodeAt(i + 2) <= 32))) {
      const start = i;
      const eol = sql.indexOf('\n', i);
      const end = eol === -1 ? n : eol;
      tokens.push({ type: 'comment', value: sql.slice(start, end), upper: '', start });
      i = end;
      continue;
    }
    if (ch === '/' && sql[i + 1] === '*') {
      const start = i;
      const close = sql.indexOf('*/', i + 2);
      if (close === -1) throw new SqlSyntaxError('unterminated comment', start);
      const body = sql.slice(i + 2, close);
      const executable = body.startsWith('!') || /^M!/i.test(body) || body.startsWith('+');
      tokens.push({ type: 'comment', value: body, upper: '', start, executable });
      i = close + 2;
      continue;
    }

    if (ch === "'" || ch === '"') {
      const start = i;
      const [value, next] = readQuoted(sql, i, ch, true);
      push('string', value, start);
      i = next;
      continue;
    }
    if (ch === '`') {
      const start = i;
      const [value, next] = readQuoted(sql, i, '`', false);
      push('qident', value, start, value.toUpperCase());
      i = next;
      continue;
    }
    if (ch === '@') {
      const start = i;
      i++;
      if (sql[i] === '@') i++;
      if (sql[i] === "'" || sql[i] === '"' || sql[i] === '`') {
        const [, next] = readQuoted(sql, i, sql[i], sql[i] !== '`');
        i = next;
      } else {
        // @@global.x: keep the dots of a system variable in the token
        while (i < n && (isIdentPart(sql.charCodeAt(i)) || sql[i] === '.')) i++;
      }
      const value = sql.slice(start, i);
      push('variable', value, start, value.toUpperCase());
      continue;
    }
    if (isDigit(c) || (ch === '.' && isDigit(sql.charCodeAt(i + 1)) && !prevIsName(tokens))) {
      const start = i;
      if (ch === '0' && (sql[i + 1] === 'x' || sql[i + 1] === 'X' || sql[i + 1] === 'b' || sql[i + 1] === 'B')) i += 2;
      while (i < n && (isIdentPart(sql.charCodeAt(i)) || sql[i] === '.')) {
        // exponent sign: 1e-5
        if ((sql[i] === 'e' || sql[i] === 'E') && (sql[i + 1] === '-' || sql[i + 1] === '+')) i++;
        i++;
      }
      const value = sql.slice(start, i);
      // Identifiers may start with digits in MySQL (e.g. 1abc); treat those as words.
      if (/^\d+[a-zA-Z_$]/.test(value) && !/^\d+(\.\d*)?[eE][-+]?\d+$/.test(value) && !/^0[xXbB]/.test(value)) {
        push('word', value, start, value.toUpperCase());
      } else {
        push('number', value, start);
      }
      continue;
    }
    if (isIdentStart(c)) {
      const start = i;
      while (i < n && isIdentPart(sql.charCodeAt(i))) i++;
      const value = sql.slice(start, i);
      push('word', value, start, value.toUpperCase());
      continue;
    }
    if (ch === '?') { push('param', '?', i); i++; continue; }
    if (ch === '(' || ch === ')' || ch === ',' || ch === ';' || ch === '.') { push('punct', ch, i); i++; continue; }
    const op = MULTI_OPS.find((o) => sql.startsWith(o, i));
    if (op) { push('op', op, i); i += op.length; continue; }
    push('op', ch, i);
    i++;
  }
  return tokens;
}

function prevIsName(tokens: Token[]): boolean {
  const prev = tokens[tokens.length - 1];
  return prev !== undefined && (prev.type === 'word' || prev.type === 'qident') ;
}

/** The tokens the server acts on: comments dropped (check for executable ones first). */
export function significant(tokens: Token[]): Token[] {
  return tokens.filter((t) => t.type !== 'comment');
}
