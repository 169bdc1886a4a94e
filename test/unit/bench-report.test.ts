// Report generation: report.md and report.html written, the html
// self-contained (no external URL or resource), figures and incidents shown.
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderHtml, renderMarkdown, sysbenchTotals, writeReports } from '../../playbooks/bench/report.ts';
import { judgeProof } from '../../playbooks/bench/replication.ts';
import { checkDistribution, phaseStats } from '../../playbooks/bench/stats.ts';
import type { BenchSummary, Phase, RequestRecord, SysbenchResult } from '../../playbooks/bench/types.ts';

const dir = mkdtempSync(join(tmpdir(), 'bench-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function records(phase: Phase, n: number, nodes: string[]): RequestRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `x-${phase}-${i}`, phase, startMs: i, latencyMs: 1 + ((i * 7) % 13) / 3, status: 200, node: nodes[i % nodes.length], ok: true,
  }));
}

function summary(): BenchSummary {
  const phases = [
    phaseStats('write', records('write', 50, ['manager']), 40),
    phaseStats('direct', records('direct', 50, ['manager']), 30),
    phaseStats('random', records('random', 50, ['worker1', 'worker2']), 30),
    phaseStats('customized', [...records('customized', 49, ['worker2']), { id: 'x-c-err', phase: 'customized', startMs: 1, latencyMs: 3, status: 503, node: null, ok: false, error: 'DB_UNAVAILABLE: no database node' }], 30),
  ];
  const sb = (setup: SysbenchResult['setup'], test: SysbenchResult['test'], node: string, tps: number): SysbenchResult =>
    ({ setup, test, node, ok: true, tps, qps: tps * 20, latencyAvgMs: 4, latencyP95Ms: 6, errors: 0 });
  return {
    cluster: 'rp<test>', startedAt: '2026-11-21T12:00:00.000Z', wallMs: 12345, target: '10.82.0.10:80', concurrency: 16,
    writes: { planned: 50, acknowledged: 50, lost: 0, unknown: 0, refused: 0 }, failover: null, cleanup: null, reads: 50, modes: ['direct', 'random', 'customized'], phases,
    distribution: checkDistribution(phases, { manager: 'manager', workers: ['worker1', 'worker2'] }),
    logs: [{ hop: 'gatekeeper (gatekeeper)', found: 200, missing: [], duplicates: [], statusMismatch: [], nodeMismatch: [], byNode: {}, durationP50: 1.25, durationP99: 7.5 }],
    replication: judgeProof({ expected: 50, gtid: '0-1-250', nodes: ['manager', 'worker1', 'worker2'].map((n) => ({ node: n, before: 200, after: 250, dumpSha256: 'ab'.repeat(32), caughtUp: true })) }),
    sysbench: [sb('standalone', 'oltp_read_write', 'manager', 400), sb('standalone', 'oltp_read_only', 'manager', 900), sb('standalone', 'oltp_read_only', 'worker1', 950),
      sb('cluster-mixed', 'oltp_read_write', 'manager', 250), sb('cluster-mixed', 'oltp_read_only', 'worker1', 300), sb('cluster-mixed', 'oltp_read_only', 'worker2', 310),
      { ...sb('cluster-read-only', 'oltp_read_only', 'worker2', 0), ok: false, error: 'FATAL: cannot connect' }],
    incidents: ['customized: 1 of 50 requests failed (DB_UNAVAILABLE x1)', 'worker1: its database server is not answering <checked after the load>'],
    timings: { load: 130, proof: 800, collect: 400 }, ok: false, dir,
  };
}

describe('report', () => {
  test('writes report.md and report.html with the figures of the run', () => {
    const s = summary();
    const files = writeReports(dir, s);
    expect(statSync(files.md).size).toBeGreaterThan(500);
    expect(statSync(files.html).size).toBeGreaterThan(2000);
    const md = readFileSync(files.md, 'utf8');
    for (const p of s.phases) {
      expect(md).toContain(`| ${p.phase} | ${p.type} | ${p.count} | ${p.errors} |`);
      expect(md).toContain(p.p99.toFixed(2));
    }
    expect(md).toContain('Result: **FAILED**');
    expect(md).toContain('worker1 25, worker2 25');
    expect(md).toContain('DB_UNAVAILABLE x1');
    expect(md).toContain('## What happened');
    expect(md).toContain('read-only replicas');
    expect(md).toContain('failed: FATAL: cannot connect');
    expect(md).toContain('| gatekeeper (gatekeeper) | 200 | 0 | 0 | 0 | 0 | 1.25 | 7.50 |');
  });

  test('the html is self-contained: no external URL, script, stylesheet link or image', () => {
    const html = renderHtml(summary());
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|url\(|src=/i);
    expect(html).toContain('<style>');
    // charts: 4 latency histograms + requests per node + sysbench per node + totals
    expect((html.match(/<svg /g) ?? []).length).toBe(7);
    expect(html).toContain('latency histogram random');
  });

  test('text from the run is escaped in the html', () => {
    const html = renderHtml(summary());
    expect(html).toContain('rp&lt;test&gt;');
    expect(html).toContain('&lt;checked after the load&gt;');
    expect(html).not.toContain('rp<test>');
  });

  test('sysbench totals: cluster runs summed, standalone = best node, failed runs left out', () => {
    const t = Object.fromEntries(sysbenchTotals(summary().sysbench).map((x) => [`${x.setup} ${x.test}`, x]));
    expect(t['cluster-mixed oltp_read_only'].tps).toBe(610);
    expect(t['cluster-mixed oltp_read_write'].tps).toBe(250);
    expect(t['standalone oltp_read_only'].tps).toBe(950);
    expect(t['cluster-read-only oltp_read_only']).toBeUndefined();
  });

  test('an ok run says OK and has no incident section', () => {
    const md = renderMarkdown({ ...summary(), ok: true, incidents: [] });
    expect(md).toContain('Result: **OK**');
    expect(md).not.toContain('## What happened');
  });
});
