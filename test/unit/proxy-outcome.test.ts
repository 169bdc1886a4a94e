// The proxy's outcome codes: a write that never reached a server is "not
// executed" (503 DB_UNAVAILABLE, safe to retry); one whose connection died or
// timed out after it was sent is 504 OUTCOME_UNKNOWN, never the same code.
import { describe, expect, test } from 'bun:test';
import { dbError } from '../../services/proxy/db-errors.ts';
import { markSent, parseSemiSyncStatus } from '../../services/proxy/nodes.ts';
import { semiSyncSettings } from '../../roles/lib/mysql-config.ts';

const err = (code: string, extra: Record<string, unknown> = {}) => Object.assign(new Error(code), { code, ...extra });
const codeOf = (e: unknown, type: 'read' | 'write') => {
  const h = dbError(e, { type });
  return [h.status, h.code];
};

describe('outcome codes', () => {
  test('a write that could not get a connection was not executed', () => {
    for (const c of ['ECONNREFUSED', 'EHOSTUNREACH', 'ETIMEDOUT', 'PROTOCOL_CONNECTION_LOST']) {
      expect(codeOf(err(c), 'write')).toEqual([503, 'DB_UNAVAILABLE']);
    }
    expect(dbError(err('ECONNREFUSED'), { type: 'write' }).message).toContain('not executed, safe to retry');
  });
  test('a write whose connection died after it was sent has an unknown outcome', () => {
    for (const c of ['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE', 'ER_SERVER_SHUTDOWN', 'ER_CONNECTION_KILLED', 'PROTOCOL_SEQUENCE_TIMEOUT']) {
      expect(codeOf(markSent(err(c)), 'write')).toEqual([504, 'OUTCOME_UNKNOWN']);
    }
    expect(codeOf(markSent(err('X', { fatal: true })), 'write')).toEqual([504, 'OUTCOME_UNKNOWN']);
  });
  test('the two codes never coincide', () => {
    const notSent = dbError(err('ECONNRESET'), { type: 'write' });
    const sent = dbError(markSent(err('ECONNRESET')), { type: 'write' });
    expect(notSent.code).not.toBe(sent.code);
  });
  test('a read has no outcome to lose: a dead connection is unavailable, a timeout a timeout', () => {
    expect(codeOf(markSent(err('PROTOCOL_CONNECTION_LOST')), 'read')).toEqual([503, 'DB_UNAVAILABLE']);
    expect(codeOf(markSent(err('PROTOCOL_SEQUENCE_TIMEOUT')), 'read')).toEqual([503, 'QUERY_TIMEOUT']);
  });
  test('a read-only (fenced) node refuses the write before running it: not executed', () => {
    expect(codeOf(markSent(err('ER_OPTION_PREVENTS_STATEMENT', { errno: 1290, sqlMessage: 'read-only' })), 'write')).toEqual([503, 'DB_UNAVAILABLE']);
  });
  test('a refused connection (too many) was not executed even after the send', () => {
    expect(codeOf(markSent(err('ER_CON_COUNT_ERROR')), 'write')).toEqual([503, 'DB_UNAVAILABLE']);
  });
  test('SQL errors stay user errors (the stable codes of services/proxy/db-errors.ts)', () => {
    expect(codeOf(markSent(err('ER_DUP_ENTRY', { errno: 1062, sqlMessage: 'Duplicate entry' })), 'write')).toEqual([409, 'DUPLICATE_KEY']);
    expect(codeOf(markSent(err('ER_BAD_FIELD_ERROR', { errno: 1054, sqlMessage: "Unknown column 'x'" })), 'write')).toEqual([422, 'UNKNOWN_COLUMN']);
  });
});

describe('semi-sync', () => {
  test('status of either dialect', () => {
    expect(parseSemiSyncStatus([{ Variable_name: 'Rpl_semi_sync_master_status', Value: 'ON' }, { Variable_name: 'Rpl_semi_sync_master_clients', Value: '2' }])).toEqual({ active: true, clients: 2 });
    expect(parseSemiSyncStatus([{ Variable_name: 'Rpl_semi_sync_source_status', Value: 'OFF' }, { Variable_name: 'Rpl_semi_sync_source_clients', Value: '0' }])).toEqual({ active: false, clients: 0 });
    expect(parseSemiSyncStatus([{ Variable_name: 'Rpl_semi_sync_slave_status', Value: 'ON' }])).toEqual({ active: false, clients: 0 });
    expect(parseSemiSyncStatus([])).toEqual({ active: false, clients: 0 });
  });
  test('server settings per dialect: built in on MariaDB, plugins on MySQL, lossless wait point', () => {
    const on = { enabled: true, timeoutMs: 7000, onTimeout: 'async' as const };
    const m = semiSyncSettings('mariadb', on);
    expect(m.map((s) => `${s.option}=${s.value}`)).toEqual([
      'rpl_semi_sync_master_enabled=ON', 'rpl_semi_sync_slave_enabled=ON', 'rpl_semi_sync_master_timeout=7000', 'rpl_semi_sync_master_wait_point=AFTER_SYNC',
      // a worker (no replica of its own) never waits for an acknowledgement on its applier's commits
      'rpl_semi_sync_master_wait_no_slave=OFF',
    ]);
    expect(semiSyncSettings('mysql', on).find((s) => s.variable === 'rpl_semi_sync_source_wait_no_replica')?.value).toBe('OFF');
    const y = semiSyncSettings('mysql', on);
    expect(y.filter((s) => s.option === 'plugin_load_add').map((s) => s.value)).toEqual(['semisync_source.so', 'semisync_replica.so']);
    expect(y.find((s) => s.variable === 'rpl_semi_sync_source_timeout')).toEqual({ option: 'loose-rpl_semi_sync_source_timeout', value: '7000', variable: 'rpl_semi_sync_source_timeout', live: '7000' });
    expect(semiSyncSettings('mariadb', { ...on, enabled: false }).map((s) => s.live)).toEqual(['OFF', 'OFF']);
    expect(semiSyncSettings('mysql', { ...on, enabled: false })).toEqual([]);
  });
});
