// npx zx rotate's plan and sequencing, without a cluster: what rotates (from
// the accounts' definition and the hop chain), the order of the steps per
// dialect, and the overlap itself: at every moment of a rotation, whichever
// services have reloaded, every sender sends something its receiver accepts
// and the proxy holds a password the database takes.
import { describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { secretsWith } from '../../core/secrets.ts';
import type { Cluster, SecretStore } from '../../core/types.ts';
import { phaseOverlap, reloadScript, rotationPlan, rotationSteps, type Step } from '../../playbooks/rotate.ts';
import { desiredAccounts, passwordChangeSql, passwordDiscardSql } from '../../roles/lib/mysql-accounts.ts';
import { SECRETS } from '../../roles/lib/names.ts';
import type { Dialect } from '../../roles/lib/os.ts';
import { serviceConfig, type Overlap } from '../../roles/service.ts';
import type { GatekeeperConfig, ProxyConfig, TrustedHostConfig } from '../../services/config.ts';
import { validateConfig } from '../../services/config.ts';
import { cluster, host, hosts } from '../support/hosts.ts';

class MemorySecrets implements SecretStore {
  readonly values = new Map<string, string>();
  get(name: string): string {
    if (!this.values.has(name)) this.values.set(name, randomBytes(24).toString('base64url'));
    return this.values.get(name)!;
  }
}

describe('what rotates', () => {
  test('the generated API key, each hop\'s credential, each DB account\'s password as the accounts\' definition lists them', () => {
    const plan = rotationPlan('mariadb', cluster, hosts);
    const dbSecrets = [...new Set(desiredAccounts('mariadb', cluster, hosts).map((a) => a.secret))];
    expect(plan.items.map((i) => i.secret)).toEqual([SECRETS.apiKey, SECRETS.gatekeeperToTrusted, SECRETS.trustedToProxy, ...dbSecrets]);
    expect(dbSecrets).toContain(SECRETS.mysqlRepl);
    expect(plan.skipped).toEqual([]);
    expect(rotationPlan('mariadb', cluster, hosts, new Set(['hops'])).items.map((i) => i.group)).toEqual(['hops', 'hops']);
  });

  test('a team-supplied API key is left alone, and says so', () => {
    const own: Cluster = { ...cluster, services: { ...cluster.services, gatekeeper: { ...cluster.services.gatekeeper, apiKeyEnv: 'RPTEST_ROTATE_KEY' } } };
    process.env.RPTEST_ROTATE_KEY = 'team-key-0123456789abcdef';
    try {
      const plan = rotationPlan('mariadb', own, hosts, new Set(['api-key']));
      expect(plan.items).toEqual([]);
      expect(plan.skipped).toEqual(["API key: the team's own (services.gatekeeper.apiKeyEnv); change it there, then npx zx apply"]);
    } finally {
      delete process.env.RPTEST_ROTATE_KEY;
    }
  });

  test('steps: MySQL keeps the old password until DISCARD; MariaDB has no dual password (the proxy falls back instead)', () => {
    const kinds = (d: Dialect, only?: string[]) => rotationSteps(d, rotationPlan(d, cluster, hosts, only ? new Set(only as never) : undefined)).map((s) => ('phase' in s ? `${s.kind}:${s.phase}` : s.kind));
    const sysbench = cluster.nodes.some((n) => n.db && n.roles.includes('sysbench')) ? ['tool option files'] : [];
    const common = ['configs:accept', 'alter', 'replicas caught up', 'repoint replicas', ...sysbench, 'store', 'configs:switch', 'grace', 'configs:final'];
    expect(kinds('mariadb')).toEqual(common);
    expect(kinds('mysql')).toEqual([...common, 'discard old passwords']);
    expect(kinds('mariadb', ['api-key'])).toEqual(['configs:accept', 'store', 'configs:switch', 'grace', 'configs:final']);
    const accounts = desiredAccounts('mysql', cluster, hosts).slice(0, 1);
    expect(passwordChangeSql('mysql', accounts, () => 'NEWPW')).toBe(`ALTER USER '${accounts[0].user}'@'${accounts[0].host}' IDENTIFIED BY 'NEWPW' RETAIN CURRENT PASSWORD;\n`);
    expect(passwordChangeSql('mariadb', accounts, () => 'NEWPW')).toBe(`ALTER USER '${accounts[0].user}'@'${accounts[0].host}' IDENTIFIED BY 'NEWPW';\n`);
    expect(passwordDiscardSql('mysql', accounts)).toBe(`ALTER USER '${accounts[0].user}'@'${accounts[0].host}' DISCARD OLD PASSWORD;\n`);
    expect(passwordDiscardSql('mariadb', accounts)).toBeNull();
  });

  test('the reload script signals the main process and waits for its own journal line; no secret in it', () => {
    const s = reloadScript('proxy');
    expect(s).toContain('systemctl show -p MainPID --value rampart-proxy.service');
    expect(s).toContain('kill -HUP "$pid"');
    expect(s).toContain("'^proxy: (reloaded config|reload failed)'");
  });
});

describe('the overlap never breaks a link', () => {
  for (const d of ['mariadb', 'mysql'] as const) {
    test(`${d}: every service at its previous or next config, at every step`, () => {
      const store = new MemorySecrets();
      const plan = rotationPlan(d, cluster, hosts);
      const old = Object.fromEntries(plan.items.map((i) => [i.secret, store.get(i.secret)]));
      const fresh = Object.fromEntries(plan.items.map((i) => [i.secret, randomBytes(24).toString('base64url')]));
      const next = secretsWith(store, fresh);
      const names = ['gatekeeper', 'trustedhost', 'proxy'] as const;
      type Configs = { gatekeeper: GatekeeperConfig; trustedhost: TrustedHostConfig; proxy: ProxyConfig };
      const render = (s: SecretStore, overlap?: Overlap): Configs => Object.fromEntries(names.map((n) => [n, validateConfig(serviceConfig(cluster, host(n), hosts, s, overlap), n)])) as Configs;

      let live = render(store); // what apply wrote
      let dbValid = { app: [old[SECRETS.mysqlApp]], monitor: [old[SECRETS.mysqlMonitor]] };
      let clientKey = old[SECRETS.apiKey];
      const check = (c: Configs, where: string) => {
        expect(`${where}: ${c.gatekeeper.apiKeys.includes(clientKey)}`).toBe(`${where}: true`);
        expect(`${where}: ${[c.trustedhost.credential, ...(c.trustedhost.previousCredentials ?? [])].includes(c.gatekeeper.upstream.credential)}`).toBe(`${where}: true`);
        expect(`${where}: ${[c.proxy.credential, ...(c.proxy.previousCredentials ?? [])].includes(c.trustedhost.upstream.credential)}`).toBe(`${where}: true`);
        const fb = c.proxy.db.fallbackPasswords ?? {};
        const logins = { app: [c.proxy.db.password, fb[c.proxy.db.user]], monitor: [c.proxy.db.monitor!.password, fb[c.proxy.db.monitor!.user]] };
        for (const k of ['app', 'monitor'] as const) expect(`${where} ${k}: ${logins[k].some((p) => p !== undefined && dbValid[k].includes(p))}`).toBe(`${where} ${k}: true`);
      };
      check(live, 'before');
      const seen: string[] = [];
      for (const step of rotationSteps(d, plan) as Step[]) {
        if (step.kind === 'configs') {
          const target = render(next, phaseOverlap(step.phase, old));
          // services reload in any order: every mix of previous and next configs must work
          for (let mask = 0; mask < 8; mask++) {
            const mix = Object.fromEntries(names.map((n, i) => [n, mask & (1 << i) ? target[n] : live[n]])) as Configs;
            check(mix, `${step.phase} ${mask}`);
          }
          live = target;
        } else if (step.kind === 'alter') {
          const both = (o: string, n: string) => (d === 'mysql' ? [o, n] : [n]); // RETAIN CURRENT PASSWORD on MySQL
          dbValid = { app: both(old[SECRETS.mysqlApp], fresh[SECRETS.mysqlApp]), monitor: both(old[SECRETS.mysqlMonitor], fresh[SECRETS.mysqlMonitor]) };
          check(live, 'after ALTER USER');
        } else if (step.kind === 'store') {
          clientKey = fresh[SECRETS.apiKey]; // clients read the stored key
          check(live, 'after store');
        } else if (step.kind === 'discard old passwords') {
          dbValid = { app: [fresh[SECRETS.mysqlApp]], monitor: [fresh[SECRETS.mysqlMonitor]] };
          check(live, 'after DISCARD');
        }
        seen.push(step.kind);
      }
      // at the end: only the new values anywhere, as apply renders them (so apply finds nothing to change)
      expect(live).toEqual(render(next));
      const text = JSON.stringify(live);
      for (const v of Object.values(old)) expect(text).not.toContain(v);
      expect(seen).toContain('store');
    });
  }
});
