// The write hold of a graceful switchover (npx zx switchover). The proxy's
// config file carries `control: { holdWrites: true, holdMs }` while the
// primary moves; re-read on SIGHUP (services/config.ts reloadable), it holds
// new writes in a queue instead of refusing them, lets the writes in flight
// finish, and pauses the automatic failover (one decision-maker: the old
// primary goes read_only but stays alive meanwhile). The next config, with
// the new primary and no `control`, releases them: they run on the newest
// generation of the app, so on the new primary. A write held past `holdMs`
// answers 503 not executed (safe to retry) and is never run afterwards.
// One gate per process, shared by every generation a reload builds.
import type { ProxyMode } from '../contract.ts';
import type { ValidQuery } from '../validate.ts';
import { notExecuted } from './db-errors.ts';
import type { QueryResult } from './nodes.ts';

/** Runs one write on a generation's router. */
export type WriteRunner = (q: ValidQuery, mode: ProxyMode) => Promise<{ node: string; result: QueryResult }>;

const log = (event: Record<string, unknown>) => process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), event: 'switchover', ...event })}\n`);

interface Waiter {
  resolve(): void;
  reject(e: Error): void;
}

export class WriteGate {
  /** Writes being executed now (counted from the gate on). */
  inflight = 0;
  /** The newest generation's write runner: every write, held or not, runs there. */
  current: WriteRunner | null = null;
  private until: number | null = null;
  private since = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly waiters = new Set<Waiter>();
  private idle: (() => void)[] = [];
  private heldCount = 0;

  constructor(private readonly quiet = false) {}

  get held(): boolean {
    return this.until !== null;
  }

  /**
   * Hold new writes for at most `ms`; resolves once the writes in flight
   * finished (or after `drainMs`: they ended by their query timeout). True when drained.
   */
  async hold(ms: number, drainMs: number): Promise<boolean> {
    if (this.until === null) {
      this.since = Date.now();
      this.heldCount = 0;
    }
    this.until = Date.now() + ms;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.expire(ms), ms);
    this.timer.unref?.();
    if (!this.quiet) log({ step: 'hold', hold_ms: ms, in_flight: this.inflight });
    if (this.inflight === 0) return true;
    return new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        this.idle = this.idle.filter((f) => f !== done);
        resolve(false);
      }, drainMs);
      const done = () => {
        clearTimeout(t);
        resolve(true);
      };
      this.idle.push(done);
    });
  }

  /** The switchover is done (or undone): the held writes go on, new ones pass. */
  release(): void {
    if (this.until === null) return;
    clearTimeout(this.timer);
    this.until = null;
    if (!this.quiet) log({ step: 'release', held_ms: Date.now() - this.since, held_writes: this.heldCount });
    const w = [...this.waiters];
    this.waiters.clear();
    for (const x of w) x.resolve();
  }

  private expire(ms: number): void {
    this.until = null;
    if (!this.quiet) log({ step: 'expired', hold_ms: ms, refused_writes: this.waiters.size });
    const w = [...this.waiters];
    this.waiters.clear();
    for (const x of w) x.reject(notExecuted(`writes were held for a switchover longer than ${ms} ms`));
  }

  /** Runs a write through the gate: waits while held (503 not executed past the bound), counted while it runs. */
  async write<T>(run: () => Promise<T>): Promise<T> {
    if (this.until !== null) {
      this.heldCount++;
      await new Promise<void>((resolve, reject) => this.waiters.add({ resolve, reject }));
    }
    this.inflight++;
    try {
      return await run();
    } finally {
      this.inflight--;
      if (this.inflight === 0 && this.idle.length) {
        const f = this.idle;
        this.idle = [];
        for (const g of f) g();
      }
    }
  }
}
