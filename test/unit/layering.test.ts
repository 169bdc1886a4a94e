// core/ is the engine: it never imports the roles (nor a provider or a
// playbook). The spec asks the registry (core/roles.ts) for the built-in
// roles, which register themselves when an entry point imports roles/index.ts.
import { describe, expect, test } from 'bun:test';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const CORE = join(import.meta.dir, '../../core');
const FORBIDDEN = /^\.\.\/(roles|providers|playbooks)\//;

/** Every module specifier a file imports: static, side-effect, re-export and dynamic imports. */
export function importsOf(source: string): string[] {
  const out: string[] = [];
  const re = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of source.matchAll(re)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

describe('layering: core/ does not import roles/', () => {
  test('the import reader sees every form of import', () => {
    expect(importsOf(`import { a } from '../roles/a.ts';\nimport type { B } from "./b.ts";\nimport '../roles/index.ts';\nexport { c } from './c.ts';\nconst d = await import('../roles/d.ts');`))
      .toEqual(['../roles/a.ts', './b.ts', '../roles/index.ts', './c.ts', '../roles/d.ts']);
  });

  test('no core/*.ts file imports ../roles/, ../providers/ or ../playbooks/', () => {
    const files = readdirSync(CORE).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('spec.ts');
    const bad = files.flatMap((f) => importsOf(readFileSync(join(CORE, f), 'utf8')).filter((i) => FORBIDDEN.test(i)).map((i) => `core/${f} imports ${i}`));
    expect(bad).toEqual([]);
  });

  test('every command (the extensionless entry files) loads a playbook that registers the built-in roles', () => {
    const root = join(import.meta.dir, '../..');
    const entries = readdirSync(root).filter((f) => !f.includes('.') && statSync(join(root, f)).isFile() && readFileSync(join(root, f), 'utf8').startsWith('#!/usr/bin/env zx'));
    expect(entries).toEqual(expect.arrayContaining(['apply', 'bench', 'teardown', 'exec', 'facts', 'rotate', 'switchover']));
    const missing = entries.flatMap((e) => {
      const playbooks = importsOf(readFileSync(join(root, e), 'utf8')).filter((i) => i.startsWith('./playbooks/'));
      if (playbooks.length === 0) return [`${e}: loads no playbook`];
      return playbooks.filter((pb) => !importsOf(readFileSync(join(root, pb), 'utf8')).includes('../roles/index.ts')).map((pb) => `${e} -> ${pb} does not import ../roles/index.ts`);
    });
    expect(missing).toEqual([]);
  });

  test('reading a cluster before any entry point registered the built-in roles is a clear error', () => {
    // a fresh process outside the repo (no test preload): core/spec.ts alone
    const code = `const { parseCluster } = await import(${JSON.stringify(join(CORE, 'spec.ts'))});
try { parseCluster('name: x\\n', 'cluster.yaml'); console.log('no error'); } catch (e) { console.log(e.name + ': ' + e.message); }`;
    const r = spawnSync(process.execPath, ['-e', code], { cwd: '/', encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('RoleError: no built-in roles are registered: the entry point imports roles/index.ts before reading a cluster');
  });
});
