// The promotion choice: the most advanced worker by GTID (what it received,
// since a semi-sync acknowledgement means received), ties broken by the
// workers' order then name, never a worker with errant transactions.
import { describe, expect, test } from 'bun:test';
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
