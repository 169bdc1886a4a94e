// The load generator against a real HTTP server on loopback (node:http in
// this process): concurrency honoured, keep-alive sockets reused, every
// request accounted for, bad answers and errors counted, rate cap honoured.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkResponse, health, keepAliveAgent, LoadClient, queryOnce, runPhase } from '../../playbooks/bench/load.ts';

interface Seen {
  inFlight: number;
  maxInFlight: number;
  sockets: number;
  ids: string[];
  keys: Set<string>;
}

let server: Server;
let base = '';
const seen: Seen = { inFlight: 0, maxInFlight: 0, sockets: 0, ids: [], keys: new Set() };

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let s = '';
    req.on('data', (c) => (s += c));
    req.on('end', () => resolve(s));
  });
}

beforeAll(async () => {
  // Answers like the gatekeeper: 401 without the key; for request n (the id's last
  // number) n % 100 == 13 gets a 503, 17 a wrong node, 19 the wrong request_id,
  // 23 garbage; others a proper read/write.
  server = createServer(async (req, res) => {
    if (req.url === '/health') {
      res.end('{"status":"ok"}');
      return;
    }
    seen.inFlight++;
    seen.maxInFlight = Math.max(seen.maxInFlight, seen.inFlight);
    const body = JSON.parse(await readBody(req)) as { request_id: string; mode?: string; sql: string };
    seen.ids.push(body.request_id);
    seen.keys.add(String(req.headers['x-api-key']));
    await new Promise((r) => setTimeout(r, 3));
    seen.inFlight--;
    const json = (status: number, v: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(v));
    };
    if (req.headers['x-api-key'] !== 'k3y') return json(401, { error: { code: 'UNAUTHORIZED', message: 'a valid X-API-Key header is required' } });
    const id = body.request_id;
    const n = Number(id.split('-').pop()) % 100;
    const write = body.sql.startsWith('INSERT');
    const node = write || body.mode === 'direct' ? 'manager' : 'worker1';
    if (n === 13) return json(503, { error: { code: 'DB_UNAVAILABLE', message: 'no database node' } });
    if (n === 23) {
      res.writeHead(200);
      return res.end('<html>');
    }
    const answer = write
      ? { request_id: id, mode: body.mode ?? 'customized', type: 'write', node, affected_rows: 1, insert_id: 7, duration_ms: 1 }
      : { request_id: id, mode: body.mode, type: 'read', node, rows: [{ actor_id: 1 }], duration_ms: 1 };
    if (n === 17) answer.node = 'elsewhere';
    if (n === 19) answer.request_id = 'other';
    json(200, answer);
  });
  server.on('connection', () => seen.sockets++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
});

const reset = () => Object.assign(seen, { inFlight: 0, maxInFlight: 0, sockets: 0, ids: [], keys: new Set() });

describe('runPhase', () => {
  test('300 reads at concurrency 8: all accounted for, at most 8 in flight and 8 sockets, errors counted by kind', async () => {
    reset();
    const client = new LoadClient(base, 8);
    const run = await runPhase({
      url: base, apiKey: 'k3y', phase: 'random', count: 300, concurrency: 8, client,
      requestId: (i) => `t-r-${i}`,
      body: (i) => ({ sql: 'SELECT 1', params: [i], mode: 'random' }),
      expect: { type: 'read', mode: 'random', nodes: ['manager', 'worker1', 'worker2'] },
    });
    client.close();
    expect(run.records.length).toBe(300);
    expect(new Set(run.records.map((r) => r.id)).size).toBe(300);
    expect([...seen.ids].sort()).toEqual(run.records.map((r) => r.id).sort()); // the server saw exactly these
    expect(seen.maxInFlight).toBeLessThanOrEqual(8);
    expect(seen.maxInFlight).toBeGreaterThanOrEqual(6); // and it really ran in parallel
    expect(seen.sockets).toBeLessThanOrEqual(8); // keep-alive: no socket per request
    const bad = run.records.filter((r) => !r.ok);
    // n % 100 in 13, 17, 19, 23 among 0..299: three of each
    expect(bad.length).toBe(12);
    expect(bad.filter((r) => r.error?.startsWith('DB_UNAVAILABLE')).length).toBe(3);
    expect(bad.filter((r) => r.error?.includes('unknown node elsewhere')).length).toBe(3);
    expect(bad.filter((r) => r.error?.includes('request_id other')).length).toBe(3);
    expect(bad.filter((r) => r.error?.includes('not JSON')).length).toBe(3);
    expect(run.records.filter((r) => r.ok).every((r) => r.node === 'worker1' && r.status === 200 && r.latencyMs > 0)).toBe(true);
    expect(run.wallMs).toBeGreaterThan(0);
  });

  test('writes: the mode is not checked, affected_rows is; a wrong type is an error', async () => {
    reset();
    const client = new LoadClient(base, 4);
    const ok = await runPhase({
      url: base, apiKey: 'k3y', phase: 'write', count: 10, concurrency: 4, client, requestId: (i) => `t-w-${i}`,
      body: () => ({ sql: 'INSERT INTO actor (first_name, last_name) VALUES (?, ?)', params: ['A', 'B'] }),
      expect: { type: 'write', nodes: ['manager'] },
    });
    expect(ok.records.every((r) => r.ok && r.node === 'manager')).toBe(true);
    const wrong = await runPhase({
      url: base, apiKey: 'k3y', phase: 'direct', count: 3, concurrency: 2, client, requestId: (i) => `t-x-${i}`,
      body: () => ({ sql: 'SELECT 1', mode: 'direct' }), expect: { type: 'write' },
    });
    client.close();
    expect(seen.sockets).toBeLessThanOrEqual(4); // the second phase reused the first one's connections
    expect(wrong.records.every((r) => !r.ok && r.error?.includes('type read instead of write'))).toBe(true);
  });

  test('the API key is sent; a wrong key gives 401 on every request', async () => {
    reset();
    const client = new LoadClient(base, 2);
    const run = await runPhase({
      url: base, apiKey: 'wrong', phase: 'direct', count: 5, concurrency: 2, client, requestId: (i) => `t-k-${i}`,
      body: () => ({ sql: 'SELECT 1', mode: 'direct' }), expect: { type: 'read', mode: 'direct' },
    });
    client.close();
    expect([...seen.keys]).toEqual(['wrong']);
    expect(run.records.every((r) => r.status === 401 && r.error?.startsWith('UNAUTHORIZED'))).toBe(true);
  });

  test('a rotated key: after a 401 the key is read again and the request sent once more; an unchanged key is not retried', async () => {
    reset();
    const client = new LoadClient(base, 2);
    let reads = 0;
    const run = await runPhase({
      url: base, apiKey: 'old-key', refreshKey: () => (reads++, 'k3y'), phase: 'direct', count: 6, concurrency: 2, client,
      requestId: (i) => `t-rk-${i}`, body: () => ({ sql: 'SELECT 1', mode: 'direct' }), expect: { type: 'read', mode: 'direct' },
    });
    expect(run.records.every((r) => r.ok && r.status === 200)).toBe(true);
    expect(reads).toBeGreaterThanOrEqual(1);
    expect(reads).toBeLessThanOrEqual(2); // only the requests that met the old key asked again
    // 6 requests, each sent with the right key once; at most the two in flight first met the old one
    expect(seen.ids.length).toBeGreaterThanOrEqual(7);
    expect(seen.ids.length).toBeLessThanOrEqual(8);
    reset();
    const same = await runPhase({
      url: base, apiKey: 'wrong', refreshKey: () => 'wrong', phase: 'direct', count: 3, concurrency: 1, client,
      requestId: (i) => `t-rs-${i}`, body: () => ({ sql: 'SELECT 1', mode: 'direct' }), expect: { type: 'read', mode: 'direct' },
    });
    client.close();
    expect(same.records.every((r) => r.status === 401)).toBe(true);
    expect(seen.ids.length).toBe(3); // no retry when the key did not change
  });

  test('rate cap: 20 requests at 100/s take about 0.19 s or more', async () => {
    const client = new LoadClient(base, 8);
    const run = await runPhase({
      url: base, apiKey: 'k3y', phase: 'direct', count: 20, concurrency: 8, rate: 100, client, requestId: (i) => `t-p-${i}x`,
      body: () => ({ sql: 'SELECT 1', mode: 'direct' }), expect: { type: 'read', mode: 'direct' },
    });
    client.close();
    expect(run.wallMs).toBeGreaterThanOrEqual(185);
    expect(run.records.every((r) => r.ok)).toBe(true);
  });

  test('nobody listening: every request is an error with status 0, none lost', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const client = new LoadClient(`http://127.0.0.1:${port}`, 4);
    const run = await runPhase({
      url: `http://127.0.0.1:${port}`, apiKey: 'k3y', phase: 'direct', count: 12, concurrency: 4, client, requestId: (i) => `t-n-${i}`,
      body: () => ({ sql: 'SELECT 1' }), expect: { type: 'read' },
    });
    client.close();
    const agent = keepAliveAgent(1);
    expect(run.records.length).toBe(12);
    expect(run.records.every((r) => !r.ok && r.status === 0 && r.error?.startsWith('ECONNREFUSED'))).toBe(true);
    await expect(health(agent, `http://127.0.0.1:${port}`, 1000)).rejects.toThrow();
    agent.destroy();
  });
});

test('health and queryOnce against the server', async () => {
  const agent = keepAliveAgent(1);
  expect(await health(agent, base)).toBe(200);
  const r = await queryOnce(agent, base, 'nope', { sql: 'SELECT 1', request_id: 'q-1' });
  expect(r.status).toBe(401);
  expect((r.json?.error as { code: string }).code).toBe('UNAUTHORIZED');
  agent.destroy();
});

test('checkResponse: a read without rows is not a valid read', () => {
  const res = { status: 200, body: JSON.stringify({ request_id: 'a', mode: 'direct', type: 'read', node: 'manager' }) };
  expect(checkResponse(res, 'a', { type: 'read', mode: 'direct' }).error).toContain('without rows');
  expect(checkResponse({ ...res, body: JSON.stringify({ request_id: 'a', mode: 'random', type: 'read', node: 'manager', rows: [] }) }, 'a', { type: 'read', mode: 'direct' }).error).toContain('mode random instead of direct');
});

describe('Http1Connection (the load client)', () => {
  test('chunked bodies, Connection: close, a server dropping idle sockets, a timeout: each handled, none lost', async () => {
    let sockets = 0;
    const srv = createServer(async (req, res) => {
      const body = await readBody(req);
      if (req.url === '/chunked') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"a":');
        await new Promise((r) => setTimeout(r, 5));
        res.end(`${JSON.stringify(body)}}`);
      } else if (req.url === '/close') {
        res.writeHead(200, { connection: 'close', 'content-length': '2' });
        res.end('ok');
      } else if (req.url === '/slow') {
        setTimeout(() => res.end('late'), 400);
      } else {
        res.end(`echo:${body}`);
      }
    });
    const open: import('node:net').Socket[] = [];
    srv.on('connection', (sock) => {
      sockets++;
      open.push(sock);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const { Http1Connection } = await import('../../playbooks/bench/http1.ts');
    const c = new Http1Connection('127.0.0.1', (srv.address() as AddressInfo).port);
    expect(await c.request('POST', '/chunked', {}, 'x'.repeat(3000), 2000)).toEqual({ status: 200, body: `{"a":${JSON.stringify('x'.repeat(3000))}}` });
    expect((await c.request('POST', '/', {}, 'one', 2000)).body).toBe('echo:one');
    expect(sockets).toBe(1); // kept alive
    expect((await c.request('POST', '/close', {}, '', 2000)).body).toBe('ok');
    expect((await c.request('POST', '/', {}, 'two', 2000)).body).toBe('echo:two'); // reconnected after close
    expect(sockets).toBe(2);
    for (const sock of open) sock.destroy(); // the server drops the idle keep-alive socket
    await new Promise((r) => setTimeout(r, 50));
    expect((await c.request('POST', '/', {}, 'three', 2000)).body).toBe('echo:three');
    expect(sockets).toBe(3);
    await expect(c.request('POST', '/slow', {}, '', 100)).rejects.toThrow(/TIMEOUT/);
    expect((await c.request('POST', '/', {}, 'four', 2000)).body).toBe('echo:four'); // a fresh socket after the timeout
    c.close();
    srv.closeAllConnections();
    srv.close();
  });
});
