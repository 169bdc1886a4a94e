// Every write of a bench run accounted for, and the failover the writes saw.
import { describe, expect, test } from 'bun:test';
import { accountWrites, benchLastName, cleanupSql, failoverSeen } from '../../playbooks/bench/writes.ts';
import type { NodeProof, RequestRecord } from '../../playbooks/bench/types.ts';

const rec = (i: number, status: number, node: string | null, error?: string): RequestRecord => ({
  id: `w-${i}`, phase: 'write', startMs: i * 100, latencyMs: 10, status, node, ok: status === 200, ...(error ? { error } : {}),
});
const proof = (node: string, before: number | null, after: number | null): NodeProof => ({ node, before, after, dumpSha256: null, caughtUp: true });

describe('write accounting', () => {
  const writes = [rec(0, 200, 'manager'), rec(1, 200, 'manager'), rec(2, 503, null, 'DB_UNAVAILABLE: down'), rec(3, 504, null, 'OUTCOME_UNKNOWN: lost'), rec(4, 0, null, 'ECONNRESET'), rec(5, 200, 'worker1')];
  test('acknowledged, unknown (504 or no answer), refused (the rest)', () => {
    expect(accountWrites(6, writes, [proof('worker1', 200, 203), proof('worker2', 200, 203), proof('manager', 200, null)])).toEqual({ planned: 6, acknowledged: 3, lost: 0, unknown: 2, refused: 1 });
  });
  test('lost: acknowledged rows missing on the node with the fewest (a node that cannot be read is left out)', () => {
    expect(accountWrites(6, writes, [proof('worker1', 200, 203), proof('worker2', 200, 202)]).lost).toBe(1);
    // an unknown write that did commit is extra, not a loss
    expect(accountWrites(6, writes, [proof('worker1', 200, 204), proof('worker2', 200, 204)]).lost).toBe(0);
    expect(accountWrites(6, writes, null).lost).toBe(0);
  });
  test('the failover: from the last acknowledgement of the old primary to the first of the new one', () => {
    expect(failoverSeen(writes)).toEqual({ from: 'manager', to: 'worker1', seconds: 0.4 });
    expect(failoverSeen(writes.slice(0, 5))).toBeNull();
    expect(failoverSeen([])).toBeNull();
  });
  test('cleanup: only this run\'s rows (marker in last_name, quoted), then AUTO_INCREMENT from what the table holds', () => {
    const last = benchLastName('BENCH', 'b20261202014652');
    expect(last).toBe('BENCH-b20261202014652');
    expect(last.length).toBeLessThanOrEqual(29 + 16); // schema: lastName <= 29, actor.last_name holds 45
    const text = cleanupSql('sakila', "O'RAMPART", last);
    expect(text.split('\n')[0]).toBe("DELETE FROM `sakila`.actor WHERE first_name = 'O\\'RAMPART' AND last_name = 'BENCH-b20261202014652';");
    expect(text).toContain('SET @next = (SELECT COALESCE(MAX(actor_id), 0) + 1 FROM `sakila`.actor);');
    expect(text).toContain("SET @stmt = CONCAT('ALTER TABLE `sakila`.actor AUTO_INCREMENT = ', @next);");
    // two result rows: removed, next id
    expect(text.match(/^SELECT /gm)).toEqual(['SELECT ', 'SELECT ']);
  });
});
