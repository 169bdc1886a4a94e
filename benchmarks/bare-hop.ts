// The runtime's floor for one hop, the baseline benchmarks/services.ts runs
// rampart's hops against: a bare Bun.serve that reads the JSON, checks one
// header, fetches the next hop and passes the body back; the last hop runs
// the same prepared SELECT with mysql2 instead. No validation, no policy, no
// log: only what any hop must pay.
//
//   BARE_PORT=... BARE_SECRET=... (BARE_NEXT=http://127.0.0.1:PORT | BARE_DB='{"host",...}') bun benchmarks/bare-hop.ts

import mysql from 'mysql2/promise';

const port = Number(process.env.BARE_PORT);
const expected = process.env.BARE_SECRET ?? '';
const next = process.env.BARE_NEXT ? `${process.env.BARE_NEXT}/query` : '';
const db = process.env.BARE_DB ? (JSON.parse(process.env.BARE_DB) as mysql.PoolOptions) : null;
const pool = db ? mysql.createPool({ ...db, dateStrings: true, supportBigNumbers: true }) : null;
const headers = { 'content-type': 'application/json', 'x-hop': expected };

const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  async fetch(req) {
    if (req.headers.get('x-hop') !== expected) return new Response('{"error":"denied"}', { status: 401 });
    const body = (await req.json()) as { sql: string; params?: unknown[] };
    if (pool) {
      const [rows] = await pool.execute(body.sql, body.params as mysql.ExecuteValues);
      return Response.json({ rows });
    }
    const res = await fetch(next, { method: 'POST', headers, body: JSON.stringify(body) });
    return new Response(await res.text(), { status: res.status, headers: { 'content-type': 'application/json' } });
  },
});
process.stderr.write(`bare hop listening on ${server.port}\n`);
process.once('SIGTERM', () => {
  void server.stop(true);
  void pool?.end();
  process.exit(0);
});
