// Which node serves a statement. Writes: the manager. Reads: `direct` the
// manager, `random` a uniformly random usable worker, `customized` the usable
// worker with the lowest measured latency; the manager when no worker is usable
// (or, while the manager is down, the freshest worker that answers).

import type { ProxyMode } from '../contract.ts';
import type { QueryType } from '../sql/classifier.ts';
import type { DbNode, NodeState } from './nodes.ts';

export class Router {
  /** Primaries replaced by a failover: reported, never routed to. */
  readonly fenced: DbNode[] = [];

  constructor(
    /** The live primary (cluster.yaml's manager until a failover). */
    public manager: DbNode,
    public workers: DbNode[],
    /** Workers lagging more get no reads (the one place it is held at run time). */
    readonly maxLagSeconds: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The node for this statement, skipping `exclude` (a node that just failed); null if none is left. */
  pick(type: QueryType, mode: ProxyMode, exclude?: DbNode): DbNode | null {
    const manager = exclude === this.manager ? null : this.manager;
    if (type === 'write' || mode === 'direct') return manager;
    const usable = this.workers.filter((w) => w !== exclude && w.usable(this.maxLagSeconds));
    if (usable.length === 0) return manager?.healthy !== false ? manager : (this.leastStale(exclude) ?? manager);
    if (mode === 'random') return usable[Math.floor(this.random() * usable.length)];
    let best = usable[0];
    for (const w of usable) if ((w.latencyMs ?? Infinity) < (best.latencyMs ?? Infinity)) best = w;
    return best;
  }

  /**
   * The primary is down (a failover pending) and no worker is within maxLag: a
   * read is better answered by the freshest reachable worker than not at all
   * (its data is as old as the outage). Null when no worker answers.
   */
  private leastStale(exclude?: DbNode): DbNode | null {
    const alive = this.workers.filter((w) => w !== exclude && w.healthy && w.role === 'worker');
    alive.sort((a, b) => (b.caughtUpAt ?? 0) - (a.caughtUpAt ?? 0) || a.name.localeCompare(b.name));
    return alive[0] ?? null;
  }

  /** Every node's state as /health reports it, the primary first, fenced ones last. */
  states(): NodeState[] {
    return [this.manager, ...this.workers, ...this.fenced].map((n) => n.state(this.maxLagSeconds));
  }

  /** After a failover: `winner` takes every write, `old` gets nothing from now on. */
  promote(winner: DbNode, old: DbNode): void {
    this.workers = this.workers.filter((w) => w !== winner && w !== old);
    old.role = 'fenced';
    winner.role = 'manager';
    winner.watchSemiSync = old.watchSemiSync;
    this.fenced.push(old);
    this.manager = winner;
  }
}
