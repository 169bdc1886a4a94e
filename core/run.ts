// The engine: connect to every host once, gather the facts of all their tasks
// in one round trip, then run the roles in order (each role on all its hosts
// in parallel), apply only what differs, run handlers, and count the results.
// Scheduling is plain code that emits typed events (core/events.ts); the
// progress tree is one renderer of them (core/render.ts).
import { randomBytes } from 'node:crypto';
import type { EngineEvent, EngineListener } from './events.ts';
import { progressRenderer } from './render.ts';
import type { CommandLogger } from './runlog.ts';
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
  /** Told of every command sent (the run log, -v). */
  log?: CommandLogger;
  /** --diff: evaluate each difference's detail (unified diff, old -> new) into TaskResult.diff. */
  diff?: boolean;
  /** --serial N: every role runs N hosts at a time (rolling roles keep their order and settle). */
  serial?: number;
}

export type BaseCtx = Omit<TaskContext, 'facts'>;

interface HostState {
  host: Host;
  conn?: Connection;
  failed: boolean;
  unreachable: boolean;
  /** Facts gathered up front, by `${role}\0${task}\0${key}`. */
  facts: Map<string, Fact>;
  /** --check: `role:task` of the tasks that would change here (later tasks depending on them would too). */
  wouldChange: Set<string>;
}

const roleApplies = (role: Role, host: Host) => host.node.roles.includes(role.name);
const factId = (role: Role, task: Task, key: string) => `${role.name}\u0000${task.name}\u0000${key}`;

/** The fact commands of a role's tasks (from task `from` on) that apply to the host, by `role\0task\0key`. */
export function roleFactCommands(ctx: BaseCtx, role: Role, from = 0): Map<string, string> {
  const cmds = new Map<string, string>();
  for (const task of role.tasks.slice(from)) {
    if (task.when?.(ctx) || !task.facts) continue;
    for (const [k, cmd] of Object.entries(task.facts(ctx))) cmds.set(factId(role, task, k), cmd);
  }
  return cmds;
}

/** Every fact command of every role the host has: what one round trip reads before the roles run. */
export function hostFactCommands(ctx: BaseCtx, roles: Role[]): Map<string, string> {
  const cmds = new Map<string, string>();
  for (const role of roles.filter((r) => roleApplies(r, ctx.host))) for (const [k, v] of roleFactCommands(ctx, role)) cmds.set(k, v);
  return cmds;
}

/** Run several fact commands in one round trip; each output is framed by nonce markers. */
export async function gatherFacts(conn: Connection, commands: Map<string, string>, log?: CommandLogger): Promise<Map<string, Fact>> {
  const out = new Map<string, Fact>();
  if (commands.size === 0) return out;
  const t0 = Date.now();
  const nonce = randomBytes(6).toString('hex');
  const ids = [...commands.keys()];
  // several tasks often ask the same thing (the OS id, the pending upgrades): each distinct command runs once
  const distinct = [...new Set(commands.values())];
  const script = distinct
    // eval: a fact with a shell syntax error fails alone (exit 2) instead of ending the script for every fact after it
    .map((cmd, i) => `printf '@@${nonce}:B:${i}\\n'; ( eval ${shq(cmd)} ) 2>/dev/null </dev/null; printf '\\n@@${nonce}:E:${i}:%s\\n' "$?"`)
    .join('\n');
  const res = await conn.exec(script, { check: false, log: false });
  const text = res.stdout;
  const read = (i: number): Fact => {
    const begin = `@@${nonce}:B:${i}\n`;
    const b = text.indexOf(begin);
    const e = text.indexOf(`\n@@${nonce}:E:${i}:`, b);
    if (b < 0 || e < 0) return { stdout: '', code: 255 };
    const codeStr = text.slice(e + `\n@@${nonce}:E:${i}:`.length).split('\n', 1)[0];
    return { stdout: text.slice(b + begin.length, e), code: Number(codeStr) };
  };
  const byCommand = new Map(distinct.map((cmd, i) => [cmd, read(i)]));
  for (const id of ids) out.set(id, { ...byCommand.get(commands.get(id)!)! });
  log?.({
    host: conn.host.name, kind: 'facts', command: `${ids.length} fact commands (${distinct.length} distinct) in one round trip`, code: res.code, durationMs: Date.now() - t0,
    facts: Object.fromEntries(ids.map((id) => [id.split('\u0000').join(' | '), out.get(id)!])),
  });
  return out;
}

export async function run(opts: RunOptions): Promise<RunReport> {
  const started = Date.now();
  const { cluster, hosts, roles, check } = opts;
  const selected = opts.limit?.length ? hosts.filter((h) => opts.limit!.includes(h.name)) : hosts;
  const states = new Map<string, HostState>(
    selected.map((h) => [h.name, { host: h, failed: false, unreachable: false, facts: new Map(), wouldChange: new Set<string>() }]),
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

  const factCommands = (st: HostState, role: Role, from = 0) => roleFactCommands(baseCtx(st), role, from);

  const runRole = async (st: HostState, role: Role) => {
    let facts = changesSinceGather === 0 ? st.facts : await gatherFacts(st.conn!, factCommands(st, role), opts.log);
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
          facts = new Map([...facts, ...(await gatherFacts(st.conn!, factCommands(st, role, index), opts.log))]);
          dirty = false;
        }
        const own: Record<string, Fact> = {};
        for (const k of Object.keys(task.facts?.(ctx0) ?? {})) {
          own[k] = facts.get(factId(role, task, k)) ?? { stdout: '', code: 255 };
        }
        const ctx: TaskContext = { ...ctx0, facts: own };
        const diff = await task.check(ctx);
        const detail = diff && opts.diff && diff.detail ? await diff.detail() : undefined;
        const withDiff = (r: TaskResult): TaskResult => (detail ? { ...r, diff: detail } : r);
        // --check reads today's facts: a task whose inputs an earlier task would change cannot be
        // judged from them; it is reported as what it is ("would change: depends on X"), not as ok
        const dependency = check && !diff ? (task.dependsOn ?? []).find((d) => st.wouldChange.has(d.includes(':') ? d : `${role.name}:${d}`)) : undefined;
        if (dependency) {
          st.wouldChange.add(`${role.name}:${task.name}`);
          record(res('changed', `would change: depends on ${dependency}`));
        } else if (!diff) {
          record(res('ok'));
        } else if (check) {
          st.wouldChange.add(`${role.name}:${task.name}`);
          for (const h of task.notifies ?? []) notified.add(h);
          record(withDiff(res('changed', `would: ${diff.message}`)));
        } else {
          const msg = await task.apply(ctx, diff);
          dirty = true;
          record(withDiff(res('changed', msg || diff.message)));
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
      if (check) {
        record(r('changed', 'would run (notified)'));
        continue;
      }
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

  const changedCount = (host: string, role: string) => results.filter((r) => r.host === host && r.role === role && r.status === 'changed').length;

  const runHost = async (st: HostState, role: Role) => {
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
  };

  const connectAndGather = async (st: HostState) => {
    try {
      st.conn = opts.connect
        ? await opts.connect(st.host)
        : await connect(st.host, { privateKey: opts.privateKey, knownHosts: opts.knownHosts, retryForMs: opts.connectRetryMs, log: opts.log });
    } catch (e) {
      st.unreachable = true;
      st.failed = true;
      const message = errorMessage(e);
      emit({ type: 'connect', host: st.host.name, error: message });
      record({ host: st.host.name, role: 'connect', task: 'ssh', status: 'failed', message, durationMs: 0 });
      return;
    }
    emit({ type: 'connect', host: st.host.name });
    const cmds = hostFactCommands(baseCtx(st), roles);
    try {
      st.facts = await gatherFacts(st.conn, cmds, opts.log);
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
      const size = opts.serial ?? role.serial?.size;
      if (!size) {
        await Promise.all(on.map((st) => runHost(st, role)));
        continue;
      }
      // A rolling role: batches of `size` hosts in the role's order, each changed host back in
      // service (its settle) before the next batch starts; a host failing in it stops the rollout.
      const order = role.serial?.order ? role.serial.order(on.map((st) => st.host)).map((h) => states.get(h.name)!).filter(Boolean) : on;
      let stoppedBy: string | undefined;
      for (let i = 0; i < order.length; i += size) {
        const batch = order.slice(i, i + size);
        if (stoppedBy) {
          for (const st of batch.filter((x) => !x.failed)) {
            st.failed = true;
            record({ host: st.host.name, role: role.name, task: 'rollout', status: 'failed', message: `not started: the rollout stopped after ${stoppedBy} failed`, durationMs: 0 });
            emit({ type: 'host', host: st.host.name, role: role.name, failed: true });
          }
          continue;
        }
        const failedBefore = new Set(batch.filter((st) => st.failed));
        const before = new Map(batch.map((st) => [st.host.name, changedCount(st.host.name, role.name)]));
        await Promise.all(batch.map((st) => runHost(st, role)));
        for (const st of batch) {
          if (st.failed || check || !role.serial?.settle || changedCount(st.host.name, role.name) === before.get(st.host.name)) continue;
          const t0 = Date.now();
          try {
            const msg = await role.serial.settle(baseCtx(st));
            record({ host: st.host.name, role: role.name, task: 'rollout: back in service', status: 'ok', message: msg || '', durationMs: Date.now() - t0 });
          } catch (e) {
            st.failed = true;
            record({ host: st.host.name, role: role.name, task: 'rollout: back in service', status: 'failed', message: errorMessage(e), durationMs: Date.now() - t0 });
          }
        }
        const failed = batch.find((st) => st.failed && !failedBefore.has(st));
        if (failed) stoppedBy = failed.host.name;
      }
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

/**
 * --check on nodes that do not exist yet (Terraform's "known after apply"): every
 * task their roles would run, without facts to judge them by. A task whose
 * `when` rules it out for the node (e.g. not a DB node) is skipped as it would be.
 */
export function plannedResults(cluster: Cluster, nodes: Cluster['nodes'], roles: Role[], secrets: SecretStore): TaskResult[] {
  const out: TaskResult[] = [];
  for (const node of nodes) {
    const host: Host = { name: node.name, address: '(known after apply)', privateAddress: node.address ?? '(known after apply)', port: 22, user: cluster.adminUser, sshFrom: '', node };
    const ctx: BaseCtx = { host, conn: undefined as unknown as Connection, cluster, hosts: [host], check: true, secrets, notify: () => undefined };
    for (const role of roles.filter((r) => roleApplies(r, host))) {
      for (const task of role.tasks) {
        let skip: string | null = null;
        try {
          skip = task.when?.(ctx) ?? null;
        } catch {
          skip = null; // needs what only a live node tells: it would run
        }
        out.push({
          host: node.name, role: role.name, task: task.name, durationMs: 0,
          ...(skip ? { status: 'skipped' as const, message: skip } : { status: 'changed' as const, message: 'would run (the node does not exist yet: known after apply)' }),
        });
      }
    }
  }
  return out;
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
