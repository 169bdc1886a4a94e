// The engine on real shell commands (this machine, through LocalConnection):
// facts in one round trip, ok/changed/failed/skipped, handlers once, --check,
// failure isolation, pinned host keys, recap.
import { describe, expect, test, beforeEach } from 'bun:test';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatRecap } from '../../core/output.ts';
import { gatherFacts, plannedResults, run } from '../../core/run.ts';
import { loadCluster } from '../../core/spec.ts';
import { KnownHosts, shq } from '../../core/ssh.ts';
import type { Host, Role, RunReport, SecretStore } from '../../core/types.ts';
import { LocalConnection } from '../support/local-connection.ts';

const cluster = loadCluster(join(import.meta.dir, '../fixtures/cluster.yaml'));
const secrets: SecretStore = { get: (n) => `secret-${n}` };

function hostsFor(names: string[]): Host[] {
  return names.map((name) => {
    const node = { ...cluster.nodes.find((n) => n.name === name)!, roles: ['base' as const, 'mysql' as const] };
    return { name, address: '127.0.0.1', privateAddress: '127.0.0.1', port: 22, user: 'root', sshFrom: '127.0.0.1/32', node };
  });
}

describe('gatherFacts', () => {
  test('runs every command in one round trip and frames outputs and exit codes', async () => {
    const conn = new LocalConnection(hostsFor(['manager'])[0]);
    const facts = await gatherFacts(conn, new Map([
      ['a', 'echo one; echo two'],
      ['b', 'printf no-newline'],
      ['c', 'echo "@@fake:E:0:9"; exit 3'],
      ['d', 'cat /does/not/exist'],
      ['e', 'true'],
    ]));
    expect(conn.execCount).toBe(1);
    expect(facts.get('a')).toEqual({ stdout: 'one\ntwo\n', code: 0 });
    expect(facts.get('b')).toEqual({ stdout: 'no-newline', code: 0 });
    expect(facts.get('c')).toEqual({ stdout: '@@fake:E:0:9\n', code: 3 });
    expect(facts.get('d')!.code).toBe(1);
    expect(facts.get('d')!.stdout).toBe('');
    expect(facts.get('e')).toEqual({ stdout: '', code: 0 });
  });

  test('a fact command cannot read the stdin of the others', async () => {
    const conn = new LocalConnection(hostsFor(['manager'])[0]);
    const facts = await gatherFacts(conn, new Map([['a', 'cat'], ['b', 'echo after']]));
    expect(facts.get('a')!.stdout).toBe('');
    expect(facts.get('b')!.stdout).toBe('after\n');
  });

  test('a fact with a shell syntax error fails alone; the facts after it are still read', async () => {
    const conn = new LocalConnection(hostsFor(['manager'])[0]);
    const facts = await gatherFacts(conn, new Map([['bad', '; true'], ['quote', "echo 'it''s"], ['next', 'echo still here']]));
    expect(facts.get('bad')!.code).not.toBe(0);
    expect(facts.get('quote')!.code).not.toBe(0);
    expect(facts.get('next')).toEqual({ stdout: 'still here\n', code: 0 });
  });

  test('a command several tasks ask for runs once; each of them gets its output', async () => {
    const conn = new LocalConnection(hostsFor(['manager'])[0]);
    const counter = join(mkdtempSync(join(tmpdir(), 'facts-')), 'runs');
    const counted = `echo x >> ${shq(counter)}; echo os-id`;
    const facts = await gatherFacts(conn, new Map([['base|os', counted], ['mysql|os', counted], ['other', 'echo other'], ['sysbench|os', counted]]));
    expect(readFileSync(counter, 'utf8')).toBe('x\n');
    for (const id of ['base|os', 'mysql|os', 'sysbench|os']) expect(facts.get(id)).toEqual({ stdout: 'os-id\n', code: 0 });
    expect(facts.get('other')).toEqual({ stdout: 'other\n', code: 0 });
  });
});

describe('run', () => {
  let dir: string;
  let conns: Map<string, LocalConnection>;
  let handlerRuns: string[];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rampart-engine-'));
    conns = new Map();
    handlerRuns = [];
  });

  const file = (host: string, name: string) => join(dir, `${host}-${name}`);

  // base: write a file per host, notify a handler twice; a task that fails on worker2;
  // a task skipped on non-managers. mysql: a later role that must not run after a failure.
  function roles(opts: { failOn?: string } = {}): Role[] {
    const wantFile = (name: string, content: string) => ({
      name: `file ${name}`,
      facts: ({ host }: { host: Host }) => ({ f: `cat ${shq(file(host.name, name))}` }),
      check: ({ facts }: { facts: Record<string, { stdout: string }> }) =>
        facts.f.stdout === content ? null : { message: `write ${name}` },
      apply: async ({ host, notify }: { host: Host; notify: (h: string) => void }) => {
        writeFileSync(file(host.name, name), content);
        notify('reload');
        notify('reload');
      },
    });
    return [
      {
        name: 'base',
        tasks: [
          wantFile('a', 'A'),
          // depends on a: its facts must be re-read after a changed
          {
            name: 'copy of a',
            facts: ({ host }) => ({ a: `cat ${shq(file(host.name, 'a'))}`, b: `cat ${shq(file(host.name, 'b'))}` }),
            check: ({ facts }) => (facts.a.stdout === 'A' && facts.b.stdout === 'A' ? null : { message: 'copy', data: facts.a.stdout }),
            apply: async ({ host }, diff) => {
              if (diff.data !== 'A') throw new Error(`stale facts: a was ${JSON.stringify(diff.data)}`);
              writeFileSync(file(host.name, 'b'), 'A');
            },
          },
          {
            name: 'manager only',
            when: ({ host }) => (host.node.db === 'manager' ? null : 'not the manager'),
            check: () => null,
            apply: async () => {},
          },
          {
            name: 'may fail',
            check: ({ host }) => (host.name === opts.failOn ? { message: 'boom' } : null),
            apply: async () => {
              throw new Error('disk on fire');
            },
          },
          wantFile('c', 'C'),
        ],
        handlers: [{ name: 'reload', run: async ({ host }) => void handlerRuns.push(host.name) }],
      },
      { name: 'mysql', tasks: [wantFile('m', 'M')] },
    ];
  }

  const go = (check: boolean, r = roles(), limit?: string[]): Promise<RunReport> =>
    run({
      cluster, hosts: hostsFor(['manager', 'worker1', 'worker2']), roles: r, check, limit,
      privateKey: '', knownHosts: new KnownHosts(join(dir, 'kh')), secrets, progress: false,
      connect: async (h) => {
        const c = new LocalConnection(h);
        conns.set(h.name, c);
        return c;
      },
    });

  test('first run changes, second run is a no-op read in one round trip per host', async () => {
    const first = await go(false);
    expect(first.hosts.manager).toEqual({ ok: 2, changed: 5, failed: 0, skipped: 0, unreachable: false });
    expect(first.hosts.worker1).toEqual({ ok: 1, changed: 5, failed: 0, skipped: 1, unreachable: false });
    expect(readFileSync(file('worker1', 'b'), 'utf8')).toBe('A');
    // notified twice per host in base, run once per host
    expect(handlerRuns.sort()).toEqual(['manager', 'worker1', 'worker2']);

    handlerRuns = [];
    const second = await go(false);
    for (const h of ['manager', 'worker1', 'worker2']) expect(second.hosts[h].changed).toBe(0);
    expect(second.results.filter((r) => r.status === 'changed')).toEqual([]);
    expect(handlerRuns).toEqual([]);
    // every fact of every role of a host in a single exec
    for (const c of conns.values()) expect(c.execCount).toBe(1);
  });

  test('after a change, the facts of all the tasks still to come are read again in one round trip', async () => {
    const reads = (name: string) => ({
      name: `reads ${name}`,
      facts: ({ host }: { host: Host }) => ({ a: `cat ${shq(file(host.name, 'a'))}`, [name]: `echo ${name}` }),
      // each sees the file the first task wrote: its facts were read after that change
      check: ({ facts }: { facts: Record<string, { stdout: string }> }) => (facts.a.stdout === 'A' ? null : { message: `stale: ${JSON.stringify(facts.a.stdout)}` }),
      apply: async () => {},
    });
    const role: Role = {
      name: 'base',
      tasks: [
        {
          name: 'write a',
          facts: ({ host }) => ({ a: `cat ${shq(file(host.name, 'a'))}` }),
          check: ({ facts }) => (facts.a.stdout === 'A' ? null : { message: 'write a' }),
          apply: async ({ host }) => writeFileSync(file(host.name, 'a'), 'A'),
        },
        reads('x'), reads('y'), reads('z'),
      ],
    };
    const report = await go(false, [role]);
    for (const h of ['manager', 'worker1', 'worker2']) {
      expect(report.hosts[h]).toMatchObject({ ok: 3, changed: 1, failed: 0 });
      expect(conns.get(h)!.execCount).toBe(2); // the up-front gather + one after the change
    }
  });

  test('--check reports what would change and changes nothing', async () => {
    const report = await go(true);
    expect(report.check).toBe(true);
    expect(existsSync(file('manager', 'a'))).toBe(false);
    const changed = report.results.filter((r) => r.status === 'changed' && r.host === 'manager').map((r) => r.task);
    expect(changed).toEqual(['file a', 'copy of a', 'file c', 'file m']);
    expect(report.results.find((r) => r.task === 'file a')!.message).toBe('would: write a');
    expect(handlerRuns).toEqual([]);
  });

  test('--check you can trust: a task depending on one that would change says so; notified handlers are listed', async () => {
    const role: Role = {
      name: 'base',
      tasks: [
        {
          name: 'unit file',
          facts: ({ host }) => ({ f: `cat ${shq(file(host.name, 'unit'))}` }),
          check: ({ facts }) => (facts.f.stdout === 'v2' ? null : { message: 'write unit' }),
          apply: async ({ host }) => writeFileSync(file(host.name, 'unit'), 'v2'),
          notifies: ['restart'],
        },
        // judged from today's facts it looks fine, but it reads what 'unit file' writes
        { name: 'running the unit', dependsOn: ['unit file'], check: () => null, apply: async () => {} },
        { name: 'unrelated', check: () => null, apply: async () => {} },
      ],
      handlers: [{ name: 'restart', run: async ({ host }) => void handlerRuns.push(host.name) }],
    };
    const report = await go(true, [role]);
    const manager = report.results.filter((r) => r.host === 'manager').map((r) => `${r.task} ${r.status}: ${r.message}`);
    expect(manager).toEqual([
      'unit file changed: would: write unit',
      'running the unit changed: would change: depends on unit file',
      'unrelated ok: ',
      'handler: restart changed: would run (notified)',
    ]);
    expect(handlerRuns).toEqual([]);
    expect(existsSync(file('manager', 'unit'))).toBe(false);
    // once the file is right, nothing depends on a change any more
    writeFileSync(file('manager', 'unit'), 'v2');
    const clean = await go(true, [role], ['manager']);
    expect(clean.results.filter((r) => r.status !== 'ok')).toEqual([]);
  });

  test('--diff: a difference\'s detail is carried by its result, and shown in the recap', async () => {
    const role: Role = {
      name: 'base',
      tasks: [{
        name: 'config', check: () => ({ message: 'write /etc/x', detail: () => '--- /etc/x (node)\n+++ /etc/x (rampart)\n-old\n+new\n' }), apply: async () => 'written',
      }],
    };
    const without = await go(true, [role], ['manager']);
    expect(without.results[0].diff).toBeUndefined();
    const report = await run({
      cluster, hosts: hostsFor(['manager']), roles: [role], check: true, diff: true, privateKey: '', knownHosts: new KnownHosts(join(dir, 'kh')), secrets, progress: false,
      connect: async (h) => new LocalConnection(h),
    });
    expect(report.results[0].diff).toBe('--- /etc/x (node)\n+++ /etc/x (rampart)\n-old\n+new\n');
    expect(formatRecap(report)).toContain('      -old\n      +new');
  });

  test('--check on a node that does not exist yet lists what would run on it (known after apply)', () => {
    const planned = plannedResults(cluster, cluster.nodes.filter((n) => n.name === 'worker1'), roles(), secrets);
    expect(planned.map((r) => `${r.role} | ${r.task} | ${r.status}`)).toEqual([
      'base | file a | changed', 'base | copy of a | changed', 'base | manager only | skipped', 'base | may fail | changed', 'base | file c | changed', 'mysql | file m | changed',
    ]);
    expect(planned[0].message).toMatch(/known after apply/);
  });

  describe('rolling roles (serial)', () => {
    const spans: { host: string; start: number; end: number }[] = [];
    const settled: string[] = [];
    const rolling = (failOn?: string): Role => ({
      name: 'base',
      tasks: [{
        name: 'restart',
        facts: ({ host }) => ({ f: `cat ${shq(file(host.name, 'r'))}` }),
        check: ({ facts }) => (facts.f.stdout === 'done' ? null : { message: 'restart' }),
        apply: async ({ host }) => {
          const start = Date.now();
          await new Promise((r) => setTimeout(r, 40));
          if (host.name === failOn) throw new Error('did not come back');
          writeFileSync(file(host.name, 'r'), 'done');
          spans.push({ host: host.name, start, end: Date.now() });
        },
      }],
      serial: {
        size: 1,
        order: (hs) => [...hs.filter((h) => h.node.db === 'worker'), ...hs.filter((h) => h.node.db !== 'worker')],
        settle: async ({ host }) => void settled.push(host.name),
      },
    });
    beforeEach(() => {
      spans.length = 0;
      settled.length = 0;
    });

    test('one host at a time in the role\'s order, each settled before the next; a no-op settles nobody', async () => {
      const r = await go(false, [rolling()]);
      expect(spans.map((x) => x.host)).toEqual(['worker1', 'worker2', 'manager']);
      for (let i = 1; i < spans.length; i++) expect(spans[i].start).toBeGreaterThanOrEqual(spans[i - 1].end);
      expect(settled).toEqual(['worker1', 'worker2', 'manager']);
      expect(r.results.filter((x) => x.task === 'rollout: back in service').map((x) => x.host)).toEqual(['worker1', 'worker2', 'manager']);
      settled.length = 0;
      const again = await go(false, [rolling()]);
      expect(settled).toEqual([]);
      expect(again.results.every((x) => x.status === 'ok')).toBe(true);
    });

    test('a failed host stops the rollout: the hosts after it are not started', async () => {
      const r = await go(false, [rolling('worker2')]);
      expect(spans.map((x) => x.host)).toEqual(['worker1']);
      expect(r.hosts.worker2.failed).toBe(1);
      expect(r.results.find((x) => x.host === 'manager')).toMatchObject({ task: 'rollout', status: 'failed', message: 'not started: the rollout stopped after worker2 failed' });
      expect(existsSync(file('manager', 'r'))).toBe(false);
    });

    test('--serial N sets the batch size of every role (rolling ones keep their order)', async () => {
      await run({
        cluster, hosts: hostsFor(['manager', 'worker1', 'worker2']), roles: [{ ...rolling(), serial: undefined }], check: false, serial: 2,
        privateKey: '', knownHosts: new KnownHosts(join(dir, 'kh')), secrets, progress: false, connect: async (h) => new LocalConnection(h),
      });
      // manager + worker1 together, then worker2
      const [a, b, c] = [...spans].sort((x, y) => x.start - y.start);
      expect(new Set([a.host, b.host])).toEqual(new Set(['manager', 'worker1']));
      expect(c.host).toBe('worker2');
      expect(c.start).toBeGreaterThanOrEqual(Math.max(a.end, b.end));
    });
  });

  test('a failure stops that host only; the others finish and keep their results', async () => {
    const report = await go(false, roles({ failOn: 'worker2' }));
    expect(report.hosts.worker2.failed).toBe(1);
    const failed = report.results.find((r) => r.status === 'failed')!;
    expect(failed).toMatchObject({ host: 'worker2', role: 'base', task: 'may fail', message: 'disk on fire' });
    // worker2 stopped: no file c, no mysql role, no handler
    expect(existsSync(file('worker2', 'c'))).toBe(false);
    expect(existsSync(file('worker2', 'm'))).toBe(false);
    expect(handlerRuns.sort()).toEqual(['manager', 'worker1']);
    expect(readFileSync(file('worker1', 'm'), 'utf8')).toBe('M');
    expect(formatRecap(report)).toMatch(/worker2\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=1/);
  });

  test('--limit runs the roles on the named hosts only', async () => {
    const report = await go(false, roles(), ['worker1']);
    expect(Object.keys(report.hosts)).toEqual(['worker1']);
    expect(existsSync(file('worker1', 'a'))).toBe(true);
    expect(existsSync(file('manager', 'a'))).toBe(false);
  });

  test('an unreachable host is reported, the others run', async () => {
    const report = await run({
      cluster, hosts: hostsFor(['manager', 'worker1']), roles: roles(), check: false,
      privateKey: '', knownHosts: new KnownHosts(join(dir, 'kh')), secrets, progress: false,
      connect: async (h) => {
        if (h.name === 'manager') throw new Error('connection refused');
        return new LocalConnection(h);
      },
    });
    expect(report.hosts.manager.unreachable).toBe(true);
    expect(report.hosts.worker1.changed).toBeGreaterThan(0);
  });
});

describe('KnownHosts', () => {
  const key = (type: string, body: string) => {
    const t = Buffer.from(type);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(t.length);
    return Buffer.concat([len, t, Buffer.from(body)]);
  };

  test('pins on first use, accepts the same key, refuses another', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'rampart-kh-')), 'known_hosts');
    const kh = new KnownHosts(path);
    expect(kh.verify('10.0.0.5', 22, key('ssh-ed25519', 'first'))).toEqual({ ok: true });
    expect(readFileSync(path, 'utf8')).toMatch(/^10\.0\.0\.5 ssh-ed25519 \S+\n$/);
    expect(kh.verify('10.0.0.5', 22, key('ssh-ed25519', 'first'))).toEqual({ ok: true });
    const v = kh.verify('10.0.0.5', 22, key('ssh-ed25519', 'other'));
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.expected).not.toBe(v.got);
    // another port is another host
    expect(kh.verify('10.0.0.5', 2222, key('ssh-ed25519', 'other'))).toEqual({ ok: true });
    expect(readFileSync(path, 'utf8')).toContain('[10.0.0.5]:2222 ');
    kh.forget(['10.0.0.5']);
    expect(kh.verify('10.0.0.5', 22, key('ssh-ed25519', 'other'))).toEqual({ ok: true });
  });
});
