// The verdict of a run: a clean run is ok with nothing to report; a worker
// down mid-read, a lost log line, a wrong route or a failed proof each make
// it not ok and are said in words.
import { describe, expect, test } from 'bun:test';
import type { ServiceLog } from '../../playbooks/bench/collect.ts';
import { judge, type JudgeInput } from '../../playbooks/bench/judge.ts';
import { judgeProof } from '../../playbooks/bench/replication.ts';
import { phaseStats } from '../../playbooks/bench/stats.ts';
import type { Phase, RequestRecord } from '../../playbooks/bench/types.ts';

const SERVICES = ['gatekeeper', 'trustedhost', 'proxy'] as const;

/** n requests over 1 s; `nodeAt(i)` says who served request i. */
function phase(p: Phase, n: number, nodeAt: (i: number) => string): RequestRecord[] {
  return Array.from({ length: n }, (_, i) => ({ id: `b1-${p[0]}-${i}`, phase: p, startMs: (i * 1000) / n, latencyMs: 2, status: 200, node: nodeAt(i), ok: true }));
}

/** The three services' logs as journald hands them over, one line per request, optionally dropping some. */
function logsFor(records: RequestRecord[], drop: (svc: string, r: RequestRecord) => boolean = () => false): ServiceLog[] {
  return SERVICES.map((svc) => ({
    node: svc, service: svc,
    text: records.filter((r) => !drop(svc, r)).map((r) => JSON.stringify({ request_id: r.id, hop: svc, node: r.node, status: r.status, duration_ms: 1 })).join('\n') + '\n',
  }));
}

const proofOk = judgeProof({ expected: 10, gtid: 'g', nodes: ['manager', 'worker1', 'worker2'].map((n) => ({ node: n, before: 1, after: 11, dumpSha256: 'aa', caughtUp: true })) });

function input(records: Record<Phase, RequestRecord[]>, over: Partial<JudgeInput> = {}): JudgeInput {
  const all = Object.values(records).flat();
  return {
    phases: (Object.keys(records) as Phase[]).map((p) => phaseStats(p, records[p], 1000)),
    records: all, logs: logsFor(all), manager: 'manager', workers: ['worker1', 'worker2'], down: [], proof: proofOk, sysbench: [],
    rateLimit: { requests: 2000, perSeconds: 1 }, ...over,
  };
}

const healthy = () => ({
  write: phase('write', 10, () => 'manager'),
  direct: phase('direct', 100, () => 'manager'),
  random: phase('random', 100, (i) => (i % 2 ? 'worker1' : 'worker2')),
  customized: phase('customized', 100, () => 'worker2'),
});

describe('judge', () => {
  test('a clean run: ok, every hop complete, nothing to report', () => {
    const v = judge(input(healthy()));
    expect(v.ok).toBe(true);
    expect(v.incidents).toEqual([]);
    expect(v.accounting.map((a) => a.found)).toEqual([310, 310, 310]);
  });

  test('worker1 down half-way through random: reads fine, the story is told, the proof fails', () => {
    const r = healthy();
    r.random = phase('random', 100, (i) => (i < 50 && i % 2 ? 'worker1' : 'worker2'));
    const proof = judgeProof({ expected: 10, gtid: 'g', nodes: [{ node: 'manager', before: 1, after: 11, dumpSha256: 'aa', caughtUp: true }, { node: 'worker1', before: 1, after: null, dumpSha256: null, caughtUp: false, error: 'worker1: ERROR 2002' }] });
    const v = judge(input(r, { down: ['worker1'], proof }));
    expect(v.ok).toBe(false);
    expect(v.distribution.every((d) => d.ok)).toBe(true); // a down worker may stay unused
    const said = v.incidents.join('\n');
    expect(said).toContain('worker1: its database server is not answering');
    expect(said).toMatch(/random: worker1 served 25 request\(s\), none after 0\.\d+ s of 1\.00 s/);
    expect(said).toContain('customized: worker1 served no read (database down); served by worker2 100; every read succeeded');
    expect(said).toContain('replication proof: worker1: ERROR 2002');
  });

  test('a request missing from the trusted host log: not ok, named', () => {
    const r = healthy();
    const all = Object.values(r).flat();
    const v = judge(input(r, { logs: logsFor(all, (svc, rec) => svc === 'trustedhost' && rec.id === 'b1-r-7') }));
    expect(v.ok).toBe(false);
    expect(v.incidents).toEqual(['log trustedhost (trustedhost): 309/310 logged, 1 missing (b1-r-7)']);
  });

  test('random served by one worker while both are up, a failed request, a log not collected: each said', () => {
    const r = healthy();
    r.random = phase('random', 100, () => 'worker2');
    r.direct[3] = { ...r.direct[3], ok: false, status: 429, node: null, error: 'RATE_LIMITED: too many requests' };
    const all = Object.values(r).flat();
    const logs = logsFor(all);
    logs[0] = { ...logs[0], text: '', error: 'no SSH connection' };
    const v = judge(input(r, { logs }));
    expect(v.ok).toBe(false);
    const said = v.incidents.join('\n');
    expect(said).toContain('direct: 1 of 100 requests failed (RATE_LIMITED x1)');
    expect(said).toContain("rate limit (2000 per 1 s per client)");
    expect(said).toContain('distribution wrong: random: worker(s) worker1 never used');
    expect(said).toContain('gatekeeper: the gatekeeper log could not be collected (no SSH connection)');
  });

  test('the proxy log naming another node than the response: counted per node and said', () => {
    const r = healthy();
    const all = Object.values(r).flat();
    const logs = logsFor(all);
    logs[2] = { ...logs[2], text: logs[2].text.replace('"request_id":"b1-c-0","hop":"proxy","node":"worker2"', '"request_id":"b1-c-0","hop":"proxy","node":"worker1"') };
    const v = judge(input(r, { logs }));
    expect(v.ok).toBe(false);
    expect(v.incidents).toContain('requests per node differ: worker1: 50 by the responses, 51 by the proxy log');
    expect(v.incidents).toContain('requests per node differ: worker2: 150 by the responses, 149 by the proxy log');
  });
});
