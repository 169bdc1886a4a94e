// The replication proof's verdict, sysbench output parsing, option file and
// the bench's flags.
import { describe, expect, test } from 'bun:test';
import { benchOptions } from '../../playbooks/bench.ts';
import { judgeProof } from '../../playbooks/bench/replication.ts';
import { optionFile, parseSysbench, sysbenchCommand } from '../../playbooks/bench/sysbench.ts';
import type { NodeProof } from '../../playbooks/bench/types.ts';
import { loadCluster } from '../../core/spec.ts';
import { ROOT } from '../support/cluster.ts';
import { join } from 'node:path';

const node = (name: string, before: number | null, after: number | null, sha: string | null, caughtUp = true, error?: string): NodeProof =>
  ({ node: name, before, after, dumpSha256: sha, caughtUp, ...(error ? { error } : {}) });

describe('judgeProof', () => {
  test('all caught up, +N everywhere, same dump: ok', () => {
    const p = judgeProof({ expected: 50, gtid: '0-1-9', nodes: [node('manager', 200, 250, 'aa'), node('worker1', 200, 250, 'aa'), node('worker2', 200, 250, 'aa')] });
    expect(p.ok).toBe(true);
    expect(p.identicalDumps).toBe(true);
    expect(p.messages).toEqual([]);
  });
  test('a worker short of rows, with another dump: not ok, both said', () => {
    const p = judgeProof({ expected: 50, gtid: 'g', nodes: [node('manager', 200, 250, 'aa'), node('worker1', 200, 249, 'bb')] });
    expect(p.ok).toBe(false);
    expect(p.identicalDumps).toBe(false);
    expect(p.messages.join('\n')).toContain('worker1: 49 new actor rows, expected 50');
    expect(p.messages.join('\n')).toContain('dumps differ');
  });
  test('a worker down (no dump, no count, not caught up): not ok, its error said', () => {
    const p = judgeProof({ expected: 5, gtid: 'g', nodes: [node('manager', 1, 6, 'aa'), node('worker1', 1, null, null, false, 'worker1: ERROR 2002: cannot connect')] });
    expect(p.ok).toBe(false);
    expect(p.messages).toEqual(['worker1: ERROR 2002: cannot connect']);
    const quiet = judgeProof({ expected: 5, gtid: 'g', nodes: [node('manager', 1, 6, 'aa'), node('worker1', 1, null, 'aa')] });
    expect(quiet.ok).toBe(false);
    expect(quiet.messages).toEqual(['worker1: row count not readable']);
  });
  test('same counts but more rows than expected (someone else wrote): not ok', () => {
    expect(judgeProof({ expected: 5, gtid: 'g', nodes: [node('manager', 1, 7, 'aa'), node('worker1', 1, 7, 'aa')] }).ok).toBe(false);
  });
});

describe('sysbench', () => {
  const out = `sysbench 1.0.20 (using system LuaJIT 2.1.0-beta3)

Running the test with following options:
Number of threads: 4

SQL statistics:
    queries performed:
        read:                            56070
        write:                           16020
        other:                           8010
        total:                           80100
    transactions:                        4005   (400.21 per sec.)
    queries:                             80100  (8004.20 per sec.)
    ignored errors:                      0      (0.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          10.0060s
    total number of events:              4005

Latency (ms):
         min:                                    3.01
         avg:                                    9.99
         max:                                   62.10
         95th percentile:                       17.95
         sum:                                40012.34
`;
  test('parses tps, qps, latency avg and p95, errors', () => {
    expect(parseSysbench(out)).toEqual({ tps: 400.21, qps: 8004.2, latencyAvgMs: 9.99, latencyP95Ms: 17.95, errors: 0 });
  });
  test('refuses output without a final report', () => {
    expect(() => parseSysbench('FATAL: error 1045: Access denied for user')).toThrow(/no transactions/);
  });
  test('password in the option file only; sizes and time on the command line (sysbench 1.0 ignores them in a config file)', () => {
    const settings = { password: 'p@ss-w0rd', tables: 10, tableSize: 10000, threads: 4, time: 7 };
    const lines = optionFile(settings).split('\n');
    expect(lines).toContain('mysql-password=p@ss-w0rd');
    expect(lines).toContain('mysql-user=sbtest');
    expect(lines.some((l) => l.startsWith('tables=') || l.startsWith('time='))).toBe(false);
    const cmd = sysbenchCommand('oltp_read_only', settings);
    expect(cmd).not.toContain('p@ss-w0rd');
    expect(cmd).toContain('--tables=10 --table-size=10000 --threads=4 --time=7');
    expect(cmd).toMatch(/^PATH=\/usr\/local\/bin:\$PATH sysbench oltp_read_only --config-file=\S+ .* run$/);
  });
});

describe('benchOptions', () => {
  const cluster = loadCluster(join(ROOT, 'cluster.yaml'));
  test('defaults from cluster.yaml', () => {
    const o = benchOptions({}, cluster);
    expect(o.writes).toBe(cluster.bench.writes);
    expect(o.reads).toBe(cluster.bench.reads);
    expect(o.concurrency).toBe(cluster.bench.concurrency);
    expect(o.modes).toEqual(cluster.services.proxy.modes);
    expect(o.sysbenchTime).toBe(cluster.database.sysbench.time);
    expect(o.sysbench).toBe(true);
    // under the gatekeeper's per-client limit by default
    const { requests, perSeconds } = cluster.services.gatekeeper.rateLimit;
    expect(o.rate).toBe(Math.floor((0.9 * requests) / perSeconds));
    expect(benchOptions({ rate: '0' }, cluster).rate).toBeUndefined();
  });
  test('flags override; bad values are usage errors', () => {
    const o = benchOptions({ writes: '50', reads: '7', concurrency: '3', modes: 'direct,random', 'sysbench-time': '2', 'no-sysbench': true, rate: '100' }, cluster);
    expect([o.writes, o.reads, o.concurrency, o.sysbenchTime, o.rate, o.sysbench]).toEqual([50, 7, 3, 2, 100, false]);
    expect(o.modes).toEqual(['direct', 'random']);
    expect(() => benchOptions({ concurrency: '0' }, cluster)).toThrow(/--concurrency must be an integer >= 1/);
    expect(() => benchOptions({ writes: 'x' }, cluster)).toThrow(/--writes/);
    expect(() => benchOptions({ modes: 'direct,fastest' }, cluster)).toThrow(/fastest not among/);
    expect(() => benchOptions({ rate: '-1' }, cluster)).toThrow(/--rate/);
    expect(() => benchOptions({ rate: 'fast' }, cluster)).toThrow(/--rate/);
  });
});
