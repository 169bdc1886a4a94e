// sakila: the Sakila sample database, loaded ONCE on the manager and carried
// to the workers by replication (which runs before this role). The tarball is
// found or downloaded on the controller (nodes reach only the Debian mirror),
// checked against its sha256, cached in the state folder and uploaded.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { RampartError } from '../core/errors.ts';
import { ensureStateDir } from '../core/state.ts';
import { defineRole } from '../core/roles.ts';
import type { Cluster, SakilaSpec, Task } from '../core/types.ts';
import {
  countsLine, parseSakila, sakilaDoneQuery, sakilaDoneValue, sakilaFact, sakilaLoadScript, sakilaProblem, waitForScript,
} from './lib/mysql-meta.ts';

export class SakilaError extends RampartError {}

const sha256Of = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/**
 * The verified local tarball: $RAMPART_SAKILA, else database.sakila.path
 * (relative to cluster.yaml) when it exists, else the cache in the state
 * folder, else a download of database.sakila.url (then cached).
 */
export async function sakilaTarball(cluster: Cluster, download: (url: string) => Promise<Buffer> = fetchBytes): Promise<string> {
  const { sha256, url, path } = cluster.database.sakila;
  const verify = (file: string, origin: string) => {
    const got = sha256Of(file);
    if (got !== sha256) {
      throw new SakilaError(`${origin} ${file} has sha256 ${got}, cluster.yaml expects ${sha256}`, 'use the official sakila-db.tar.gz or correct database.sakila.sha256');
    }
    return file;
  };
  const env = process.env.RAMPART_SAKILA;
  if (env) {
    if (!existsSync(env)) throw new SakilaError(`RAMPART_SAKILA=${env} does not exist`, 'point it at sakila-db.tar.gz or unset it');
    return verify(env, 'RAMPART_SAKILA');
  }
  if (path) {
    const p = isAbsolute(path) ? path : resolve(cluster.dir, path);
    if (existsSync(p)) return verify(p, 'database.sakila.path');
  }
  const cache = join(ensureStateDir(cluster.dir).dir, `sakila-${sha256.slice(0, 16)}.tar.gz`);
  if (existsSync(cache) && sha256Of(cache) === sha256) return cache;
  let bytes: Buffer;
  try {
    bytes = await download(url);
  } catch (e) {
    throw new SakilaError(`download of ${url} failed: ${(e as Error).message}`, 'set database.sakila.path or RAMPART_SAKILA to a local copy (offline use)');
  }
  const got = createHash('sha256').update(bytes).digest('hex');
  if (got !== sha256) throw new SakilaError(`${url} has sha256 ${got}, cluster.yaml expects ${sha256}`, 'the published file changed or the download was altered; check database.sakila.sha256');
  const tmp = `${cache}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes, { mode: 0o600 });
  renameSync(tmp, cache);
  return verify(cache, 'cached download');
}

async function fetchBytes(url: string): Promise<Buffer> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

const load: Task = {
  name: 'sakila loaded on the manager (actor>=200, film=1000, rental=16044)',
  when: ({ host }) => (host.node.db === 'manager' ? null : host.node.db ? 'loaded on the manager, replicated here' : 'not a DB node'),
  facts: ({ cluster }) => ({ sakila: sakilaFact(cluster.database.schema) }),
  check: ({ facts, cluster }) => {
    const problem = sakilaProblem(parseSakila(facts.sakila.stdout), cluster.database.sakila.sha256);
    return problem ? { message: `load: ${problem}` } : null;
  },
  apply: async ({ conn, cluster }) => {
    const { sha256 } = cluster.database.sakila;
    const local = await sakilaTarball(cluster);
    const remote = `/tmp/rampart-sakila-${sha256.slice(0, 16)}-${process.pid}.tar.gz`;
    await conn.putFile(local, remote);
    await conn.exec(sakilaLoadScript(remote, sha256, cluster.database.schema));
    const st = parseSakila((await conn.exec(sakilaFact(cluster.database.schema), { check: false })).stdout);
    const problem = sakilaProblem(st, sha256);
    if (problem) throw new SakilaError(`after the load: ${problem}`);
    return `loaded: ${countsLine(st.counts)}`;
  },
};

const replicated: Task = {
  name: 'sakila replicated (actor>=200, film=1000, rental=16044)',
  when: ({ host }) => (host.node.db === 'worker' ? null : host.node.db ? 'the manager loads it' : 'not a DB node'),
  facts: ({ cluster }) => ({ sakila: sakilaFact(cluster.database.schema) }),
  check: ({ facts, cluster }) => {
    const problem = sakilaProblem(parseSakila(facts.sakila.stdout), cluster.database.sakila.sha256);
    return problem ? { message: `wait for replication: ${problem}` } : null;
  },
  apply: async ({ conn, cluster, host }) => {
    const { sha256 } = cluster.database.sakila;
    await conn.exec(waitForScript('the sakila load', sakilaDoneQuery(cluster.database.schema), sakilaDoneValue(sha256), 300));
    const st = parseSakila((await conn.exec(sakilaFact(cluster.database.schema), { check: false })).stdout);
    const problem = sakilaProblem(st, sha256);
    if (problem) throw new SakilaError(`${host.name}: sakila replicated but ${problem}`, 'compare with the manager; the replica may have diverged');
    return `replicated: ${countsLine(st.counts)}`;
  },
};

export const sakilaRole = defineRole<SakilaSpec>({
  name: 'sakila',
  // loaded once on the manager, carried to the workers by replication
  after: ['replication'],
  requires: [{ role: 'mysql' }],
  settings: {
    at: ['database', 'sakila'],
    schema: {
      "type": "object",
      "additionalProperties": false,
      "default": {},
      "properties": {
        "url": {
          "type": "string",
          "default": "https://downloads.mysql.com/docs/sakila-db.tar.gz",
          "format": "uri",
          "pattern": "^https?://",
          "patternErrorMessage": "must be an http:// or https:// URL",
          "description": "Where the sakila tarball is downloaded from."
        },
        "sha256": {
          "type": "string",
          "pattern": "^[0-9a-f]{64}$",
          "default": "51bf9a9314f9d164ffde94646ff70f445a1cb9a2e53aad1a773b007c13ad7b4f",
          "patternErrorMessage": "must be 64 lower-case hex digits",
          "description": "sha256 the tarball must have."
        },
        "path": {
          "type": "string",
          "description": "Local tarball (offline); relative to cluster.yaml. Env RAMPART_SAKILA overrides."
        }
      }
    },
  },
  tasks: [load, replicated],
});
