// The services' contract (services/contract.ts) is the one list of service
// names, hop chain and proxy modes: the checked-in JSON schema of
// cluster.yaml must spell the same lists, and the config validator built
// from it names the file and the field.

import { describe, expect, test } from 'bun:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { callerOf, nextHopOf, PROXY_MODES, SERVICE_NAMES } from '../../services/contract.ts';
import { validateConfig } from '../../services/config.ts';
import { ROOT } from '../support/cluster.ts';

const schema = JSON.parse(readFileSync(join(ROOT, 'schema/cluster.schema.json'), 'utf8')) as {
  definitions: { mode: { enum: string[] } };
  properties: {
    nodes: { items: { properties: { service: { enum: string[] } } } };
    services: { properties: { proxy: { properties: { modes: { default: string[] } } } } };
  };
};

describe('contract and cluster.yaml schema agree', () => {
  test('proxy modes', () => {
    expect(schema.definitions.mode.enum).toEqual([...PROXY_MODES]);
    expect(schema.properties.services.properties.proxy.properties.modes.default).toEqual([...PROXY_MODES]);
  });
  test('service names', () => {
    expect(schema.properties.nodes.items.properties.service.enum).toEqual([...SERVICE_NAMES]);
  });
});

describe('hop chain', () => {
  test('gatekeeper -> trustedhost -> proxy', () => {
    expect(SERVICE_NAMES.map(callerOf)).toEqual([null, 'gatekeeper', 'trustedhost']);
    expect(SERVICE_NAMES.map(nextHopOf)).toEqual(['trustedhost', 'proxy', null]);
  });
});

describe('config validation from the contract', () => {
  const proxy = {
    service: 'proxy', listen: { host: '127.0.0.1', port: 5000 }, maxBodyBytes: 65536, policy: { statements: ['SELECT'], schemas: ['sakila'] },
    credential: 'p'.repeat(24), probeIntervalMs: 250, maxLagSeconds: 5, defaultMode: 'direct', modes: ['direct'],
    db: { manager: { name: 'manager', host: '10.0.0.2', port: 3306 }, workers: [], user: 'app', password: 'x', database: 'sakila' },
  };
  const problem = (raw: unknown): string => {
    try {
      validateConfig(raw, 'proxy', 'p.json');
    } catch (e) {
      return (e as Error).message;
    }
    return 'accepted';
  };
  test('names the file and the field', () => {
    expect(problem(proxy)).toBe('accepted');
    expect(problem({ ...proxy, modes: ['direct', 'fastest'] })).toBe('p.json: modes must be a subset of direct, random, customized');
    expect(problem({ ...proxy, defaultMode: 'random' })).toBe('p.json: defaultMode must be one of modes');
    expect(problem({ ...proxy, db: { ...proxy.db, workers: [{ name: 'w', host: 'h', port: 'x' }] } })).toMatch(/^p\.json: db\.workers\[0\]\.port: /);
    expect(problem({ ...proxy, listen: { host: 'h', port: 70000 } })).toMatch(/^p\.json: listen\.port: /);
    expect(problem({ ...proxy, credential: 'short' })).toBe('p.json: credential must be a string of at least 16 characters');
    expect(problem({ ...proxy, maxLagSeconds: -1 })).toBe('p.json: maxLagSeconds must be >= 0');
    expect(problem([])).toBe('p.json: must hold a JSON object');
  });
});
