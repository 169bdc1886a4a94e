// Statistics of a phase: latency percentiles (nearest rank), throughput,
// requests per node, and the per-mode node-distribution checks.
import type { DistributionCheck, LatencyStats, Phase, PhaseStats, RequestRecord } from './types.ts';

/** Nearest-rank percentile of an ascending array (p in 0..100); 0 for an empty one. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  if (p <= 0) return sorted[0];
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(rank, sorted.length) - 1];
}

const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** Latency statistics over the successful requests; count/errors over all; throughput over `wallMs`. */
export function latencyStats(records: readonly RequestRecord[], wallMs: number): LatencyStats {
  const lat = records.filter((r) => r.ok).map((r) => r.latencyMs).sort((a, b) => a - b);
  const ok = lat.length;
  const sum = lat.reduce((a, b) => a + b, 0);
  return {
    count: records.length,
    ok,
    errors: records.length - ok,
    throughput: wallMs > 0 ? round((records.length * 1000) / wallMs, 1) : 0,
    wallMs: round(wallMs),
    avg: ok ? round(sum / ok, 3) : 0,
    min: ok ? round(lat[0], 3) : 0,
    p50: round(percentile(lat, 50), 3),
    p95: round(percentile(lat, 95), 3),
    p99: round(percentile(lat, 99), 3),
    max: ok ? round(lat[ok - 1], 3) : 0,
  };
}

/** Histogram with `buckets` equal buckets from 0 to the p99 (later ones land in the last bucket). */
export function histogram(latencies: readonly number[], buckets = 30): { bucketMs: number; counts: number[] } {
  const counts = new Array<number>(buckets).fill(0);
  if (latencies.length === 0) return { bucketMs: 1, counts };
  const sorted = [...latencies].sort((a, b) => a - b);
  const top = Math.max(percentile(sorted, 99), 0.001);
  const bucketMs = top / buckets;
  for (const l of latencies) counts[Math.min(buckets - 1, Math.floor(l / bucketMs))]++;
  return { bucketMs: round(bucketMs, 4), counts };
}

export function phaseStats(phase: Phase, records: readonly RequestRecord[], wallMs: number): PhaseStats {
  const byNode: Record<string, number> = {};
  const errorsByCode: Record<string, number> = {};
  const nodeSpan: Record<string, { first: number; last: number }> = {};
  for (const r of records) {
    if (r.ok && r.node) {
      byNode[r.node] = (byNode[r.node] ?? 0) + 1;
      const end = round(r.startMs + r.latencyMs);
      const span = nodeSpan[r.node];
      if (!span) nodeSpan[r.node] = { first: round(r.startMs), last: end };
      else {
        span.first = Math.min(span.first, round(r.startMs));
        span.last = Math.max(span.last, end);
      }
    } else if (!r.ok) {
      const code = (r.error ?? 'ERROR').split(':')[0];
      errorsByCode[code] = (errorsByCode[code] ?? 0) + 1;
    }
  }
  return {
    phase,
    type: phase === 'write' ? 'write' : 'read',
    ...latencyStats(records, wallMs),
    byNode,
    errorsByCode,
    histogram: histogram(records.filter((r) => r.ok).map((r) => r.latencyMs)),
    nodeSpan,
  };
}

export interface Topology {
  manager: string;
  workers: string[];
}

/**
 * Is each phase served by the right nodes? writes and `direct`: the manager
 * only; `random`: workers only, every worker used; `customized`: workers only.
 * `down` lists workers known to be unavailable: they may be unused, and the
 * manager may take reads only when every worker is down.
 */
export function checkDistribution(stats: readonly PhaseStats[], topo: Topology, down: readonly string[] = []): DistributionCheck[] {
  const out: DistributionCheck[] = [];
  const up = topo.workers.filter((w) => !down.includes(w));
  for (const s of stats) {
    const nodes = Object.keys(s.byNode);
    const list = nodes.map((n) => `${n}=${s.byNode[n]}`).join(', ') || 'none';
    if (s.ok === 0) {
      out.push({ phase: s.phase, ok: false, message: `${s.phase}: no successful request` });
      continue;
    }
    if (s.phase === 'write' || s.phase === 'direct') {
      const ok = nodes.length === 1 && nodes[0] === topo.manager;
      out.push({ phase: s.phase, ok, message: `${s.phase}: ${ok ? `only ${topo.manager}` : `expected only ${topo.manager}, got ${list}`}` });
      continue;
    }
    const strangers = nodes.filter((n) => !topo.workers.includes(n));
    const managerFallback = strangers.length === 1 && strangers[0] === topo.manager && up.length === 0;
    if (strangers.length && !managerFallback) {
      out.push({ phase: s.phase, ok: false, message: `${s.phase}: expected workers only, got ${list}` });
      continue;
    }
    if (s.phase === 'random') {
      const unused = up.filter((w) => !s.byNode[w]);
      const ok = unused.length === 0;
      out.push({ phase: s.phase, ok, message: `${s.phase}: ${ok ? `workers only, all used (${list})` : `worker(s) ${unused.join(', ')} never used (${list})`}` });
      continue;
    }
    out.push({ phase: s.phase, ok: true, message: `${s.phase}: workers only (${list})${managerFallback ? ' (manager fallback: no worker up)' : ''}` });
  }
  return out;
}

/**
 * Nodes that stopped serving part-way through a read phase: a node whose
 * last request ended well before the phase did while another node kept going.
 */
export function stoppedServing(s: PhaseStats, minGapMs = 250): string[] {
  const spans = Object.entries(s.nodeSpan);
  if (spans.length < 2) return [];
  const end = Math.max(...spans.map(([, sp]) => sp.last));
  return spans
    .filter(([, sp]) => end - sp.last > Math.max(minGapMs, s.wallMs * 0.1))
    .map(([node, sp]) => `${s.phase}: ${node} served ${s.byNode[node]} request(s), none after ${(sp.last / 1000).toFixed(2)} s of ${(s.wallMs / 1000).toFixed(2)} s; the others took over`);
}
