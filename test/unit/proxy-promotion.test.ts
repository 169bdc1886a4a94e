// The promotion choice: the most advanced worker by GTID (what it received,
// since a semi-sync acknowledgement means received), ties broken by the
// workers' order then name, never a worker with errant transactions.
import { describe, expect, test } from 'bun:test';
import * as mr from '../../roles/lib/mysql-replication.ts';
import { DbNode } from '../../services/proxy/nodes.ts';
import { Router } from '../../services/proxy/router.ts';
import { choosePromotion, contains, count, format, minus, parseGtidSet, union, type Candidate } from '../../services/proxy/gtid.ts';

const U1 = '3e11fa47-71ca-11e1-9e33-c80aa9429562';
const U2 = '4f22ab58-82db-22f2-af44-d91bb0530673';
const W1 = '5a33bc69-93ec-33a3-b055-ea2cc1641784';
const my = (s: string) => parseGtidSet('mysql', s);
const ma = (s: string) => parseGtidSet('mariadb', s);
const cand = (name: string, executed: string, received = executed, self = name, dialect: 'mysql' | 'mariadb' = 'mysql', broken?: string): Candidate => ({
  name, executed: (dialect === 'mysql' ? my : ma)(executed), received: (dialect === 'mysql' ? my : ma)(received), self, ...(broken ? { broken } : {}),
});

describe('GTID sets', () => {
  test('MySQL sets: intervals merged, counted, subtracted', () => {
    const a = my(`${U1}:1-5:7-9,${U2}:1-3`);
    expect(count(a)).toBe(11);
    expect(format(a)).toBe(`${U1}:1-5:7-9,${U2}:1-3`);
    expect(format(union(a, my(`${U1}:6`)))).toBe(`${U1}:1-9,${U2}:1-3`);
    expect(format(minus(a, my(`${U1}:2-8`)))).toBe(`${U1}:1:9,${U2}:1-3`);
    expect(contains(a, my(`${U1}:3-4`))).toBe(true);
    expect(contains(my(`${U1}:3-4`), a)).toBe(false);
    expect(count(my(''))).toBe(0);
    expect(format(my(`${U1}:1-3,\n${U1.toUpperCase()}:4`))).toBe(`${U1}:1-4`);
  });
  test('MariaDB positions: per domain the last seq, origin its server_id', () => {
    const a = ma('0-11-100,1-12-5');
    expect(count(a)).toBe(105);
    expect(contains(a, ma('0-11-99'))).toBe(true);
    expect(contains(ma('0-11-99'), a)).toBe(false);
    expect(format(union(ma('0-11-100'), ma('0-13-101')))).toBe('0-13-101');
  });
  test('garbage is refused', () => {
    expect(() => my('nope')).toThrow();
    expect(() => ma('0-1')).toThrow();
  });
});

describe('promotion choice', () => {
  const primaries = new Set([U1]);
  test('the most advanced by what it received wins, though it applied less', () => {
    const p = choosePromotion([cand('worker1', `${U1}:1-90`, `${U1}:1-100`, W1), cand('worker2', `${U1}:1-95`, `${U1}:1-95`, U2)], primaries);
    expect(p).toMatchObject({ ok: true, winner: 'worker1', position: `${U1}:1-100` });
  });
  test('ties are broken by the workers\' order, then by name, whatever the input order', () => {
    const a = cand('worker2', `${U1}:1-50`, `${U1}:1-50`, U2);
    const b = cand('worker1', `${U1}:1-50`, `${U1}:1-50`, W1);
    expect(choosePromotion([a, b], primaries, ['worker2', 'worker1'])).toMatchObject({ ok: true, winner: 'worker2' });
    expect(choosePromotion([b, a], primaries, ['worker2', 'worker1'])).toMatchObject({ ok: true, winner: 'worker2' });
    expect(choosePromotion([a, b], primaries)).toMatchObject({ ok: true, winner: 'worker1' });
    expect(choosePromotion([b, a], primaries)).toMatchObject({ ok: true, winner: 'worker1' });
  });
  test('errant transactions (written on the worker itself) rule a worker out, even the most advanced', () => {
    const p = choosePromotion([cand('worker1', `${U1}:1-100,${W1}:1-2`, `${U1}:1-100,${W1}:1-2`, W1), cand('worker2', `${U1}:1-80`, `${U1}:1-80`, U2)], primaries);
    expect(p.ok).toBe(true);
    if (!p.ok) return;
    expect(p.winner).toBe('worker2');
    expect(p.passedOver[0]).toEqual({ name: 'worker1', why: `errant transactions ${W1}:1-2 (written on it, not by a primary)` });
  });
  test('errant transactions without known primaries: the candidates\' own origins are errant', () => {
    const p = choosePromotion([cand('worker1', `${U1}:1-100,${W1}:1`, undefined, W1), cand('worker2', `${U1}:1-80`, undefined, U2)], new Set());
    expect(p).toMatchObject({ ok: true, winner: 'worker2' });
  });
  test('MariaDB: a domain whose last GTID a worker wrote itself is errant', () => {
    const p = choosePromotion([cand('worker1', '0-21-101', '0-21-101', '21', 'mariadb'), cand('worker2', '0-11-100', '0-11-100', '22', 'mariadb')], new Set(['11']));
    expect(p).toMatchObject({ ok: true, winner: 'worker2', position: '0-11-100' });
    expect(choosePromotion([cand('worker1', '0-11-100', '0-11-120', '21', 'mariadb'), cand('worker2', '0-11-110', '0-11-110', '22', 'mariadb')], new Set(['11'])))
      .toMatchObject({ ok: true, winner: 'worker1', position: '0-11-120' });
  });
  test('every worker errant or broken: no promotion, the reason names them', () => {
    const p = choosePromotion([cand('worker1', `${U1}:1-5,${W1}:1`, undefined, W1), cand('worker2', `${U1}:1-5`, undefined, U2, 'mysql', 'SQL error 1062')], primaries);
    expect(p.ok).toBe(false);
    if (p.ok) return;
    expect(p.reason).toContain('worker1: errant transactions');
    expect(p.reason).toContain('worker2: replica broken: SQL error 1062');
    expect(choosePromotion([], primaries).ok).toBe(false);
  });
  test('diverged workers: the tie is broken by name and what the loser alone has is reported', () => {
    const p = choosePromotion([cand('worker2', `${U1}:1-9:11`, undefined, U2), cand('worker1', `${U1}:1-10`, undefined, W1)], primaries);
    expect(p).toMatchObject({ ok: true, winner: 'worker1', passedOver: [{ name: 'worker2', why: `diverged: has ${U1}:11 the winner lacks` }] });
  });
});

describe('routing around a dead primary', () => {
  const db = { manager: { name: 'm', host: '127.0.0.1', port: 9 }, workers: [], user: 'u', password: 'p', database: 'd' };
  const node = (name: string, role: 'manager' | 'worker', healthy: boolean, caughtUpAt: number | null = null) => {
    const n = new DbNode({ name, host: '127.0.0.1', port: 9 }, role, db, 1000);
    n.healthy = healthy;
    n.replicating = role === 'worker' ? false : null;
    n.caughtUpAt = caughtUpAt;
    return n;
  };
  test('no worker within maxLag and the primary down: the freshest answering worker serves reads, writes still the primary', () => {
    const m = node('manager', 'manager', false);
    const r = new Router(m, [node('w1', 'worker', true, 1000), node('w2', 'worker', true, 2000), node('w3', 'worker', false, 3000)], 5);
    expect(r.pick('read', 'random')?.name).toBe('w2');
    expect(r.pick('read', 'customized')?.name).toBe('w2');
    expect(r.pick('write', 'random')?.name).toBe('manager');
  });
  test('a healthy primary keeps the reads when no worker is usable', () => {
    const r = new Router(node('manager', 'manager', true), [node('w1', 'worker', true, 1000)], 5);
    expect(r.pick('read', 'random')?.name).toBe('manager');
  });
  test('after promote: writes go to the winner, the old primary gets nothing', () => {
    const m = node('manager', 'manager', false);
    const w1 = node('w1', 'worker', true);
    const w2 = node('w2', 'worker', true);
    w1.replicating = true;
    w1.lagSeconds = 0;
    w2.replicating = true;
    w2.lagSeconds = 0;
    const r = new Router(m, [w1, w2], 5);
    r.promote(w1, m);
    m.healthy = true;
    expect(r.pick('write', 'direct')?.name).toBe('w1');
    expect(r.pick('read', 'direct')?.name).toBe('w1');
    for (let i = 0; i < 20; i++) expect(r.pick('read', 'random')?.name).toBe('w2');
    expect(r.states().map((s) => [s.name, s.role])).toEqual([['w1', 'manager'], ['w2', 'worker'], ['manager', 'fenced']]);
    expect(m.usable(5)).toBe(false);
  });
});

describe('apply follows the live primary', () => {
  const { livePrimary, withLivePrimary, parseTopology } = mr;
  const t = (name: string, address: string, readOnly: boolean | null, sourceHost: string | null) => ({ name, address, readOnly, sourceHost });
  const A = { manager: '10.0.0.13', worker1: '10.0.0.14', worker2: '10.0.0.15' };
  test('as cluster.yaml says: the preferred manager', () => {
    expect(livePrimary('manager', [t('manager', A.manager, false, null), t('worker1', A.worker1, true, A.manager), t('worker2', A.worker2, true, A.manager)])).toEqual({ ok: true, primary: 'manager', moved: false });
  });
  test('a fresh cluster (nothing replicates, everything writable) keeps the preferred one', () => {
    expect(livePrimary('manager', [t('manager', A.manager, false, null), t('worker1', A.worker1, false, null), t('worker2', A.worker2, null, null)])).toEqual({ ok: true, primary: 'manager', moved: false });
  });
  test('after a failover: the promoted worker, whether the old manager is down, fenced or writable again', () => {
    for (const old of [t('manager', A.manager, null, null), t('manager', A.manager, true, null), t('manager', A.manager, false, null)]) {
      expect(livePrimary('manager', [old, t('worker1', A.worker1, false, null), t('worker2', A.worker2, true, A.worker1)])).toEqual({ ok: true, primary: 'worker1', moved: true });
    }
  });
  test('two nodes acting as primary: refused, named', () => {
    const r = livePrimary('manager', [t('manager', A.manager, false, null), t('worker1', A.worker1, false, null), t('worker2', A.worker2, true, A.worker1), t('worker3', '10.0.0.16', true, A.manager)]);
    expect(r).toEqual({ ok: false, reason: expect.stringContaining('both manager') });
  });
  test('roles as the run sees them: the live primary is the manager, the old one a worker', () => {
    const h = (name: string, db: 'manager' | 'worker' | undefined) => ({ name, node: { name, db } }) as unknown as Parameters<typeof withLivePrimary>[0][number];
    const out = withLivePrimary([h('manager', 'manager'), h('worker1', 'worker'), h('proxy', undefined)], 'worker1');
    expect(out.map((x) => [x.name, x.node.db])).toEqual([['manager', 'worker'], ['worker1', 'manager'], ['proxy', undefined]]);
  });
  test('the fact: read_only and the source host', () => {
    expect(parseTopology('w', '10.0.0.14', 0, '*** 1. row ***\nro: 1\n*** 1. row ***\nSlave_IO_State: x\nMaster_Host: 10.0.0.13\nMaster_Port: 3306\n')).toEqual(t('w', '10.0.0.14', true, '10.0.0.13'));
    expect(parseTopology('m', '10.0.0.13', 0, '*** 1. row ***\nro: 0\n')).toEqual(t('m', '10.0.0.13', false, null));
    expect(parseTopology('m', '10.0.0.13', 1, '')).toEqual(t('m', '10.0.0.13', null, null));
  });
});
