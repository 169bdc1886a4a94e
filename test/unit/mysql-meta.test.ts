// Completion markers and content checks for Sakila and sysbench, and the
// controller-side tarball resolution (sha256 verified in every case).
import { describe, expect, test } from 'bun:test';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  parseSakila, parseSysbenchTables, sakilaLoadScript, sakilaProblem, sysbenchCommand, sysbenchPrepareScript, sysbenchProblem,
} from '../../roles/lib/mysql-meta.ts';
import { SakilaError, sakilaTarball } from '../../roles/sakila.ts';
import { cluster } from './mysql-fixtures.ts';

const SHA = cluster.database.sakila.sha256;
const spec = cluster.database.sysbench;

describe('sakila state', () => {
  test('complete: marker of this tarball and the reference counts (actor may grow)', () => {
    expect(sakilaProblem(parseSakila(`marker\t${SHA}\ncounts\t200\t1000\t16044\n`), SHA)).toBeNull();
    expect(sakilaProblem(parseSakila(`marker\t${SHA}\ncounts\t1200\t1000\t16044\n`), SHA)).toBeNull();
  });

  test('a killed load (tables, no marker) is incomplete; nothing at all is "not loaded"', () => {
    expect(sakilaProblem(parseSakila('counts\t200\t1000\t9000\n'), SHA)).toMatch(/incomplete load/);
    expect(sakilaProblem(parseSakila(''), SHA)).toBe('not loaded');
  });

  test('wrong counts or another tarball are problems', () => {
    expect(sakilaProblem(parseSakila(`marker\t${SHA}\ncounts\t200\t999\t16044\n`), SHA)).toMatch(/unexpected counts/);
    expect(sakilaProblem(parseSakila(`marker\tabc\ncounts\t200\t1000\t16044\n`), SHA)).toMatch(/another tarball/);
  });

  test('the load script is serialised, re-checks under the lock, verifies the sha256, and marks last', () => {
    const s = sakilaLoadScript('/tmp/s.tar.gz', SHA, 'sakila');
    expect(s).toContain('flock 9');
    expect(s).toContain('sha256sum -c');
    const order = ['sakila-schema.sql', 'sakila-data.sql', 'INSERT INTO rampart.meta'].map((x) => s.indexOf(x));
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(s.indexOf("DELETE FROM rampart.meta WHERE k='sakila'")).toBeLessThan(order[0]);
  });
});

describe('sysbench state', () => {
  test('prepared = marker of this size and all tables present', () => {
    expect(sysbenchProblem(parseSysbenchTables(`marker\t${spec.tables}x${spec.tableSize}\ntables\t${spec.tables}\n`), spec)).toBeNull();
    expect(sysbenchProblem(parseSysbenchTables(`tables\t3\n`), spec)).toMatch(/incomplete prepare/);
    expect(sysbenchProblem(parseSysbenchTables(`marker\t${spec.tables}x${spec.tableSize}\ntables\t1\n`), spec)).toMatch(/1 tables/);
    expect(sysbenchProblem(parseSysbenchTables(`marker\t2x10\ntables\t2\n`), spec)).toMatch(/prepared as 2x10/);
  });

  test('table options go on the command line (sysbench 1.0 ignores them in --config-file); prepare drops leftovers first', () => {
    expect(sysbenchCommand(spec, 'oltp_read_only', 'run')).toBe(`PATH=/usr/local/bin:$PATH sysbench --config-file=/etc/rampart/sysbench.cfg oltp_read_only --tables=${spec.tables} --table_size=${spec.tableSize} run`);
    const s = sysbenchPrepareScript(spec);
    expect(s.indexOf('DROP TABLE IF EXISTS')).toBeLessThan(s.indexOf(' prepare >/dev/null'));
    expect(s.indexOf(' prepare >/dev/null')).toBeLessThan(s.indexOf('INSERT INTO rampart.meta'));
  });
});

describe('sakila tarball on the controller', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-sakila-'));
  const withPath = (path: string | undefined) => ({ ...cluster, dir, database: { ...cluster.database, sakila: { ...cluster.database.sakila, path } } });
  const noDownload = async (): Promise<Buffer> => {
    throw new Error('offline');
  };

  test('the shared offline tarball (path relative to cluster.yaml) verifies', async () => {
    expect(await sakilaTarball(cluster, noDownload)).toMatch(/sakila-db\.tar\.gz$/);
  });

  test('a file with another sha256 is refused with a clear error', async () => {
    const bad = join(dir, 'bad.tar.gz');
    writeFileSync(bad, 'not the tarball');
    await expect(sakilaTarball(withPath(bad), noDownload)).rejects.toThrow(SakilaError);
    await expect(sakilaTarball(withPath(bad), noDownload)).rejects.toThrow(/sha256/);
  });

  test('no local file and no network -> actionable error naming the offline options', async () => {
    await expect(sakilaTarball(withPath(undefined), noDownload)).rejects.toThrow(/download of .* failed/);
  });

  test('a download with the wrong content is refused and not cached; a good one is cached and reused', async () => {
    const { readFileSync } = await import('node:fs');
    await expect(sakilaTarball(withPath(undefined), async () => Buffer.from('evil'))).rejects.toThrow(/expects/);
    const good = readFileSync(await sakilaTarball(cluster, noDownload));
    const cached = await sakilaTarball(withPath(undefined), async () => good);
    expect(cached.startsWith(join(dir, '.rampart'))).toBe(true);
    expect(await sakilaTarball(withPath(undefined), noDownload)).toBe(cached); // served from the cache now
  });
});
