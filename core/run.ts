// The engine: connect to every host once, gather the facts of all their tasks
// in one round trip, then run the roles in order (each role on all its hosts
// in parallel), apply only what differs, run handlers, and count the results.
// Scheduling is plain code that emits typed events (core/events.ts); the
// progress tree is one renderer of them (core/render.ts).
import { randomBytes } from 'node:crypto';
import type { EngineEvent, EngineListener } from './events.ts';
import { progressRenderer } from './render.ts';
import { connect, shq, type KnownHosts } from './ssh.ts';
import type {
  Cluster, Connection, Fact, Host, HostRecap, Role, RunReport, SecretStore, Task, TaskContext, TaskResult, TaskStatus,
} from './types.ts';

export interface RunOptions {
  cluster: Cluster;
  /** Every host of the cluster (tasks see them all, e.g. for addresses). */
  hosts: Host[];
  /** Run on these hosts only (--limit); default all. */
  limit?: string[];
  roles: Role[];
  check: boolean;
  privateKey: string;
  knownHosts: KnownHosts;
  secrets: SecretStore;
  /** How long to keep retrying SSH connects (booting nodes). */
  connectRetryMs?: number;
  /** Print progress (stderr). */
  progress: boolean;
  /** How to open a host's connection (default: SSH). */
  connect?: (host: Host) => Promise<Connection>;
  /** Every event of the run, as it happens (besides the progress renderer). */
  onEvent?: EngineListener;
}

type BaseCtx = Omit<TaskContext, 'facts'>;

interface HostState {
  host: Host;
  conn?: Connection;
  failed: boolean;
  unreachable: boolean;
  /** Facts gathered up front, by `${role}\0${task}\0${key}`. */
  facts: Map<string, Fact>;
}

const roleApplies = (role: Role, host: Host) => host.node.roles.includes(role.name);
const factId = (role: Role, task: Task, key: string) => `${role.name}\u0000${task.name}\u0000${key}`;

/** Run several fact commands in one round trip; each output is framed by nonce markers. */
export async function gatherFacts(conn: Connection, commands: Map<string, string>): Promise<Map<string, Fact>> {
  const out = new Map<string, Fact>();
  if (commands.size === 0) return out;
  const nonce = randomBytes(6).toString('hex');
  const ids = [...commands.keys()];
  const script = ids
    // eval: a fact with a shell syntax error fails alone (exit 2) instead of ending the script for every fact after it
    .map((id, i) => `printf '@@${nonce}:B:${i}\\n'; ( eval ${shq(commands.get(id)!)} ) 2>/dev/null </dev/null; printf '\\n@@${nonce}:E:${i}:%s\\n' "$?"`)
    .join('\n');
  const res = await conn.exec(script, { check: false });
  const text = res.stdout;
  ids.forEach((id, i) => {
    const begin = `@@${nonce}:B:${i}\n`;
    const b = text.indexOf(begin);
    const e = text.indexOf(`\n@@${nonce}:E:${i}:`, b);
    if (b < 0 || e < 0) {
      out.set(id, { stdout: '', code: 255 });
      return;
    }
    const codeStr = text.slice(e + `\n@@${nonce}:E:${i}:`.length).split('\n', 1)[0];
    out.set(id, { stdout: text.slice(b + begin.length, e), code: Number(codeStr) });
  });
  return out;
}

export async function run(opts: RunOptions): Promise<RunReport> {
  const started = Date.now();
  const { cluster, hosts, roles, check } = opts;
  const selected = opts.limit?.length ? hosts.filter((h) => opts.limit!.includes(h.name)) : hosts;
  const states = new Map<string, HostState>(
    selected.map((h) => [h.name, { host: h, failed: false, unreachable: false, facts: new Map() }]),
  );
  const results: TaskResult[] = [];
  // Facts gathered up front stay valid until something changes somewhere (a change on
  // the manager can alter a worker's facts); after that each role gathers its own.
  let changesSinceGather = 0;

  const baseCtx = (st: HostState): BaseCtx => ({
    host: st.host, conn: st.conn!, cluster, hosts, check, secrets: opts.secrets, notify: () => {},
  });

  const all = [...states.values()];
  const renderer = progressRenderer({
    hosts: all.map((st) => st.host.name),
    roles: roles.map((role) => ({ name: role.name, hosts: all.filter((st) => roleApplies(role, st.host)).map((st) => st.host.name) })),
  }, opts.progress);
  const emit = (e: EngineEvent) => {
    renderer.on(e);
    opts.onEvent?.(e);
  };

  const record = (r: TaskResult) => {
    results.push(r);
    if (r.status === 'changed' && !check) changesSinceGather++;
    emit({ type: 'result', result: r });
  };

  /** The fact commands of a role's tasks (from task `from` on) that apply to the host. */
  const factCommands = (st: HostState, role: Role, from = 0): Map<string, string> => {
    const cmds = new Map<string, string>();
    const ctx = baseCtx(st);
    for (const task of role.tasks.slice(from)) {
      if (task.when?.(ctx) || !task.facts) continue;
      for (const [k, cmd] of Object.entries(task.facts(ctx))) cmds.set(factId(role, task, k), cmd);
    }
    return cmds;
  };

  const runRole = async (st: HostState, role: Role) => {
    let facts = changesSinceGather === 0 ? st.facts : await gatherFacts(st.conn!, factCommands(st, role));
    const notified = new Set<string>();
    let dirty = false;
    for (const [index, task] of role.tasks.entries()) {
      if (st.failed) break;
      const t0 = Date.now();
      const ctx0: BaseCtx = { ...baseCtx(st), notify: (h) => notified.add(h) };
      const res = (status: TaskStatus, message = ''): TaskResult => ({
        host: st.host.name, role: role.name, task: task.name, status, message, durationMs: Date.now() - t0,
      });
      const skip = task.when?.(ctx0);
      if (skip) {
        record(res('skipped', skip));
        continue;
      }
      emit({ type: 'task', host: st.host.name, role: role.name, task: task.name });
      try {
        if (dirty && task.facts) {
          // Something this role changed may have changed the facts of the tasks still to come:
          // read them all again in one round trip (again after the next change, if any).
          facts = new Map([...facts, ...(await gatherFacts(st.conn!, factCommands(st, role, index)))]);
          dirty = false;
        }
        const own: Record<string, Fact> = {};
        for (const k of Object.keys(task.facts?.(ctx0) ?? {})) {
          own[k] = facts.get(factId(role, task, k)) ?? { stdout: '', code: 255 };
        }
        const ctx: TaskContext = { ...ctx0, facts: own };
        const diff = await task.check(ctx);
        if (!diff) {
          record(res('ok'));
        } else if (check) {
          record(res('changed', `would: ${diff.message}`));
        } else {
          const msg = await task.apply(ctx, diff);
          dirty = true;
          record(res('changed', msg || diff.message));
        }
      } catch (e) {
        st.failed = true;
        record(res('failed', errorMessage(e)));
      }
    }
    for (const handler of role.handlers ?? []) {
      if (!notified.has(handler.name) || st.failed) continue;
      const t0 = Date.now();
      const r = (status: TaskStatus, message = ''): TaskResult => ({
        host: st.host.name, role: role.name, task: `handler: ${handler.name}`, status, message, durationMs: Date.now() - t0,
      });
      try {
        emit({ type: 'task', host: st.host.name, role: role.name, task: `handler: ${handler.name}` });
        await handler.run(baseCtx(st));
        record(r('changed'));
      } catch (e) {
        st.failed = true;
        record(r('failed', errorMessage(e)));
      }
    }
  };

  const connectAndGather = async (st: HostState) => {
    try {
      st.conn = opts.connect
        ? await opts.connect(st.host)
        : await connect(st.host, { privateKey: opts.privateKey, knownHosts: opts.knownHosts, retryForMs: opts.connectRetryMs });
    } catch (e) {
      st.unreachable = true;
      st.failed = true;
      const message = errorMessage(e);
      emit({ type: 'connect', host: st.host.name, error: message });
      record({ host: st.host.name, role: 'connect', task: 'ssh', status: 'failed', message, durationMs: 0 });
      return;
    }
    emit({ type: 'connect', host: st.host.name });
    const cmds = new Map<string, string>();
    for (const role of roles.filter((r) => roleApplies(r, st.host))) {
      for (const [k, v] of factCommands(st, role)) cmds.set(k, v);
    }
    try {
      st.facts = await gatherFacts(st.conn, cmds);
    } catch (e) {
      st.failed = true;
      record({ host: st.host.name, role: 'connect', task: 'facts', status: 'failed', message: errorMessage(e), durationMs: 0 });
    }
    emit({ type: 'facts', host: st.host.name, count: cmds.size });
  };

  try {
    await Promise.all(all.map(connectAndGather));
    for (const role of roles) {
      const on = all.filter((st) => roleApplies(role, st.host));
      emit({ type: 'role', role: role.name, hosts: on.map((st) => st.host.name) });
      await Promise.all(on.map(async (st) => {
        if (st.failed) {
          emit({ type: 'host', host: st.host.name, role: role.name, failed: true, skipped: `${st.host.name}: skipped after an earlier failure` });
          return;
        }
        try {
          await runRole(st, role);
        } catch (e) {
          // only a fact round trip between tasks can throw here (a lost connection)
          st.failed = true;
          record({ host: st.host.name, role: role.name, task: 'facts', status: 'failed', message: errorMessage(e), durationMs: 0 });
        }
        emit({ type: 'host', host: st.host.name, role: role.name, failed: st.failed });
      }));
    }
  } finally {
    for (const st of all) st.conn?.close();
  }

  const report: RunReport = { check, durationMs: Date.now() - started, hosts: {}, results };
  for (const st of all) report.hosts[st.host.name] = recapOf(st.host.name, results, st.unreachable);
  emit({ type: 'recap', report });
  await renderer.done();
  return report;
}

export function recapOf(host: string, results: TaskResult[], unreachable: boolean): HostRecap {
  const c: HostRecap = { ok: 0, changed: 0, failed: 0, skipped: 0, unreachable };
  for (const r of results) if (r.host === host) c[r.status]++;
  return c;
}

function errorMessage(e: unknown): string {
  if (e instanceof Error) {
    const hint = (e as { hint?: string }).hint;
    return hint ? `${e.message} (${hint})` : e.message;
  }
  return String(e);
}
