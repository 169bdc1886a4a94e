// The local provider's resources: plan() and up() run the same checks
// (providers/local/resource.ts), so what plan lists is what up does; and a
// container's check is a function of its facts (a table: facts in, drift out).
import { describe, expect, test } from 'bun:test';
import { containerDrift, type ContainerFacts, type ContainerInfo } from '../../providers/local/lxc.ts';
import { converge, resource, type Step } from '../../providers/local/resource.ts';

/**
 * A host of named flags; each resource wants its flag on. A later one reads an
 * earlier one's (as the fence reads the host packages'): without it, it
 * cannot exist yet, so it is to be created.
 */
function world(initial: Record<string, boolean>) {
  const host = { ...initial };
  const applied: string[] = [];
  const flag = (name: string, needs?: string) => resource<undefined>({
    resource: name,
    check: async () => {
      if (needs && !host[needs]) return { action: 'create', detail: `after ${needs}`, data: undefined };
      return host[name] ? { action: 'ok' } : { action: host[name] === false ? 'change' : 'create', detail: 'turn on', data: undefined };
    },
    apply: async () => {
      applied.push(name);
      host[name] = true;
    },
  });
  const steps: Step[] = [
    flag('packages'),
    flag('bridge'),
    flag('fence', 'packages'),
    async () => [flag('node a', 'bridge'), flag('node b', 'bridge'),
      resource({ resource: 'node old', check: async () => ({ action: 'delete', detail: 'removed by down', data: undefined }) })],
  ];
  return { host, applied, steps };
}

describe('local provider resources: plan is up without applying', () => {
  test.each([
    ['from nothing', {}],
    ['partly there', { packages: true, bridge: true, fence: false, 'node a': true }],
    ['prerequisite missing', { bridge: true, 'node b': false }],
    ['all there', { packages: true, bridge: true, fence: true, 'node a': true, 'node b': true }],
  ])('%s: plan lists exactly what up then does, changes nothing; after up, plan is all ok', async (_name, initial: Record<string, boolean>) => {
    const w = world(initial);
    const before = structuredClone(w.host);
    const plan = await converge(w.steps, false);
    expect(w.host).toEqual(before);
    expect(w.applied).toEqual([]);
    const up = await converge(w.steps, true);
    expect(up.map((i) => [i.resource, i.action])).toEqual(plan.map((i) => [i.resource, i.action]));
    expect(w.applied).toEqual(plan.filter((i) => i.action === 'create' || i.action === 'change').map((i) => i.resource));
    const again = await converge(w.steps, false);
    expect(again.filter((i) => i.action !== 'ok')).toEqual([{ action: 'delete', resource: 'node old', detail: 'removed by down' }]);
    expect((await converge(w.steps, true)).map((i) => i.action)).toEqual(again.map((i) => i.action));
  });

  test('a resource whose check reads an earlier one sees it applied in up, unapplied in plan', async () => {
    const w = world({ bridge: true });
    const plan = await converge(w.steps, false);
    expect(plan.find((i) => i.resource === 'fence')).toEqual({ action: 'create', resource: 'fence', detail: 'after packages' });
    const up = await converge(w.steps, true);
    // in up the packages are in place before the fence is checked: the fence's own check decides
    expect(up.find((i) => i.resource === 'fence')).toEqual({ action: 'create', resource: 'fence', detail: 'turn on' });
    expect(w.host.fence).toBe(true);
  });
});

const info = (over: Partial<ContainerInfo> & { address?: string; complete?: boolean } = {}): ContainerInfo => ({
  name: 'rpt-n1',
  running: over.running ?? true,
  marker: { cluster: 'rpt', node: 'n1', address: over.address ?? '10.78.0.10', complete: over.complete ?? true },
});

describe('container check: facts in, drift out', () => {
  test.each<[string, ContainerFacts, string, string, unknown]>([
    ['missing', {}, 'create', '10.78.0.10, then start', { kind: 'create' }],
    ['half-created', { info: info({ complete: false }) }, 'change', 'recreate (incomplete), 10.78.0.10', { kind: 'create', info: info({ complete: false }) }],
    ['address changed', { info: info({ address: '10.78.0.20' }) }, 'change', 'recreate: address 10.78.0.20 -> 10.78.0.10', { kind: 'create', info: info({ address: '10.78.0.20' }) }],
    ['stopped', { info: info({ running: false }) }, 'change', 'start', { kind: 'repair', sync: false, reattach: false, start: true }],
    ['veth off the bridge', { info: info(), vethDetached: true }, 'change', 're-attach to the bridge', { kind: 'repair', sync: false, reattach: true, start: false }],
    ['stopped: its veth is not an issue', { info: info({ running: false }), vethDetached: true }, 'change', 'start', { kind: 'repair', sync: false, reattach: false, start: true }],
    ['mirror pin mangled', { info: info(), mirrorStale: true }, 'change', 'rewrite mirror pin (/etc/hosts) and apt sources', { kind: 'repair', sync: true, reattach: false, start: false }],
    ['everything at once', { info: info(), mirrorStale: true, vethDetached: true }, 'change', 're-attach to the bridge; rewrite mirror pin (/etc/hosts) and apt sources', { kind: 'repair', sync: true, reattach: true, start: false }],
  ])('%s', (_name, facts, action, detail, data) => {
    expect(containerDrift('10.78.0.10', facts)).toEqual({ action, detail, data } as never);
  });

  test('as wanted: ok with its address', () => {
    expect(containerDrift('10.78.0.10', { info: info(), mirrorStale: false, vethDetached: false })).toEqual({ action: 'ok', detail: '10.78.0.10' });
  });
});
