// The verdict of a run, from what was measured (pure): node distribution per
// mode, every request on every hop's log, requests per node cross-checked,
// and the list of what happened beyond the plan.
import type { ServiceLog } from './collect.ts';
import { accountHop, crossCheckNodes, describeHop, hopComplete, parseLogLines } from './logs.ts';
import { checkDistribution, stoppedServing } from './stats.ts';
import type { DistributionCheck, HopAccounting, PhaseStats, ReplicationProof, RequestRecord, SysbenchResult } from './types.ts';

export interface JudgeInput {
  phases: PhaseStats[];
  records: RequestRecord[];
  /** One per service the cluster runs; `error` set when it could not be collected. */
  logs: ServiceLog[];
  manager: string;
  workers: string[];
  /** DB nodes whose server did not answer after the load. */
  down: string[];
  proof: ReplicationProof | null;
  sysbench: SysbenchResult[];
  rateLimit: { requests: number; perSeconds: number };
}

export interface Verdict {
  distribution: DistributionCheck[];
  accounting: HopAccounting[];
  incidents: string[];
  ok: boolean;
}

export function judge(i: JudgeInput): Verdict {
  const incidents: string[] = [];
  for (const n of [...i.down].sort()) incidents.push(`${n}: its database server is not answering (checked after the load)`);
  for (const p of i.phases) {
    if (p.errors) incidents.push(`${p.phase}: ${p.errors} of ${p.count} requests failed (${Object.entries(p.errorsByCode).map(([c, k]) => `${c} x${k}`).join(', ')})`);
    if (p.errorsByCode.RATE_LIMITED) incidents.push(`${p.phase}: the gatekeeper's rate limit (${i.rateLimit.requests} per ${i.rateLimit.perSeconds} s per client) refused requests: lower --concurrency or use --rate`);
    // random spreads uniformly, so a worker going quiet means trouble; customized may switch on purpose
    if (p.phase === 'random') incidents.push(...stoppedServing(p));
    if (p.type === 'read' && p.phase !== 'direct') {
      const unused = i.workers.filter((w) => !p.byNode[w] && i.down.includes(w));
      if (unused.length) {
        const others = Object.entries(p.byNode).map(([n, c]) => `${n} ${c}`).join(', ') || 'nobody';
        incidents.push(`${p.phase}: ${unused.join(', ')} served no read (database down); served by ${others}; ${p.errors ? `${p.errors} read(s) failed` : 'every read succeeded'}`);
      }
    }
  }
  const distribution = checkDistribution(i.phases, { manager: i.manager, workers: i.workers }, i.down);
  for (const d of distribution) if (!d.ok) incidents.push(`distribution wrong: ${d.message}`);

  // Every request on every hop (the proxy's node checked too).
  const accounting: HopAccounting[] = [];
  const proxyByNode: Record<string, number> = {};
  for (const l of i.logs) {
    if (l.error) {
      incidents.push(`${l.node}: the ${l.service} log could not be collected (${l.error})`);
      continue;
    }
    const acc = accountHop(`${l.service} (${l.node})`, parseLogLines(l.text), i.records, l.service === 'proxy');
    accounting.push(acc);
    if (!hopComplete(acc)) incidents.push(`log ${describeHop(acc, i.records.length)}`);
    if (l.service === 'proxy') for (const [n, c] of Object.entries(acc.byNode)) proxyByNode[n] = (proxyByNode[n] ?? 0) + c;
  }
  if (i.logs.some((l) => l.service === 'proxy' && !l.error)) {
    const responseByNode: Record<string, number> = {};
    for (const r of i.records) if (r.ok && r.node) responseByNode[r.node] = (responseByNode[r.node] ?? 0) + 1;
    for (const m of crossCheckNodes(responseByNode, proxyByNode)) incidents.push(`requests per node differ: ${m}`);
  }
  if (i.proof && !i.proof.ok) incidents.push(...i.proof.messages.map((m) => `replication proof: ${m}`));

  const logsOk = i.logs.length > 0 && accounting.length === i.logs.length && accounting.every(hopComplete);
  const ok = i.records.every((r) => r.ok) && distribution.every((d) => d.ok) && logsOk && i.proof?.ok === true && i.sysbench.every((r) => r.ok);
  return { distribution, accounting, incidents, ok };
}
