// The role contract and the registry. A role declares itself once, in its own
// file (`defineRole`): its name, the roles it runs after, what it requires of a
// node, its packages, its cluster.yaml section and its tasks. Everything else
// is derived here: the engine's order (a topological sort over `after`), the
// node rules the spec checks, the package union base installs in one apt
// transaction, and the schema (role list + role sections).
//
// core/ never imports roles/ (a unit test reads the imports): the built-in
// roles register themselves here when an entry point imports roles/index.ts,
// and the spec asks this module for them.
import { RampartError } from './errors.ts';
import { suggest } from './suggest.ts';
import type { Cluster, DbEngine, Handler, NodeSpec, Role, Serial, Task } from './types.ts';

/** A JSON Schema (draft-07) fragment, as ajv reads it. */
export type JsonSchema = { [keyword: string]: unknown };

/** The database server a node runs (database.engine resolved against the node's OS). */
export type Dialect = Exclude<DbEngine, 'auto'>;

/** What decides a role's packages on a node: its OS (`/etc/os-release` ID) and database dialect. */
export interface PackageQuery {
  osId: string;
  dialect: Dialect;
}

/** The node fields a role may require (a `db:` node, a `service:` node). */
export type NodeField = 'db' | 'service';

/**
 * What a node with this role must also have. Checked by the spec, reported at
 * the node (file:line:col), in the role's own words.
 */
export type Requirement =
  /** Another role on the same node: `nodes[i].roles: <role> needs the <role> role on the same node`. */
  | { role: string }
  /**
   * A node field: without it, `nodes[i] has the <role> role but no <describe>`.
   * `orphan`: the field belongs to this role, so a node setting it without the role is refused too.
   */
  | { field: NodeField; describe: string; orphan?: { at: 'roles' | 'field'; message: (index: number, value: string) => string } };

export interface RoleDefinition<S> {
  name: string;
  /** Roles this one runs after when a node has both (names of built-in or user roles). */
  after?: string[];
  requires?: Requirement[];
  /** Packages the role needs on a node; base installs every role's packages in one apt transaction. */
  packages?: string[] | ((q: PackageQuery) => string[]);
  /**
   * The role's own cluster.yaml section: a schema fragment placed at `at`
   * (default: a top-level key named after the role). Defaults are filled in
   * by the schema; the role reads the result with `settingsOf(cluster)`.
   */
  settings?: { at?: string[]; schema: JsonSchema };
  tasks: Task[];
  handlers?: Handler[];
  /** Roll: hosts in batches, each back in service before the next (Ansible's serial). */
  serial?: Serial;
}

/** A role as the registry holds it (what `defineRole` returns). */
export interface RoleManifest<S = unknown> extends Role {
  readonly after: readonly string[];
  readonly requires: readonly Requirement[];
  readonly settings?: { at: readonly string[]; schema: JsonSchema };
  packagesFor(q: PackageQuery): string[];
  /** This role's section of the cluster (validated, defaults filled). */
  settingsOf(cluster: Cluster): S;
  /** Where a user role was loaded from (for messages); unset for built-ins. */
  source?: string;
}

// Symbol.for: a role file loaded through another module instance of this file is still recognised
const MANIFEST = Symbol.for('rampart.role');

/** Declare a role. `S` is the type of its settings section (what the schema fragment validates). */
export function defineRole<S = undefined>(def: RoleDefinition<S>): RoleManifest<S> {
  const { packages } = def;
  const manifest: RoleManifest<S> = {
    name: def.name,
    after: [...(def.after ?? [])],
    requires: [...(def.requires ?? [])],
    ...(def.settings ? { settings: { at: def.settings.at ?? [def.name], schema: def.settings.schema } } : {}),
    tasks: def.tasks,
    ...(def.handlers ? { handlers: def.handlers } : {}),
    ...(def.serial ? { serial: def.serial } : {}),
    packagesFor: (q) => (typeof packages === 'function' ? packages(q) : [...(packages ?? [])]),
    // the schema validated this section and filled its defaults: S is what it says
    settingsOf: (cluster) => cluster.settings[def.name] as S,
  };
  Object.defineProperty(manifest, MANIFEST, { value: true });
  return manifest;
}

export function isRoleManifest(v: unknown): v is RoleManifest {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[MANIFEST] === true;
}

/** A role set that cannot be ordered or named (unknown `after`, a cycle, a name used twice). */
export class RoleError extends RampartError {}

const NAME = /^[a-z][a-z0-9_-]{0,30}$/;

// Every combination a role's packages may depend on, so one dpkg query covers
// them before the node's OS and dialect are known.
const PACKAGE_QUERIES: PackageQuery[] = [
  { osId: 'debian', dialect: 'mariadb' }, { osId: 'ubuntu', dialect: 'mariadb' },
  { osId: 'debian', dialect: 'mysql' }, { osId: 'ubuntu', dialect: 'mysql' },
];

/**
 * The roles a cluster may use. Its state is in private fields: a registry is
 * code, not data, so a structured clone of a Cluster (which holds one) copies
 * the data and leaves the registry behind instead of failing on functions.
 */
export class RoleRegistry {
  readonly #roles: readonly RoleManifest[];
  readonly #order: readonly RoleManifest[];
  readonly #byName = new Map<string, RoleManifest>();

  /** `roles` in declaration order (the order the schema lists them in). */
  constructor(roles: readonly RoleManifest[]) {
    for (const r of roles) {
      if (!NAME.test(r.name)) throw new RoleError(`role name "${r.name}"${where(r)} must be 1-31 lower-case letters, digits, "_" or "-", starting with a letter`);
      const first = this.#byName.get(r.name);
      if (first) throw new RoleError(`role "${r.name}"${where(r)} is already defined${where(first) || ' (built in)'}`);
      this.#byName.set(r.name, r);
    }
    this.#roles = [...roles];
    this.#order = topoSort(roles, this.#byName);
  }

  /** Declaration order. */
  get roles(): readonly RoleManifest[] {
    return this.#roles;
  }

  /** Engine order: `after` first; among roles free to run, declaration order. */
  get order(): readonly RoleManifest[] {
    return this.#order;
  }

  /** This registry plus more roles (user roles after the built-ins). */
  with(more: readonly RoleManifest[]): RoleRegistry {
    return more.length ? new RoleRegistry([...this.roles, ...more]) : this;
  }

  get(name: string): RoleManifest | undefined {
    return this.#byName.get(name);
  }

  /** Names in declaration order. */
  names(): string[] {
    return this.roles.map((r) => r.name);
  }

  /** The given roles in engine order. */
  inOrder(used: ReadonlySet<string>): RoleManifest[] {
    return this.order.filter((r) => used.has(r.name));
  }

  /** The packages a node's roles need on this OS/dialect, deduplicated, in engine order. */
  packagesFor(node: NodeSpec, q: PackageQuery): string[] {
    return [...new Set(this.inOrder(new Set(node.roles)).flatMap((r) => r.packagesFor(q)))];
  }

  /** Every package the node's roles might want on any OS/dialect (one dpkg query before those are known). */
  candidatePackages(node: NodeSpec): string[] {
    return [...new Set(PACKAGE_QUERIES.flatMap((q) => this.packagesFor(node, q)))];
  }

  /**
   * The packages of the node's rolling roles (those declaring `serial`), on any
   * OS/dialect, or of one of them (`role`): their pending upgrades are installed
   * by that role under its serial, one batch at a time, not by base on every
   * node at once. The role's manifest `packages` is the one list.
   */
  rolledPackages(node: NodeSpec, role?: string): string[] {
    const rolling = this.inOrder(new Set(node.roles)).filter((r) => r.serial && (role === undefined || r.name === role));
    return [...new Set(PACKAGE_QUERIES.flatMap((q) => rolling.flatMap((r) => r.packagesFor(q))))];
  }

  /**
   * The cluster schema: `base` with the role list filled in and each role's
   * section placed at its path (appended after the sections already there).
   */
  schema(base: JsonSchema): JsonSchema {
    const out = structuredClone(base);
    const roleItems = dig(out, ['properties', 'nodes', 'items', 'properties', 'roles', 'items']);
    roleItems.enum = this.names();
    for (const r of this.roles) {
      if (!r.settings) continue;
      const at = r.settings.at;
      let parent = out;
      for (const seg of at.slice(0, -1)) parent = dig(parent, ['properties', seg]);
      const props = dig(parent, ['properties']);
      const key = at[at.length - 1];
      if (key in props) throw new RoleError(`role "${r.name}"${where(r)}: its settings section ${at.join('.')} is already a field of cluster.yaml; pick another name`);
      props[key] = structuredClone(r.settings.schema);
    }
    return out;
  }
}

function where(r: RoleManifest): string {
  return r.source ? ` (${r.source})` : '';
}

function dig(schema: JsonSchema, path: string[]): JsonSchema {
  let cur = schema;
  for (const seg of path) {
    const next = cur[seg];
    if (typeof next !== 'object' || next === null) throw new RoleError(`schema has no ${path.join('.')} to place a role section in`);
    cur = next as JsonSchema;
  }
  return cur;
}

/** Kahn's algorithm; ties broken by declaration order so the result is stable. */
function topoSort(roles: readonly RoleManifest[], byName: Map<string, RoleManifest>): RoleManifest[] {
  for (const r of roles) {
    for (const a of r.after) {
      if (!byName.has(a)) {
        const hint = suggest(a, [...byName.keys()]);
        throw new RoleError(`role "${r.name}"${where(r)} runs after unknown role "${a}"${hint ? ` (did you mean "${hint}"?)` : ''} (roles: ${[...byName.keys()].join(', ')})`);
      }
      if (a === r.name) throw new RoleError(`role "${r.name}"${where(r)} lists itself in "after"`);
    }
  }
  const done = new Set<string>();
  const out: RoleManifest[] = [];
  while (out.length < roles.length) {
    const next = roles.find((r) => !done.has(r.name) && r.after.every((a) => done.has(a)));
    if (!next) throw new RoleError(`roles ${cycleOf(roles.filter((r) => !done.has(r.name)), byName)} form a cycle through "after"; remove one of these "after" entries`);
    done.add(next.name);
    out.push(next);
  }
  return out;
}

/** One cycle among the roles left over, as `a -> b -> a`. */
function cycleOf(left: RoleManifest[], byName: Map<string, RoleManifest>): string {
  const names = new Set(left.map((r) => r.name));
  const path: string[] = [];
  let cur = left[0];
  while (!path.includes(cur.name)) {
    path.push(cur.name);
    cur = byName.get(cur.after.find((a) => names.has(a))!)!;
  }
  return [...path.slice(path.indexOf(cur.name)), cur.name].map((n) => `"${n}"`).join(' -> ');
}

// ------------------------------------------------------------------ the built-in roles

let builtins: { roles: RoleRegistry; kit: object } | undefined;

/** Called once by roles/index.ts: the built-in roles and the kit handed to a user role's factory function. */
export function registerBuiltinRoles(roles: RoleRegistry, kit: object): void {
  builtins = { roles, kit };
}

function registered(): { roles: RoleRegistry; kit: object } {
  if (!builtins) throw new RoleError('no built-in roles are registered: the entry point imports roles/index.ts before reading a cluster');
  return builtins;
}

/** The built-in roles (what a cluster without roleDirs may use). */
export function builtinRoles(): RoleRegistry {
  return registered().roles;
}

/** What a user role file exporting a function is called with (roles/lib/kit.ts). */
export function userRoleKit(): object {
  return registered().kit;
}
