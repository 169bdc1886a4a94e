// What the service role ships: each service bundled into one JS file by
// `bun build` on the controller (same sources -> same bytes), and the Bun
// runtime binary from the installed npm package. Both are local files under
// <state>/build, built at most once per run and reused while their inputs
// are unchanged.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RampartError } from '../../core/errors.ts';
import { statePaths, writeFileAtomic } from '../../core/state.ts';
import type { ServiceName } from '../../core/types.ts';

export class ArtifactError extends RampartError {}

/** The repository root (bun build runs there so the bundle never holds absolute paths). */
export const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const BUN = join(REPO_ROOT, 'node_modules/.bin/bun');

export interface Artifact {
  path: string;
  sha256: string;
  size: number;
}

/** Packages only the Node runtime loads (services/http.ts imports them lazily, never on Bun). */
export const NODE_ONLY = ['elysia', '@elysiajs/node'];

export function entryPoint(service: ServiceName): string {
  return `services/${service}/main.ts`;
}

export function buildDir(clusterDir: string): string {
  return join(statePaths(clusterDir).dir, 'build');
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

function bunVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules/bun/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Per input file: `[size, mtimeMs, sha256]`, so unchanged files are not read again. */
type FileHashes = Record<string, [number, number, string]>;

interface Stamp {
  /** Hash of the bun version, the entry, the externals and every input's content. */
  key: string;
  files: FileHashes;
  /** The bundle as written: `[size, mtimeMs, sha256]`. */
  output: [number, number, string];
}

// Content hashes of input files, shared by the three services' bundles in one run.
const fileHashes = new Map<string, Promise<string>>();

async function hashInput(rel: string, known: FileHashes): Promise<{ sha: string; entry: [number, number, string] }> {
  const abs = resolve(REPO_ROOT, rel);
  const st = statSync(abs);
  const k = known[rel];
  if (k && k[0] === st.size && k[1] === st.mtimeMs) return { sha: k[2], entry: k };
  const id = `${abs} ${st.size} ${st.mtimeMs}`;
  let p = fileHashes.get(id);
  if (!p) {
    p = readFile(abs).then((d) => sha256(d));
    fileHashes.set(id, p);
  }
  const sha = await p;
  return { sha, entry: [st.size, st.mtimeMs, sha] };
}

/** Hash of everything a bundle was made from (bun version + every input file), from its metafile. */
async function inputsKey(metaPath: string, entry: string, known: FileHashes): Promise<{ key: string; files: FileHashes } | null> {
  let inputs: string[];
  try {
    inputs = Object.keys((JSON.parse(await readFile(metaPath, 'utf8')) as { inputs: Record<string, unknown> }).inputs).sort();
  } catch {
    return null;
  }
  let hashed: { sha: string; entry: [number, number, string] }[];
  try {
    hashed = await Promise.all(inputs.map((i) => hashInput(i, known)));
  } catch {
    return null; // an input is gone: rebuild
  }
  const h = createHash('sha256').update(`bun ${bunVersion()}\nentry ${entry}\nexternal ${NODE_ONLY.join(' ')}\n`);
  const files: FileHashes = {};
  inputs.forEach((input, i) => {
    h.update(`${input} ${hashed[i].sha}\n`);
    files[input] = hashed[i].entry;
  });
  return { key: h.digest('hex'), files };
}

function readStamp(path: string): Stamp | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Stamp;
  } catch {
    return null;
  }
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((ok, fail) => {
    execFile(cmd, args, { cwd: REPO_ROOT, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) fail(new ArtifactError(`${cmd} ${args.join(' ')} failed: ${(stderr || err.message).trim().split('\n').slice(-5).join(' | ')}`));
      else ok(stdout);
    });
  });
}

async function buildBundle(clusterDir: string, service: ServiceName): Promise<Artifact> {
  const entry = entryPoint(service);
  if (!existsSync(join(REPO_ROOT, entry))) {
    throw new ArtifactError(`service ${service}: entry point ${entry} not found`, 'the service sources live in services/<name>/main.ts');
  }
  const dir = buildDir(clusterDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const out = join(dir, `${service}.js`);
  const meta = join(dir, `${service}.meta.json`);
  const stampPath = join(dir, `${service}.stamp.json`);
  const stamp = readStamp(stampPath);
  if (stamp && existsSync(out)) {
    const now = await inputsKey(meta, entry, stamp.files);
    const st = statSync(out);
    if (now && now.key === stamp.key && st.size === stamp.output[0] && st.mtimeMs === stamp.output[1]) {
      return { path: out, sha256: stamp.output[2], size: st.size };
    }
  }
  // The bundles run on Bun only: the Node server (Elysia's adapter, services/http.ts) stays out of them.
  await run(BUN, ['build', entry, '--target=bun', ...NODE_ONLY.flatMap((p) => ['--external', p]), '--outfile', out, `--metafile=${meta}`]);
  const data = readFileSync(out);
  const st = statSync(out);
  const art = { path: out, sha256: sha256(data), size: data.length };
  const now = await inputsKey(meta, entry, {});
  if (now) writeFileAtomic(stampPath, JSON.stringify({ key: now.key, files: now.files, output: [st.size, st.mtimeMs, art.sha256] } satisfies Stamp) + '\n', 0o600);
  return art;
}

// One build per service per process (= per apply), shared by every host.
const bundles = new Map<string, Promise<Artifact>>();

/** The bundled service (built on first use in this run, reused while its inputs are unchanged). */
export function serviceBundle(clusterDir: string, service: ServiceName): Promise<Artifact> {
  const key = `${clusterDir}\u0000${service}`;
  let p = bundles.get(key);
  if (!p) {
    p = buildBundle(clusterDir, service);
    bundles.set(key, p);
    p.catch(() => bundles.delete(key));
  }
  return p;
}

// ------------------------------------------------------------ the Bun runtime

/** Shell command printing the node's architecture and whether its CPU has AVX2 (`x86_64 avx2`). */
export const CPU_FACT = `printf '%s %s' "$(uname -m)" "$(grep -qw avx2 /proc/cpuinfo && echo avx2 || echo baseline)"`;

/** The @oven/bun-* package a node needs, from CPU_FACT's output. */
export function runtimePackage(cpuFact: string): string {
  const [arch, level] = cpuFact.trim().split(/\s+/);
  if (arch === 'x86_64' || arch === 'amd64') return level === 'avx2' ? '@oven/bun-linux-x64' : '@oven/bun-linux-x64-baseline';
  if (arch === 'aarch64' || arch === 'arm64') return '@oven/bun-linux-aarch64';
  throw new ArtifactError(`no Bun runtime for architecture ${arch || 'unknown'}`, 'Bun runs on x86_64 and aarch64 Linux nodes');
}

/**
 * The runtime binary for a package: its own bin/bun, or, for the package bun's
 * postinstall picked on this machine, the binary it moved to node_modules/bun/bin.
 */
export function runtimeBinary(pkg: string): string {
  const own = join(REPO_ROOT, 'node_modules', pkg, 'bin/bun');
  if (existsSync(own) && statSync(own).size > 0) return own;
  const moved = join(REPO_ROOT, 'node_modules/bun/bin/bun.exe');
  if (existsSync(join(REPO_ROOT, 'node_modules', pkg, 'package.json')) && existsSync(moved)) return moved;
  throw new ArtifactError(`the Bun runtime for this node (${pkg}) is not installed on the controller`,
    `npm install --no-save ${pkg}@${bunVersion()} (it must match the bun devDependency)`);
}

const runtimes = new Map<string, Artifact>();

/** The runtime binary and its sha256 (cached by size + mtime in <state>/build/runtime.json). */
export async function runtimeArtifact(clusterDir: string, pkg: string): Promise<Artifact> {
  const path = runtimeBinary(pkg);
  const cached = runtimes.get(path);
  if (cached) return cached;
  const st = statSync(path);
  const id = `${path} ${st.size} ${st.mtimeMs}`;
  const dir = buildDir(clusterDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cacheFile = join(dir, 'runtime.json');
  let index: Record<string, string> = {};
  try {
    index = JSON.parse(readFileSync(cacheFile, 'utf8')) as Record<string, string>;
  } catch {
    index = {};
  }
  let sha = index[id];
  if (!sha) {
    sha = sha256(await readFile(path));
    index = { ...index, [id]: sha };
    writeFileAtomic(cacheFile, JSON.stringify(index) + '\n', 0o600);
  }
  const art = { path, sha256: sha, size: st.size };
  runtimes.set(path, art);
  return art;
}
