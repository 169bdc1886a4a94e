// Statistics of the bench: nearest-rank percentiles on known samples,
// throughput, per-node counts, histogram, distribution checks per mode.
import { describe, expect, test } from 'bun:test';
import { checkDistribution, histogram, latencyStats, percentile, phaseStats, stoppedServing } from '../../playbooks/bench/stats.ts';
import type { Phase, RequestRecord } from '../../playbooks/bench/types.ts';

const rec = (phase: Phase, i: number, latencyMs: number, node: string | null, ok = true, startMs = i): RequestRecord => ({
  id: `t-${phase}-${i}`, phase, startMs, latencyMs, status: ok ? 200 : 503, node, ok, ...(ok ? {} : { error: 'DB_UNAVAILABLE: down' }),
});

describe('percentile (nearest rank)', () => {
  const oneToHundred = Array.from({ length: 100 }, (_, i) => i + 1);
  test('1..100: p50=50, p95=95, p99=99, p100=100', () => {
    expect(percentile(oneToHundred, 50)).toBe(50);
    expect(percentile(oneToHundred, 95)).toBe(95);
    expect(percentile(oneToHundred, 99)).toBe(99);
    expect(percentile(oneToHundred, 100)).toBe(100);
    expect(percentile(oneToHundred, 0)).toBe(1);
  });
  test('small samples: rank rounds up', () => {
    expect(percentile([10, 20, 30, 40], 50)).toBe(20);
    expect(percentile([10, 20, 30, 40], 51)).toBe(30);
    expect(percentile([10, 20, 30, 40], 99)).toBe(40);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBe(0);
  });
});

describe('latencyStats', () => {
  test('latency over successes only, errors counted, throughput over wall time', () => {
    const rs = [rec('direct', 0, 1, 'manager'), rec('direct', 1, 2, 'manager'), rec('direct', 2, 3, 'manager'), rec('direct', 3, 4, 'manager'), rec('direct', 4, 100, null, false)];
    const s = latencyStats(rs, 500);
    expect(s.count).toBe(5);
    expect(s.ok).toBe(4);
    expect(s.errors).toBe(1);
    expect(s.throughput).toBe(10); // 5 requests in 0.5 s
    expect(s.avg).toBe(2.5);
    expect(s.min).toBe(1);
    expect(s.max).toBe(4); // the failed 100 ms request is not a latency sample
    expect(s.p50).toBe(2);
    expect(s.p99).toBe(4);
  });
  test('no request: zeros, no NaN', () => {
    const s = latencyStats([], 0);
    expect(Object.values(s).every((v) => v === 0)).toBe(true);
  });
});

test('histogram: buckets up to p99, the tail in the last bucket, every sample counted', () => {
  const lat = [...Array.from({ length: 99 }, (_, i) => (i % 10) + 0.5), 1000];
  const h = histogram(lat, 10);
  expect(h.counts.reduce((a, b) => a + b, 0)).toBe(100);
  expect(h.counts.length).toBe(10);
  expect(h.counts[9]).toBeGreaterThanOrEqual(1); // the 1000 ms outlier
  expect(h.bucketMs).toBeCloseTo(percentile([...lat].sort((a, b) => a - b), 99) / 10, 3);
});

describe('phaseStats', () => {
  test('requests per node from successful responses; errors by code; node spans', () => {
    const rs = [rec('random', 0, 2, 'worker1', true, 0), rec('random', 1, 2, 'worker2', true, 10), rec('random', 2, 2, 'worker2', true, 20), rec('random', 3, 2, null, false, 30)];
    const p = phaseStats('random', rs, 100);
    expect(p.byNode).toEqual({ worker1: 1, worker2: 2 });
    expect(p.errorsByCode).toEqual({ DB_UNAVAILABLE: 1 });
    expect(p.type).toBe('read');
    expect(p.nodeSpan.worker2).toEqual({ first: 10, last: 22 });
    expect(phaseStats('write', [rec('write', 0, 1, 'manager')], 10).type).toBe('write');
  });
});

describe('checkDistribution', () => {
  const topo = { manager: 'manager', workers: ['worker1', 'worker2'] };
  const phase = (p: Phase, nodes: Record<string, number>) =>
    phaseStats(p, Object.entries(nodes).flatMap(([n, c]) => Array.from({ length: c }, (_, i) => rec(p, i, 1, n))), 10);

  test('a right run passes every check', () => {
    const checks = checkDistribution([phase('write', { manager: 5 }), phase('direct', { manager: 5 }), phase('random', { worker1: 3, worker2: 2 }), phase('customized', { worker2: 5 })], topo);
    expect(checks.map((c) => c.ok)).toEqual([true, true, true, true]);
  });
  test('direct served by a worker, random by the manager, random using one worker only: wrong', () => {
    const checks = checkDistribution([phase('direct', { manager: 4, worker1: 1 }), phase('random', { manager: 1, worker1: 4 }), phase('customized', { worker1: 1, manager: 1 })], topo);
    expect(checks.map((c) => c.ok)).toEqual([false, false, false]);
    expect(checks[0].message).toContain('worker1=1');
    const oneWorker = checkDistribution([phase('random', { worker1: 5 })], topo)[0];
    expect(oneWorker.ok).toBe(false);
    expect(oneWorker.message).toContain('worker2 never used');
  });
  test('a worker known down may stay unused; manager fallback only when no worker is up', () => {
    expect(checkDistribution([phase('random', { worker1: 5 })], topo, ['worker2'])[0].ok).toBe(true);
    expect(checkDistribution([phase('customized', { manager: 5 })], topo, ['worker2'])[0].ok).toBe(false);
    expect(checkDistribution([phase('customized', { manager: 5 })], topo, ['worker1', 'worker2'])[0].ok).toBe(true);
  });
  test('a phase with no success fails', () => {
    expect(checkDistribution([phaseStats('random', [rec('random', 0, 1, null, false)], 10)], topo)[0].ok).toBe(false);
  });
});

test('stoppedServing: a node whose requests stop early is named, an even spread is not', () => {
  const rs: RequestRecord[] = [];
  for (let i = 0; i < 100; i++) rs.push(rec('random', i, 1, i < 40 ? (i % 2 ? 'worker1' : 'worker2') : 'worker2', true, i * 20));
  const p = phaseStats('random', rs, 2000);
  const lines = stoppedServing(p);
  expect(lines.length).toBe(1);
  expect(lines[0]).toContain('worker1');
  const even = phaseStats('random', Array.from({ length: 100 }, (_, i) => rec('random', i, 1, i % 2 ? 'worker1' : 'worker2', true, i * 20)), 2000);
  expect(stoppedServing(even)).toEqual([]);
});
