// Taking new secrets without a restart: SIGHUP reads the service's config file
// again and swaps in an app built from it (services/config.ts reloadable); a
// bad file keeps the running app; the old app is stopped after its requests.
// And the proxy's login fallback during a password rotation (FallbackPool).

import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type mysql from 'mysql2/promise';
import { loadConfig, RELOAD_FAILED, RELOADED, reloadable, type TrustedHostConfig } from '../../services/config.ts';
import type { ForwardFn } from '../../services/forward.ts';
import { FallbackPool } from '../../services/proxy/nodes.ts';
import { buildTrustedHost } from '../../services/trustedhost/app.ts';

const dir = mkdtempSync(join(tmpdir(), 'rampart-reload-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const OLD = 'o'.repeat(24);
const NEW = 'n'.repeat(24);
const policy = { statements: ['SELECT'], schemas: ['sakila'] };
const file = join(dir, 'trustedhost.json');
const write = (over: Partial<TrustedHostConfig> | string): void => {
  const c: TrustedHostConfig = {
    service: 'trustedhost', listen: { host: '127.0.0.1', port: 1 }, maxBodyBytes: 2048, policy, log: false,
    credential: OLD, upstream: { url: 'http://127.0.0.1:1', credential: 'p'.repeat(24) }, ...(typeof over === 'string' ? {} : over),
  };
  writeFileSync(file, typeof over === 'string' ? over : JSON.stringify(c), { mode: 0o600 });
};
const forward: ForwardFn = async (req) => ({ status: 200, body: JSON.stringify({ request_id: req.request_id, rows: [] }), node: 'manager', mode: 'direct', type: 'read' });
const health = (cred: string) => new Request('http://localhost/health', { headers: { 'x-rampart-credential': cred } });

describe('reload on SIGHUP', () => {
  test('the overlap: accept old+new, then only new; a broken file keeps the running config; the old app stops after retireMs', async () => {
    write({});
    const stopped: number[] = [];
    let n = 0;
    const build = (c: TrustedHostConfig) => {
      const id = ++n;
      return { app: buildTrustedHost(c, forward), stop: async () => void stopped.push(id) };
    };
    const lines: string[] = [];
    const load = () => loadConfig('trustedhost', file);
    const live = reloadable('trustedhost', build(load()), build, { retireMs: 30, load, log: (l) => lines.push(l) });
    try {
      expect((await live.hop.handle(health(OLD))).status).toBe(200);
      expect((await live.hop.handle(health(NEW))).status).toBe(401);

      // step 1: the receiver accepts both (what rotate writes first), taken on a real SIGHUP
      write({ credential: NEW, previousCredentials: [OLD] });
      process.kill(process.pid, 'SIGHUP');
      for (let i = 0; i < 100 && !lines.length; i++) await Bun.sleep(10);
      expect(lines).toEqual([`trustedhost: ${RELOADED} (generation 2)`]);
      expect((await live.hop.handle(health(OLD))).status).toBe(200);
      expect((await live.hop.handle(health(NEW))).status).toBe(200);

      // a file that does not validate: refused, the running app keeps serving
      write('{"service":"trustedhost"}');
      expect(await live.reload()).toBe(false);
      expect(lines[1]).toStartWith(`trustedhost: ${RELOAD_FAILED}, still serving generation 2: `);
      expect(lines[1]).not.toContain(OLD);
      expect((await live.hop.handle(health(NEW))).status).toBe(200);

      // step 3: the old one is dropped
      write({ credential: NEW });
      expect(await live.reload()).toBe(true);
      expect((await live.hop.handle(health(OLD))).status).toBe(401);
      expect((await live.hop.handle(health(NEW))).status).toBe(200);
      expect(stopped).toEqual([]); // retired apps stop only after their requests had time to finish
      await Bun.sleep(80);
      expect(stopped.sort()).toEqual([1, 2]);
    } finally {
      await live.stop();
    }
    expect(stopped.sort()).toEqual([1, 2, 3]);
  });
});

describe('login fallback while a password rotates (MariaDB has no dual password)', () => {
  const denied = Object.assign(new Error("Access denied for user 'rampart_app'@'10.0.0.3' (using password: YES)"), { errno: 1045, code: 'ER_ACCESS_DENIED_ERROR', fatal: true });
  const fake = (name: string, log: string[], refuse: () => boolean) => ({
    query: async () => {
      log.push(name);
      if (refuse()) throw denied;
      return [[{ ok: name }], []];
    },
  }) as unknown as mysql.Pool;

  test('the new password first; refused -> the old one (nothing ran); then the old first for a while; other errors are not retried', async () => {
    const log: string[] = [];
    let altered = false;
    const p = new FallbackPool(fake('new', log, () => !altered), fake('old', log, () => altered));
    const q = () => p.use((pool) => pool.query('SELECT 1') as unknown as Promise<[{ ok: string }[]]>);
    expect((await q())[0][0].ok).toBe('old');
    expect(log).toEqual(['new', 'old']);
    expect((await q())[0][0].ok).toBe('old'); // recently refused: the old one first
    expect(log).toEqual(['new', 'old', 'old']);
    altered = true; // ALTER USER ran: the old one is refused now, the new one works
    expect((await q())[0][0].ok).toBe('new');
    expect(log.slice(3)).toEqual(['old', 'new']);

    const single = new FallbackPool(fake('new', [], () => true), null);
    await expect(single.use((pool) => pool.query('SELECT 1'))).rejects.toMatchObject({ errno: 1045 });
    const broken = new FallbackPool({ query: async () => { throw Object.assign(new Error('syntax'), { errno: 1064 }); } } as unknown as mysql.Pool, fake('old', log, () => false));
    await expect(broken.use((pool) => pool.query('SELEC 1'))).rejects.toMatchObject({ errno: 1064 });
  });
});
