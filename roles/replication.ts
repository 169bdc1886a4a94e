// replication: every worker a GTID replica of the manager, in its dialect.
// The check reads SHOW SLAVE/REPLICA STATUS only; apply repairs the least that
// is wrong (start a stopped replica, re-point one pointing elsewhere) and then
// waits for catch-up with a GTID wait, never a sleep.
import { defineRole } from '../core/roles.ts';
import type { TaskContext, TaskWith } from '../core/types.ts';
import {
  adoptPositionSql, catchUpScript, changeSourceSql, parseReplicaStatus, REPLICA_STATUS_FACT, replicaDecision, replicaSource, ReplicationError, startReplicaSql, type ReplicaAction,
  type ReplicaSource,
} from './lib/mysql-replication.ts';
import { SECRETS } from './lib/names.ts';
import { dialectFor, OS_ID_FACT } from './lib/os.ts';

const source = (ctx: Omit<TaskContext, 'facts'>): ReplicaSource => replicaSource(ctx.hosts);

const replica: TaskWith<ReplicaAction> = {
  name: 'replica of the manager (GTID)',
  when: ({ host }) => (host.node.db === 'worker' ? null : host.node.db === 'manager' ? 'the manager is the source' : 'not a DB node'),
  facts: () => ({ os: OS_ID_FACT, status: REPLICA_STATUS_FACT }),
  check: (ctx) => {
    if (ctx.facts.status.code !== 0) return { message: 'server not answering', data: { action: 'configure', reason: 'server not answering' } };
    const decision = replicaDecision(parseReplicaStatus(ctx.facts.status.stdout), source(ctx));
    if (decision.action === 'ok') return null;
    if (decision.action === 'fail') return { message: `${decision.reason} (needs a human)`, data: decision };
    return { message: `${decision.action}: ${decision.reason}`, data: decision, detail: () => `source: ${decision.reason} -> ${source(ctx).user}@${source(ctx).host}:${source(ctx).port} (GTID)\n` };
  },
  apply: async (ctx, diff) => {
    const d = dialectFor(ctx.cluster, ctx.facts.os.stdout);
    const decision = diff.data;
    const src = source(ctx);
    if (decision.action === 'fail') throw new ReplicationError(`${ctx.host.name}: ${decision.reason}`, decision.hint);
    const password = ctx.secrets.get(SECRETS.mysqlRepl);
    // step 0: a returning former primary (after a failover) continues from its own position
    const adopt = adoptPositionSql(d);
    if (decision.action === 'configure' && adopt) await ctx.conn.exec('mysql', { stdin: adopt });
    // step 1: (re)point or start; the password reaches mysql through stdin only
    await ctx.conn.exec('mysql', { stdin: decision.action === 'start' ? startReplicaSql(d) : changeSourceSql(d, src, password) });
    // step 2: catch up with the manager's current GTID position
    const r = await ctx.conn.exec(catchUpScript(d, src), { stdin: `${password}\n`, check: false });
    if (r.code !== 0) {
      const status = await ctx.conn.exec(REPLICA_STATUS_FACT, { check: false });
      const after = replicaDecision(parseReplicaStatus(status.stdout), src);
      const why = after.action === 'ok' ? r.stderr.trim() : after.reason;
      throw new ReplicationError(`${ctx.host.name}: replica did not catch up: ${why}`, after.action === 'fail' ? after.hint : `check that ${src.host}:${src.port} is reachable from ${ctx.host.name}`);
    }
    return `${decision.action === 'start' ? 'started' : 'pointed at'} ${src.user}@${src.host}:${src.port}; caught up to GTID ${r.stdout.trim() || '(empty)'}`;
  },
};

export const replicationRole = defineRole({
  name: 'replication',
  // the manager's users exist before workers replicate
  after: ['mysql'],
  requires: [{ role: 'mysql' }],
  tasks: [replica],
});
