// Which node serves a statement. Writes: the manager. Reads: `direct` the
// manager, `random` a uniformly random usable worker, `customized` the usable
// worker with the lowest measured latency; the manager when no worker is usable.

import type { ProxyMode } from '../contract.ts';
import type { QueryType } from '../sql/classifier.ts';
import type { DbNode, NodeState } from './nodes.ts';

export class Router {
  constructor(
    readonly manager: DbNode,
    readonly workers: DbNode[],
    /** Workers lagging more get no reads (the one place it is held at run time). */
    readonly maxLagSeconds: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The node for this statement, skipping `exclude` (a node that just failed); null if none is left. */
  pick(type: QueryType, mode: ProxyMode, exclude?: DbNode): DbNode | null {
    const manager = exclude === this.manager ? null : this.manager;
    if (type === 'write' || mode === 'direct') return manager;
    const usable = this.workers.filter((w) => w !== exclude && w.usable(this.maxLagSeconds));
    if (usable.length === 0) return manager;
    if (mode === 'random') return usable[Math.floor(this.random() * usable.length)];
    let best = usable[0];
    for (const w of usable) if ((w.latencyMs ?? Infinity) < (best.latencyMs ?? Infinity)) best = w;
    return best;
  }

  /** Every node's state as /health reports it, manager first. */
  states(): NodeState[] {
    return [this.manager, ...this.workers].map((n) => n.state(this.maxLagSeconds));
  }
}
