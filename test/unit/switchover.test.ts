// npx zx switchover: the step plan and its refusals (pure), and the proxy's write hold.
import { describe, expect, test } from 'bun:test';
import { STEPS, switchoverPlan, type NodeFacts } from '../../playbooks/switchover.ts';
import type { ReplicaStatus } from '../../roles/lib/mysql-replication.ts';
import { HttpError } from '../../services/http.ts';
import { WriteGate, type WriteRunner } from '../../services/proxy/hold.ts';
import type { ValidQuery } from '../../services/validate.ts';

const replica = (sourceHost: string, over: Partial<ReplicaStatus> = {}): ReplicaStatus => ({
  ssl: true, sourceHost, sourcePort: 3306, sourceUser: 'rampart_repl', ioRunning: 'Yes', sqlRunning: 'Yes', gtid: true,
  ioErrno: 0, ioError: '', sqlErrno: 0, sqlError: '', retryCount: null, ...over,
});

/** After a failover: worker1 (server_id 2) is the primary, the manager (1) and worker2 (3) replicate from it. */
function cluster(over: Partial<Record<string, Partial<NodeFacts>>> = {}): NodeFacts[] {
  const base: NodeFacts[] = [
    { name: 'manager', address: '10.0.0.13', readOnly: true, replica: replica('10.0.0.14'), lagSeconds: 0, executed: '0-2-120', self: '1' },
    { name: 'worker1', address: '10.0.0.14', readOnly: false, replica: null, lagSeconds: null, executed: '0-2-125', self: '2' },
    { name: 'worker2', address: '10.0.0.15', readOnly: true, replica: replica('10.0.0.14'), lagSeconds: 1, executed: '0-2-124', self: '3' },
  ];
  return base.map((n) => ({ ...n, ...over[n.name] }));
}

describe('switchoverPlan', () => {
  test('a caught-up replica of the live primary: every step, the others re-pointed', () => {
    const p = switchoverPlan('mariadb', 'worker1', 'manager', cluster(), 5);
    expect(p).toEqual({ action: 'switch', from: 'worker1', to: 'manager', replicas: ['worker1', 'worker2'], steps: STEPS });
    // hold first, fence before the wait, promotion before re-pointing, release after it
    expect(STEPS.indexOf('hold writes')).toBe(0);
    expect(STEPS.indexOf('fence the old primary')).toBeLessThan(STEPS.indexOf('target caught up'));
    expect(STEPS.indexOf('promote the target')).toBeLessThan(STEPS.indexOf('accounts for the new primary'));
    expect(STEPS.indexOf('accounts for the new primary')).toBeLessThan(STEPS.indexOf('re-point the replicas'));
    expect(STEPS.indexOf('re-point the replicas')).toBeLessThan(STEPS.indexOf('proxy: new primary, release writes'));
  });

  test('the target already is the primary: nothing to do (exit 0)', () => {
    const p = switchoverPlan('mariadb', 'worker1', 'worker1', cluster(), 5);
    expect(p.action).toBe('none');
  });

  test('refused: not a replica, a replica of another node, not replicating, broken', () => {
    const notReplica = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { replica: null } }), 5);
    expect(notReplica).toMatchObject({ action: 'refuse', reason: 'manager is not a replica of the primary worker1' });
    const elsewhere = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { replica: replica('10.0.0.15') } }), 5);
    expect(elsewhere).toMatchObject({ action: 'refuse', reason: 'manager is not a replica of the primary worker1 (it replicates from 10.0.0.15)' });
    const stopped = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { replica: replica('10.0.0.14', { ioRunning: 'No' }) } }), 5);
    expect(stopped).toMatchObject({ action: 'refuse', reason: 'manager is not replicating (IO=No SQL=Yes)' });
    const broken = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { replica: replica('10.0.0.14', { sqlErrno: 1062, sqlError: 'Duplicate entry' }) } }), 5);
    expect(broken).toMatchObject({ action: 'refuse', reason: 'manager is not replicating (SQL error 1062: Duplicate entry)' });
    const down = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { readOnly: null } }), 5);
    expect(down).toMatchObject({ action: 'refuse', reason: 'manager does not answer' });
    const unknown = switchoverPlan('mariadb', 'worker1', 'nope', cluster(), 5);
    expect(unknown.action).toBe('refuse');
  });

  test('refused: not caught up (lag above maxLagSeconds, or unknown)', () => {
    expect(switchoverPlan('mariadb', 'worker1', 'worker2', cluster({ worker2: { lagSeconds: 9 } }), 5))
      .toMatchObject({ action: 'refuse', reason: 'worker2 is not caught up (lag 9 s, services.proxy.maxLagSeconds 5)' });
    expect(switchoverPlan('mariadb', 'worker1', 'worker2', cluster({ worker2: { lagSeconds: null } }), 5).action).toBe('refuse');
  });

  test('refused: errant transactions, written on the target (MariaDB by origin, MySQL by set difference)', () => {
    // MariaDB: the domain's last GTID was written by the manager itself (server_id 1)
    const m = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { executed: '0-1-121' } }), 5);
    expect(m).toMatchObject({ action: 'refuse' });
    expect((m as { reason: string }).reason).toContain('errant transactions 0-1-121');
    // a second domain the primary never had
    const d = switchoverPlan('mariadb', 'worker1', 'manager', cluster({ manager: { executed: '0-2-120,7-1-3' } }), 5);
    expect((d as { reason: string }).reason).toContain('errant transactions 7-1-3');
    const P = '3e11fa47-71ca-11e1-9e33-c80aa9429562';
    const T = '4f22ab58-82db-22f2-af44-d91bb0530673';
    const mysql = cluster({
      worker1: { executed: `${P}:1-100`, self: P },
      manager: { executed: `${P}:1-90,${T}:1-2`, self: T },
      worker2: { executed: `${P}:1-99`, self: '5a33bc69-93ec-33f3-b055-ea2cc1641784' },
    });
    expect((switchoverPlan('mysql', 'worker1', 'manager', mysql, 5) as { reason: string }).reason).toContain(`errant transactions ${T}:1-2`);
    // behind the primary is not errant
    expect(switchoverPlan('mysql', 'worker1', 'worker2', mysql, 5).action).toBe('switch');
  });
});

const q = (sql: string): ValidQuery => ({ sql, type: 'write' } as unknown as ValidQuery);
const tick = () => new Promise((r) => setTimeout(r, 5));

describe('WriteGate: the proxy write hold', () => {
  test('held writes wait, then run on the newest generation (the new primary), each once', async () => {
    const gate = new WriteGate(true);
    const ran: string[] = [];
    const on = (primary: string): WriteRunner => async (x) => {
      ran.push(`${primary}:${x.sql}`);
      return { node: primary, result: { kind: 'write', affectedRows: 1, insertId: ran.length } };
    };
    gate.current = on('worker1');
    expect(await gate.hold(5000, 1000)).toBe(true);
    const held = [1, 2, 3].map((i) => gate.write(() => gate.current!(q(`w${i}`), 'random')));
    await tick();
    expect(ran).toEqual([]);
    // the reload naming the new primary: its generation takes the writes, then releases
    gate.current = on('manager');
    gate.release();
    const out = await Promise.all(held);
    expect(out.map((o) => o.node)).toEqual(['manager', 'manager', 'manager']);
    expect(ran).toEqual(['manager:w1', 'manager:w2', 'manager:w3']);
    expect(gate.held).toBe(false);
    // not held any more: straight through
    await gate.write(() => gate.current!(q('w4'), 'random'));
    expect(ran).toHaveLength(4);
  });

  test('a hold past its bound answers 503 not executed, and the write never runs afterwards', async () => {
    const gate = new WriteGate(true);
    let runs = 0;
    await gate.hold(30, 1000);
    const p = gate.write(async () => ++runs);
    const e = await p.then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(HttpError);
    expect((e as HttpError).status).toBe(503);
    expect((e as HttpError).code).toBe('DB_UNAVAILABLE');
    expect((e as HttpError).message).toContain('not executed');
    gate.release();
    await tick();
    expect(runs).toBe(0);
    expect(gate.held).toBe(false);
  });

  test('hold resolves once the writes in flight finished (the fence comes after them)', async () => {
    const gate = new WriteGate(true);
    let finish!: () => void;
    let done = false;
    const inflight = gate.write(() => new Promise<void>((r) => (finish = r)).then(() => void (done = true)));
    await tick();
    expect(gate.inflight).toBe(1);
    let drained = false;
    const h = gate.hold(5000, 5000).then((v) => (drained = v));
    await tick();
    expect(drained).toBe(false);
    finish();
    await inflight;
    await h;
    expect(done).toBe(true);
    expect(drained).toBe(true);
    gate.release();
  });

  test('in-flight writes that do not end within drainMs: hold says so (false)', async () => {
    const gate = new WriteGate(true);
    let finish!: () => void;
    const w = gate.write(() => new Promise<void>((r) => (finish = r)));
    await tick();
    expect(await gate.hold(5000, 20)).toBe(false);
    finish();
    await w;
    gate.release();
  });
});
