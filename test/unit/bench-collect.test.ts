// Collection: the results folder's name and the files written from what was collected.
import { afterAll, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resultsDir, unitOf, writeArtifacts } from '../../playbooks/bench/collect.ts';

const tmp = mkdtempSync(join(tmpdir(), 'bench-collect-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test('results/<UTC timestamp>: sortable, no colons', () => {
  const d = resultsDir('/repo', new Date(Date.UTC(2026, 10, 21, 9, 5, 7, 123)));
  expect(d).toBe('/repo/results/2026-11-21T09-05-07Z');
  expect(unitOf('trustedhost')).toBe('rampart-trustedhost');
});

test('writeArtifacts: logs per node and service, dumps, sysbench outputs, the exact cluster.yaml', () => {
  const cluster = join(tmp, 'cluster.yaml');
  writeFileSync(cluster, 'name: x # exact bytes\n');
  const dir = join(tmp, 'out');
  writeArtifacts(dir, {
    logs: [
      { node: 'gk', service: 'gatekeeper', text: '{"request_id":"a"}\n' },
      { node: 'px', service: 'proxy', text: '', error: 'no SSH connection' },
    ],
    dumps: { manager: '-- dump m\n', worker1: '-- dump w\n' },
    sysbench: { 'standalone-oltp_read_only-manager.txt': 'transactions: 1 (1.00 per sec.)\n' },
    clusterFile: cluster,
  });
  expect(readdirSync(join(dir, 'logs')).sort()).toEqual(['gk-gatekeeper.log', 'px-proxy.log']);
  expect(readFileSync(join(dir, 'logs', 'gk-gatekeeper.log'), 'utf8')).toBe('{"request_id":"a"}\n');
  expect(readFileSync(join(dir, 'logs', 'px-proxy.log'), 'utf8')).toContain('not collected: no SSH connection');
  expect(readFileSync(join(dir, 'dumps', 'worker1-actor.sql'), 'utf8')).toBe('-- dump w\n');
  expect(readdirSync(join(dir, 'sysbench'))).toEqual(['standalone-oltp_read_only-manager.txt']);
  expect(readFileSync(join(dir, 'cluster.yaml'), 'utf8')).toBe('name: x # exact bytes\n');
});
