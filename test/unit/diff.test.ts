// --diff renderers: unified diffs of files and rulesets, old -> new lines of
// the MySQL roles; a managed file's detail reads the node's copy only then.
import { describe, expect, test } from 'bun:test';
import { unifiedDiff } from '../../core/diff.ts';
import { fileState } from '../../core/ssh.ts';
import type { Diff } from '../../core/types.ts';
import { fileTask } from '../../roles/lib/files.ts';
import { iptablesRole } from '../../roles/iptables.ts';
import { serverSettings } from '../../roles/lib/mysql-config.ts';
import { mysqlRole } from '../../roles/mysql.ts';
import { cluster, ctxFor, host } from './mysql-fixtures.ts';

describe('unified diff', () => {
  test('the changed lines with context, the node first; nothing when equal', async () => {
    const d = await unifiedDiff('/etc/x.conf', 'a\nb\nc\n', 'a\nB\nc\n');
    expect(d).toBe('--- /etc/x.conf (node)\n+++ /etc/x.conf (rampart)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n');
    expect(await unifiedDiff('/etc/x.conf', 'same\n', 'same\n')).toBe('');
  });
});

describe('task details', () => {
  test('a managed file: its detail reads the node copy then and diffs it, mode and owner included', async () => {
    const t = fileTask({ name: 'conf', path: () => '/etc/demo.conf', content: () => 'PasswordAuthentication no\nX11Forwarding no\n', mode: '0644', owner: 'root:root' });
    const sent: string[] = [];
    const conn = { exec: async (script: string) => (sent.push(script), { stdout: 'PasswordAuthentication no\nX11Forwarding yes\n\n@@meta 600 root:root\n', stderr: '', code: 0 }) };
    const ctx = { ...ctxFor('manager', { file0: fileState('old', '0600', 'root:root') }), conn: conn as never };
    const diff = t.check(ctx) as Diff;
    expect(sent).toEqual([]); // the check itself reads nothing more than its fact
    const text = await diff.detail!();
    expect(text.split('\n').filter((l) => /^[-+][^-+]/.test(l))).toEqual(['-X11Forwarding yes', '+X11Forwarding no']);
    expect(text).toContain('/etc/demo.conf: mode/owner 600 root:root -> 644 root:root');
  });

  test('the firewall: the rule lines added and removed', async () => {
    const live = iptablesRole.tasks.find((x) => x.name === 'firewall rules')!;
    const have = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 9999 -j ACCEPT\nCOMMIT\n';
    const diff = (await live.check(ctxFor('worker1', { live: have, live6: '' }))) as Diff;
    const text = await diff.detail!();
    expect(text).toMatch(/^--A INPUT -p tcp --dport 9999 -j ACCEPT$/m);
    expect(text).toMatch(/^\+-A INPUT -j DROP$/m);
  });

  test('MySQL: the variables old -> new', async () => {
    const settings = serverSettings('mariadb', host('worker1'), 'worker', cluster.database.semiSync);
    const vars = settings.map((x) => `${x.variable}\t${x.variable === 'read_only' ? 'OFF' : x.live}`).join('\n');
    const diff = (await mysqlRole.tasks.find((x) => x.name === 'server runs the config')!.check(ctxFor('worker1', { os: 'debian', vars, version: '' }))) as Diff;
    expect(await diff.detail!()).toBe('read_only: OFF -> ON\n');
  });
});
