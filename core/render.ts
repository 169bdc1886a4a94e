// The progress renderer of the engine's events: a listr2 tree in a terminal,
// listr2's plain lines elsewhere (CI), nothing with --json (the recap is the
// JSON). It draws; core/run.ts schedules.
import { Listr, type ListrTask } from 'listr2';
import type { EngineEvent, EngineListener } from './events.ts';
import { listrOptions } from './output.ts';
import type { TaskResult } from './types.ts';

/** What the run will do, known before it starts: the tree's skeleton. */
export interface RunShape {
  hosts: string[];
  roles: { name: string; hosts: string[] }[];
}

export interface Renderer {
  on: EngineListener;
  /** Resolves once everything is drawn (call after the run's last event). */
  done(): Promise<void>;
}

/** The part of a listr2 task wrapper a slot writes to. */
interface Out {
  title: string;
  output: string;
  skip(message: string): void;
}

interface End {
  error?: string;
  skipped?: string;
}

/** One line of the tree (a host under connect or under a role): state kept until listr2 draws it. */
class Slot {
  title: string;
  output = '';
  live?: Out;
  readonly end: Promise<End>;
  finish!: (e: End) => void;

  constructor(title: string) {
    this.title = title;
    this.end = new Promise((resolve) => (this.finish = resolve));
  }

  set(title?: string, output?: string): void {
    if (title !== undefined) this.title = title;
    if (output !== undefined) this.output = output;
    if (this.live) {
      this.live.title = this.title;
      if (this.output) this.live.output = this.output;
    }
  }
}

const recapTitle = (host: string, results: TaskResult[]): string => {
  const c = { ok: 0, changed: 0, failed: 0, skipped: 0 };
  for (const r of results) if (r.host === host) c[r.status]++;
  return `${host}: ok=${c.ok} changed=${c.changed} failed=${c.failed} skipped=${c.skipped}`;
};

export function progressRenderer(shape: RunShape, show: boolean): Renderer {
  if (!show) return { on: () => {}, done: async () => {} };
  const slots = new Map<string, Slot>();
  const slot = (key: string, host: string) => {
    let s = slots.get(key);
    if (!s) slots.set(key, (s = new Slot(host)));
    return s;
  };
  const connectKey = (host: string) => `connect\u0000${host}`;
  const roleKey = (role: string, host: string) => `role\u0000${role}\u0000${host}`;
  const results: TaskResult[] = [];

  const line = (key: string, host: string): ListrTask => ({
    title: host,
    task: async (_ctx: unknown, out: Out) => {
      const s = slot(key, host);
      s.live = out;
      s.set();
      const end = await s.end;
      if (end.skipped) return out.skip(end.skipped);
      if (end.error) throw new Error(end.error);
    },
  });

  const list = new Listr(
    [
      {
        title: `connect and gather facts (${shape.hosts.length} hosts)`,
        task: (_: unknown, t: { newListr: (tasks: ListrTask[], o: object) => Listr }) =>
          t.newListr(shape.hosts.map((h) => line(connectKey(h), h)), { concurrent: true, exitOnError: false }),
      },
      ...shape.roles.map((role) => ({
        title: `role ${role.name}`,
        skip: () => role.hosts.length === 0,
        task: (_: unknown, t: { newListr: (tasks: ListrTask[], o: object) => Listr }) =>
          t.newListr(role.hosts.map((h) => line(roleKey(role.name, h), h)), { concurrent: true, exitOnError: false }),
      })),
    ],
    { ...listrOptions(true), concurrent: false, exitOnError: false } as never,
  );
  const running = list.run().then(() => undefined);

  const on = (e: EngineEvent): void => {
    switch (e.type) {
      case 'connect':
        if (e.error) slot(connectKey(e.host), e.host).finish({ error: e.error });
        break;
      case 'facts': {
        const s = slot(connectKey(e.host), e.host);
        s.set(`${e.host}: ${e.count} facts`);
        s.finish({});
        break;
      }
      case 'task':
        slot(roleKey(e.role, e.host), e.host).set(`${e.host}: ${e.task}`);
        break;
      case 'result': {
        const r = e.result;
        results.push(r);
        if (r.status !== 'ok' && r.role !== 'connect') {
          slot(roleKey(r.role, r.host), r.host).set(undefined, `${r.role} | ${r.task}: ${r.status}${r.message ? ` (${r.message})` : ''}`);
        }
        break;
      }
      case 'host': {
        const s = slot(roleKey(e.role, e.host), e.host);
        if (e.skipped) return s.finish({ skipped: e.skipped });
        s.set(recapTitle(e.host, results));
        const failures = results.filter((r) => r.host === e.host && r.status === 'failed').map((r) => `${r.task}: ${r.message}`);
        s.finish(e.failed ? { error: `${e.host}: ${failures.join('; ')}` } : {});
        break;
      }
      case 'role':
      case 'recap':
        break;
    }
  };

  return {
    on,
    done: async () => {
      // a line the run never reached (it stopped early) must not keep the tree waiting
      for (const s of slots.values()) s.finish({ skipped: 'not run' });
      for (const r of shape.roles) for (const h of r.hosts) slot(roleKey(r.name, h), h).finish({ skipped: 'not run' });
      for (const h of shape.hosts) slot(connectKey(h), h).finish({ skipped: 'not run' });
      await running;
    },
  };
}
