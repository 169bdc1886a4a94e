// The operations roles compose (after pyinfra's operations and FactBase[T]):
// a typed fact is a command plus its parser; a task built from typed facts
// returns a typed diff; and the jobs every role repeats are written once —
// packages present, managed files, a systemd unit enabled and running
// (restarted when its inputs changed), a system user, onlyOn(). Each is a
// plain Task: its fact commands join the host's one round trip.
import { unifiedDiff } from '../../core/diff.ts';
import { fileFactCommand, fileState, shq } from '../../core/ssh.ts';
import type { DiffWith, Fact, Handler, NodeSpec, Task, TaskContext, TaskWith } from '../../core/types.ts';
import { aptInstall, missingPackages, packagesFact } from './apt.ts';

/** What fact commands and `when` see (facts are not read yet). */
export type FactCtx = Omit<TaskContext, 'facts'>;

/** A fact: the shell command that reads it (as root) and the parser that types its output. */
export interface TypedFact<T> {
  command(ctx: FactCtx): string;
  parse(out: Fact, ctx: FactCtx): T;
}

export function fact<T>(command: string | ((ctx: FactCtx) => string), parse: (out: Fact, ctx: FactCtx) => T): TypedFact<T> {
  return { command: typeof command === 'string' ? () => command : command, parse };
}

/** The parsed values of a task's facts, by key. */
export type FactValues<F> = { [K in keyof F]: F[K] extends TypedFact<infer T> ? T : never };

export interface TypedTask<F extends Record<string, TypedFact<unknown>>, D> {
  name: string;
  when?: Task['when'];
  /** See Task.dependsOn / Task.notifies (what --check reports). */
  dependsOn?: string[];
  notifies?: string[];
  facts: F;
  /** null when the host is as wanted; else what differs (reads only). */
  check(facts: FactValues<F>, ctx: TaskContext): DiffWith<D> | null;
  apply(ctx: TaskContext, diff: DiffWith<D>, facts: FactValues<F>): Promise<string | void>;
}

/** A task whose check sees parsed, typed facts and hands apply a typed diff. */
export function task<F extends Record<string, TypedFact<unknown>>, D = undefined>(def: TypedTask<F, D>): TaskWith<D> {
  const values = (ctx: TaskContext): FactValues<F> =>
    Object.fromEntries(Object.entries(def.facts).map(([k, f]) => [k, f.parse(ctx.facts[k] ?? { stdout: '', code: 255 }, ctx)])) as FactValues<F>;
  return {
    name: def.name,
    when: def.when,
    ...(def.dependsOn ? { dependsOn: def.dependsOn } : {}),
    ...(def.notifies ? { notifies: def.notifies } : {}),
    facts: (ctx) => Object.fromEntries(Object.entries(def.facts).map(([k, f]) => [k, f.command(ctx)])),
    check: (ctx) => def.check(values(ctx), ctx),
    apply: (ctx, diff) => def.apply(ctx, diff, values(ctx)),
  };
}

/** Run the task only on nodes the predicate picks; `reason` is the skip message elsewhere. */
export function onlyOn(pick: (node: NodeSpec, ctx: FactCtx) => boolean, reason: string): NonNullable<Task['when']> {
  return (ctx) => (pick(ctx.host.node, ctx) ? null : reason);
}

// ------------------------------------------------------------------ packages

/** Installed packages among those asked for. */
export const installedPackages = (names: (ctx: FactCtx) => string[]) =>
  fact((ctx) => packagesFact(names(ctx)), (out) => out.stdout);

/** These Debian packages are installed (base has usually installed them in its one transaction already). */
export function packages(name: string, names: (ctx: FactCtx) => string[], opts: { when?: Task['when'] } = {}): TaskWith<string[]> {
  return task({
    name,
    when: opts.when,
    facts: { pkgs: installedPackages(names) },
    check: ({ pkgs }, ctx) => {
      const missing = missingPackages(names(ctx), pkgs);
      return missing.length ? { message: `install ${missing.join(' ')}`, data: missing } : null;
    },
    apply: async (ctx, diff) => {
      await aptInstall(ctx.conn, diff.data, ctx.cluster.apt.cacheValidSeconds);
    },
  });
}

// ------------------------------------------------------------------ files

/** A file as wanted: content, mode (octal text) and owner (user:group). */
export interface WantedFile {
  path: string;
  content: string | Buffer;
  mode: string;
  owner: string;
}

/**
 * The wanted files whose state differs from what their fact read
 * (fileFactCommand: sha256, mode, owner; `absent` when missing). The one
 * place a role compares a file; `state` gives each file's fact output.
 */
export function staleFiles<F extends WantedFile>(wanted: F[], state: (f: F, i: number) => string | undefined): F[] {
  return wanted.filter((f, i) => state(f, i) !== fileState(f.content, f.mode, f.owner));
}

export interface FileSpec {
  path(ctx: FactCtx): string;
  content(ctx: FactCtx): string | Buffer;
  mode: string;
  owner: string;
}

export interface FilesOptions {
  when?: Task['when'];
  /** Handler to notify after a write (e.g. restart the unit that reads the files). */
  notify?: string;
  /** Run after a write (e.g. systemctl daemon-reload). */
  after?(ctx: FactCtx): Promise<void>;
}

/**
 * Managed files: each file's sha256, mode and owner come in the host's fact
 * round trip; only the files that differ are written (as root, content over stdin).
 */
export function files(name: string, specs: FileSpec[], opts: FilesOptions = {}): TaskWith<WantedFile[]> {
  const facts = Object.fromEntries(specs.map((f, i) => [`file${i}`, fact((ctx) => fileFactCommand(f.path(ctx)), (out) => out.stdout)]));
  return task({
    name,
    when: opts.when,
    ...(opts.notify ? { notifies: [opts.notify] } : {}),
    facts,
    check: (have, ctx) => {
      const wanted = specs.map((s): WantedFile => ({ path: s.path(ctx), content: s.content(ctx), mode: s.mode, owner: s.owner }));
      const todo = staleFiles(wanted, (_f, i) => have[`file${i}`]);
      return todo.length ? { message: `write ${todo.map((t) => t.path).join(', ')}`, data: todo, detail: () => filesDiff(ctx, todo) } : null;
    },
    apply: async (ctx, diff) => {
      for (const t of diff.data) await ctx.conn.writeFile(t.path, t.content, { mode: t.mode, owner: t.owner });
      await opts.after?.(ctx);
      if (opts.notify) ctx.notify(opts.notify);
    },
  });
}

/**
 * --diff of managed files: the node's copies are read only then (the fact round
 * trip carries their sha256 alone), one unified diff per file, plus mode/owner.
 */
async function filesDiff(ctx: TaskContext, todo: WantedFile[]): Promise<string> {
  const out: string[] = [];
  for (const f of todo) {
    const have = await ctx.conn.exec(`cat ${shq(f.path)} 2>/dev/null; printf '\\n@@meta '; stat -c '%a %U:%G' ${shq(f.path)} 2>/dev/null`, { check: false });
    const at = have.stdout.lastIndexOf('\n@@meta ');
    const body = at < 0 ? '' : have.stdout.slice(0, at);
    const meta = at < 0 ? '' : have.stdout.slice(at + '\n@@meta '.length).trim();
    out.push(await unifiedDiff(f.path, body, String(f.content)));
    const want = `${Number.parseInt(f.mode, 8).toString(8)} ${f.owner}`;
    if (meta !== want) out.push(`${f.path}: ${meta ? `mode/owner ${meta}` : 'absent'} -> ${want}\n`);
  }
  return out.join('');
}

// ------------------------------------------------------------------ systemd

export interface UnitState {
  enabled: string;
  active: string;
}

/** `systemctl is-enabled` / `is-active` of each unit, by name ('' when systemd does not know it). */
export const unitStates = (units: string[]) =>
  fact(`for u in ${units.map(shq).join(' ')}; do printf '%s %s %s\\n' "$u" "$(systemctl is-enabled "$u" 2>/dev/null)" "$(systemctl is-active "$u" 2>/dev/null)"; done`, (out) => {
    const states = new Map<string, UnitState>();
    for (const line of out.stdout.split('\n')) {
      const [unit, enabled = '', active = ''] = line.split(' ');
      if (unit) states.set(unit, { enabled, active });
    }
    return states;
  });

/** Which unit, when it depends on the node (the service it runs) or its facts (MariaDB's or MySQL's server): the candidates are read, `pick` chooses. */
export interface UnitChoice {
  among: string[] | ((ctx: FactCtx) => string[]);
  pick(ctx: TaskContext): string;
}

/** A readiness probe of the running unit (e.g. an HTTP /health request), read as a fact. */
export interface UnitProbe {
  command(ctx: FactCtx): string;
  /** null when the unit is ready; else why it is restarted (e.g. `/health: HTTP 503`). */
  failure(out: Fact, ctx: FactCtx): string | null;
}

export interface UnitRunningOptions {
  name?: string;
  when?: Task['when'];
  /** More fact commands `pick` reads through ctx.facts (e.g. the OS id). */
  facts?: Record<string, string>;
  /** A unit that is active but fails this probe is restarted. */
  probe?: UnitProbe;
  /**
   * (Re)start through this handler (after `systemctl enable`) instead of
   * `systemctl enable --now` / `restart`: one that also waits until the unit
   * is ready, run once however many tasks notify it.
   */
  handler?: string;
}

/** What unitRunning found: the unit, and whether it has to be restarted (active but failing its probe) rather than started. */
export interface UnitTodo {
  unit: string;
  restart: boolean;
}

/** A systemd unit enabled and running (started if it is not, restarted if its probe fails). Pair with restartUnit() for "restarted when its inputs changed". */
export function unitRunning(unit: string | UnitChoice, opts: UnitRunningOptions = {}): TaskWith<UnitTodo> {
  const choice: UnitChoice = typeof unit === 'string' ? { among: [unit], pick: () => unit } : unit;
  const among = (ctx: FactCtx) => (typeof choice.among === 'function' ? choice.among(ctx) : choice.among);
  const extra = Object.fromEntries(Object.entries(opts.facts ?? {}).map(([k, cmd]) => [k, fact(cmd, (out) => out.stdout)]));
  const probe = opts.probe;
  const todo = (u: string, restart: boolean): UnitTodo => ({ unit: u, restart });
  return task({
    name: opts.name ?? (typeof choice.among === 'function' ? 'unit enabled and running' : `${choice.among.join('/')} enabled and running`),
    when: opts.when,
    ...(opts.handler ? { notifies: [opts.handler] } : {}),
    facts: {
      ...extra,
      state: fact((ctx) => unitStates(among(ctx)).command(ctx), (out, ctx) => unitStates(among(ctx)).parse(out, ctx)),
      ...(probe ? { probe: fact((ctx) => probe.command(ctx), (out, ctx) => probe.failure(out, ctx)) } : {}),
    },
    check: (have, ctx) => {
      const u = choice.pick(ctx);
      const { enabled, active } = have.state.get(u) ?? { enabled: '', active: '' };
      if (enabled === 'enabled' && active === 'active') {
        const failed = have.probe;
        return failed ? { message: `${u}: restart (${failed})`, data: todo(u, true) } : null;
      }
      return { message: `${u}: ${enabled || 'not installed'}/${active || 'inactive'} -> enabled/active`, data: todo(u, false) };
    },
    apply: async (ctx, { data }) => {
      if (opts.handler) {
        await ctx.conn.exec(`systemctl enable ${shq(data.unit)} 2>&1`);
        ctx.notify(opts.handler);
        return;
      }
      await ctx.conn.exec(data.restart ? `systemctl restart ${shq(data.unit)}` : `systemctl enable --now ${shq(data.unit)} 2>&1`);
    },
  });
}

/** A handler restarting the unit (after daemon-reload): notified by the tasks that write its inputs. */
export function restartUnit(unit: string, name = `restart ${unit}`): Handler {
  return {
    name,
    run: async ({ conn }) => {
      await conn.exec(`systemctl daemon-reload && systemctl restart ${shq(unit)}`);
    },
  };
}

// ------------------------------------------------------------------ users

/** A system user (no home, no login shell) and its group. */
export function systemUser(user: string, opts: { when?: Task['when'] } = {}): Task {
  return task({
    name: `system user ${user}`,
    when: opts.when,
    facts: { shell: fact(`getent passwd ${shq(user)} | cut -d: -f7`, (out) => (out.code === 0 ? out.stdout.trim() : null)) },
    check: ({ shell }) => (shell !== null && /nologin|false/.test(shell) ? null : { message: `create system user ${user}`, data: undefined }),
    apply: async ({ conn }) => {
      const u = shq(user);
      await conn.exec(`if id -u ${u} >/dev/null 2>&1; then usermod -s /usr/sbin/nologin ${u}; else useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${u}; fi`);
    },
  });
}
