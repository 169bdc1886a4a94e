// The flow policy, resolved once: what the spec, the iptables rules and the
// security groups all read.
import { describe, expect, test } from 'bun:test';
import { allows, flowPolicy } from '../../core/flows.ts';

const input = {
  nodes: [{ name: 'gk', public: true }, { name: 'th' }, { name: 'px' }, { name: 'db' }],
  flows: [
    { from: ['internet'], to: ['gk'], port: 80 },
    { from: ['gk'], to: ['th'], port: 5000 },
    { from: ['th'], to: ['px'], port: 5000 },
    { from: ['px', 'controller'], to: ['db'], port: 3306 },
  ],
  egress: [{ node: 'th', mirror: true }, { node: 'gk', mirror: false }],
};

describe('flow policy', () => {
  test('ingress per node from the flows; internet, controller and nodes told apart', () => {
    const p = flowPolicy(input);
    expect(p.get('gk')!.ingress).toEqual([{ port: 80, peer: { kind: 'internet' }, why: 'flow internet to gk:80' }]);
    expect(p.get('db')!.ingress.map((r) => r.peer)).toEqual([{ kind: 'node', node: 'px' }, { kind: 'controller' }]);
    expect(p.get('px')!.egress).toBeNull();
    expect(p.get('th')!.egress).toEqual({ to: [{ port: 5000, peer: { kind: 'node', node: 'px' }, why: 'flow th to px:5000' }], mirror: true });
  });

  test('the jump rule: SSH only from the jump host; a restricted jump host may still SSH to the others', () => {
    const p = flowPolicy({ ...input, jump: 'gk' });
    expect(p.get('gk')!.ssh).toEqual({ kind: 'controller' });
    expect(p.get('db')!.ssh).toEqual({ kind: 'node', node: 'gk' });
    expect(p.get('gk')!.egress!.to.filter((r) => r.port === 22).map((r) => r.peer)).toEqual(['th', 'px', 'db'].map((node) => ({ kind: 'node', node })));
    expect(flowPolicy(input).get('db')!.ssh).toEqual({ kind: 'controller' });
  });

  test('allows: a named source, internet for everyone, null for "any flow at all"', () => {
    const p = flowPolicy(input);
    expect(allows(p, 'th', 'px', 5000)).toBe(true);
    expect(allows(p, 'gk', 'px', 5000)).toBe(false);
    expect(allows(p, 'anyone', 'gk', 80)).toBe(true);
    expect(allows(p, null, 'db', 3306)).toBe(true);
    expect(allows(p, null, 'db', 22)).toBe(false);
  });
});
