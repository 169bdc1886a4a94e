// Automatic failover, decided by the proxy (the only decision-maker: cluster.yaml
// allows one proxy node, so exactly one process ever promotes; a second proxy
// would need a lock held on a majority of nodes first, which rampart does not
// build). Modelled on MaxScale's MariaDB Monitor (failcount x monitor_interval,
// auto_failover) and Orchestrator (promote the most advanced replica by GTID,
// refuse errant ones, re-point the rest with GTID auto-positioning).
//
// 1. Detection: the primary is dead after `failCount` failed probes in a row
//    spanning at least `downAfterMs` (one blip never promotes).
// 2. Choice: every reachable worker's executed and received GTIDs
//    (choosePromotion in gtid.ts).
// 3. Promotion: the winner stops fetching, applies what it received (GTID wait),
//    forgets its source (RESET ... ALL) and turns read_only off.
// 4. The other workers are re-pointed at it (GTID auto-position; the stored
//    replication user and password are kept).
// 5. The old primary is fenced: never routed to again by this proxy, and set
//    read_only (+ super_read_only on MySQL) as soon as it answers.
import { readFileSync } from 'node:fs';
import mysql from 'mysql2/promise';
import { DIALECT_SQL, type FailoverSql } from '../../roles/lib/mysql-dialect.ts';
import type { DbConfig } from '../schemas.ts';
import { choosePromotion, parseGtidSet, union, type Candidate, type GtidDialect, type GtidSet } from './gtid.ts';
import { FallbackPool, type DbNode } from './nodes.ts';
import type { Router } from './router.ts';

export interface FailoverSettings {
  enabled: boolean;
  failCount: number;
  downAfterMs: number;
}

/** The last failover, as /health reports it. */
export interface FailoverEvent {
  from: string;
  to: string;
  /** From the first failed probe to writes routed to the new primary. */
  seconds: number;
  at: string;
  passed_over: { name: string; why: string }[];
}

/** The statements by dialect: one home, roles/lib/mysql-dialect.ts (`failover`, `gtidWait`). */
const SQL: Record<GtidDialect, FailoverSql & { wait: (pos: string) => string }> = {
  mariadb: { ...DIALECT_SQL.mariadb.failover, wait: (pos) => `${DIALECT_SQL.mariadb.gtidWait(pos, 20)} AS r` },
  mysql: { ...DIALECT_SQL.mysql.failover, wait: (pos) => `${DIALECT_SQL.mysql.gtidWait(pos, 20)} AS r` },
};

const log = (event: Record<string, unknown>) => process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), event: 'failover', ...event })}\n`);

interface Endpoint { host: string; port: number }

export class Failover {
  last: FailoverEvent | null = null;
  /** Why the last attempt did not promote (null when none failed). */
  blocked: string | null = null;
  private busy = false;
  /** Origins (server_uuid / server_id) seen in the primary's GTIDs while it lived: what is not errant. */
  private primaries = new Set<string>();
  private lastOriginsRead = 0;
  private readonly admin = new Map<string, FallbackPool>();
  private readonly fenced = new Set<DbNode>();

  constructor(
    private readonly router: Router,
    private readonly endpoints: Map<string, Endpoint>,
    private readonly db: DbConfig,
    private readonly settings: FailoverSettings,
    private readonly timeoutMs: number,
    /** A switchover holds the writes: it moves the primary, this waits (one decision-maker). */
    private readonly paused: () => boolean = () => false,
  ) {}

  private pool(node: DbNode): FallbackPool {
    let p = this.admin.get(node.name);
    if (!p) {
      const ep = this.endpoints.get(node.name)!;
      const opts: mysql.PoolOptions = {
        host: ep.host, port: ep.port, user: this.db.admin!.user, password: this.db.admin!.password,
        connectTimeout: this.timeoutMs, connectionLimit: 1, maxIdle: 1, enableKeepAlive: true, trace: false,
        // the failover account is REQUIRE SSL like the others: TLS, the server verified against the cluster CA
        ...(this.db.ssl ? { ssl: { ca: readFileSync(this.db.ssl.ca, 'utf8'), rejectUnauthorized: true } } : {}),
      };
      const make = (o: mysql.PoolOptions) => {
        const pool = mysql.createPool(o);
        pool.on('connection', (c) => c.on('error', () => undefined));
        return pool;
      };
      // during a rotation the server may still hold the old password (db.fallbackPasswords)
      const old = this.db.fallbackPasswords?.[this.db.admin!.user];
      p = new FallbackPool(make(opts), old === undefined ? null : make({ ...opts, password: old }));
      this.admin.set(node.name, p);
    }
    return p;
  }

  private async q(node: DbNode, sql: string, timeout = this.timeoutMs): Promise<Record<string, unknown>[]> {
    const [rows] = await this.pool(node).use((pool) => pool.query({ sql, timeout }));
    return Array.isArray(rows) ? (rows as Record<string, unknown>[]) : [];
  }

  private async dialect(node: DbNode): Promise<GtidDialect> {
    const [r] = await this.q(node, 'SELECT VERSION() AS v');
    return /mariadb/i.test(String(r?.v ?? '')) ? 'mariadb' : 'mysql';
  }

  /** After each probe round: remember the primary's origins, fence returning old primaries, promote when the primary is dead. */
  async tick(now = Date.now()): Promise<void> {
    if (!this.settings.enabled || !this.db.admin || this.busy || this.paused()) return;
    this.busy = true;
    try {
      const primary = this.router.manager;
      if (primary.healthy && now - this.lastOriginsRead > 5000) await this.readOrigins(primary).catch(() => undefined);
      for (const old of this.fenced) if (old.healthy) await this.fence(old);
      if (!primary.healthy && primary.failedProbes >= this.settings.failCount && primary.downSince !== null && now - primary.downSince >= this.settings.downAfterMs) {
        await this.promote(primary);
      }
    } finally {
      this.busy = false;
    }
  }

  private async readOrigins(primary: DbNode): Promise<void> {
    const d = await this.dialect(primary);
    const [r] = await this.q(primary, SQL[d].state);
    const set = parseGtidSet(d, String(r?.executed ?? ''));
    this.primaries.add(String(r?.self ?? ''));
    for (const o of set.origin.values()) this.primaries.add(o);
    this.lastOriginsRead = Date.now();
  }

  private async candidate(w: DbNode): Promise<{ c: Candidate; d: GtidDialect } | null> {
    try {
      const d = await this.dialect(w);
      const [state] = await this.q(w, SQL[d].state);
      const [status] = await this.q(w, 'SHOW REPLICA STATUS');
      const executed = parseGtidSet(d, String(state?.executed ?? ''));
      const receivedText = String(status?.Gtid_IO_Pos ?? status?.Retrieved_Gtid_Set ?? '');
      const received: GtidSet = union(executed, parseGtidSet(d, receivedText));
      const sqlErrno = Number(status?.Last_SQL_Errno ?? 0);
      const c: Candidate = { name: w.name, executed, received, self: String(state?.self ?? '') };
      if (sqlErrno) c.broken = `SQL error ${sqlErrno}: ${String(status?.Last_SQL_Error ?? '')}`;
      return { c, d };
    } catch (e) {
      log({ step: 'candidate', node: w.name, error: (e as Error).message });
      return null;
    }
  }

  private async promote(old: DbNode): Promise<void> {
    const started = old.downSince ?? Date.now();
    const workers = this.router.workers.filter((w) => !this.fenced.has(w));
    // stop fetching first: nothing more can arrive from the dead primary, and what each received is final
    await Promise.all(workers.map(async (w) => {
      const d = await this.dialect(w).catch(() => null);
      if (d) await this.q(w, SQL[d].stopReceiver).catch(() => undefined);
    }));
    const read = (await Promise.all(workers.map((w) => this.candidate(w)))).filter((x) => x !== null);
    const choice = choosePromotion(read.map((x) => x.c), this.primaries, this.router.workers.map((w) => w.name));
    if (!choice.ok) {
      if (this.blocked !== choice.reason) log({ step: 'blocked', reason: choice.reason });
      this.blocked = choice.reason;
      // let the workers fetch again in case the primary comes back
      await Promise.all(read.map(({ c, d }) => this.q(this.byName(c.name), SQL[d].startReceiver).catch(() => undefined)));
      return;
    }
    const winner = this.byName(choice.winner);
    const d = read.find((x) => x.c.name === choice.winner)!.d;
    log({ step: 'promote', from: old.name, to: winner.name, position: choice.position, passed_over: choice.passedOver });
    try {
      const [w] = await this.q(winner, SQL[d].wait(choice.position), 25_000);
      if (Number(w?.r ?? 1) !== 0) throw new Error(`did not apply what it received (${choice.position}) within 20 s`);
      for (const s of SQL[d].promote) await this.q(winner, s);
    } catch (e) {
      this.blocked = `promoting ${winner.name} failed: ${(e as Error).message}`;
      log({ step: 'blocked', reason: this.blocked });
      return;
    }
    // route writes to it now; the others follow it
    this.fenced.add(old);
    this.router.promote(winner, old);
    const ep = this.endpoints.get(winner.name)!;
    for (const { c, d: dw } of read) {
      if (c.name === winner.name) continue;
      try {
        for (const s of SQL[dw].repoint(ep.host, ep.port)) await this.q(this.byName(c.name), s);
      } catch (e) {
        log({ step: 'repoint', node: c.name, error: (e as Error).message });
      }
    }
    this.blocked = null;
    this.last = { from: old.name, to: winner.name, seconds: Math.round((Date.now() - started) / 100) / 10, at: new Date().toISOString(), passed_over: choice.passedOver };
    log({ step: 'done', ...this.last });
    this.primaries.clear();
    this.lastOriginsRead = 0;
  }

  private byName(name: string): DbNode {
    return [this.router.manager, ...this.router.workers, ...this.fenced].find((n) => n.name === name)!;
  }

  /** The old primary answers again: make it read-only (it rejoins as a replica on the next apply). */
  private async fence(old: DbNode): Promise<void> {
    try {
      const d = await this.dialect(old);
      const [r] = await this.q(old, 'SELECT @@GLOBAL.read_only AS ro');
      if (Number(r?.ro) === 1) return;
      for (const s of SQL[d].fence) await this.q(old, s);
      log({ step: 'fenced', node: old.name });
    } catch (e) {
      log({ step: 'fence', node: old.name, error: (e as Error).message });
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.admin.values()].flatMap((p) => p.pools()).map((p) => p.end()));
  }
}
