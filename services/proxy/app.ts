// The proxy, on the hop skeleton (services/hop.ts): accepts only the trusted
// host's credential, validates again, classifies read/write, routes by mode,
// runs the statement on a mysql2 pool. A read that fails because its worker
// went away is retried once elsewhere.

import { CREDENTIAL_HEADER, type ProxyMode } from '../contract.ts';
import type { ProxyConfig } from '../schemas.ts';
import { buildHop, type Hop } from '../hop.ts';
import { HttpError, jsonResponse, secretChecker, since } from '../http.ts';
import type { ValidQuery } from '../validate.ts';
import { dbError, notExecuted } from './db-errors.ts';
import { DbNode, isTimeout, isUnavailable, type QueryResult } from './nodes.ts';
import { Router } from './router.ts';
import { Failover } from './failover.ts';
import { WriteGate, type WriteRunner } from './hold.ts';

export interface ProxyRuntime {
  app: Hop;
  router: Router;
  /** First probe round (so routing starts informed), then probes every probeIntervalMs. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `gate`: the process's write hold, shared by every generation a reload builds
 * (services/proxy/main.ts); `config.control` holds or releases it once the first probe round is in.
 */
export function createProxy(config: ProxyConfig, gate: WriteGate = new WriteGate(true)): ProxyRuntime {
  const queryTimeoutMs = config.db.queryTimeoutMs ?? 5000;
  const probeTimeoutMs = config.probeTimeoutMs ?? Math.min(750, 3 * config.probeIntervalMs);
  const manager = new DbNode(config.db.manager, 'manager', config.db, queryTimeoutMs, probeTimeoutMs);
  const workers = config.db.workers.map((w) => new DbNode(w, 'worker', config.db, queryTimeoutMs, probeTimeoutMs));
  const router = new Router(manager, workers, config.maxLagSeconds);
  const semiSync = config.semiSync?.enabled === true;
  for (const n of [manager, ...workers]) n.watchSemiSync = semiSync;
  const all = [manager, ...workers];
  const endpoints = new Map([config.db.manager, ...config.db.workers].map((e) => [e.name, { host: e.host, port: e.port }]));
  const failover = new Failover(router, endpoints, config.db, config.failover ?? { enabled: false, failCount: 3, downAfterMs: 3000 }, Math.max(probeTimeoutMs, 1000), () => gate.held);
  let timer: ReturnType<typeof setInterval> | undefined;
  const probeAll = async (): Promise<void> => {
    await Promise.all(all.map((n) => n.probe(probeTimeoutMs)));
    await failover.tick();
  };
  const app = buildApp(config, router, failover, gate);
  return {
    app: app.hop,
    router,
    async start() {
      await probeAll();
      timer = setInterval(() => void probeAll(), config.probeIntervalMs);
      // writes from now on run here (held ones too, once released)
      gate.current = app.runWrite;
      if (config.control?.holdWrites) await gate.hold(config.control.holdMs, queryTimeoutMs + 1000);
      else gate.release();
    },
    async stop() {
      if (timer) clearInterval(timer);
      await Promise.all([...all.map((n) => n.close()), failover.close()]);
    },
  };
}

/** Semi-sync holds: the primary waits for acknowledgements and a worker is connected to give them. */
function semiSyncHolds(s: DbNode['semiSync']): boolean {
  return s !== null && s.active && s.clients > 0;
}

/**
 * /health's semi_sync: whether writes acknowledged now are on a worker too
 * (guarantee false: the primary fell back to async or no worker is connected;
 * null: semi-sync not wanted or not read yet).
 */
export function semiSyncReport(config: ProxyConfig, s: DbNode['semiSync']): { wanted: boolean; on_timeout: string | null; guarantee: boolean | null; clients: number | null } {
  const wanted = config.semiSync?.enabled === true;
  return { wanted, on_timeout: wanted ? config.semiSync!.onTimeout : null, guarantee: wanted && s ? semiSyncHolds(s) : null, clients: s ? s.clients : null };
}

function buildApp(config: ProxyConfig, router: Router, failover: Failover, gate: WriteGate): { hop: Hop; runWrite: WriteRunner } {
  const credentialMatches = secretChecker([config.credential, ...(config.previousCredentials ?? [])]);

  const refuseUnsynced = config.semiSync?.enabled === true && config.semiSync.onTimeout === 'refuse';

  /** A write goes through the switchover's gate, then runs on the newest generation (the one that knows the primary). */
  async function execute(q: ValidQuery, mode: ProxyMode): Promise<{ node: string; result: QueryResult }> {
    if (q.type !== 'write') return executeHere(q, mode);
    return gate.write(() => (gate.current ?? executeHere)(q, mode));
  }

  async function executeHere(q: ValidQuery, mode: ProxyMode): Promise<{ node: string; result: QueryResult }> {
    let node = router.pick(q.type, mode);
    if (!node) throw notExecuted('no database node is available');
    // a primary the probes lost (failover pending) is not tried: the write could hang and end unknown
    if (q.type === 'write' && !node.healthy) throw notExecuted('the primary is not answering (failover pending)');
    if (q.type === 'write' && refuseUnsynced && !semiSyncHolds(node.semiSync)) {
      throw notExecuted('no worker acknowledges writes (database.semiSync.onTimeout: refuse)');
    }
    try {
      return { node: node.name, result: await node.run(q.sql, q.params) };
    } catch (e) {
      // A read on a node that just died (or hung, now marked down by the probe) runs once more elsewhere.
      const retry = q.type === 'read' && (isUnavailable(e) && (!isTimeout(e) || !node.healthy));
      if (!retry) throw dbError(e, q);
      const failed = node;
      node = router.pick(q.type, mode, failed);
      if (!node) throw dbError(e, q);
      try {
        return { node: node.name, result: await node.run(q.sql, q.params) };
      } catch (e2) {
        throw dbError(e2, q);
      }
    }
  }

  const hop = buildHop({
    hop: 'proxy',
    maxBodyBytes: config.maxBodyBytes,
    policy: config.policy,
    log: config.log ?? true,
    admit(request) {
      if (!credentialMatches(request.headers.get(CREDENTIAL_HEADER))) {
        return new HttpError(401, 'UNAUTHORIZED', 'only the trusted host may call this service');
      }
      return null;
    },
    health() {
      const nodes = router.states();
      const managerUp = nodes[0].healthy;
      const semi = semiSyncReport(config, router.manager.semiSync);
      const status = !managerUp ? 'down' : nodes.every((n) => n.usable) && semi.guarantee !== false ? 'ok' : 'degraded';
      return jsonResponse(managerUp ? 200 : 503, { status, service: 'proxy', default_mode: config.defaultMode, max_lag_seconds: router.maxLagSeconds, semi_sync: semi, primary: router.manager.name, failover: { enabled: config.failover?.enabled === true && !!config.db.admin, last: failover.last, blocked: failover.blocked }, writes_held: gate.held, nodes });
    },
    async query(q, { requestId, start, note }) {
      const mode: ProxyMode = q.mode ?? config.defaultMode;
      note.mode = mode;
      if (!config.modes.includes(mode)) throw new HttpError(422, 'MODE_NOT_ALLOWED', `mode ${mode} is not enabled (enabled: ${config.modes.join(', ')})`);
      const { node, result } = await execute(q, mode);
      const duration = since(start);
      const payload = result.kind === 'rows'
        ? { request_id: requestId, mode, type: q.type, node, rows: result.rows, duration_ms: duration }
        : { request_id: requestId, mode, type: q.type, node, affected_rows: result.affectedRows, insert_id: result.insertId, duration_ms: duration };
      return { status: 200, body: JSON.stringify(payload), node, mode, type: q.type };
    },
  });
  return { hop, runWrite: executeHere };
}
