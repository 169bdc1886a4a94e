// Generated secrets, stored 0600 in the state folder; never printed or logged.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { SecretStore } from './types.ts';
import { ensureStateDir, readJson, writeFileAtomic } from './state.ts';

export class FileSecretStore implements SecretStore {
  private readonly path: string;
  private cache: Record<string, string>;

  private readonly persist: boolean;

  /** `persist: false` (apply --check, facts): a missing secret is made for this run only, never stored. */
  constructor(clusterDir: string, opts: { persist?: boolean } = {}) {
    this.path = ensureStateDir(clusterDir).secrets;
    this.cache = readJson<Record<string, string>>(this.path, {});
    this.persist = opts.persist ?? true;
  }

  /** Every stored secret's value (to mask them in logs; never to print). */
  values(): string[] {
    return Object.values({ ...readJson<Record<string, string>>(this.path, {}), ...this.cache });
  }

  get(name: string): string {
    let value = this.cache[name];
    if (!value) {
      // base64url: no quoting problems in option files, env files or SQL literals
      value = randomBytes(24).toString('base64url');
      this.cache = { ...readJson<Record<string, string>>(this.path, {}), ...this.cache, [name]: value };
      if (this.persist) writeFileAtomic(this.path, JSON.stringify(this.cache, null, 2) + '\n', 0o600);
    }
    return value;
  }

  /** Stores these values (a rotation's new secrets), the others kept; one atomic 0600 write. */
  setAll(values: Record<string, string>): void {
    this.cache = { ...readJson<Record<string, string>>(this.path, {}), ...this.cache, ...values };
    writeFileAtomic(this.path, JSON.stringify(this.cache, null, 2) + '\n', 0o600);
  }
}

/** A read-only view with some secrets replaced (a rotation's new values before they are stored). */
export function secretsWith(base: SecretStore, values: Record<string, string>): SecretStore {
  return { get: (name) => values[name] ?? base.get(name) };
}

/** The API key a team supplies (services.gatekeeper.apiKeyFile): the first line of the file, without its line end. */
export function readApiKeyFile(file: string): string {
  return readFileSync(file, 'utf8').split(/\r?\n/)[0].trim();
}

/** What a client API key must look like (the team's own; the generated ones are base64url). */
export const API_KEY_PATTERN = /^[A-Za-z0-9._~+/=-]{16,256}$/;

/** Where a team's own API key comes from: a file, or an environment variable read at run time (never stored). */
export interface TeamKeySource {
  apiKeyFile?: string;
  apiKeyEnv?: string;
}

/** The team's own API key (services.gatekeeper.apiKeyFile / apiKeyEnv), or null: rampart generates and rotates one. */
export function teamApiKey(src: TeamKeySource, env: NodeJS.ProcessEnv = process.env): string | null {
  if (src.apiKeyFile) return readApiKeyFile(src.apiKeyFile);
  if (src.apiKeyEnv) return (env[src.apiKeyEnv] ?? '').trim();
  return null;
}
