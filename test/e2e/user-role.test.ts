// Issue 11 end to end on 2 LXC nodes: the example user role
// (examples/roles/node_exporter.ts), copied next to the cluster file as a user
// keeps it and named through `roleDirs:`, is applied with the built-ins it needs
// (base, iptables); a second apply changes nothing; its port answers exactly
// where security.flows says (worker1 -> manager) and nowhere else; --check plans
// a drift without repairing it or writing anything in the tool's tree.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { RunReport } from '../../core/types.ts';
import { e2eAvailable, onNode, ROOT, testClusterFile, zx } from '../support/cluster.ts';

const RUN = e2eAvailable();
const NAME = 'rpuser';
const DIR = '/tmp/rampart-e2e-user';
const NODES = ['manager', 'worker1'];
const addr = (node: string) => `10.87.0.${10 + NODES.indexOf(node)}`;
const ROLES = ['--roles', 'base,iptables,node_exporter'];
const EXAMPLE = join(ROOT, 'examples/roles/node_exporter.ts');
let file = '';

function ok(r: { code: number; stderr: string }, code = 0) {
  if (r.code !== code) throw new Error(`exit ${r.code} (wanted ${code}):\n${r.stderr.slice(-3000)}`);
}
const changedTasks = (r: RunReport) =>
  r.results.filter((x) => x.status === 'changed').map((x) => `${x.host}|${x.role}|${x.task}`).sort();
/** HTTP status of the exporter's /metrics as seen from a node ('000' = no answer). */
const scrape = (from: string, to: string) =>
  onNode(file, addr(from), `curl -s -o /dev/null -w '%{http_code}' --max-time 4 http://${addr(to)}:9100/metrics; true`).stdout.trim();
const gitStatus = () => execFileSync('git', ['status', '--porcelain', '--untracked-files=all'], { cwd: ROOT, encoding: 'utf8' });

describe.skipIf(!RUN)('a user role through roleDirs (2 LXC nodes)', () => {
  beforeAll(async () => {
    mkdirSync(join(DIR, 'roles'), { recursive: true });
    copyFileSync(EXAMPLE, join(DIR, 'roles/node_exporter.ts'));
    file = testClusterFile(DIR, NAME, '10.87.0.0/24', (doc) => {
      doc.set('nodes', doc.createNode([
        { name: 'manager', db: 'manager', roles: ['base', 'mysql', 'iptables', 'node_exporter'] },
        { name: 'worker1', db: 'worker', roles: ['base', 'mysql', 'iptables', 'node_exporter'] },
      ]));
      doc.set('security', doc.createNode({ flows: [{ from: 'worker1', to: 'manager', port: 9100 }] }));
      doc.set('roleDirs', doc.createNode(['roles']));
      doc.set('node_exporter', doc.createNode({ port: 9100 }));
    });
    await zx('teardown', file); // start from nothing
  }, 300_000);

  afterAll(async () => {
    if (file) await zx('teardown', file);
  }, 300_000);

  test('apply converges the user role with the built-ins', async () => {
    const r = await zx<RunReport>('apply', file, ROLES);
    ok(r);
    expect(Object.keys(r.json.hosts)).toEqual(NODES);
    for (const h of NODES) expect(r.json.hosts[h]).toMatchObject({ failed: 0, unreachable: false });
    // its tasks ran after the firewall, on both nodes
    const tasks = r.json.results.filter((x) => x.host === 'worker1').map((x) => x.role);
    expect(tasks.lastIndexOf('iptables')).toBeLessThan(tasks.indexOf('node_exporter'));
    expect(changedTasks(r.json)).toContain('manager|node_exporter|node exporter options');
    expect(changedTasks(r.json)).toContain('worker1|node_exporter|handler: restart prometheus-node-exporter.service');
    expect(onNode(file, addr('manager'), 'systemctl is-enabled prometheus-node-exporter; systemctl is-active prometheus-node-exporter').stdout.split('\n').slice(0, 2))
      .toEqual(['enabled', 'active']);
  }, 900_000);

  test('a second apply changes nothing', async () => {
    const r = await zx<RunReport>('apply', file, ROLES);
    ok(r);
    for (const h of NODES) expect(r.json.hosts[h]).toMatchObject({ changed: 0, failed: 0 });
  }, 300_000);

  test('the port answers exactly as declared: from worker1 to the manager, nowhere else', () => {
    expect(scrape('worker1', 'manager')).toBe('200');
    // no flow to worker1:9100, and the manager has none back
    expect(scrape('manager', 'worker1')).toBe('000');
    // nor from the controller
    const fromController = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '4', `http://${addr('manager')}:9100/metrics`], { encoding: 'utf8' });
    expect(fromController.stdout.trim()).toBe('000');
    // the exporter really listens there: a closed port would be the firewall's doing only
    expect(onNode(file, addr('worker1'), `curl -s -o /dev/null -w '%{http_code}' --max-time 4 http://127.0.0.1:9100/metrics`).stdout.trim()).toBe('200');
  }, 120_000);

  test('--check plans a drift without repairing it or touching the tool; apply repairs it', async () => {
    onNode(file, addr('worker1'), 'systemctl stop prometheus-node-exporter');
    const before = gitStatus();
    const mtime = statSync(EXAMPLE).mtimeMs;
    const check = await zx<RunReport>('apply', file, [...ROLES, '--check']);
    ok(check);
    expect(check.json.check).toBe(true);
    expect(changedTasks(check.json)).toEqual(['worker1|node_exporter|node exporter enabled and running']);
    expect(onNode(file, addr('worker1'), 'systemctl is-active prometheus-node-exporter; true').stdout.trim()).toBe('inactive');
    expect(gitStatus()).toBe(before);
    expect(statSync(EXAMPLE).mtimeMs).toBe(mtime);

    const fix = await zx<RunReport>('apply', file, ROLES);
    ok(fix);
    expect(changedTasks(fix.json)).toEqual(['worker1|node_exporter|node exporter enabled and running']);
    expect(scrape('worker1', 'manager')).toBe('200');
  }, 300_000);
});
