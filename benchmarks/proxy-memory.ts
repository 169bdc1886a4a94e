// What holds the proxy's memory: a Bun process that does only what the
// proxy's database side does (import mysql2, one pool per node, prepared
// SELECTs at concurrency 64) and reports its RSS after each step, for a few
// pool sizes, against its own MariaDB on loopback (test/support/mariadb.ts;
// needs root). Each variant runs in a fresh process.
//
//   node_modules/.bin/bun benchmarks/proxy-memory.ts [--seconds 4] [--nodes 3] [--json]
//
// Prints one row per variant (pool size, mysql2's prepared statement cache
// size, a full GC every second, --smol): RSS at start, after importing
// mysql2, with every pooled connection open, and the peak under load, plus
// the requests served (the same machine, the same run: compare rows, not
// runs).

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mariadbAvailability, startCluster } from '../test/support/mariadb.ts';

const flag = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const SQL = 'SELECT id, name, qty FROM items WHERE id = ?';
const rss = (): number => Math.round(process.memoryUsage().rss / 1e6);

interface Probe { start: number; imported: number; connected: number; peak_load: number; requests: number }

async function child(): Promise<void> {
  const { port, user, password, database, pool, nodes, seconds, mps, gc } = JSON.parse(process.env.RAMPART_PROBE ?? '{}') as Record<string, string>;
  const out: Partial<Probe> = { start: rss() };
  const mysql = (await import('mysql2/promise')).default;
  out.imported = rss();
  const size = Number(pool);
  const pools = Array.from({ length: Number(nodes) }, () => mysql.createPool({ host: '127.0.0.1', port: Number(port), user, password, database, connectionLimit: size, maxIdle: size, ...(mps ? { maxPreparedStatements: Number(mps) } : {}) }));
  await Promise.all(pools.map((p) => Promise.all(Array.from({ length: size }, () => p.query('SELECT 1')))));
  out.connected = rss();
  // as the services do (services/serve.ts): a full collection every second
  const timer = Number(gc) ? setInterval(() => Bun.gc(true), 1000) : undefined;
  let peak = 0;
  let n = 0;
  const until = Date.now() + Number(seconds) * 1000;
  await Promise.all(Array.from({ length: 64 }, async (_, i) => {
    while (Date.now() < until) {
      await pools[i % pools.length].execute(SQL, [1 + (n % 100)]);
      if (++n % 500 === 0) peak = Math.max(peak, rss());
    }
  }));
  clearInterval(timer);
  out.peak_load = peak;
  out.requests = n;
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
}

async function main(): Promise<void> {
  const avail = mariadbAvailability();
  if (!avail.ok) throw new Error(`needs a local MariaDB: ${avail.reason}`);
  const seconds = flag('seconds', 4);
  const nodes = flag('nodes', 3);
  const c = await startCluster({ replicas: 0 });
  const rows: Array<{ pool: number; smol: boolean; mps: number; gc: boolean } & Probe> = [];
  try {
    const admin = await import('mysql2/promise');
    const conn = await admin.default.createConnection({ host: '127.0.0.1', port: c.primary.port, user: c.admin.user, password: c.admin.password, database: c.database });
    for (let i = 0; i < 100; i++) await conn.execute('INSERT INTO items (name, qty) VALUES (?, ?)', [`item${i}`, i]);
    await conn.end();
    // mps: mysql2's per-connection prepared statement cache (maxPreparedStatements; 0: its default,
    // 16000, four arrays of that length allocated with each connection); the proxy sets PREPARED_CACHE
    // gc: Bun.gc(true) every second under load, as the services run
    const variants = [[16, false, 0, false], [16, false, 256, false], [16, false, 256, true], [8, false, 0, false], [8, false, 256, false],
      [8, false, 256, true], [4, false, 256, true], [16, true, 256, true]] as const;
    for (const [pool, smol, mps, gc] of variants) {
      const args = [...(smol ? ['--smol'] : []), fileURLToPath(import.meta.url), '--child'];
      // the settings (a password among them) through the environment, not argv
      const probe = { port: c.primary.port, user: c.app.user, password: c.app.password, database: c.database, pool, nodes, seconds, mps, gc: gc ? 1 : 0 };
      const r = spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, RAMPART_PROBE: JSON.stringify(probe) } });
      if (r.status !== 0) throw new Error(`probe failed: ${r.stderr.slice(0, 400)}`);
      rows.push({ pool, smol, mps, gc, ...(JSON.parse(r.stdout) as Probe) });
    }
  } finally {
    await c.stop();
  }
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ nodes, seconds, rows }));
    return;
  }
  console.log(`| pool per node x ${nodes} nodes | prepared statement cache | full GC every second | start | mysql2 imported | connections open | peak under load | requests in ${seconds} s |`);
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.pool}${r.smol ? ' (--smol)' : ''} | ${r.mps || '16000 (default)'} | ${r.gc ? 'yes' : 'no'} | ${r.start} MB | ${r.imported} MB | ${r.connected} MB | ${r.peak_load} MB | ${r.requests} |`);
}

if (process.argv[2] === '--child') await child();
else await main();
