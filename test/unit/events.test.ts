// The engine's events: plain-code scheduling reports connect, facts, each
// role, task starts, results, each host's end of a role and the recap, in the
// order they happen; the report is built from the same results.
import { expect, test } from 'bun:test';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineEvent } from '../../core/events.ts';
import { run } from '../../core/run.ts';
import { KnownHosts, shq } from '../../core/ssh.ts';
import type { Host, Role } from '../../core/types.ts';
import { cluster } from '../support/hosts.ts';
import { LocalConnection } from '../support/local-connection.ts';

test('events: one stream from connect to recap; a failed host is skipped in later roles', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-events-'));
  const hosts: Host[] = ['manager', 'worker1'].map((name) => ({
    name, address: '127.0.0.1', privateAddress: '127.0.0.1', port: 22, user: 'root', sshFrom: '127.0.0.1/32',
    node: { ...cluster.nodes.find((n) => n.name === name)!, roles: ['base', 'mysql', 'sakila'] },
  }));
  const roles: Role[] = [
    { name: 'base', tasks: [{
      name: 'file a',
      facts: ({ host }) => ({ f: `cat ${shq(join(dir, host.name))}` }),
      check: ({ facts }) => (facts.f.stdout === 'A' ? null : { message: 'write a' }),
      apply: async ({ host }) => writeFileSync(join(dir, host.name), 'A'),
    }] },
    { name: 'mysql', tasks: [{
      name: 'fails on worker1',
      check: ({ host }) => (host.name === 'worker1' ? { message: 'x' } : null),
      apply: async () => {
        throw new Error('disk on fire');
      },
    }] },
    { name: 'sakila', tasks: [{ name: 'noop', check: () => null, apply: async () => {} }] },
  ];
  const events: EngineEvent[] = [];
  const report = await run({
    cluster, hosts, roles, check: false, privateKey: '', knownHosts: new KnownHosts(join(dir, 'kh')), secrets: { get: (n) => n },
    progress: false, connect: async (h) => new LocalConnection(h), onEvent: (e) => events.push(e),
  });
  const of = (host: string) => events.flatMap((e) => {
    if (e.type === 'result') return e.result.host === host ? [`result ${e.result.role}/${e.result.task} ${e.result.status}`] : [];
    if (e.type === 'role' || e.type === 'recap') return [e.type === 'role' ? `role ${e.role}` : 'recap'];
    if ('host' in e && e.host !== host) return [];
    if (e.type === 'host') return [`host ${e.role}${e.skipped ? ' skipped' : e.failed ? ' failed' : ''}`];
    return [e.type === 'task' ? `task ${e.task}` : e.type];
  });
  expect(of('worker1')).toEqual([
    'connect', 'facts',
    'role base', 'task file a', 'result base/file a changed', 'host base',
    'role mysql', 'task fails on worker1', 'result mysql/fails on worker1 failed', 'host mysql failed',
    'role sakila', 'host sakila skipped',
    'recap',
  ]);
  expect(of('manager').slice(-5)).toEqual(['role sakila', 'task noop', 'result sakila/noop ok', 'host sakila', 'recap']);
  const recap = events.at(-1)!;
  expect(recap.type === 'recap' && recap.report).toBe(report);
  expect(report.hosts.worker1).toMatchObject({ changed: 1, failed: 1 });
});
