// Loopback integration, real MariaDB: a write whose connection dies after it
// was sent answers 504 OUTCOME_UNKNOWN (here it did not commit: it was waiting
// for a row lock when its connection was killed), a write that never reached a
// server answers 503 DB_UNAVAILABLE (not executed).
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import mysql from 'mysql2/promise';
import { mariadbAvailability, startCluster, type TestCluster } from '../support/mariadb.ts';
import { launchServices, type Services } from './launch.ts';

const avail = mariadbAvailability();
if (!avail.ok && process.env.CI === 'true') {
  test('MariaDB integration prerequisites', () => {
    throw new Error(`cannot run the MariaDB integration test under CI: ${avail.reason}`);
  });
}

describe.skipIf(!avail.ok)('write outcomes against MariaDB', () => {
  let cluster: TestCluster;
  let svc: Services;
  const ask = async (payload: Record<string, unknown>): Promise<{ status: number; code?: string; id?: number }> => {
    const res = await fetch(`${svc.gatekeeper.url}/query`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': svc.apiKey }, body: JSON.stringify(payload),
    });
    const v = (await res.json()) as { insert_id?: number; error?: { code: string } };
    return { status: res.status, code: v.error?.code, id: v.insert_id };
  };

  beforeAll(async () => {
    cluster = await startCluster({ replicas: 1 });
    svc = await launchServices({
      schemas: [cluster.database],
      db: {
        manager: { name: 'manager', host: '127.0.0.1', port: cluster.primary.port },
        workers: [{ name: 'worker1', host: '127.0.0.1', port: cluster.replicas[0].port }],
        user: cluster.app.user, password: cluster.app.password, database: cluster.database,
      },
      probeIntervalMs: 100,
    });
  }, 120_000);

  afterAll(async () => {
    await svc?.stop();
    await cluster?.stop();
  });

  test('connection killed while the write runs: 504 OUTCOME_UNKNOWN, not the not-executed code', async () => {
    const row = await ask({ sql: 'INSERT INTO items (name, qty) VALUES (?, ?)', params: ['outcome', 1] });
    expect(row.status).toBe(200);
    const admin = await mysql.createConnection({ host: '127.0.0.1', port: cluster.primary.port, user: cluster.admin.user, password: cluster.admin.password, database: cluster.database });
    try {
      await admin.query('BEGIN');
      await admin.query('SELECT qty FROM items WHERE id = ? FOR UPDATE', [row.id]);
      const pending = ask({ sql: 'UPDATE items SET qty = qty + 1 WHERE id = ?', params: [row.id] });
      // the proxy's statement is on the server, waiting for the lock: kill its connection
      let id: number | undefined;
      for (let i = 0; i < 100 && id === undefined; i++) {
        const [rows] = await admin.query("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'UPDATE items SET qty%'");
        id = (rows as { ID: number }[])[0]?.ID;
        if (id === undefined) await new Promise((r) => setTimeout(r, 50));
      }
      expect(id).toBeDefined();
      await admin.query(`KILL CONNECTION ${Number(id)}`);
      const answer = await pending;
      expect([answer.status, answer.code]).toEqual([504, 'OUTCOME_UNKNOWN']);
      await admin.query('ROLLBACK');
      const [after] = await admin.query('SELECT qty FROM items WHERE id = ?', [row.id]);
      expect((after as { qty: number }[])[0].qty).toBe(1);
    } finally {
      await admin.end();
    }
  }, 60_000);

  test('the primary stopped: writes answer 503 DB_UNAVAILABLE (not executed), never OUTCOME_UNKNOWN', async () => {
    await cluster.primary.sql('SHUTDOWN').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
    const answers = await Promise.all(Array.from({ length: 5 }, () => ask({ sql: 'INSERT INTO items (name, qty) VALUES (?, ?)', params: ['down', 1] })));
    for (const a of answers) expect([a.status, a.code]).toEqual([503, 'DB_UNAVAILABLE']);
  }, 60_000);
});
