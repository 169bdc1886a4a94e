// The package cache's pure parts: its config (bound to loopback and the
// clusters' gateways, serving only their mirrors), the apt sources through
// it, and the fence without the mirror.
import { describe, expect, test } from 'bun:test';
import { cacheConfig, cacheRoot, CACHE_PORT, CACHE_STORE } from '../../providers/local/cache.ts';
import { aptSources } from '../../providers/local/image.ts';
import { fenceRuleset, parseSubnet } from '../../providers/local/network.ts';

describe('package cache', () => {
  test('one config for every registered cluster: its gateways, its mirrors only, no other host', () => {
    const conf = cacheConfig([
      { table: 'rampart_b', gateway: '10.91.0.1', mirror: 'deb.debian.org' },
      { table: 'rampart_a', gateway: '10.90.0.1', mirror: 'deb.debian.org' },
    ]);
    const lines = conf.split('\n');
    expect(lines).toContain(`Port: ${CACHE_PORT}`);
    expect(lines).toContain('BindAddress: 127.0.0.1 10.90.0.1 10.91.0.1');
    expect(lines).toContain('ForceManaged: 1');
    expect(lines).toContain(`CacheDir: ${CACHE_STORE}`);
    expect(lines.filter((l) => l.startsWith('Remap-'))).toEqual([
      'Remap-deb_deb_debian_org: http://deb.debian.org/debian ; http://deb.debian.org/debian',
      'Remap-sec_deb_debian_org: http://deb.debian.org/debian-security ; http://deb.debian.org/debian-security',
    ]);
    // no CONNECT tunnels, no user-chosen ports, no report/maintenance page
    expect(conf).not.toMatch(/PassThroughPattern|AllowUserPorts|ReportPage|LocalDirs/);
    // the same set in another order: the same text (the daemon is restarted only on a real change)
    expect(cacheConfig([
      { table: 'rampart_a', gateway: '10.90.0.1', mirror: 'deb.debian.org' },
      { table: 'rampart_b', gateway: '10.91.0.1', mirror: 'deb.debian.org' },
    ])).toBe(conf);
  });

  test('apt sources through the cache on the gateway; sid has no -updates/-security', () => {
    const root = cacheRoot('10.90.0.1', 'deb.debian.org');
    expect(aptSources('deb.debian.org', 'bookworm', true, root)).toBe([
      'deb http://10.90.0.1:3142/deb.debian.org/debian bookworm main',
      'deb http://10.90.0.1:3142/deb.debian.org/debian bookworm-updates main',
      'deb http://10.90.0.1:3142/deb.debian.org/debian-security bookworm-security main',
      '',
    ].join('\n'));
    expect(aptSources('deb.debian.org', 'sid', false, root)).toBe('deb [check-valid-until=no] http://10.90.0.1:3142/deb.debian.org/debian sid main\n');
    expect(aptSources('deb.debian.org', 'bookworm')).toContain('deb http://deb.debian.org/debian bookworm main');
  });

  test('fence with the cache: only the subnet, no mirror set, no NAT; a different digest than with the mirror', () => {
    const s = parseSubnet('10.90.0.0/24');
    const r = fenceRuleset('rampart_rpcache', 'rpcache0', s, null);
    expect(r).toContain('iifname "rpcache0" ip daddr 10.90.0.0/24 accept');
    expect(r).toContain('iifname "rpcache0" counter drop');
    expect(r).not.toContain('mirror4');
    expect(r).not.toContain('masquerade');
    const withMirror = fenceRuleset('rampart_rpcache', 'rpcache0', s, ['192.0.2.7']);
    expect(/comment "([^"]+)"/.exec(r)?.[1]).not.toBe(/comment "([^"]+)"/.exec(withMirror)?.[1]);
  });
});
