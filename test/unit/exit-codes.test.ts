// Every command's exit code for the error it ended with (README: "Exit codes").
import { describe, expect, test } from 'bun:test';
import { exitCodeFor, UsageError } from '../../core/cli.ts';
import { HostError, ProviderError, SpecError, SshError } from '../../core/errors.ts';
import { BenchError } from '../../playbooks/bench.ts';
import { SwitchoverError } from '../../playbooks/switchover.ts';

describe('exitCodeFor', () => {
  test.each([
    ['bad usage', new UsageError('--limit takes a host'), 2],
    ['invalid cluster.yaml', new SpecError(['cluster.yaml:3:5: nodes.0.name is required']), 3],
    ['provider error (not root, no LXC, AWS credentials)', new ProviderError('must run as root'), 4],
    ['bench: no applied cluster, gatekeeper unreachable, key refused', new BenchError('no applied cluster'), 4],
    ['a host that cannot be reached', new SshError('worker1', 'connection refused'), 1],
    ['the cluster in a state the command cannot act on', new HostError('two writable DB nodes'), 1],
    ['a switchover that failed part-way (undone or handed to apply)', new SwitchoverError('switchover manager -> worker1 failed: timeout'), 1],
    ['anything else', new Error('boom'), 1],
  ] as const)('%s', (_, e, code) => {
    expect(exitCodeFor(e)).toBe(code);
  });

  test('--detailed-exitcode: every error is 1, so 2 only ever means changes', () => {
    for (const e of [new UsageError('x'), new SpecError(['y']), new ProviderError('z'), new SshError('h', 'w')]) expect(exitCodeFor(e, true)).toBe(1);
  });
});
