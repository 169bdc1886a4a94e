// The proxy, on the hop skeleton (services/hop.ts): accepts only the trusted
// host's credential, validates again, classifies read/write, routes by mode,
// runs the statement on a mysql2 pool. A read that fails because its worker
// went away is retried once elsewhere.

import { CREDENTIAL_HEADER, type ProxyMode } from '../contract.ts';
import type { ProxyConfig } from '../schemas.ts';
import { buildHop, type Hop } from '../hop.ts';
import { HttpError, jsonResponse, secretChecker, since } from '../http.ts';
import type { ValidQuery } from '../validate.ts';
import { dbError } from './db-errors.ts';
import { DbNode, isTimeout, isUnavailable, type QueryResult } from './nodes.ts';
import { Router } from './router.ts';

export interface ProxyRuntime {
  app: Hop;
  router: Router;
  /** First probe round (so routing starts informed), then probes every probeIntervalMs. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createProxy(config: ProxyConfig): ProxyRuntime {
  const queryTimeoutMs = config.db.queryTimeoutMs ?? 5000;
  const probeTimeoutMs = config.probeTimeoutMs ?? Math.min(750, 3 * config.probeIntervalMs);
  const manager = new DbNode(config.db.manager, 'manager', config.db, queryTimeoutMs, probeTimeoutMs);
  const workers = config.db.workers.map((w) => new DbNode(w, 'worker', config.db, queryTimeoutMs, probeTimeoutMs));
  const router = new Router(manager, workers, config.maxLagSeconds);
  const all = [manager, ...workers];
  let timer: ReturnType<typeof setInterval> | undefined;
  const probeAll = (): Promise<unknown> => Promise.all(all.map((n) => n.probe(probeTimeoutMs)));
  return {
    app: buildApp(config, router),
    router,
    async start() {
      await probeAll();
      timer = setInterval(() => void probeAll(), config.probeIntervalMs);
    },
    async stop() {
      if (timer) clearInterval(timer);
      await Promise.all(all.map((n) => n.close()));
    },
  };
}

function buildApp(config: ProxyConfig, router: Router): Hop {
  const credentialMatches = secretChecker([config.credential, ...(config.previousCredentials ?? [])]);

  async function execute(q: ValidQuery, mode: ProxyMode): Promise<{ node: string; result: QueryResult }> {
    let node = router.pick(q.type, mode);
    if (!node) throw new HttpError(503, 'DB_UNAVAILABLE', 'no database node is available');
    try {
      return { node: node.name, result: await node.run(q.sql, q.params) };
    } catch (e) {
      // A read on a node that just died (or hung, now marked down by the probe) runs once more elsewhere.
      const retry = q.type === 'read' && (isUnavailable(e) && (!isTimeout(e) || !node.healthy));
      if (!retry) throw dbError(e, q.sql, q.params);
      const failed = node;
      node = router.pick(q.type, mode, failed);
      if (!node) throw dbError(e, q.sql, q.params);
      try {
        return { node: node.name, result: await node.run(q.sql, q.params) };
      } catch (e2) {
        throw dbError(e2, q.sql, q.params);
      }
    }
  }

  return buildHop({
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
      const status = !managerUp ? 'down' : nodes.every((n) => n.usable) ? 'ok' : 'degraded';
      return jsonResponse(managerUp ? 200 : 503, { status, service: 'proxy', default_mode: config.defaultMode, max_lag_seconds: router.maxLagSeconds, nodes });
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
}
