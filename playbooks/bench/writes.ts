// Every write accounted for (pure, unit-tested): acknowledged (200), refused
// (503 DB_UNAVAILABLE and other answers that say nothing ran), unknown (504
// OUTCOME_UNKNOWN, or no answer at all), lost (acknowledged but missing on a
// DB node after the GTID wait), and the failover the writes saw.
import { sqlIdent, sqlString } from '../../roles/lib/mysql-dialect.ts';
import type { NodeProof, RequestRecord } from './types.ts';

export interface WriteAccounting {
  planned: number;
  acknowledged: number;
  /** Acknowledged but not on every readable DB node after the GTID wait (row counts). */
  lost: number;
  /** The outcome is not known: 504 OUTCOME_UNKNOWN, or no answer (status 0). */
  unknown: number;
  /** Answered as not executed (safe to retry): every other error. */
  refused: number;
}

export interface FailoverSeen {
  from: string;
  to: string;
  /** From the last write acknowledged by `from` to the first acknowledged by `to`. */
  seconds: number;
}

export function accountWrites(planned: number, writes: RequestRecord[], nodes: NodeProof[] | null): WriteAccounting {
  const acknowledged = writes.filter((r) => r.ok).length;
  const unknown = writes.filter((r) => !r.ok && (r.status === 0 || r.status === 504 || r.error?.startsWith('OUTCOME_UNKNOWN'))).length;
  // rows that arrived on each node that can be read (a node still down is not counted as losing them)
  const arrived = (nodes ?? []).filter((n) => n.before !== null && n.after !== null).map((n) => n.after! - n.before!);
  const lost = arrived.length ? Math.max(0, acknowledged - Math.min(...arrived)) : 0;
  return { planned, acknowledged, lost, unknown, refused: writes.length - acknowledged - unknown };
}

/** The last_name of this run's rows: the configured one and the run id (b + 14 digits), so the run's rows can be told from all others. */
export function benchLastName(lastName: string, runId: string): string {
  return `${lastName}-${runId}`;
}

/**
 * After the proof: remove this run's rows (and only them) on the primary, then
 * give the id space back. sakila.actor.actor_id is SMALLINT UNSIGNED
 * AUTO_INCREMENT (65535 ids): without the reset, about 65 default runs would use
 * it up even though their rows are gone. AUTO_INCREMENT = MAX(actor_id) + 1 (what
 * the table holds, not a remembered value: rows added meanwhile keep their ids).
 * Both statements reach the replicas through the binlog. Prints the rows
 * removed, then the next id.
 */
export function cleanupSql(schema: string, firstName: string, lastName: string): string {
  const t = `${sqlIdent(schema)}.actor`;
  return [
    `DELETE FROM ${t} WHERE first_name = ${sqlString(firstName)} AND last_name = ${sqlString(lastName)}`,
    'SELECT ROW_COUNT()',
    `SET @next = (SELECT COALESCE(MAX(actor_id), 0) + 1 FROM ${t})`,
    `SET @stmt = CONCAT('ALTER TABLE ${t.replace(/'/g, "''")} AUTO_INCREMENT = ', @next)`,
    'PREPARE s FROM @stmt',
    'EXECUTE s',
    'DEALLOCATE PREPARE s',
    'SELECT @next',
  ].map((x) => `${x};`).join('\n') + '\n';
}

/** The primary changed during the writes: the node acknowledging them changed for good. */
export function failoverSeen(writes: RequestRecord[]): FailoverSeen | null {
  const acked = writes.filter((r) => r.ok && r.node).sort((a, b) => a.startMs - b.startMs);
  if (acked.length < 2) return null;
  const first = acked[0].node!;
  const last = acked[acked.length - 1].node!;
  if (first === last) return null;
  const lastOld = [...acked].reverse().find((r) => r.node === first)!;
  const firstNew = acked.find((r) => r.node === last && r.startMs >= lastOld.startMs) ?? acked.find((r) => r.node === last)!;
  return { from: first, to: last, seconds: Math.round((firstNew.startMs + firstNew.latencyMs - (lastOld.startMs + lastOld.latencyMs)) / 100) / 10 };
}
