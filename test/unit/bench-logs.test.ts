// Log accounting: every request_id we sent must be found exactly once on each
// hop, with the client's status and (at the proxy) the response's node;
// missing ones are named.
import { describe, expect, test } from 'bun:test';
import { accountHop, crossCheckNodes, describeHop, hopComplete, parseLogLines } from '../../playbooks/bench/logs.ts';
import type { RequestRecord } from '../../playbooks/bench/types.ts';

const records: RequestRecord[] = Array.from({ length: 6 }, (_, i) => ({
  id: `b1-r-${i}`, phase: 'random', startMs: i, latencyMs: 1, status: 200, node: i % 2 ? 'worker1' : 'worker2', ok: true,
}));

/** A service log as journalctl -o cat prints it: start-up text, JSON lines, one per request. */
function journal(recs: RequestRecord[], hop: string, tweak: (line: Record<string, unknown>, i: number) => Record<string, unknown> | null = (l) => l): string {
  const lines = ['proxy: listening on 10.0.0.3:5000 (bun)', JSON.stringify({ ts: 't', request_id: 'someone-else', hop, status: 200, node: 'manager' })];
  recs.forEach((r, i) => {
    const l = tweak({ ts: 't', request_id: r.id, hop, mode: 'random', type: 'read', node: r.node, status: r.status, duration_ms: i + 1 }, i);
    if (l) lines.push(JSON.stringify(l));
  });
  lines.push('{not json');
  return lines.join('\n') + '\n';
}

describe('parseLogLines', () => {
  test('keeps JSON records with a request_id, skips other lines', () => {
    const lines = parseLogLines(journal(records, 'proxy'));
    expect(lines.length).toBe(records.length + 1);
    expect(lines.every((l) => typeof l.request_id === 'string')).toBe(true);
  });
});

describe('accountHop', () => {
  test('a complete log: every request found once, nodes counted from the log', () => {
    const acc = accountHop('proxy', parseLogLines(journal(records, 'proxy')), records, true);
    expect(acc.found).toBe(6);
    expect(hopComplete(acc)).toBe(true);
    expect(acc.byNode).toEqual({ worker1: 3, worker2: 3 });
    expect(describeHop(acc, 6)).toBe('proxy: 6/6 logged');
    // our 6 lines say 1..6 ms (nearest rank: p50 = 3rd, p99 = 6th); the stranger's line does not count
    expect(acc.durationP50).toBe(3);
    expect(acc.durationP99).toBe(6);
  });

  test('missing lines are named; lines of other requests do not count', () => {
    const acc = accountHop('gatekeeper', parseLogLines(journal(records, 'gatekeeper', (l, i) => (i === 2 || i === 5 ? null : l))), records, false);
    expect(acc.found).toBe(4);
    expect(acc.missing).toEqual(['b1-r-2', 'b1-r-5']);
    expect(hopComplete(acc)).toBe(false);
    expect(describeHop(acc, 6)).toContain('2 missing (b1-r-2, b1-r-5)');
  });

  test('duplicates, another status and another node are reported', () => {
    const text = journal(records, 'proxy', (l, i) => (i === 1 ? { ...l, status: 503 } : i === 3 ? { ...l, node: 'manager' } : l))
      + JSON.stringify({ request_id: 'b1-r-4', hop: 'proxy', status: 200, node: 'worker2' }) + '\n';
    const acc = accountHop('proxy', parseLogLines(text), records, true);
    expect(acc.statusMismatch).toEqual(['b1-r-1']);
    expect(acc.nodeMismatch).toEqual(['b1-r-3']);
    expect(acc.duplicates).toEqual(['b1-r-4']);
    expect(hopComplete(acc)).toBe(false);
  });

  test('a request that never got an answer may be absent, but an answered one may not', () => {
    const recs: RequestRecord[] = [{ ...records[0], status: 0, ok: false, node: null, error: 'ECONNRESET: reset' }, records[1]];
    const acc = accountHop('gatekeeper', parseLogLines(journal([records[1]], 'gatekeeper')), recs, false);
    expect(acc.missing).toEqual([]);
    expect(hopComplete(acc)).toBe(true);
    const none = accountHop('gatekeeper', [], recs, false);
    expect(none.missing).toEqual([records[1].id]);
  });

  test('many missing ids are listed up to 20, then counted', () => {
    const many: RequestRecord[] = Array.from({ length: 30 }, (_, i) => ({ ...records[0], id: `m-${i}` }));
    const text = describeHop(accountHop('trustedhost', [], many, false), 30);
    expect(text).toContain('30 missing');
    expect(text).toContain('and 10 more');
  });
});

test('crossCheckNodes: names the nodes whose counts disagree', () => {
  expect(crossCheckNodes({ worker1: 3, worker2: 3 }, { worker1: 3, worker2: 3 })).toEqual([]);
  expect(crossCheckNodes({ worker1: 3, worker2: 3 }, { worker1: 2, worker2: 3, manager: 1 })).toEqual([
    'manager: 0 by the responses, 1 by the proxy log',
    'worker1: 3 by the responses, 2 by the proxy log',
  ]);
});
