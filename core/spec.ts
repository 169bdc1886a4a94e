// cluster.yaml -> Cluster: parse YAML keeping positions, validate against
// the cluster schema (ajv; schema/cluster.base.json + each role's section, as
// schema/cluster.schema.json has them for the built-ins), run the checks a
// schema cannot express (the roles' own node rules among them), then
// normalise (defaults, lists, absolute paths). Every problem is reported at
// once as `file:line:col: path problem`, before anything is created. User
// roles (`roleDirs:`) are imported first, so their sections validate too.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, visit, type Document, type YAMLMap } from 'yaml';
// The built-in role manifests carry the node rules and sections this file
// checks: the spec reads them, it does not restate them.
import { SpecError } from './errors.ts';
import { callerOf, SERVICE_NAMES } from '../services/contract.ts';
import { builtinRoles, isRoleManifest, RoleError, userRoleKit, type JsonSchema, type RoleManifest, type RoleRegistry } from './roles.ts';
import { suggest } from './suggest.ts';
import { API_KEY_PATTERN, readApiKeyFile, teamApiKey } from './secrets.ts';
import { allows, flowPolicy, RESERVED_PEERS } from './flows.ts';
import type {
  Cluster, DbRole, FlowSpec, NodeSpec, RoleName, ServiceName,
} from './types.ts';

// ------------------------------------------------------------------ schema

/** The hand-written part of the schema: everything but the role list and the roles' sections. */
export const BASE_SCHEMA_FILE = fileURLToPath(new URL('../schema/cluster.base.json', import.meta.url));
/** The schema as editors read it: generated (`npm run schema`) from the base and the built-in roles. */
export const schemaPath = fileURLToPath(new URL('../schema/cluster.schema.json', import.meta.url));
const baseSchema = JSON.parse(readFileSync(BASE_SCHEMA_FILE, 'utf8')) as JsonSchema;

/** The full schema for a role set (what schema/cluster.schema.json holds for the built-ins). */
export function clusterSchema(roles: RoleRegistry = builtinRoles()): JsonSchema {
  return roles.schema(baseSchema);
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, verbose: true, strict: true });
ajvFormats.default(ajv, ['ipv4', 'uri']);
// Editor hints (VS Code / yaml-language-server) that we reuse for our own messages;
// `listed: false` keeps a loader directive (roleDirs) out of the "known fields" hint.
ajv.addVocabulary(['patternErrorMessage', 'errorMessage', 'listed']);
// Compiled once per role set, on first use (importers that never parse do not pay for it).
const compiled = new WeakMap<RoleRegistry, ValidateFunction>();
function validator(roles: RoleRegistry): ValidateFunction {
  let v = compiled.get(roles);
  if (!v) {
    const schema = clusterSchema(roles);
    // ajv keeps one schema per $id: a cluster's own role set compiles as an anonymous variant
    if (roles !== builtinRoles()) delete schema.$id;
    compiled.set(roles, (v = ajv.compile(schema)));
  }
  return v;
}

// ------------------------------------------------------------------ raw input (after schema + defaults)

type Names = string | string[];
interface RawNode {
  name: string; type: string; roles: RoleName[]; db?: DbRole; service?: ServiceName;
  public: boolean; address?: string;
}
interface RawCluster {
  roleDirs?: string[];
  name: string; timezone: string; adminUser: string;
  provider: Cluster['provider'];
  nodes: RawNode[];
  security: { flows: { from: Names; to: Names; port: number }[]; egress: { node: string; mirror: boolean }[] };
  database: Cluster['database'];
  services: Cluster['services'];
  bench: Cluster['bench'];
  apt: Cluster['apt'];
}

// ------------------------------------------------------------------ public API

/**
 * Read, validate and normalise a cluster.yaml that uses the built-in roles
 * only. Throws SpecError listing every problem. A cluster with `roleDirs:`
 * needs loadClusterWithRoles (importing its roles is asynchronous).
 */
export function loadCluster(file: string): Cluster {
  return parseCluster(readSource(file), file);
}

/** loadCluster for any cluster: imports the `*.ts` roles of its roleDirs first, so they validate with the rest. */
export async function loadClusterWithRoles(file: string): Promise<Cluster> {
  const source = readSource(file);
  const ctx = new Context(source, displayName(file));
  let dirs: unknown;
  try {
    dirs = ctx.problems.length ? undefined : (ctx.doc.toJS({ maxAliasCount: 1000 }) as { roleDirs?: unknown } | null)?.roleDirs;
  } catch {
    dirs = undefined; // parseCluster reports it
  }
  // a missing or malformed roleDirs is parseCluster's to report, with the rest
  if (!Array.isArray(dirs) || !dirs.every((d) => typeof d === 'string')) return parseCluster(source, file);
  const roles = await importRoles(dirs, path.dirname(path.resolve(file)), ctx);
  if (ctx.problems.length) throw ctx.error();
  let registry: RoleRegistry;
  try {
    registry = builtinRoles().with(roles);
  } catch (e) {
    if (!(e instanceof RoleError)) throw e;
    ctx.report(['roleDirs'], `roleDirs: ${e.message}`);
    throw ctx.error();
  }
  return parseCluster(source, file, registry);
}

/**
 * Same as loadCluster, from text; `file` names it in messages and sets
 * Cluster.file/dir. `roles`: the role set loaded for its roleDirs (default:
 * the built-ins, and then roleDirs is refused: nothing loaded them).
 */
export function parseCluster(source: string, file: string, roles?: RoleRegistry): Cluster {
  const abs = path.resolve(file);
  const ctx = new Context(source, displayName(file));
  if (ctx.problems.length) throw ctx.error();

  let data: unknown;
  try {
    data = ctx.doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    throw new SpecError([`${ctx.label}:1:1: yaml: ${(err as Error).message}`]);
  }
  if (data === null || data === undefined) {
    throw new SpecError([`${ctx.label}:1:1: file is empty (expected name, nodes, security, ...)`]);
  }

  // Semantic checks only once the shape is right: on a broken shape they would
  // mostly repeat the schema's complaints in vaguer words (`db: boss` is not
  // also "no manager").
  const registry = roles ?? builtinRoles();
  const validate = validator(registry);
  if (!validate(data)) {
    ctx.schemaProblems(validate.errors ?? []);
    throw ctx.error();
  }
  if (!roles && (data as RawCluster).roleDirs?.length) {
    ctx.report(['roleDirs'], 'roleDirs: user roles are imported by loadClusterWithRoles (as apply, bench and teardown do); this reader knows the built-in roles only');
    throw ctx.error();
  }
  semanticChecks(data as RawCluster, ctx, registry);
  checkOwnCertificate(data as RawCluster, path.dirname(abs), ctx);
  checkTeamApiKey(data as RawCluster, path.dirname(abs), ctx);
  if (ctx.problems.length) throw ctx.error();

  return normalise(data as RawCluster, abs, registry);
}

function readSource(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new SpecError([`${displayName(file)}: ${why}`]);
  }
}

/**
 * The default export of a TypeScript file anywhere on disk. Bun imports it as
 * is. Under Node, tsx's ESM hook alone would hand a file outside any
 * `"type": "module"` package to require(), which refuses it; tsImport loads it
 * whatever the folder says (as CommonJS there: its default export one level down).
 */
async function importTs(url: string): Promise<unknown> {
  if (process.versions.bun) return ((await import(url)) as { default?: unknown }).default;
  const { tsImport } = await import('tsx/esm/api');
  const mod = (await tsImport(url, import.meta.url)) as { default?: unknown };
  const d = mod.default;
  return d && typeof d === 'object' && !isRoleManifest(d) && 'default' in d ? (d as { default: unknown }).default : d;
}

/** The roles of each folder (its `*.ts` files, by name); a folder or file that fails is reported at its roleDirs entry. */
async function importRoles(dirs: string[], base: string, ctx: Context): Promise<RoleManifest[]> {
  const out: RoleManifest[] = [];
  for (const [j, dir] of dirs.entries()) {
    const abs = path.resolve(base, dir);
    let files: string[];
    try {
      files = readdirSync(abs).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.endsWith('.test.ts')).sort();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      ctx.report(['roleDirs', j], `roleDirs[${j}] "${dir}": ${code === 'ENOENT' ? 'folder not found' : code === 'ENOTDIR' ? 'is not a folder' : (e as Error).message} (${abs})`);
      continue;
    }
    for (const f of files) {
      const rel = path.relative(base, path.join(abs, f)) || f;
      try {
        const made = await importTs(pathToFileURL(path.join(abs, f)).href);
        const exported = typeof made === 'function' ? (made as (kit: object) => unknown)(userRoleKit()) : made;
        if (!isRoleManifest(exported)) {
          ctx.report(['roleDirs', j], `roleDirs[${j}]: ${rel} does not export a role (export default defineRole({...}), or a function of the role kit returning one)`);
          continue;
        }
        exported.source = rel;
        out.push(exported);
      } catch (e) {
        ctx.report(['roleDirs', j], `roleDirs[${j}]: ${rel} failed to load: ${(e as Error).message.split('\n')[0]}`);
      }
    }
  }
  return out;
}

/** Multi-line text for the CLI: a headline, then one problem per line. */
export function formatSpecError(e: SpecError): string {
  const n = e.problems.length;
  return `invalid cluster spec (${n} problem${n === 1 ? '' : 's'}):\n` + e.problems.map((p) => `  ${p}`).join('\n');
}

// ------------------------------------------------------------------ positions

type Seg = string | number;

class Context {
  readonly lines = new LineCounter();
  readonly doc: Document;
  private readonly found: { line: number; col: number; text: string }[] = [];

  constructor(source: string, readonly label: string) {
    // merge: `<<: *defaults` lets nodes share a template, a common YAML habit.
    this.doc = parseDocument(source, { lineCounter: this.lines, uniqueKeys: true, merge: true });
    // Only the first syntax error: the parser's later ones are mostly echoes of it.
    const err = [...this.doc.errors].sort((a, b) => a.pos[0] - b.pos[0])[0];
    if (err) {
      let pos = err.linePos?.[0] ?? { line: 1, col: 1 };
      let msg = err.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
      if (err.code === 'MISSING_CHAR' && /quote/.test(msg)) {
        // The parser notices at the end of the file; the user needs the opening quote.
        const open = unclosedQuote(this.doc, err.pos[0]);
        if (open !== undefined) {
          pos = this.lines.linePos(open);
          msg += ': the string starting here is never closed';
        }
      }
      this.add(pos.line, pos.col, `yaml: ${msg}`);
    }
  }

  get problems(): string[] {
    return this.found.map((p) => p.text);
  }

  add(line: number, col: number, message: string): void {
    const text = `${this.label}:${line}:${col}: ${message}`;
    if (!this.found.some((p) => p.text === text)) this.found.push({ line, col, text });
  }

  /** Report at the value found at `at` (or its closest existing parent). */
  report(at: Seg[], message: string, opts: { key?: boolean } = {}): void {
    const { line, col } = this.position(at, opts.key ?? false);
    this.add(line, col, message);
  }

  /** Turn ajv's errors into one human line each. */
  schemaProblems(raw: AjvError[]): void {
    let errors = collapseOneOf(raw);
    // `type` + `enum` on one value: the enum message already says what is allowed.
    const enumAt = new Set(errors.filter((e) => e.keyword === 'enum').map((e) => e.instancePath));
    errors = errors.filter((e) => !(e.keyword === 'type' && enumAt.has(e.instancePath)));
    for (const e of errors) {
      const p = messageFor(e);
      this.report(p.at, p.message, { key: p.key });
    }
  }

  error(): SpecError {
    const sorted = [...this.found].sort((a, b) => a.line - b.line || a.col - b.col);
    return new SpecError(sorted.map((p) => p.text));
  }

  /** Whether the path is written in the file (not filled in by a default). */
  has(at: Seg[]): boolean {
    return this.doc.hasIn(at);
  }

  /** Line/col of the node at a path: the value (or, with key, the key), walking up until something has a range. */
  position(at: Seg[], key: boolean): { line: number; col: number } {
    let cur: unknown = this.doc.contents;
    let best: number | undefined = rangeStart(cur);
    // Key of the pair we came through: a field missing from a mapping (filled by a
    // default) is reported at its parent's key (`services:`), not at a sibling.
    let parentKey: number | undefined;
    for (let i = 0; i < at.length; i++) {
      const seg = at[i];
      if (isAlias(cur)) cur = cur.resolve(this.doc);
      if (isMap(cur)) {
        const pair = findPair(this.doc, cur, String(seg));
        if (!pair) { best = parentKey ?? best; break; }
        const last = i === at.length - 1;
        const keyStart = rangeStart(pair.key);
        const valueStart = rangeStart(pair.value);
        if (last && key) { best = keyStart ?? best; break; }
        // an empty value (`db:`) has no useful position: point at its key
        best = valueStart !== undefined && !isEmptyScalar(pair.value) ? valueStart : keyStart ?? best;
        parentKey = keyStart;
        cur = pair.value;
      } else if (isSeq(cur)) {
        const item = cur.items[Number(seg)];
        if (item === undefined) break;
        best = rangeStart(item) ?? best;
        parentKey = undefined;
        cur = item;
      } else {
        break;
      }
    }
    if (best === undefined) return { line: 1, col: 1 };
    return this.lines.linePos(best);
  }
}

type YamlPair = YAMLMap<unknown, unknown>['items'][number];

/** The pair for `key` in a mapping, looking through `<<: *anchor` merges (depth-limited). */
function findPair(doc: Document, map: YAMLMap<unknown, unknown>, key: string, depth = 0): YamlPair | undefined {
  const own = map.items.find((p) => isScalar(p.key) && typeof p.key.value !== 'symbol' && String(p.key.value) === key);
  if (own || depth > 10) return own;
  for (const p of map.items) {
    if (!isScalar(p.key) || !(p.key.value === '<<' || (typeof p.key.value === 'symbol' && p.key.value.description === '<<'))) continue;
    const sources = isSeq(p.value) ? p.value.items : [p.value];
    for (const src of sources) {
      const target = isAlias(src) ? src.resolve(doc) : src;
      if (isMap(target)) {
        const hit = findPair(doc, target, key, depth + 1);
        if (hit) return hit;
      }
    }
  }
  return undefined;
}

/** Start of the quoted scalar that swallowed the rest of the file up to `end`. */
function unclosedQuote(doc: Document, end: number): number | undefined {
  let found: number | undefined;
  visit(doc, {
    Scalar(_key, node) {
      if ((node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE') && node.range && node.range[1] >= end) {
        found = node.range[0];
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return found;
}

function rangeStart(node: unknown): number | undefined {
  if (node && typeof node === 'object' && 'range' in node) {
    const r = (node as { range?: [number, number, number] | null }).range;
    if (r) return r[0];
  }
  return undefined;
}

function isEmptyScalar(node: unknown): boolean {
  return isScalar(node) && node.value === null && node.source === '';
}

function displayName(file: string): string {
  const abs = path.resolve(file);
  const rel = path.relative(process.cwd(), abs);
  if (rel && !rel.startsWith('..') && !path.isAbsolute(rel)) return rel;
  return path.isAbsolute(file) ? file : abs;
}

/** `nodes[3].db` from ['nodes', 3, 'db']. */
function label(at: Seg[]): string {
  if (at.length === 0) return 'top level';
  let out = '';
  for (const seg of at) {
    if (typeof seg === 'number' || /^\d+$/.test(seg)) out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
  }
  return out;
}

function pointer(instancePath: string): Seg[] {
  if (!instancePath) return [];
  return instancePath
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

// ------------------------------------------------------------------ schema errors -> human lines

type AjvError = ErrorObject<string, Record<string, unknown>, unknown>;

interface Problem { at: Seg[]; key?: boolean; message: string }

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') {
    const s = v.length > 40 ? `${v.slice(0, 37)}...` : v;
    return JSON.stringify(s);
  }
  return String(v);
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string', integer: 'a whole number', number: 'a number', boolean: 'true or false',
  array: 'a list', object: 'a mapping', null: 'empty',
};

const FORMAT_HINTS: Record<string, string> = {
  ipv4: 'must be an IPv4 address like 10.77.0.20',
  uri: 'must be a URL like https://example.com/file.tar.gz',
};

function typesOf(e: AjvError): string[] {
  const t = e.params.type;
  return Array.isArray(t) ? (t as string[]) : String(t).split(',');
}

function messageFor(e: AjvError): Problem {
  const at = pointer(e.instancePath);
  const where = label(at);
  const ps = (e.parentSchema ?? {}) as Record<string, unknown>;
  const got = describeValue(e.data);
  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(e.params.additionalProperty);
      const props = (ps.properties ?? {}) as Record<string, { listed?: boolean }>;
      const known = Object.keys(props).filter((k) => props[k].listed !== false);
      const hint = suggest(name, Object.keys(props));
      const ext = Object.keys((ps.patternProperties ?? {}) as object).includes('^x-') ? '; x-* fields are free for anchors' : '';
      const tail = hint ? ` (did you mean "${hint}"?)` : known.length ? ` (known fields: ${known.join(', ')}${ext})` : '';
      return { at: [...at, name], key: true, message: `${where} has unknown field "${name}"${tail}` };
    }
    case 'required':
      return { at, message: `${where} is missing required field "${String(e.params.missingProperty)}"` };
    case 'type':
      return { at, message: `${where} must be ${typesOf(e).map((t) => TYPE_NAMES[t] ?? t).join(' or ')} (got ${got})` };
    case 'enum': {
      const allowed = (e.params.allowedValues as unknown[]).map(String);
      const hint = typeof e.data === 'string' ? suggest(e.data, allowed) : undefined;
      return { at, message: `${where} must be one of ${allowed.join(', ')} (got ${got}${hint ? `; did you mean "${hint}"?` : ''})` };
    }
    case 'pattern': {
      const hint = typeof ps.patternErrorMessage === 'string' ? ps.patternErrorMessage : `must match ${String(e.params.pattern)}`;
      return { at, message: `${where} ${hint} (got ${got})` };
    }
    case 'format': {
      const f = String(e.params.format);
      return { at, message: `${where} ${FORMAT_HINTS[f] ?? `must be a valid ${f}`} (got ${got})` };
    }
    case 'minimum': case 'maximum': case 'exclusiveMinimum': case 'exclusiveMaximum': {
      if (typeof ps.minimum === 'number' && typeof ps.maximum === 'number') {
        return { at, message: `${where} must be between ${ps.minimum} and ${ps.maximum} (got ${got})` };
      }
      const words: Record<string, string> = { minimum: 'at least', maximum: 'at most', exclusiveMinimum: 'more than', exclusiveMaximum: 'less than' };
      return { at, message: `${where} must be ${words[e.keyword]} ${String(e.params.limit)} (got ${got})` };
    }
    case 'minLength':
      return { at, message: `${where} must be at least ${String(e.params.limit)} characters long` };
    case 'maxLength':
      return { at, message: `${where} must be at most ${String(e.params.limit)} characters long (got ${String((e.data as string).length)})` };
    case 'minItems':
      return { at, message: e.params.limit === 1 ? `${where} must not be empty` : `${where} must list at least ${String(e.params.limit)} items` };
    case 'maxItems':
      return { at, message: `${where} must list at most ${String(e.params.limit)} items` };
    case 'uniqueItems': {
      // ajv scans from the end: i and j are the two equal items; point at the later one.
      const i = Math.max(Number(e.params.i), Number(e.params.j));
      const item = Array.isArray(e.data) ? e.data[i] : undefined;
      return { at: [...at, i], message: `${where} lists ${describeValue(item)} more than once` };
    }
    case 'oneOf': case 'anyOf': {
      if (typeof ps.errorMessage === 'string') return { at, message: `${where} ${ps.errorMessage} (got ${got})` };
      const alts = (e.schema as { type?: string }[]).map((s) => TYPE_NAMES[s.type ?? ''] ?? 'another form');
      return { at, message: `${where} must be ${alts.join(' or ')} (got ${got})` };
    }
    default:
      return { at, message: `${where} ${e.message ?? 'is invalid'}` };
  }
}

/**
 * ajv reports a failed oneOf with every branch's errors. Keep the errors of the
 * one branch whose type fits the value (`from: []` -> "must not be empty"), or a
 * single message when no branch fits (`from: 5`).
 */
function collapseOneOf(errors: AjvError[]): AjvError[] {
  const removed = new Set<AjvError>();
  for (const o of errors) {
    if (o.keyword !== 'oneOf' && o.keyword !== 'anyOf') continue;
    if (removed.has(o)) continue;
    const prefix = `${o.schemaPath}/`;
    const subs = errors.filter((e) => e !== o && !removed.has(e) && e.schemaPath.startsWith(prefix)
      && (e.instancePath === o.instancePath || e.instancePath.startsWith(`${o.instancePath}/`)));
    if (subs.length === 0) continue; // "matches more than one": keep o alone
    const branchOf = (e: AjvError) => Number(e.schemaPath.slice(prefix.length).split('/')[0]);
    const branches = Array.isArray(o.schema) ? o.schema.length : 0;
    const fitting: number[] = [];
    for (let b = 0; b < branches; b++) {
      const typeMiss = subs.some((e) => branchOf(e) === b && e.keyword === 'type' && e.instancePath === o.instancePath);
      if (!typeMiss) fitting.push(b);
    }
    for (const e of subs) removed.add(e);
    if (fitting.length === 1) {
      for (const e of subs) if (branchOf(e) === fitting[0]) removed.delete(e);
      removed.add(o);
    }
  }
  return errors.filter((e) => !removed.has(e));
}


// ------------------------------------------------------------------ semantic checks

const RESERVED_SOURCES: readonly string[] = RESERVED_PEERS;
const MYSQL_PORT = 3306;

function parseIPv4(s: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  return parts.every((p) => p <= 255) ? parts : null;
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

function isPrivate(o: number[]): boolean {
  return o[0] === 10 || (o[0] === 172 && o[1] >= 16 && o[1] <= 31) || (o[0] === 192 && o[1] === 168);
}

const asList = (v: Names): string[] => (Array.isArray(v) ? [...v] : [v]);
const didYouMean = (word: string, candidates: readonly string[]): string => {
  const hint = suggest(word, candidates);
  return hint ? ` (did you mean "${hint}"?)` : '';
};

/** What each role requires of the nodes that have it (and of nodes setting a field only it may use). */
function roleRules(c: RawCluster, ctx: Context, roles: RoleRegistry): void {
  c.nodes.forEach((n, i) => {
    for (const role of roles.order) {
      const has = n.roles.includes(role.name);
      for (const req of role.requires) {
        if ('role' in req) {
          if (has && !n.roles.includes(req.role)) ctx.report(['nodes', i, 'roles'], `nodes[${i}].roles: ${role.name} needs the ${req.role} role on the same node`);
          continue;
        }
        const value = n[req.field];
        if (has && !value) ctx.report(['nodes', i, 'roles'], `nodes[${i}] has the ${role.name} role but no ${req.describe}`);
        if (!has && value && req.orphan) ctx.report(['nodes', i, req.orphan.at === 'roles' ? 'roles' : req.field], req.orphan.message(i, value));
      }
    }
  });
}

/** What the schema cannot say. Runs on schema-valid input (defaults filled). */
function semanticChecks(c: RawCluster, ctx: Context, roles: RoleRegistry): void {
  const { nodes } = c;
  const names = new Map<string, number>(); // name -> first index

  // --- timezone: the base role sets it; a typo would fail on every node
  if (!isTimeZone(c.timezone)) {
    const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
    ctx.report(['timezone'], `timezone "${c.timezone}" is not a known time zone${didYouMean(c.timezone, zones)}`);
  }

  // --- aws.sshCidr (the schema checks the shape, not the numbers)
  const { sshCidr } = c.provider.aws;
  if (sshCidr !== undefined) {
    const [ip, bits] = sshCidr.split('/');
    if (!parseIPv4(ip) || Number(bits) > 32) {
      ctx.report(['provider', 'aws', 'sshCidr'], `provider.aws.sshCidr ${sshCidr} is not a valid IPv4 CIDR (numbers 0-255, prefix 0-32)`);
    }
  }

  // --- node names
  nodes.forEach((n, i) => {
    if (RESERVED_SOURCES.includes(n.name)) {
      ctx.report(['nodes', i, 'name'], `nodes[${i}].name "${n.name}" is reserved (it names a flow source); pick another name`);
    }
    const first = names.get(n.name);
    if (first !== undefined) ctx.report(['nodes', i, 'name'], `nodes[${i}].name "${n.name}" is already used by nodes[${first}]`);
    else names.set(n.name, i);
  });
  const known = [...names.keys()];

  // --- database roles
  const managers = nodes.flatMap((n, i) => (n.db === 'manager' ? [i] : []));
  const workers = nodes.flatMap((n, i) => (n.db === 'worker' ? [i] : []));
  if (managers.length === 0) ctx.report(['nodes'], 'nodes has no node with "db: manager" (exactly one is needed: it receives every write)');
  for (const i of managers.slice(1)) {
    ctx.report(['nodes', i, 'db'], `nodes[${i}].db: only one manager is allowed (nodes[${managers[0]}] is already the manager)`);
  }
  if (workers.length === 0) ctx.report(['nodes'], 'nodes has no node with "db: worker" (at least one is needed: workers serve reads)');
  roleRules(c, ctx, roles);

  // --- services: each of gatekeeper, trustedhost, proxy on exactly one node
  const serviceNode = new Map<ServiceName, number>();
  nodes.forEach((n, i) => {
    if (!n.service) return;
    const first = serviceNode.get(n.service);
    if (first !== undefined) ctx.report(['nodes', i, 'service'], `nodes[${i}].service: ${n.service} already runs on nodes[${first}] (each service runs on one node)`);
    else serviceNode.set(n.service, i);
  });
  if (nodes.some((n) => n.service || n.roles.includes('service'))) {
    for (const svc of SERVICE_NAMES) {
      if (!serviceNode.has(svc)) ctx.report(['nodes'], `nodes has no node with "service: ${svc}" (the SQL path needs gatekeeper, trustedhost and proxy)`);
    }
  }

  // --- public
  const publics = nodes.flatMap((n, i) => (n.public ? [i] : []));
  for (const i of publics.slice(1)) {
    ctx.report(['nodes', i, 'public'], `nodes[${i}].public: only one node may be public (nodes[${publics[0]}] already is)`);
  }
  if (c.provider.type === 'aws' && c.provider.aws.jump && publics.length === 0) {
    const explicit = ctx.has(['provider', 'aws', 'jump']);
    ctx.report(explicit ? ['provider', 'aws', 'jump'] : ['provider', 'type'],
      `provider.aws.jump${explicit ? '' : ' (default true)'} needs one node with "public: true" to reach the others through (or set jump: false)`);
  }

  // --- local addresses
  checkAddresses(c, ctx);

  // --- flows name nodes (internet/controller only as sources)
  const { flows, egress } = c.security;
  flows.forEach((f, i) => {
    for (const side of ['from', 'to'] as const) {
      const v = f[side];
      const where = `security.flows[${i}].${side}`;
      asList(v).forEach((name, j) => {
        if (names.has(name)) return;
        const at: Seg[] = Array.isArray(v) ? ['security', 'flows', i, side, j] : ['security', 'flows', i, side];
        if (RESERVED_SOURCES.includes(name)) {
          if (side === 'to') ctx.report(at, `${where}: "${name}" may only be used in "from" (flows go to nodes)`);
          return;
        }
        ctx.report(at, `${where} names unknown node "${name}"${didYouMean(name, side === 'from' ? [...known, ...RESERVED_SOURCES] : known)}`);
      });
    }
  });

  // --- egress
  const egressSeen = new Map<string, number>();
  egress.forEach((e, i) => {
    const at: Seg[] = ['security', 'egress', i, 'node'];
    const where = `security.egress[${i}].node`;
    if (!names.has(e.node)) ctx.report(at, `${where} names unknown node "${e.node}"${didYouMean(e.node, known)}`);
    const first = egressSeen.get(e.node);
    if (first !== undefined) ctx.report(at, `${where}: "${e.node}" is already listed in security.egress[${first}]`);
    else egressSeen.set(e.node, i);
  });

  // --- the SQL path must get through iptables (INPUT policy DROP on nodes with the iptables role)
  // the same flow policy the firewall and the security groups render (core/flows.ts)
  const policy = flowPolicy({ nodes, flows: flows.map((f) => ({ from: asList(f.from), to: asList(f.to), port: f.port })), egress });
  const allowed = (src: string | null, dst: string, port: number): boolean => allows(policy, src, dst, port);
  const firewalled = (i: number): boolean => nodes[i].roles.includes('iptables');
  for (const svc of SERVICE_NAMES) {
    const idx = serviceNode.get(svc);
    if (idx === undefined || !firewalled(idx)) continue;
    const up = callerOf(svc); // who must reach it (the SQL path); null = any source
    const upIdx = up ? serviceNode.get(up) : undefined;
    if (up && upIdx === undefined) continue; // already reported: service missing
    const src = upIdx === undefined ? null : nodes[upIdx].name;
    const { port } = c.services[svc];
    const dst = nodes[idx].name;
    if (allowed(src, dst, port)) continue;
    const why = src === null
      ? `no flow in security.flows reaches node "${dst}" on port ${port} (its iptables would drop every request)`
      : `no flow in security.flows lets "${src}"${src === up ? '' : ` (the ${up})`} reach "${dst}" on port ${port} (its iptables would drop every request)`;
    if (ctx.has(['services', svc, 'port'])) ctx.report(['services', svc, 'port'], `services.${svc}.port ${port}: ${why}`);
    else ctx.report(['nodes', idx, 'service'], `nodes[${idx}].service ${svc} listens on port ${port} (services.${svc}.port default) but ${why}`);
  }
  const proxyIdx = serviceNode.get('proxy');
  nodes.forEach((n, i) => {
    if (!n.db || !firewalled(i)) return;
    if (proxyIdx !== undefined) {
      const proxyName = nodes[proxyIdx].name;
      if (!allowed(proxyName, n.name, MYSQL_PORT)) {
        const who = proxyName === 'proxy' ? '"proxy"' : `"${proxyName}" (the proxy)`;
        ctx.report(['nodes', i, 'db'], `nodes[${i}] (${n.name}): no flow in security.flows lets ${who} reach it on port ${MYSQL_PORT} (MySQL)`);
      }
    }
  });
  if (managers.length === 1 && firewalled(managers[0])) {
    const manager = nodes[managers[0]].name;
    for (const i of workers) {
      if (!nodes[i].roles.includes('replication')) continue;
      if (!allowed(nodes[i].name, manager, MYSQL_PORT)) {
        ctx.report(['nodes', i, 'db'], `nodes[${i}] (${nodes[i].name}) replicates from "${manager}" but no flow in security.flows lets it reach "${manager}" on port ${MYSQL_PORT}`);
      }
    }
  }

  // --- proxy modes
  const { proxy, gatekeeper } = c.services;
  if (!proxy.modes.includes(proxy.defaultMode)) {
    const at: Seg[] = ctx.has(['services', 'proxy', 'defaultMode']) ? ['services', 'proxy', 'defaultMode'] : ['services', 'proxy', 'modes'];
    ctx.report(at, `services.proxy.defaultMode "${proxy.defaultMode}" must be one of services.proxy.modes (${proxy.modes.join(', ')})`);
  }

  // --- the app schema must be one the gatekeeper lets through
  if (!gatekeeper.schemas.includes(c.database.schema)) {
    ctx.report(['services', 'gatekeeper', 'schemas'], `services.gatekeeper.schemas must include database.schema "${c.database.schema}" (the app user can only use that schema)`);
  }
  gatekeeper.routines.forEach((r, i) => {
    const schema = r.slice(0, r.indexOf('.'));
    if (schema.toLowerCase() !== c.database.schema.toLowerCase()) {
      ctx.report(['services', 'gatekeeper', 'routines', i], `services.gatekeeper.routines: ${r} is not in database.schema "${c.database.schema}" (the app user can only use that schema)`);
    }
  });
}

/** services.gatekeeper.tls names files that exist and hold PEM (a certificate, a private key). */
function checkOwnCertificate(c: RawCluster, dir: string, ctx: Context): void {
  const tls = c.services.gatekeeper.tls;
  if (!tls) return;
  const want = { cert: /-----BEGIN CERTIFICATE-----/, key: /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/ } as const;
  for (const field of ['cert', 'key'] as const) {
    const file = path.resolve(dir, tls[field]);
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      ctx.report(['services', 'gatekeeper', 'tls', field], `services.gatekeeper.tls.${field}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      continue;
    }
    if (!want[field].test(text)) ctx.report(['services', 'gatekeeper', 'tls', field], `services.gatekeeper.tls.${field}: ${file} holds no PEM ${field === 'cert' ? 'certificate' : 'private key'}`);
  }
}

/**
 * services.gatekeeper.apiKeyFile / apiKeyEnv: the team's own key, readable (the
 * file; the variable set), a key of 16+ header-safe characters. Errors never
 * show the key.
 */
function checkTeamApiKey(c: RawCluster, dir: string, ctx: Context, env: NodeJS.ProcessEnv = process.env): void {
  const { apiKeyFile: rel, apiKeyEnv: name } = c.services.gatekeeper;
  const shape = '16-256 characters of A-Z a-z 0-9 . _ ~ + / = -';
  if (rel && name) {
    ctx.report(['services', 'gatekeeper', 'apiKeyEnv'], 'services.gatekeeper.apiKeyEnv: set apiKeyFile or apiKeyEnv, not both (one team key)');
    return;
  }
  if (rel) {
    const file = path.resolve(dir, rel);
    const at: Seg[] = ['services', 'gatekeeper', 'apiKeyFile'];
    try {
      if (!API_KEY_PATTERN.test(readApiKeyFile(file))) ctx.report(at, `services.gatekeeper.apiKeyFile: the first line of ${file} must be ${shape}`);
    } catch (e) {
      ctx.report(at, `services.gatekeeper.apiKeyFile: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  if (name) {
    const at: Seg[] = ['services', 'gatekeeper', 'apiKeyEnv'];
    const key = teamApiKey({ apiKeyEnv: name }, env) ?? '';
    if (!key) ctx.report(at, `services.gatekeeper.apiKeyEnv: the environment variable ${name} is not set (export it before running rampart)`);
    else if (!API_KEY_PATTERN.test(key)) ctx.report(at, `services.gatekeeper.apiKeyEnv: the value of ${name} must be ${shape} (it has ${key.length} characters)`);
  }
}

function checkAddresses(c: RawCluster, ctx: Context): void {
  const { subnet } = c.provider.local;
  const base = parseIPv4(subnet.slice(0, -3)); // the schema guarantees `a.b.c.0/24`
  if (!base) {
    ctx.report(['provider', 'local', 'subnet'], `provider.local.subnet ${subnet} is not a valid IPv4 subnet (each number must be 0-255)`);
    return;
  }
  if (!isPrivate(base)) {
    ctx.report(['provider', 'local', 'subnet'], `provider.local.subnet ${subnet} is not a private range (use 10.x.x.0/24, 172.16-31.x.0/24 or 192.168.x.0/24)`);
    return;
  }
  const prefix = base.slice(0, 3).join('.');
  const used = new Map<string, number>(); // explicit address -> node index
  c.nodes.forEach((n, i) => {
    if (n.address === undefined) return;
    const o = parseIPv4(n.address);
    if (!o) return; // the ipv4 format check already failed
    const at: Seg[] = ['nodes', i, 'address'];
    const first = used.get(n.address);
    if (o.slice(0, 3).join('.') !== prefix) {
      ctx.report(at, `nodes[${i}].address ${n.address} is outside provider.local.subnet ${subnet}`);
    } else if (o[3] === 0 || o[3] === 1 || o[3] === 255) {
      const what = o[3] === 0 ? 'the network address' : o[3] === 1 ? 'the host (controller)' : 'the broadcast address';
      ctx.report(at, `nodes[${i}].address ${n.address} is ${what}; use .2-.254`);
    } else if (first !== undefined) {
      ctx.report(at, `nodes[${i}].address ${n.address} is already used by nodes[${first}]`);
    } else {
      used.set(n.address, i);
    }
  });
  // Nodes without an address get .10 + index: that must not land on an explicit one.
  c.nodes.forEach((n, i) => {
    if (n.address !== undefined) return;
    const last = 10 + i;
    if (last > 254) {
      ctx.report(['nodes', i], `nodes[${i}] has no address and its default (.10 + index = .${last}) is past .254; set "address"`);
      return;
    }
    const owner = used.get(`${prefix}.${last}`);
    if (owner !== undefined) {
      ctx.report(['nodes', owner, 'address'], `nodes[${owner}].address ${prefix}.${last} is the default address of nodes[${i}] (.10 + its index); pick another or set nodes[${i}].address`);
    }
  });
}

// ------------------------------------------------------------------ normalise

function normalise(raw: RawCluster, file: string, roles: RoleRegistry): Cluster {
  const dir = path.dirname(file);
  const prefix = raw.provider.local.subnet.split('.').slice(0, 3).join('.');
  const nodes: NodeSpec[] = raw.nodes.map((n, i) => ({
    name: n.name,
    type: n.type,
    roles: [...n.roles],
    ...(n.db ? { db: n.db } : {}),
    ...(n.service ? { service: n.service } : {}),
    public: n.public,
    address: n.address ?? `${prefix}.${10 + i}`,
  }));
  const flows: FlowSpec[] = raw.security.flows.map((f) => ({ from: asList(f.from), to: asList(f.to), port: f.port }));
  const { sakila } = raw.database;
  return {
    file,
    dir,
    name: raw.name,
    timezone: raw.timezone,
    adminUser: raw.adminUser,
    provider: {
      type: raw.provider.type,
      local: { ...raw.provider.local },
      aws: { ...raw.provider.aws, keyName: raw.provider.aws.keyName ?? `rampart-${raw.name}` },
    },
    nodes,
    security: {
      flows,
      egress: raw.security.egress.map((e) => ({ node: e.node, mirror: e.mirror })),
    },
    database: {
      engine: raw.database.engine,
      schema: raw.database.schema,
      keepUsers: [...raw.database.keepUsers],
      sakila: { url: sakila.url, sha256: sakila.sha256, ...(sakila.path ? { path: path.resolve(dir, sakila.path) } : {}) },
      sysbench: { ...raw.database.sysbench },
      semiSync: { ...raw.database.semiSync },
    },
    services: {
      gatekeeper: {
        ...raw.services.gatekeeper,
        statements: [...raw.services.gatekeeper.statements],
        schemas: [...raw.services.gatekeeper.schemas],
        routines: [...raw.services.gatekeeper.routines],
        rateLimit: { ...raw.services.gatekeeper.rateLimit },
        ...(raw.services.gatekeeper.apiKeyFile ? { apiKeyFile: path.resolve(dir, raw.services.gatekeeper.apiKeyFile) } : {}),
        ...(raw.services.gatekeeper.tls ? { tls: { cert: path.resolve(dir, raw.services.gatekeeper.tls.cert), key: path.resolve(dir, raw.services.gatekeeper.tls.key) } } : {}),
      },
      trustedhost: { port: raw.services.trustedhost.port },
      proxy: { ...raw.services.proxy, modes: [...raw.services.proxy.modes], failover: { ...raw.services.proxy.failover } },
    },
    bench: { ...raw.bench },
    apt: { ...raw.apt },
    roles,
    settings: Object.fromEntries(roles.roles.flatMap((r) => (r.settings ? [[r.name, structuredClone(valueAt(raw, r.settings.at))]] : []))),
  };
}

function valueAt(raw: unknown, at: readonly string[]): unknown {
  let cur = raw;
  for (const seg of at) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[seg] : undefined;
  return cur;
}
