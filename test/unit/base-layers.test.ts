// The base image's node layers (providers/local/image.ts): a rebuilt image
// gets a new layer; an earlier image's layer goes once no container uses it.
import { afterAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pruneBaseLayers } from '../../providers/local/image.ts';

const root = mkdtempSync(join(tmpdir(), 'rampart-layers-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('pruneBaseLayers', () => {
  test('keeps the current image layer and every layer a container is built on; removes the rest; other suites untouched', async () => {
    const cacheDir = join(root, 'cache');
    const lxcDir = join(root, 'lxc');
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(join(cacheDir, 'bookworm-base.tar.zst'), 'image');
    const current = join(cacheDir, `bookworm-base.rootfs.${Math.floor(statSync(join(cacheDir, 'bookworm-base.tar.zst')).mtimeMs)}`);
    const used = join(cacheDir, 'bookworm-base.rootfs.1000');
    const unused = join(cacheDir, 'bookworm-base.rootfs.2000');
    const otherSuite = join(cacheDir, 'sid-base.rootfs.3000');
    for (const d of [current, used, unused, otherSuite]) mkdirSync(join(d, 'usr/sbin'), { recursive: true });
    mkdirSync(join(lxcDir, 'rpx-manager'), { recursive: true });
    writeFileSync(join(lxcDir, 'rpx-manager', 'config'), `lxc.uts.name = manager\nlxc.rootfs.path = overlay:${used}:/var/lib/lxc/rpx-manager/delta0\n`);
    mkdirSync(join(lxcDir, 'not-a-container'), { recursive: true }); // no config: ignored

    const events: string[] = [];
    expect(await pruneBaseLayers('bookworm', { progress: (m) => events.push(m) }, { cacheDir, lxcDir })).toEqual([unused]);
    expect([current, used, unused, otherSuite].map(existsSync)).toEqual([true, true, false, true]);
    expect(events).toEqual([`removing the unused base layer of an earlier image: ${unused}`]);

    // the last node on the old layer is gone: the next prune removes it; nothing left to do after that
    rmSync(join(lxcDir, 'rpx-manager'), { recursive: true });
    expect(await pruneBaseLayers('bookworm', undefined, { cacheDir, lxcDir })).toEqual([used]);
    expect(await pruneBaseLayers('bookworm', undefined, { cacheDir, lxcDir })).toEqual([]);
    expect(existsSync(current)).toBe(true);
  });
});
