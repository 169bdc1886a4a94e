// The run log: every command as a JSON line, secrets and password hashes
// masked, 0600, the newest 50 kept; the -v / -vv rendering; --limit groups.
import { describe, expect, test } from 'bun:test';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveLimit } from '../../core/limit.ts';
import { formatRecord, KEEP_RUN_LOGS, RunLog, type CommandRecord } from '../../core/runlog.ts';
import { cluster } from './mysql-fixtures.ts';

const SECRET = 'Zm9vYmFyLXNlY3JldC12YWx1ZS0x';

describe('run log', () => {
  test('one JSON line per command, 0600 in a 0700 folder, secrets and native hashes masked', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rplog-'));
    const shown: string[] = [];
    const log = new RunLog(dir, 'apply', [SECRET, 'short'], 1, (s) => shown.push(s));
    log.record({ host: 'manager', kind: 'exec', command: `echo ${SECRET}`, code: 0, durationMs: 3, stdout: `U\trampart_app\t10.0.0.1\tmysql_native_password\t*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19\n${SECRET}\n`, stderr: '' });
    log.record({ host: 'manager', kind: 'facts', command: '2 fact commands in one round trip', code: 0, durationMs: 5, facts: { 'mysql | x | a': { code: 0, stdout: SECRET } } });
    const text = readFileSync(log.path, 'utf8');
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as CommandRecord);
    expect(lines.map((l) => [l.host, l.kind, l.code])).toEqual([['manager', 'exec', 0], ['manager', 'facts', 0]]);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain('2470C0C06DEE42FD');
    expect(lines[0].command).toBe('echo ***');
    expect(lines[1].facts!['mysql | x | a'].stdout).toBe('***');
    expect(statSync(log.path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'logs')).mode & 0o777).toBe(0o700);
    // -v printed the command and its output, masked too
    expect(shown.join('')).toContain('[manager] exec (exit 0, 3 ms)');
    expect(shown.join('')).not.toContain(SECRET);
  });

  test('only the newest runs are kept', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rplog-'));
    new RunLog(dir, 'apply', []);
    for (let i = 0; i < KEEP_RUN_LOGS + 5; i++) writeFileSync(join(dir, 'logs', `2000-01-01T00-00-${String(i).padStart(2, '0')}-000Z-apply-1.jsonl`), '');
    const newest = new RunLog(dir, 'apply', []);
    const left = readdirSync(join(dir, 'logs'));
    expect(left.length).toBe(KEEP_RUN_LOGS);
    expect(left).toContain(newest.path.split('/').pop()!);
    expect(left).not.toContain('2000-01-01T00-00-00-000Z-apply-1.jsonl');
  });

  test('-v shows commands and output; facts only as a count unless -vv', () => {
    const facts: CommandRecord = { ts: '', host: 'w1', kind: 'facts', command: '2 fact commands in one round trip', code: 0, durationMs: 1, facts: { 'base | hostname | name': { code: 0, stdout: 'w1\n' } } };
    expect(formatRecord(facts, 1)).not.toContain('fact base | hostname');
    expect(formatRecord(facts, 2)).toContain('fact base | hostname | name (exit 0):\n    w1');
    const exec: CommandRecord = { ts: '', host: 'w1', kind: 'exec', command: 'systemctl restart x', code: 1, durationMs: 9, stdout: '', stderr: 'failed\n' };
    expect(formatRecord(exec, 1)).toBe('[w1] exec (exit 1, 9 ms)\n    systemctl restart x\n  stderr:\n    failed\n');
  });
});

describe('--limit', () => {
  test('node names and groups: db, manager, workers, services, a service, a role', () => {
    expect(resolveLimit(cluster, undefined)).toBeUndefined();
    expect(resolveLimit(cluster, 'workers')).toEqual(['worker1', 'worker2']);
    expect(resolveLimit(cluster, 'db')).toEqual(['manager', 'worker1', 'worker2']);
    expect(resolveLimit(cluster, 'services,manager')).toEqual(['gatekeeper', 'trustedhost', 'proxy', 'manager']);
    expect(resolveLimit(cluster, 'sysbench')).toEqual(['manager', 'worker1', 'worker2']);
    expect(resolveLimit(cluster, 'worker2, proxy')).toEqual(['proxy', 'worker2']);
    expect(() => resolveLimit(cluster, 'workerz')).toThrow(/unknown host\(s\) or group\(s\): workerz/);
  });
});

describe('pending updates', () => {
  test('apt-get -s lines parsed; security ones told apart; the policy picks', async () => {
    const { parsePendingUpgrades, wantedUpgrades } = await import('../../roles/lib/apt.ts');
    const out = [
      'age 120',
      'Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])',
      'Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable-updates [all])',
      'Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Ubuntu:24.04/noble-security [amd64]) []',
    ].join('\n');
    const p = parsePendingUpgrades(out);
    expect(p.listsAgeS).toBe(120);
    expect(p.upgrades).toEqual([
      { name: 'libssl3', from: '3.0.15-1~deb12u1', to: '3.0.17-1~deb12u2', security: true },
      { name: 'tzdata', from: '2024a-0+deb12u1', to: '2025b-0+deb12u1', security: false },
      { name: 'openssl', from: '3.0.15-1~deb12u1', to: '3.0.17-1~deb12u2', security: true },
    ]);
    expect(wantedUpgrades(p.upgrades, 'security').map((u) => u.name)).toEqual(['libssl3', 'openssl']);
    expect(wantedUpgrades(p.upgrades, 'all')).toHaveLength(3);
    expect(wantedUpgrades(p.upgrades, 'none')).toEqual([]);
    expect(parsePendingUpgrades(`age ${Math.floor(Date.now() / 1000) + 1}`).listsAgeS).toBeNull(); // never refreshed
  });

  test('the base role: stale lists and security upgrades are drift, --diff says old -> new; fresh and current is ok', async () => {
    const { baseRole } = await import('../../roles/base.ts');
    const { ctxFor } = await import('./mysql-fixtures.ts');
    const t = baseRole.tasks.find((x) => x.name === 'package lists and pending updates')!;
    const d = t.check(ctxFor('manager', { pending: 'age 99999\nInst libssl3 [1] (2 Debian-Security:12/stable-security [amd64])\n' })) as { message: string; detail: () => string };
    expect(d.message).toMatch(/^refresh package lists \(\d+ min old\); upgrade 1 package\(s\) with a security update: libssl3$/);
    expect(d.detail()).toBe('libssl3: 1 -> 2 (security)\n');
    expect(t.check(ctxFor('manager', { pending: 'age 60\nInst tzdata [1] (2 Debian:12/stable-updates [all])\n' }))).toBeNull();
  });
});
