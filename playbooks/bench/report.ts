// The report of a run: report.md and a self-contained report.html (inline
// CSS and SVG charts, no external resource, readable offline).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchSummary, PhaseStats, SysbenchResult } from './types.ts';

const fmt = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');

function table(head: string[], rows: (string | number)[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function phaseRows(s: BenchSummary): (string | number)[][] {
  return s.phases.map((p) => [
    p.phase, p.type, p.count, p.errors, fmt(p.throughput, 1), fmt(p.avg), fmt(p.p50), fmt(p.p95), fmt(p.p99), fmt(p.max),
    Object.entries(p.byNode).map(([n, c]) => `${n} ${c}`).join(', ') || '-',
  ]);
}
const PHASE_HEAD = ['phase', 'type', 'requests', 'errors', 'req/s', 'avg ms', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'served by'];

function sysbenchRows(results: readonly SysbenchResult[]): (string | number)[][] {
  return results.map((r) => [
    r.setup, r.test, r.node, r.ok ? fmt(r.tps) : `failed: ${r.error ?? ''}`, r.ok ? fmt(r.qps) : '-', r.ok ? fmt(r.latencyAvgMs) : '-', r.ok ? fmt(r.latencyP95Ms) : '-',
  ]);
}
const LOG_HEAD = ['hop (node)', 'logged', 'missing', 'twice', 'other status', 'other node', 'time at hop p50 ms', 'p99 ms'];
function logRows(s: BenchSummary): (string | number)[][] {
  return s.logs.map((h) => [h.hop, h.found, h.missing.length, h.duplicates.length, h.statusMismatch.length, h.nodeMismatch.length, fmt(h.durationP50), fmt(h.durationP99)]);
}

const SYSBENCH_HEAD = ['setup', 'test', 'node', 'tps', 'qps', 'avg ms', 'p95 ms'];

/**
 * Totals per setup and test: the sum of the nodes' tps for the cluster runs
 * (they ran at the same time); standalone runs are one node each, so the
 * standalone total is the best single node.
 */
export function sysbenchTotals(results: readonly SysbenchResult[]): { setup: string; test: string; tps: number; nodes: number }[] {
  const out = new Map<string, { setup: string; test: string; tps: number; nodes: number }>();
  for (const r of results) {
    if (!r.ok) continue;
    const key = `${r.setup} ${r.test}`;
    const cur = out.get(key) ?? { setup: r.setup, test: r.test, tps: 0, nodes: 0 };
    cur.tps = r.setup === 'standalone' ? Math.max(cur.tps, r.tps) : cur.tps + r.tps;
    cur.nodes += 1;
    out.set(key, cur);
  }
  return [...out.values()];
}

export const SYSBENCH_NOTE =
  'standalone: each DB node alone, one run after the other; oltp_read_write only on the manager (the workers are read-only replicas: writes there are refused). ' +
  'cluster-mixed: oltp_read_write on the manager while oltp_read_only runs on every worker (writes to the manager, reads spread over the workers). ' +
  'cluster-read-only: oltp_read_only on every DB node at once. Cluster totals are the sum of the nodes that ran at the same time; the standalone total is the best single node. ' +
  'On the local provider all nodes share the same CPU cores, so the cluster cannot add capacity there.';

/** acknowledged / lost / unknown / refused, and the failover the writes saw. */
export function writeLine(s: BenchSummary): string {
  const w = s.writes;
  const f = s.failover ? `; failover ${s.failover.from} -> ${s.failover.to} in ${fmt(s.failover.seconds, 1)} s` : '; no failover';
  return `${w.acknowledged} acknowledged, ${w.lost} lost, ${w.unknown} unknown outcome, ${w.refused} refused (not executed)${f}`;
}

export function renderMarkdown(s: BenchSummary): string {
  const out: string[] = [];
  out.push(`# rampart bench: ${s.cluster}`, '');
  out.push(`${s.ok ? 'Result: **OK**' : 'Result: **FAILED** (see below)'} - started ${s.startedAt}, ${fmt(s.wallMs / 1000, 1)} s in all.`, '');
  out.push(`Load: ${s.writes.planned} writes, then ${s.reads} reads per mode (${s.modes.join(', ')}), concurrency ${s.concurrency}${s.rate ? `, capped at ${s.rate} req/s` : ''}, through the gatekeeper at ${s.target}.`, '');
  out.push(`Writes: ${writeLine(s)}.`, '');
  if (s.incidents.length) {
    out.push('## What happened', '', ...s.incidents.map((i) => `- ${i}`), '');
  }
  out.push('## Requests', '', table(PHASE_HEAD, phaseRows(s)), '');
  const errs = s.phases.filter((p) => p.errors > 0);
  if (errs.length) out.push('Errors: ' + errs.map((p) => `${p.phase}: ${Object.entries(p.errorsByCode).map(([c, n]) => `${c} x${n}`).join(', ')}`).join('; '), '');
  out.push('## Node distribution', '', ...s.distribution.map((d) => `- ${d.ok ? 'ok' : 'WRONG'}: ${d.message}`), '');
  out.push('## Service logs', '');
  out.push(table(LOG_HEAD, logRows(s)), '', 'time at hop: the duration each service logged (its own work plus everything below it).', '');
  out.push('## Replication proof', '');
  if (!s.replication) out.push('not run', '');
  else {
    const r = s.replication;
    out.push(`${r.ok ? 'OK' : 'FAILED'}: expected ${r.expectedNewRows} new actor rows on every DB node; manager GTID position \`${r.gtid || '-'}\`.`, '');
    out.push(table(['node', 'caught up', 'rows before', 'rows after', 'new', 'dump sha256'], r.nodes.map((n) => [
      n.node, n.caughtUp ? 'yes' : 'no', n.before ?? '-', n.after ?? '-', n.before !== null && n.after !== null ? n.after - n.before : '-',
      n.dumpSha256 ? `\`${n.dumpSha256.slice(0, 16)}\`` : `- ${n.error ?? ''}`,
    ])), '');
    out.push(`Dumps byte-identical: ${r.identicalDumps ? 'yes' : 'no'}`, '');
    if (r.messages.length) out.push(...r.messages.map((m) => `- ${m}`), '');
  }
  out.push('## sysbench: standalone vs cluster', '');
  if (!s.sysbench.length) out.push('not run', '');
  else {
    out.push(table(SYSBENCH_HEAD, sysbenchRows(s.sysbench)), '');
    out.push(table(['setup', 'test', 'nodes', 'total tps (cluster: sum; standalone: best node)'], sysbenchTotals(s.sysbench).map((t) => [t.setup, t.test, t.nodes, fmt(t.tps)])), '');
    out.push(SYSBENCH_NOTE, '');
  }
  out.push('## Timings', '', ...Object.entries(s.timings).map(([k, v]) => `- ${k}: ${fmt(v / 1000, 2)} s`), '');
  out.push('Files: `summary.json`, `cluster.yaml`, `logs/<node>-<service>.log`, `dumps/<node>-actor.sql`, `sysbench/*.txt`.', '');
  return out.join('\n');
}

// ------------------------------------------------------------------ html

const esc = (v: string | number): string => String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const COLORS = ['#3b6fb6', '#d9822b', '#3a9a5b', '#b5443b', '#7b5ea7', '#8c6d3f', '#c05f9a', '#6b6b6b'];

/** Latency histogram of one phase (bars), x in ms up to its p99. */
export function histogramSvg(p: PhaseStats, color: string, w = 320, h = 140): string {
  const pad = { l: 36, r: 8, t: 18, b: 26 };
  const counts = p.histogram.counts;
  const max = Math.max(1, ...counts);
  const bw = (w - pad.l - pad.r) / Math.max(1, counts.length);
  const bars = counts.map((c, i) => {
    const bh = ((h - pad.t - pad.b) * c) / max;
    return `<rect x="${fmt(pad.l + i * bw, 1)}" y="${fmt(h - pad.b - bh, 1)}" width="${fmt(Math.max(1, bw - 1), 1)}" height="${fmt(bh, 1)}" fill="${color}"><title>${fmt(i * p.histogram.bucketMs)}-${fmt((i + 1) * p.histogram.bucketMs)} ms: ${c}</title></rect>`;
  });
  const top = p.histogram.bucketMs * counts.length;
  return `<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="latency histogram ${esc(p.phase)}">
<text x="${pad.l}" y="12" class="t">${esc(p.phase)}: p50 ${fmt(p.p50)} / p95 ${fmt(p.p95)} / p99 ${fmt(p.p99)} ms</text>
${bars.join('')}
<line x1="${pad.l}" y1="${h - pad.b}" x2="${w - pad.r}" y2="${h - pad.b}" class="ax"/>
<text x="${pad.l}" y="${h - 8}" class="l">0</text><text x="${w - pad.r}" y="${h - 8}" class="l" text-anchor="end">${fmt(top)} ms</text>
<text x="${pad.l - 4}" y="${pad.t + 8}" class="l" text-anchor="end">${max}</text></svg>`;
}

/** Horizontal bars: one per label, value printed at the end. */
export function barsSvg(items: { label: string; value: number; color: string }[], unit: string, w = 640): string {
  const rowH = 22;
  const labelW = 220;
  const h = items.length * rowH + 10;
  const max = Math.max(1e-9, ...items.map((i) => i.value));
  const rows = items.map((it, k) => {
    const y = 5 + k * rowH;
    const bw = ((w - labelW - 90) * it.value) / max;
    return `<text x="${labelW - 6}" y="${y + 15}" class="l" text-anchor="end">${esc(it.label)}</text><rect x="${labelW}" y="${y + 3}" width="${fmt(Math.max(0.5, bw), 1)}" height="${rowH - 6}" fill="${it.color}"/><text x="${fmt(labelW + bw + 6, 1)}" y="${y + 15}" class="l">${esc(fmt(it.value, it.value >= 100 ? 0 : 1))} ${esc(unit)}</text>`;
  });
  return `<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img">${rows.join('')}</svg>`;
}

function htmlTable(head: string[], rows: (string | number)[][]): string {
  return `<table><thead><tr>${head.map((c) => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

export function renderHtml(s: BenchSummary): string {
  const nodes = [...new Set(s.phases.flatMap((p) => Object.keys(p.byNode)))].sort();
  const colorOf = (n: string) => COLORS[Math.max(0, nodes.indexOf(n)) % COLORS.length];
  const perNode = s.phases.flatMap((p) => Object.entries(p.byNode).map(([n, c]) => ({ label: `${p.phase} - ${n}`, value: c, color: colorOf(n) })));
  const sys = s.sysbench.filter((r) => r.ok).map((r, i) => ({ label: `${r.setup} ${r.test.replace('oltp_', '')} ${r.node}`, value: r.tps, color: r.setup === 'standalone' ? COLORS[0] : r.setup === 'cluster-mixed' ? COLORS[1] : COLORS[2] }));
  const totals = sysbenchTotals(s.sysbench).map((t) => ({ label: `${t.setup} ${t.test.replace('oltp_', '')} (${t.nodes})`, value: t.tps, color: t.setup === 'standalone' ? COLORS[0] : t.setup === 'cluster-mixed' ? COLORS[1] : COLORS[2] }));
  const r = s.replication;
  const section = (title: string, body: string) => `<section><h2>${esc(title)}</h2>${body}</section>`;
  const list = (items: string[]) => `<ul>${items.map((i) => `<li>${esc(i)}</li>`).join('')}</ul>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>rampart bench ${esc(s.cluster)} ${esc(s.startedAt)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.ok{color:#2a7a3f;font-weight:600}.bad{color:#b5443b;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:1rem}svg .t{font-size:11px;font-weight:600}svg .l{font-size:11px;fill:#444}svg .ax{stroke:#888}
.note{color:#555;font-size:.9rem}code{background:#f4f4f4;padding:0 .2rem}
</style></head><body>
<h1>rampart bench: ${esc(s.cluster)}</h1>
<p class="${s.ok ? 'ok' : 'bad'}">${s.ok ? 'OK: every request succeeded and is accounted for, distribution and replication proof right' : 'FAILED: see below'}</p>
<p>Started ${esc(s.startedAt)}, ${esc(fmt(s.wallMs / 1000, 1))} s in all. ${esc(s.writes.planned)} writes, then ${esc(s.reads)} reads per mode (${esc(s.modes.join(', '))}), concurrency ${esc(s.concurrency)}${s.rate ? `, capped at ${esc(s.rate)} req/s` : ''}, through the gatekeeper at <code>${esc(s.target)}</code>.</p>
<p>Writes: ${esc(writeLine(s))}.</p>
${s.incidents.length ? section('What happened', list(s.incidents)) : ''}
${section('Requests', htmlTable(PHASE_HEAD, phaseRows(s)))}
${section('Latency distribution per mode', `<div class="charts">${s.phases.map((p, i) => histogramSvg(p, COLORS[i % COLORS.length])).join('')}</div>`)}
${section('Requests per node', barsSvg(perNode, 'req') + list(s.distribution.map((d) => `${d.ok ? 'ok' : 'WRONG'}: ${d.message}`)))}
${section('Service logs', htmlTable(LOG_HEAD, logRows(s)) + '<p class="note">time at hop: the duration each service logged (its own work plus everything below it).</p>')}
${section('Replication proof', !r ? '<p>not run</p>' : `<p class="${r.ok ? 'ok' : 'bad'}">${r.ok ? 'OK' : 'FAILED'}: expected ${esc(r.expectedNewRows)} new actor rows on every DB node; dumps byte-identical: ${r.identicalDumps ? 'yes' : 'no'}</p>` +
    htmlTable(['node', 'caught up', 'rows before', 'rows after', 'dump sha256'], r.nodes.map((n) => [n.node, n.caughtUp ? 'yes' : 'no', n.before ?? '-', n.after ?? '-', n.dumpSha256 ? n.dumpSha256.slice(0, 16) : `- ${n.error ?? ''}`])) +
    (r.messages.length ? list(r.messages) : ''))}
${section('sysbench: standalone vs cluster', !s.sysbench.length ? '<p>not run</p>' : htmlTable(SYSBENCH_HEAD, sysbenchRows(s.sysbench)) + barsSvg(sys, 'tps') + '<h3>Totals</h3>' + barsSvg(totals, 'tps') + `<p class="note">${esc(SYSBENCH_NOTE)}</p>`)}
${section('Timings', list(Object.entries(s.timings).map(([k, v]) => `${k}: ${fmt(v / 1000, 2)} s`)))}
</body></html>
`;
}

/** Write report.md and report.html into `dir`; returns their paths. */
export function writeReports(dir: string, s: BenchSummary): { md: string; html: string } {
  const md = join(dir, 'report.md');
  const html = join(dir, 'report.html');
  writeFileSync(md, renderMarkdown(s));
  writeFileSync(html, renderHtml(s));
  return { md, html };
}
