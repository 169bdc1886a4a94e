// What the service role writes: configs from cluster.yaml + hosts + secrets
// (accepted by the services' own validator), units without any secret, the
// runtime choice, and reproducible bundles.
import { describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Cluster, Host, SecretStore, ServiceName, TaskContext } from '../../core/types.ts';
import { validateConfig, type GatekeeperConfig, type ProxyConfig, type TrustedHostConfig } from '../../services/config.ts';
import { buildDir, runtimeBinary, runtimePackage, serviceBundle } from '../../roles/lib/artifact.ts';
import { REPLICA_STATUS_SQL } from '../../services/proxy/nodes.ts';
import { DB_USERS, SECRETS } from '../../roles/lib/names.ts';
import {
  configText, healthCurlConfig, healthFact, healthScript, runtimeState, serviceConfig, serviceRole, unitText,
} from '../../roles/service.ts';

import { cluster, host, hosts, ip } from '../support/hosts.ts';
import { ROOT } from '../support/cluster.ts';

/** An in-memory store generating random values, like the real one (no file). */
class MemorySecrets implements SecretStore {
  readonly values = new Map<string, string>();
  get(name: string): string {
    if (!this.values.has(name)) this.values.set(name, randomBytes(24).toString('base64url'));
    return this.values.get(name)!;
  }
}
const secrets = new MemorySecrets();
const SERVICES: ServiceName[] = ['gatekeeper', 'trustedhost', 'proxy'];

describe('service configs', () => {
  test('gatekeeper: serves HTTPS on its private address :443, API key, policy, limits, upstream = trusted host over https', () => {
    const c = validateConfig(serviceConfig(cluster, host('gatekeeper'), hosts, secrets), 'gatekeeper') as GatekeeperConfig;
    expect(c.listen).toEqual({ host: ip.gatekeeper, port: 443 });
    expect(c.tls).toEqual({ cert: '/etc/rampart/tls/server.pem', key: '/etc/rampart/tls/server.key' });
    expect(c.apiKeys).toEqual([secrets.get(SECRETS.apiKey)]);
    expect(c.policy).toEqual({ statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: ['sakila'] });
    expect(c.maxBodyBytes).toBe(65536);
    expect(c.rateLimit).toEqual({ requests: 2000, perSeconds: 1 });
    expect(c.upstream).toEqual({ url: `https://${ip.trustedhost}:5000`, credential: secrets.get(SECRETS.gatekeeperToTrusted), ca: '/etc/rampart/tls/ca.pem' });
  });

  test('a team\'s own API key (services.gatekeeper.apiKeyFile) replaces the generated one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-key-'));
    try {
      const file = join(dir, 'api.key');
      writeFileSync(file, 'team-key-0123456789abcdef\nignored second line\n', { mode: 0o600 });
      const own: Cluster = { ...cluster, services: { ...cluster.services, gatekeeper: { ...cluster.services.gatekeeper, apiKeyFile: file } } };
      const c = validateConfig(serviceConfig(own, host('gatekeeper'), hosts, secrets), 'gatekeeper') as GatekeeperConfig;
      expect(c.apiKeys).toEqual(['team-key-0123456789abcdef']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('trusted host: expects the gatekeeper credential, forwards to the proxy with its own', () => {
    const c = validateConfig(serviceConfig(cluster, host('trustedhost'), hosts, secrets), 'trustedhost') as TrustedHostConfig;
    expect(c.listen).toEqual({ host: ip.trustedhost, port: 5000 });
    expect(c.credential).toBe(secrets.get(SECRETS.gatekeeperToTrusted));
    expect(c.upstream).toEqual({ url: `https://${ip.proxy}:5000`, credential: secrets.get(SECRETS.trustedToProxy), ca: '/etc/rampart/tls/ca.pem' });
    expect(c.tls).toEqual({ cert: '/etc/rampart/tls/server.pem', key: '/etc/rampart/tls/server.key' });
    expect(c.credential).not.toBe(c.upstream.credential);
  });

  test('proxy: expected credential, manager + workers on 3306, app user, schema and modes from cluster.yaml', () => {
    const c = validateConfig(serviceConfig(cluster, host('proxy'), hosts, secrets), 'proxy') as ProxyConfig;
    expect(c.credential).toBe(secrets.get(SECRETS.trustedToProxy));
    expect(c.db.manager).toEqual({ name: 'manager', host: ip.manager, port: 3306 });
    expect(c.db.workers).toEqual([{ name: 'worker1', host: ip.worker1, port: 3306 }, { name: 'worker2', host: ip.worker2, port: 3306 }]);
    expect(c.db.user).toBe(DB_USERS.app);
    expect(c.db.password).toBe(secrets.get(SECRETS.mysqlApp));
    expect(c.db.database).toBe('sakila');
    expect(c.db.ssl).toEqual({ ca: '/etc/rampart/tls/ca.pem' });
    expect([c.defaultMode, c.modes, c.probeIntervalMs, c.maxLagSeconds]).toEqual(['customized', ['direct', 'random', 'customized'], 250, 5]);
  });

  test('a node without a service, or a missing next hop, is an error naming the fix', () => {
    expect(() => serviceConfig(cluster, host('manager'), hosts, secrets)).toThrow(/no service/);
    expect(() => serviceConfig(cluster, host('gatekeeper'), hosts.filter((h) => h.name !== 'trustedhost'), secrets)).toThrow(/trustedhost/);
  });

  test('the config text is stable (same inputs -> same bytes, so no spurious restart)', () => {
    for (const s of SERVICES) expect(configText(cluster, host(s), hosts, secrets)).toBe(configText(cluster, host(s), hosts, secrets));
  });
});

describe('units and health probes hold no secret', () => {
  const allSecrets = () => [...secrets.values.values()];

  test('units: config path in env, no secret anywhere, sandboxing, restart policy', () => {
    for (const s of SERVICES) {
      const unit = unitText(s, s === 'gatekeeper' ? 80 : 5000);
      for (const v of allSecrets()) expect(unit).not.toContain(v);
      expect(unit).toContain(`Environment=RAMPART_SERVICE_CONFIG=/etc/rampart/${s}.json`);
      expect(unit).toContain(`ExecStart=/opt/rampart/bin/bun /opt/rampart/${s}/service.js\n`);
      for (const l of ['User=rampart', 'Restart=always', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'MemoryMax=256M']) {
        expect(unit).toContain(`${l}\n`);
      }
    }
  });

  test('only a port below 1024 gets CAP_NET_BIND_SERVICE; others get no capability', () => {
    expect(unitText('gatekeeper', 80)).toContain('AmbientCapabilities=CAP_NET_BIND_SERVICE\n');
    expect(unitText('gatekeeper', 8080)).toContain('CapabilityBoundingSet=\nAmbientCapabilities=\n');
    expect(unitText('proxy', 5000)).toContain('CapabilityBoundingSet=\nAmbientCapabilities=\n');
    expect(unitText('proxy', 5000)).not.toContain('CAP_NET_BIND_SERVICE');
  });

  test('health: credentials go to curl through stdin, never on the command line', () => {
    for (const s of SERVICES) {
      const cmds = [healthFact(s, ip[s], 5000), healthScript(s, ip[s], 5000)];
      for (const cmd of cmds) for (const v of allSecrets()) expect(cmd).not.toContain(v);
      expect(healthFact(s, ip[s], 5000)).toContain('-K -');
    }
    expect(healthCurlConfig('trustedhost', secrets)).toBe(`header = "x-rampart-credential: ${secrets.get(SECRETS.gatekeeperToTrusted)}"\n`);
    expect(healthCurlConfig('proxy', secrets)).toBe(`header = "x-rampart-credential: ${secrets.get(SECRETS.trustedToProxy)}"\n`);
    expect(healthCurlConfig('gatekeeper', secrets)).not.toContain('credential');
  });

  test('the health fact extracts exactly the top-level credential from the written config', async () => {
    for (const s of ['trustedhost', 'proxy'] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'rampart-hf-'));
      const file = join(dir, 'c.json');
      await Bun.write(file, configText(cluster, host(s), hosts, secrets));
      // run the fact's sed half against the real file
      const sed = healthFact(s, '127.0.0.1', 1).split(' | curl')[0].replace(`/etc/rampart/${s}.json`, file);
      const out = Bun.spawnSync(['bash', '-c', sed]).stdout.toString();
      expect(out).toBe(healthCurlConfig(s, secrets));
      rmSync(dir, { recursive: true });
    }
  });
});

describe('runtime', () => {
  test('package per CPU: avx2 x86_64, baseline, aarch64; unknown arch is an error', () => {
    expect(runtimePackage('x86_64 avx2')).toBe('@oven/bun-linux-x64');
    expect(runtimePackage('x86_64 baseline')).toBe('@oven/bun-linux-x64-baseline');
    expect(runtimePackage('aarch64 baseline')).toBe('@oven/bun-linux-aarch64');
    expect(() => runtimePackage('riscv64 baseline')).toThrow(/riscv64/);
  });

  test('the installed runtime binary is found; a missing package names the install command', () => {
    expect(statSync(runtimeBinary('@oven/bun-linux-x64')).size).toBeGreaterThan(10_000_000);
    let err: unknown;
    try {
      runtimeBinary('@oven/bun-linux-x64-baseline');
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).toContain('@oven/bun-linux-x64-baseline');
    expect((err as { hint?: string }).hint).toMatch(/^npm install --no-save @oven\/bun-linux-x64-baseline@\d/);
  });

  test('stamp parsing: current only when size and mtime match the stamp', () => {
    expect(runtimeState('107394952 1763729000\nabc 107394952 1763729000\n')).toEqual({ sha: 'abc', current: true });
    expect(runtimeState('107394952 1763729999\nabc 107394952 1763729000\n')).toEqual({ sha: 'abc', current: false });
    expect(runtimeState('')).toBeNull();
  });
});

describe('bundle', () => {
  test('same sources -> same bytes (two independent builds), reused while inputs are unchanged', async () => {
    const a = mkdtempSync(join(tmpdir(), 'rampart-build-a-'));
    const b = mkdtempSync(join(tmpdir(), 'rampart-build-b-'));
    try {
      const [x, y] = await Promise.all([serviceBundle(a, 'trustedhost'), serviceBundle(b, 'trustedhost')]);
      expect(x.sha256).toBe(y.sha256);
      expect(x.size).toBeGreaterThan(100_000);
      expect(await Bun.file(x.path).text()).not.toContain(ROOT); // no absolute paths of the controller
      const mtime = statSync(x.path).mtimeMs;
      expect(await serviceBundle(a, 'trustedhost')).toEqual(x); // same run: memoised
      expect(statSync(x.path).mtimeMs).toBe(mtime);
    } finally {
      rmSync(a, { recursive: true });
      rmSync(b, { recursive: true });
    }
  }, 60_000);

  test('each service gets only its own code: no database driver and no proxy code outside the proxy', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-build-'));
    try {
      const inputs = async (s: ServiceName): Promise<string[]> => {
        await serviceBundle(dir, s);
        return Object.keys((await Bun.file(join(buildDir(dir), `${s}.meta.json`)).json() as { inputs: object }).inputs);
      };
      const [gk, th, px] = await Promise.all(SERVICES.map((s) => serviceBundle(dir, s)));
      const dbOrProxy = (i: string): boolean => /node_modules\/mysql2\//.test(i) || i.startsWith('services/proxy/');
      for (const [s, art] of [['gatekeeper', gk], ['trustedhost', th]] as const) {
        expect((await inputs(s)).filter(dbOrProxy)).toEqual([]);
        const text = await Bun.file(art.path).text();
        expect(text).not.toContain(REPLICA_STATUS_SQL);
        expect(text).not.toContain('mysql2');
        expect(art.size).toBeLessThan(px.size / 2);
      }
      expect(await inputs('gatekeeper')).not.toContain('services/trustedhost/app.ts');
      expect(await inputs('trustedhost')).not.toContain('services/gatekeeper/app.ts');
      expect((await inputs('proxy')).some((i) => i.includes('node_modules/mysql2/'))).toBe(true);
      // Bun runs the bundles: the Node server (Elysia's adapter) is in none of them.
      for (const s of SERVICES) expect((await inputs(s)).filter((i) => /node_modules\/(elysia|@elysiajs)\//.test(i))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true });
    }
  }, 60_000);
});

// The "running" task is the operations library's unit operation (roles/lib/ops.ts)
// with a /health probe; a table: facts in, diff out.
describe('service enabled and running', () => {
  const running = serviceRole.tasks.find((t) => t.name === 'service enabled and running')!;
  const ctx = (facts: Record<string, string>, exec: string[] = [], notified: string[] = []): TaskContext => ({
    host: host('proxy'), cluster, hosts, check: false, secrets, notify: (h) => void notified.push(h),
    conn: { exec: async (cmd: string) => { exec.push(cmd); return { stdout: '', stderr: '', code: 0 }; } } as never,
    facts: Object.fromEntries(Object.entries(facts).map(([k, stdout]) => [k, { stdout, code: 0 }])),
  });

  test('its facts: the unit state and one /health probe, in the host round trip', () => {
    const facts = running.facts!(ctx({}));
    expect(Object.keys(facts)).toEqual(['state', 'probe']);
    expect(facts.state).toContain("'rampart-proxy.service'");
    expect(facts.probe).toBe(healthFact('proxy', ip.proxy, 5000, '--cacert /etc/rampart/tls/ca.pem'));
  });

  test.each([
    ['rampart-proxy.service enabled active\n', '200', null],
    ['rampart-proxy.service enabled active\n', '503', 'rampart-proxy.service: restart (/health: HTTP 503)'],
    ['rampart-proxy.service enabled active\n', '', 'rampart-proxy.service: restart (/health: HTTP 000)'],
    ['rampart-proxy.service disabled active\n', '200', 'rampart-proxy.service: disabled/active -> enabled/active'],
    ['rampart-proxy.service enabled failed\n', '000', 'rampart-proxy.service: enabled/failed -> enabled/active'],
    ['', '000', 'rampart-proxy.service: not installed/inactive -> enabled/active'],
  ])('state %j, /health %j -> %p', (state, probe, message) => {
    const diff = running.check(ctx({ state, probe })) as { message: string } | null;
    expect(diff?.message ?? null).toBe(message);
  });

  test('apply enables the unit and hands the (re)start to the handler that waits for /health', async () => {
    const exec: string[] = [];
    const notified: string[] = [];
    const c = ctx({ state: 'rampart-proxy.service enabled active\n', probe: '503' }, exec, notified);
    const diff = running.check(c);
    expect(diff).not.toBeNull();
    await running.apply(c, diff as never);
    expect(exec).toEqual(["systemctl enable 'rampart-proxy.service' 2>&1"]);
    expect(notified).toEqual(['restart service']);
    expect(running.notifies).toEqual(['restart service']);
  });
});
