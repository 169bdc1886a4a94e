// One database node as the proxy sees it: a mysql2 pool for queries, a
// one-connection pool for probes, and what the probes and real queries
// measured (health, latency moving average, replication lag).

import { readFileSync } from 'node:fs';
import mysql from 'mysql2/promise';
import type { DbConfig, DbEndpoint, SqlParam } from '../schemas.ts';

/** fenced: a primary replaced by a failover; never routed to again by this proxy. */
export type NodeRole = 'manager' | 'worker' | 'fenced';

export interface NodeState {
  name: string;
  role: NodeRole;
  healthy: boolean;
  /** Moving average of probe and query times, ms (null before the first measure). */
  latency_ms: number | null;
  /** Seconds_Behind_Master of a worker (null: unknown / not replicating). */
  lag_seconds: number | null;
  /** Both replication threads running (workers; null on the manager or when unknown). */
  replicating: boolean | null;
  usable: boolean;
  error?: string;
}

export type QueryResult =
  | { kind: 'rows'; rows: unknown[] }
  | { kind: 'write'; affectedRows: number; insertId?: number };

/** Error codes meaning "this node cannot serve now" (as opposed to an error in the SQL). */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND',
  'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR',
  'PROTOCOL_ENQUEUE_AFTER_QUIT', 'ER_SERVER_SHUTDOWN', 'ER_CONNECTION_KILLED', 'ER_CON_COUNT_ERROR',
  'ER_TOO_MANY_USER_CONNECTIONS', 'ER_QUERY_INTERRUPTED',
]);

export interface MysqlLikeError {
  code?: string;
  errno?: number;
  fatal?: boolean;
  message: string;
  sqlMessage?: string;
}

export function isUnavailable(e: unknown): boolean {
  const err = e as MysqlLikeError;
  if (!err || typeof err !== 'object') return false;
  if (err.code && UNAVAILABLE_CODES.has(err.code)) return true;
  if (err.fatal) return true;
  return /closed state|Pool is closed|Connection lost/i.test(err.message ?? '');
}

/** The server refused the login (wrong password): nothing ran, another password may be tried. */
export function isAccessDenied(e: unknown): boolean {
  const err = e as MysqlLikeError;
  return err?.errno === 1045 || err?.code === 'ER_ACCESS_DENIED_ERROR';
}

/**
 * A pool and, while a rotation changes its user's password (db.fallbackPasswords),
 * one with the other password: a login the server refuses is tried again with it
 * (nothing ran), so new connections authenticate before and after the ALTER USER
 * (MariaDB has no dual password). After a refusal the other pool is used first for a second.
 */
export class FallbackPool {
  private preferFallbackUntil = 0;
  constructor(readonly primary: mysql.Pool, readonly fallback: mysql.Pool | null) {}

  async use<T>(f: (pool: mysql.Pool) => Promise<T>): Promise<T> {
    const order = this.fallback && Date.now() < this.preferFallbackUntil ? [this.fallback, this.primary] : [this.primary, this.fallback];
    try {
      return await f(order[0]!);
    } catch (e) {
      if (!order[1] || !isAccessDenied(e)) throw e;
      if (order[0] === this.primary) this.preferFallbackUntil = Date.now() + 1000;
      return f(order[1]);
    }
  }

  pools(): mysql.Pool[] {
    return this.fallback ? [this.primary, this.fallback] : [this.primary];
  }
}

export function isTimeout(e: unknown): boolean {
  return (e as MysqlLikeError)?.code === 'PROTOCOL_SEQUENCE_TIMEOUT';
}

/** Set on an error raised after the statement left for the server (as opposed to while getting a connection). */
const SENT = Symbol('sent');

/** The statement reached the wire before this error: a write may have committed. */
export function wasSent(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { [SENT]?: boolean })[SENT] === true;
}

export function markSent<E>(e: E): E {
  if (typeof e === 'object' && e !== null) (e as { [SENT]?: boolean })[SENT] = true;
  return e;
}

/** What the manager's semi-sync status says (null: not read, e.g. semi-sync not wanted). */
export interface SemiSyncState {
  /** The source waits for acknowledgements (OFF: it fell back to async, or semi-sync is not loaded). */
  active: boolean;
  /** Semi-sync replicas connected to it now. */
  clients: number;
}

/** Both dialects' status names: MariaDB's rpl_semi_sync_master_*, MySQL's rpl_semi_sync_source_*. */
export const SEMI_SYNC_STATUS_SQL = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_%'";

export function parseSemiSyncStatus(rows: { Variable_name?: string; Value?: string }[]): SemiSyncState {
  const get = (suffix: string) => rows.find((r) => /^Rpl_semi_sync_(master|source)_/i.test(r.Variable_name ?? '') && (r.Variable_name ?? '').toLowerCase().endsWith(suffix))?.Value;
  return { active: (get('_status') ?? 'OFF').toUpperCase() === 'ON', clients: Number(get('_clients') ?? 0) || 0 };
}

const ALPHA = 0.3;

interface CallbackConnection {
  query(sql: string, cb: (err: unknown) => void): unknown;
}

/**
 * The replica status query of every supported server: MySQL 8.4 removed SHOW
 * SLAVE STATUS; MariaDB >= 10.5.1 and MySQL >= 8.0.22 accept this form (MariaDB
 * keeps its old column names, read below).
 */
export const REPLICA_STATUS_SQL = 'SHOW REPLICA STATUS';

/** Valid on MariaDB 10.x and MySQL 8; no quote- or escape-changing modes. */
export const SQL_MODE = 'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION';

/**
 * Prepared statements kept per connection (mysql2's LRU, least recently used closed first).
 * The application's statements are a fixed set: a few hundred texts cover it.
 */
export const PREPARED_CACHE = 256;

export class DbNode {
  readonly name: string;
  /** Semi-sync as the last probe of the primary saw it (null: not read). */
  semiSync: SemiSyncState | null = null;
  /** Read the semi-sync status in the primary's probes. */
  watchSemiSync = false;
  /** Probes failed in a row, and when the first of them failed (failover's detection). */
  failedProbes = 0;
  downSince: number | null = null;
  healthy = false;
  latencyMs: number | null = null;
  lagSeconds: number | null = null;
  replicating: boolean | null = null;
  /**
   * When a probe last saw this worker replicating with a known lag (ms since epoch).
   * A worker that lost its source (IO thread reconnecting: the manager restarts) but still
   * applies what it has keeps serving reads while that lag plus the time since stays within
   * maxLagSeconds: its data is no older than that, and reads go on while the manager is away.
   */
  caughtUpAt: number | null = null;
  /** Its lag at that probe (seconds): the data is that old plus the time since. */
  caughtUpLag = 0;
  /** The SQL (applier) thread runs: the replica is not broken, only maybe cut off. */
  applying = false;
  lastError: string | undefined;
  private readonly pool: FallbackPool;
  private readonly probePool: FallbackPool;
  private probing = false;
  private closed = false;

  constructor(endpoint: DbEndpoint, public role: NodeRole, db: DbConfig, private readonly queryTimeoutMs: number, probeTimeoutMs = 750) {
    this.name = endpoint.name;
    const base: mysql.PoolOptions = {
      host: endpoint.host,
      port: endpoint.port,
      user: db.user,
      password: db.password,
      database: db.database,
      connectTimeout: db.connectTimeoutMs ?? 3000,
      // TLS to the server, its certificate verified against the cluster CA (pooled connections: one handshake each)
      ...(db.ssl ? { ssl: { ca: readFileSync(db.ssl.ca, 'utf8'), rejectUnauthorized: true } } : {}),
      enableKeepAlive: true,
      multipleStatements: false,
      dateStrings: true,
      supportBigNumbers: true,
      waitForConnections: true,
      queueLimit: 0,
      // No call-site stack captured per query (Error.captureStackTrace on every call): errors
      // are mapped to codes, their stacks never shown or logged.
      trace: false,
      // mysql2 allocates its prepared statement cache at full size with each connection: four
      // arrays of 16000 slots by default, about 0.5 MB per connection (half of what one costs).
      maxPreparedStatements: PREPARED_CACHE,
    };
    const fallback = (opts: mysql.PoolOptions): mysql.PoolOptions | null => {
      const pw = opts.user ? db.fallbackPasswords?.[opts.user] : undefined;
      return pw === undefined ? null : { ...opts, password: pw };
    };
    const queryPool = (opts: mysql.PoolOptions): mysql.Pool => {
      const pool = mysql.createPool(opts);
      // Errors on idle connections must not crash the process; queries report them.
      // Every connection gets a fixed sql_mode without ANSI_QUOTES / NO_BACKSLASH_ESCAPES: the
      // policy's tokenizer reads quotes and backslashes as in the default mode, so the server must too.
      // (Queued before any other command on the new connection.)
      pool.on('connection', (c) => {
        c.on('error', () => undefined);
        // The event hands over the callback-style connection (the promise typings say otherwise).
        (c as unknown as CallbackConnection).query(`SET SESSION sql_mode = '${SQL_MODE}'`, () => undefined);
      });
      return pool;
    };
    const probePool = (opts: mysql.PoolOptions): mysql.Pool => {
      const pool = mysql.createPool(opts);
      pool.on('connection', (c) => c.on('error', () => undefined));
      return pool;
    };
    const queryOpts: mysql.PoolOptions = { ...base, connectionLimit: db.poolSize ?? 16, maxIdle: db.poolSize ?? 16 };
    const queryFallback = fallback(queryOpts);
    this.pool = new FallbackPool(queryPool(queryOpts), queryFallback && queryPool(queryFallback));
    // Probes decide health: a node that cannot even connect within the probe timeout is down.
    // (with their own user when configured: it may read replica status and no data, so no default schema)
    const probeBase = db.monitor ? { ...base, user: db.monitor.user, password: db.monitor.password, database: undefined } : base;
    const probeOpts: mysql.PoolOptions = { ...probeBase, connectTimeout: probeTimeoutMs, connectionLimit: 1, maxIdle: 1 };
    const probeFallback = fallback(probeOpts);
    this.probePool = new FallbackPool(probePool(probeOpts), probeFallback && probePool(probeFallback));
  }

  /**
   * May serve reads: healthy, and for a worker replicating with lag <= maxLag, or cut off
   * from its source (applier still running) for no longer than maxLag since it was caught up.
   */
  usable(maxLagSeconds: number, now = Date.now()): boolean {
    if (!this.healthy || this.role === 'fenced') return false;
    if (this.role === 'manager') return true;
    if (this.replicating === true && this.lagSeconds !== null && this.lagSeconds <= maxLagSeconds) return true;
    return this.applying && this.caughtUpAt !== null && this.caughtUpLag + (now - this.caughtUpAt) / 1000 <= maxLagSeconds;
  }

  private record(ms: number): void {
    this.latencyMs = this.latencyMs === null ? ms : this.latencyMs * (1 - ALPHA) + ms * ALPHA;
  }

  markDown(e: unknown): void {
    this.healthy = false;
    this.setError((e as Error)?.message ?? String(e));
  }

  /**
   * Why the node is left out (or undefined when it is not). A change is logged
   * once on stderr (the journal), so an operator can tell why a worker gets no reads.
   */
  private setError(why: string | undefined): void {
    if (why !== this.lastError) {
      const usable = why === undefined ? 'usable again' : `left out: ${why}`;
      process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), event: 'probe', node: this.name, role: this.role, status: usable })}\n`);
    }
    this.lastError = why;
  }

  /**
   * Runs one statement: prepared (`execute`) when params are given, else `query`.
   * The connection is taken first, so an error says whether the statement was
   * sent (wasSent): a write that fails after that may have committed.
   */
  async run(sql: string, params: SqlParam[] | undefined): Promise<QueryResult> {
    const start = performance.now();
    try {
      const conn = await this.pool.use((pool) => pool.getConnection());
      let result: unknown;
      try {
        const opts = { sql, timeout: this.queryTimeoutMs };
        [result] = params && params.length > 0 ? await conn.execute(opts, params) : await conn.query(opts);
        conn.release();
      } catch (e) {
        // a connection that failed (lost, timed out) is not handed out again
        if (isUnavailable(e) || isTimeout(e)) conn.destroy();
        else conn.release();
        throw markSent(e);
      }
      this.record(performance.now() - start);
      if (Array.isArray(result)) return { kind: 'rows', rows: result as unknown[] };
      const header = result as mysql.ResultSetHeader;
      const out: QueryResult = { kind: 'write', affectedRows: header.affectedRows };
      if (header.insertId) out.insertId = header.insertId;
      return out;
    } catch (e) {
      if (isUnavailable(e) && !isTimeout(e)) this.markDown(e);
      throw e;
    }
  }

  /** Health + latency (+ replication state on workers). Never throws; overlapping calls are skipped. */
  async probe(timeoutMs: number): Promise<void> {
    if (this.probing || this.closed) return;
    this.probing = true;
    const start = performance.now();
    try {
      if (this.role === 'manager') {
        if (this.watchSemiSync) {
          const [rows] = await this.probePool.use((pool) => pool.query({ sql: SEMI_SYNC_STATUS_SQL, timeout: timeoutMs }));
          this.semiSync = parseSemiSyncStatus(rows as { Variable_name?: string; Value?: string }[]);
        } else {
          await this.probePool.use((pool) => pool.query({ sql: 'SELECT 1', timeout: timeoutMs }));
        }
      } else {
        const [rows] = await this.probePool.use((pool) => pool.query({ sql: REPLICA_STATUS_SQL, timeout: timeoutMs }));
        const r = (rows as Record<string, unknown>[])[0];
        if (!r) {
          this.replicating = false;
          this.applying = false;
          this.lagSeconds = null;
        } else {
          const io = r.Slave_IO_Running ?? r.Replica_IO_Running;
          const sqlThread = r.Slave_SQL_Running ?? r.Replica_SQL_Running;
          const lag = r.Seconds_Behind_Master ?? r.Seconds_Behind_Source;
          this.replicating = io === 'Yes' && sqlThread === 'Yes';
          this.applying = sqlThread === 'Yes';
          this.lagSeconds = lag === null || lag === undefined ? null : Number(lag);
          if (this.replicating && this.lagSeconds !== null) {
            this.caughtUpAt = Date.now();
            this.caughtUpLag = this.lagSeconds;
          }
        }
      }
      this.record(performance.now() - start);
      this.healthy = true;
      this.failedProbes = 0;
      this.downSince = null;
      // cut off from its source but still applying is not left out (yet): see usable()
      this.setError(this.role === 'worker' && this.replicating === false && !this.applying ? 'replication is not running' : undefined);
    } catch (e) {
      const err = e as MysqlLikeError;
      if (err.errno === 1227 || err.code === 'ER_SPECIFIC_ACCESS_DENIED_ERROR') {
        // Reachable but the user may not read replica status: lag unknown, so no reads.
        this.healthy = true;
        this.replicating = null;
        this.lagSeconds = null;
        this.setError(`cannot read replica status (${err.sqlMessage ?? err.message}; grant REPLICA MONITOR on MariaDB, REPLICATION CLIENT on MySQL)`);
      } else {
        this.failedProbes++;
        this.downSince ??= Date.now();
        this.markDown(e);
      }
    } finally {
      this.probing = false;
    }
  }

  state(maxLagSeconds: number): NodeState {
    const s: NodeState = {
      name: this.name,
      role: this.role,
      healthy: this.healthy,
      latency_ms: this.latencyMs === null ? null : Math.round(this.latencyMs * 100) / 100,
      lag_seconds: this.lagSeconds,
      replicating: this.role === 'worker' ? this.replicating : null,
      usable: this.usable(maxLagSeconds),
    };
    if (this.lastError) s.error = this.lastError;
    return s;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.pool.pools(), ...this.probePool.pools()].map((p) => p.end()));
  }
}
