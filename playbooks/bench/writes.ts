// Every write accounted for (pure, unit-tested): acknowledged (200), refused
// (503 DB_UNAVAILABLE and other answers that say nothing ran), unknown (504
// OUTCOME_UNKNOWN, or no answer at all), lost (acknowledged but missing on a
// DB node after the GTID wait), and the failover the writes saw.
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
