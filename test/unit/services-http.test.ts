// The HTTP surface of the three apps through app.handle(): auth, validation,
// limits and policy status codes, and that nothing refused is forwarded
// (the upstream here is a counting function, the real next hop's interface).

import { describe, expect, test } from 'bun:test';
import type { GatekeeperConfig, ProxyConfig, TrustedHostConfig } from '../../services/config.ts';
import { validateConfig } from '../../services/config.ts';
import { deadlines, type Forwarded, type ForwardFn } from '../../services/forward.ts';
import { buildGatekeeper } from '../../services/gatekeeper/app.ts';
import type { QueryRequest } from '../../services/schemas.ts';
import { secretMatches } from '../../services/http.ts';
import { createProxy } from '../../services/proxy/app.ts';
import { DbNode, PREPARED_CACHE } from '../../services/proxy/nodes.ts';
import { Router } from '../../services/proxy/router.ts';
import { buildTrustedHost } from '../../services/trustedhost/app.ts';

const KEY = 'k'.repeat(24);
const CRED_TH = 't'.repeat(24);
const CRED_PX = 'p'.repeat(24);
const policy = { statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: ['sakila'] };

function counting(): { forward: ForwardFn; seen: QueryRequest[] } {
  const seen: QueryRequest[] = [];
  const forward: ForwardFn = async (req) => {
    seen.push(req);
    const out: Forwarded = { status: 200, body: JSON.stringify({ request_id: req.request_id, mode: 'direct', type: 'read', node: 'manager', rows: [], duration_ms: 0 }), node: 'manager', mode: 'direct', type: 'read' };
    return out;
  };
  return { forward, seen };
}

const gkConfig = (over: Partial<GatekeeperConfig> = {}): GatekeeperConfig => ({
  service: 'gatekeeper', listen: { host: '127.0.0.1', port: 1 }, maxBodyBytes: 2048, policy, log: false,
  apiKeys: [KEY], rateLimit: { requests: 1000, perSeconds: 1 }, upstream: { url: 'http://127.0.0.1:1', credential: CRED_TH }, ...over,
});

const post = (body: string | object | undefined, headers: Record<string, string> = {}, path = '/query'): Request =>
  new Request(`http://localhost${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': KEY, ...headers },
    body: typeof body === 'string' || body === undefined ? body : JSON.stringify(body),
  });

async function statusAndCode(app: { handle(r: Request): Promise<Response> }, req: Request): Promise<[number, string | undefined]> {
  const res = await app.handle(req);
  const json = (await res.json()) as { error?: { code: string; message: string } };
  if (json.error) expect(json.error.message).not.toMatch(/\bat .*\(.*:\d+:\d+\)/); // never a stack trace
  return [res.status, json.error?.code];
}

describe('gatekeeper', () => {
  test('forwards only the validated fields, with the request id', async () => {
    const { forward, seen } = counting();
    const app = buildGatekeeper(gkConfig(), forward);
    const res = await app.handle(post({ sql: 'SELECT * FROM actor WHERE actor_id = ?;', params: [1], mode: 'random', request_id: 'r-1' }));
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('r-1');
    expect(seen).toEqual([{ sql: 'SELECT * FROM actor WHERE actor_id = ?', params: [1], mode: 'random', request_id: 'r-1' }]);
  });

  test('generates a request id when the client gives none', async () => {
    const { forward, seen } = counting();
    const app = buildGatekeeper(gkConfig(), forward);
    expect((await app.handle(post({ sql: 'SELECT 1' }))).status).toBe(200);
    expect(seen[0].request_id).toMatch(/^[0-9a-f-]{36}$/);
  });

  const refused: Array<[string, Request, number, string]> = [
    ['no key', post({ sql: 'SELECT 1' }, { 'x-api-key': '' }), 401, 'UNAUTHORIZED'],
    ['wrong key', post({ sql: 'SELECT 1' }, { 'x-api-key': 'k'.repeat(23) + 'x' }), 401, 'UNAUTHORIZED'],
    ['key prefix', post({ sql: 'SELECT 1' }, { 'x-api-key': 'k'.repeat(12) }), 401, 'UNAUTHORIZED'],
    ['text/plain', post('SELECT 1', { 'content-type': 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['form', post('sql=SELECT+1', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
    ['invalid JSON', post('{"sql": '), 400, 'INVALID_JSON'],
    ['empty body', post(undefined), 400, 'EMPTY_BODY'],
    ['too large', post({ sql: `SELECT '${'x'.repeat(3000)}'` }), 413, 'BODY_TOO_LARGE'],
    ['missing sql', post({ params: [] }), 422, 'INVALID_BODY'],
    ['sql not a string', post({ sql: 42 }), 422, 'INVALID_BODY'],
    ['empty sql', post({ sql: '' }), 422, 'INVALID_BODY'],
    ['array body', post([1, 2]), 422, 'INVALID_BODY'],
    ['unknown field', post({ sql: 'SELECT 1', user: 'root' }), 422, 'INVALID_BODY'],
    ['bad mode', post({ sql: 'SELECT 1', mode: 'fastest' }), 422, 'INVALID_BODY'],
    ['bad request_id', post({ sql: 'SELECT 1', request_id: 'a b\n' }), 422, 'INVALID_BODY'],
    ['object param', post({ sql: 'SELECT ?', params: [{ a: 1 }] }), 422, 'INVALID_BODY'],
    ['params mismatch', post({ sql: 'SELECT ?, ?', params: [1] }), 422, 'PARAMS_MISMATCH'],
    ['params without placeholders', post({ sql: 'SELECT 1', params: [1] }), 422, 'PARAMS_MISMATCH'],
    ['DROP', post({ sql: 'DROP TABLE actor' }), 403, 'STATEMENT_NOT_ALLOWED'],
    ['stacked', post({ sql: 'SELECT 1; DELETE FROM actor' }), 403, 'MULTIPLE_STATEMENTS'],
    ['system schema', post({ sql: 'SELECT * FROM mysql.user' }), 403, 'SCHEMA_NOT_ALLOWED'],
    ['sleep', post({ sql: 'SELECT SLEEP(10)' }), 403, 'FUNCTION_NOT_ALLOWED'],
    ['bad SQL', post({ sql: "SELECT 'x" }), 400, 'SQL_SYNTAX'],
    ['unknown route', post({ sql: 'SELECT 1' }, {}, '/admin'), 404, 'NOT_FOUND'],
  ];
  for (const [name, req, status, code] of refused) {
    test(`${status} ${code}: ${name}, nothing forwarded`, async () => {
      const { forward, seen } = counting();
      const app = buildGatekeeper(gkConfig(), forward);
      expect(await statusAndCode(app, req)).toEqual([status, code]);
      expect(seen.length).toBe(0);
    });
  }

  test('rate limit per client: 429 with Retry-After, nothing forwarded beyond it', async () => {
    const { forward, seen } = counting();
    const app = buildGatekeeper(gkConfig({ rateLimit: { requests: 3, perSeconds: 60 } }), forward);
    const statuses: number[] = [];
    let retry: string | null = null;
    for (let i = 0; i < 5; i++) {
      const res = await app.handle(post({ sql: 'SELECT 1' }));
      statuses.push(res.status);
      if (res.status === 429) retry = res.headers.get('retry-after');
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    expect(Number(retry)).toBeGreaterThan(0);
    expect(seen.length).toBe(3);
  });

  test('health needs no key and tells nothing else', async () => {
    const app = buildGatekeeper(gkConfig(), counting().forward);
    const res = await app.handle(new Request('http://localhost/health'));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok', service: 'gatekeeper' });
  });

  test('an unreachable trusted host is a 503, not a 500', async () => {
    const app = buildGatekeeper(gkConfig({ upstream: { url: 'http://127.0.0.1:9', credential: CRED_TH, timeoutMs: 2000 } }));
    expect(await statusAndCode(app, post({ sql: 'SELECT 1' }))).toEqual([503, 'UPSTREAM_UNAVAILABLE']);
  });
});

describe('trusted host', () => {
  const thConfig: TrustedHostConfig = {
    service: 'trustedhost', listen: { host: '127.0.0.1', port: 1 }, maxBodyBytes: 2048, policy, log: false,
    credential: CRED_TH, upstream: { url: 'http://127.0.0.1:1', credential: CRED_PX },
  };
  test('accepts only the gatekeeper credential', async () => {
    const { forward, seen } = counting();
    const app = buildTrustedHost(thConfig, forward);
    expect((await statusAndCode(app, post({ sql: 'SELECT 1' })))[0]).toBe(401); // an API key is not the credential
    expect((await statusAndCode(app, post({ sql: 'SELECT 1' }, { 'x-rampart-credential': CRED_PX })))[0]).toBe(401);
    expect((await app.handle(post({ sql: 'SELECT 1' }, { 'x-rampart-credential': CRED_TH }))).status).toBe(200);
    expect(seen.length).toBe(1);
  });
  test('re-validates: hostile SQL from a holder of the credential is refused', async () => {
    const { forward, seen } = counting();
    const app = buildTrustedHost(thConfig, forward);
    for (const sql of ['DROP TABLE actor', 'SELECT LOAD_FILE("/etc/passwd")', 'SELECT 1; SELECT 2', 'SELECT * FROM information_schema.tables']) {
      expect((await statusAndCode(app, post({ sql }, { 'x-rampart-credential': CRED_TH })))[0]).toBe(403);
    }
    expect(seen.length).toBe(0);
  });
});

describe('proxy (no database reached)', () => {
  const pxConfig: ProxyConfig = {
    service: 'proxy', listen: { host: '127.0.0.1', port: 1 }, maxBodyBytes: 2048, policy, log: false, credential: CRED_PX,
    db: { manager: { name: 'manager', host: '127.0.0.1', port: 9 }, workers: [], user: 'app', password: 'x', database: 'sakila', connectTimeoutMs: 300 },
    defaultMode: 'direct', modes: ['direct'], probeIntervalMs: 100, maxLagSeconds: 5,
  };
  test('auth, validation, mode and policy errors; a down manager is a 503', async () => {
    const px = createProxy(pxConfig);
    const cred = { 'x-rampart-credential': CRED_PX };
    expect(await statusAndCode(px.app, post({ sql: 'SELECT 1' }, { 'x-rampart-credential': CRED_TH }))).toEqual([401, 'UNAUTHORIZED']);
    expect(await statusAndCode(px.app, post({ sql: 'SELECT 1', mode: 'random' }, cred))).toEqual([422, 'MODE_NOT_ALLOWED']);
    expect(await statusAndCode(px.app, post({ sql: 'GRANT ALL ON *.* TO x' }, cred))).toEqual([403, 'STATEMENT_NOT_ALLOWED']);
    expect(await statusAndCode(px.app, post({ sql: 1 }, cred))).toEqual([422, 'INVALID_BODY']);
    expect(await statusAndCode(px.app, post({ sql: 'SELECT 1' }, cred))).toEqual([503, 'DB_UNAVAILABLE']);
    const health = await px.app.handle(new Request('http://localhost/health', { headers: cred }));
    expect(health.status).toBe(503);
    await px.stop();
  });
});

describe('router', () => {
  const db = { manager: { name: 'm', host: '127.0.0.1', port: 9 }, workers: [], user: 'u', password: 'p', database: 'd' };
  const node = (name: string, role: 'manager' | 'worker', healthy: boolean, latency: number, lag: number | null, replicating = true): DbNode => {
    const n = new DbNode({ name, host: '127.0.0.1', port: 9 }, role, db, 1000);
    n.healthy = healthy;
    n.latencyMs = latency;
    n.lagSeconds = lag;
    n.replicating = role === 'worker' ? replicating : null;
    return n;
  };
  test('writes and direct reads go to the manager', () => {
    const m = node('manager', 'manager', true, 5, null);
    const r = new Router(m, [node('w1', 'worker', true, 1, 0)], 5);
    expect(r.pick('write', 'customized')?.name).toBe('manager');
    expect(r.pick('write', 'random')?.name).toBe('manager');
    expect(r.pick('read', 'direct')?.name).toBe('manager');
  });
  test('customized picks the lowest latency usable worker; skips unhealthy, lagging and stopped replication', () => {
    const m = node('manager', 'manager', true, 0.1, null);
    const workers = [node('slow', 'worker', true, 9, 0), node('fast', 'worker', true, 1, 0), node('dead', 'worker', false, 0.2, 0),
      node('lagging', 'worker', true, 0.3, 60), node('stopped', 'worker', true, 0.4, null, false)];
    const r = new Router(m, workers, 5);
    expect(r.pick('read', 'customized')?.name).toBe('fast');
    expect(r.pick('read', 'customized', workers[1])?.name).toBe('slow');
  });
  test('random is uniform over usable workers', () => {
    const m = node('manager', 'manager', true, 1, null);
    const workers = [node('a', 'worker', true, 1, 0), node('b', 'worker', true, 1, 0), node('x', 'worker', false, 1, 0)];
    const r = new Router(m, workers, 5);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 4000; i++) { const n = r.pick('read', 'random')!.name; counts[n] = (counts[n] ?? 0) + 1; }
    expect(Object.keys(counts).sort()).toEqual(['a', 'b']);
    expect(counts.a).toBeGreaterThan(1800);
    expect(counts.b).toBeGreaterThan(1800);
  });
  test('a worker cut off from a restarting manager keeps serving reads for up to maxLagSeconds, then not', () => {
    const w = node('w', 'worker', true, 1, null, false); // IO thread reconnecting: no lag figure
    w.applying = true;
    const now = Date.now();
    w.caughtUpAt = now - 2_000;
    expect(w.usable(5, now)).toBe(true);
    expect(w.usable(5, now + 4_000)).toBe(false);
    w.applying = false; // the applier stopped: broken, not just cut off
    expect(w.usable(5, now)).toBe(false);
    const never = node('n', 'worker', true, 1, null, false);
    never.applying = true; // never seen caught up
    expect(never.usable(5, now)).toBe(false);
  });

  test('falls back to the manager, and to nothing when the manager failed too', () => {
    const m = node('manager', 'manager', true, 1, null);
    const r = new Router(m, [node('w', 'worker', false, 1, 0)], 5);
    expect(r.pick('read', 'random')?.name).toBe('manager');
    expect(r.pick('read', 'customized', m)).toBeNull();
  });
});

describe('db node pools', () => {
  test('query connections keep a bounded prepared statement cache (mysql2 allocates it at full size per connection)', async () => {
    const n = new DbNode({ name: 'm', host: '127.0.0.1', port: 9 }, 'manager', { manager: { name: 'm', host: '127.0.0.1', port: 9 }, workers: [], user: 'u', password: 'p', database: 'd' }, 1000);
    const config = (n as unknown as { pool: { primary: { pool: { config: { connectionConfig: { maxPreparedStatements: number } } } } } }).pool.primary.pool.config.connectionConfig;
    expect(config.maxPreparedStatements).toBe(PREPARED_CACHE);
    expect(PREPARED_CACHE).toBeLessThan(16000);
    await n.close();
  });
});

describe('config and secrets', () => {
  test('validateConfig names the problem', () => {
    expect(() => validateConfig({ service: 'gatekeeper' }, 'gatekeeper', 'x.json')).toThrow(/x.json: listen/);
    expect(() => validateConfig({ ...gkConfig(), apiKeys: ['short'] }, 'gatekeeper')).toThrow(/apiKeys/);
    expect(() => validateConfig(gkConfig(), 'proxy')).toThrow(/service must be "proxy"/);
    expect(validateConfig(gkConfig(), 'gatekeeper').apiKeys).toEqual([KEY]);
  });
  test('secretMatches is exact', () => {
    expect(secretMatches(KEY, [KEY])).toBe(true);
    expect(secretMatches(KEY + 'x', [KEY])).toBe(false);
    expect(secretMatches('', [''])).toBe(false);
    expect(secretMatches(null, [KEY])).toBe(false);
  });
});

describe('loadConfig', () => {
  test('refuses a config file readable by others, reads a 0600 one', async () => {
    const { mkdtempSync, writeFileSync, chmodSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { loadConfig } = await import('../../services/config.ts');
    const dir = mkdtempSync(join(tmpdir(), 'rampart-cfg-'));
    const file = join(dir, 'gk.json');
    writeFileSync(file, JSON.stringify(gkConfig()));
    chmodSync(file, 0o644);
    expect(() => loadConfig('gatekeeper', file)).toThrow(/too open/);
    chmodSync(file, 0o600);
    expect(loadConfig('gatekeeper', file).listen.host).toBe('127.0.0.1');
    writeFileSync(file, '{ nope');
    expect(() => loadConfig('gatekeeper', file)).toThrow(/not valid JSON/);
    rmSync(dir, { recursive: true });
  });
});

describe('forward deadlines', () => {
  test('requests started within one slice share a signal; a later one gets its own', async () => {
    let now = 0;
    const next = deadlines(50, () => now);
    const a = next();
    now = 99;
    expect(next()).toBe(a);
    now = 100;
    const b = next();
    expect(b).not.toBe(a);
    await new Promise((r) => setTimeout(r, 200)); // at least the timeout, at most one slice more
    expect(a.aborted && b.aborted).toBe(true);
    expect((a.reason as Error).name).toBe('TimeoutError');
  });
});

describe('served by the runtime: every error has the JSON shape', () => {
  const freePort = async (): Promise<number> => {
    const { createServer } = await import('node:net');
    return new Promise((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
    });
  };
  const tooLarge = (res: { status: number; body: string }) => {
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'BODY_TOO_LARGE', message: 'body exceeds 2048 bytes' } });
  };

  test('a body far over the limit (declared, chunked, or declared huge and never sent) gets a JSON 413', async () => {
    const { listen } = await import('../../services/http.ts');
    const port = await freePort();
    const { forward, seen } = counting();
    const server = await listen(buildGatekeeper(gkConfig(), forward), '127.0.0.1', port);
    try {
      const url = `http://127.0.0.1:${port}/query`;
      const headers = { 'content-type': 'application/json', 'x-api-key': KEY };
      const big = JSON.stringify({ sql: `SELECT '${'x'.repeat(2_000_000)}'` });
      const declared = await fetch(url, { method: 'POST', headers, body: big });
      tooLarge({ status: declared.status, body: await declared.text() });
      const chunks = new ReadableStream({
        start(c) {
          for (let i = 0; i < 64; i++) c.enqueue(new TextEncoder().encode('x'.repeat(65_536)));
          c.close();
        },
      });
      const chunked = await fetch(url, { method: 'POST', headers, body: chunks });
      tooLarge({ status: chunked.status, body: await chunked.text() });
      // a 10 GB Content-Length with no body at all: refused from the header, without waiting for bytes
      const { connect } = await import('node:net');
      const raw = await new Promise<string>((resolve, reject) => {
        const sock = connect(port, '127.0.0.1', () => {
          sock.write(`POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${KEY}\r\nContent-Length: 10000000000\r\n\r\n{`);
        });
        let got = '';
        sock.on('data', (d) => {
          got += d.toString();
          if (got.includes('}}')) { sock.destroy(); resolve(got); }
        });
        sock.on('error', reject);
        setTimeout(() => { sock.destroy(); resolve(got); }, 5000);
      });
      const [head, body] = raw.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 413/);
      expect(body).toContain('"code":"BODY_TOO_LARGE"');
      expect(seen).toHaveLength(0);
    } finally {
      await server.stop();
    }
  });
});
