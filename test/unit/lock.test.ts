// The provider's one lock-file mechanism (providers/local/exec.ts acquireLock):
// the base image build and the package cache both take it.
import { afterAll, describe, expect, test } from 'bun:test';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireLock } from '../../providers/local/exec.ts';

const dir = mkdtempSync(join(tmpdir(), 'rampart-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('acquireLock', () => {
  test('a free lock is taken: the file holds this pid, 0600', async () => {
    const path = join(dir, 'free.lock');
    expect(await acquireLock(path, 10)).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(String(process.pid));
  });

  test('the lock of a process that is gone is taken over without waiting', async () => {
    const path = join(dir, 'stale.lock');
    const gone = spawn('true');
    await new Promise((r) => gone.once('exit', r));
    writeFileSync(path, String(gone.pid));
    const asked: number[] = [];
    expect(await acquireLock(path, 10, (pid) => (asked.push(pid), true))).toBe(true);
    expect(asked).toEqual([]);
    expect(readFileSync(path, 'utf8')).toBe(String(process.pid));
  });

  test('held by a live process: waits, asking busy() each time; busy() true gives up, a throw fails; freed, it is taken', async () => {
    const path = join(dir, 'held.lock');
    const holder = spawn('sleep', ['30']);
    try {
      writeFileSync(path, String(holder.pid));
      const seen: number[] = [];
      expect(await acquireLock(path, 5, (pid, attempt) => (seen.push(attempt), expect(pid).toBe(holder.pid!), attempt === 3))).toBe(false);
      expect(seen).toEqual([0, 1, 2, 3]);
      expect(readFileSync(path, 'utf8')).toBe(String(holder.pid)); // not taken from a live holder
      await expect(acquireLock(path, 5, () => { throw new Error('locked for too long'); })).rejects.toThrow('locked for too long');
      const taken = acquireLock(path, 5);
      holder.kill();
      expect(await taken).toBe(true);
      expect(readFileSync(path, 'utf8')).toBe(String(process.pid));
    } finally {
      holder.kill();
    }
    expect(existsSync(path)).toBe(true);
  });
});
