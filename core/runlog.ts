// What a run sent to the nodes: every command, its exit code, duration and
// output, as JSON lines in .rampart/logs/<timestamp>.jsonl (0600; the last 50
// runs are kept), and with -v the same on stderr. Secrets are masked: every
// generated secret's value and MySQL password hashes become `***`. Commands
// never carry a secret (they travel on stdin, which is never logged).
import { appendFileSync, chmodSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface CommandRecord {
  ts: string;
  host: string;
  /** exec (a script), write (a file written through stdin), put (an SFTP upload), facts (the one fact round trip). */
  kind: 'exec' | 'write' | 'put' | 'facts';
  command: string;
  code: number;
  durationMs: number;
  stdout?: string;
  stderr?: string;
  /** Set on `facts`: output per fact (shown with -vv). */
  facts?: Record<string, { code: number; stdout: string }>;
}

/** Keep this many run logs; older ones are removed when a run starts. */
export const KEEP_RUN_LOGS = 50;
const MAX_FIELD = 64 * 1024;

export type CommandLogger = (r: Omit<CommandRecord, 'ts'>) => void;

export class RunLog {
  readonly path: string;
  private readonly secrets: string[];

  /**
   * @param secrets values to mask (the store's generated secrets)
   * @param verbosity 0 = file only; 1 = commands and output on stderr; 2 = also every fact
   */
  constructor(stateDir: string, command: string, secrets: string[], private readonly verbosity = 0, private readonly err: (s: string) => void = (s) => process.stderr.write(s)) {
    const dir = join(stateDir, 'logs');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    this.path = join(dir, `${stamp}-${command}-${process.pid}.jsonl`);
    appendFileSync(this.path, '', { mode: 0o600 });
    chmodSync(this.path, 0o600);
    // longest first, so a secret containing another is masked whole
    this.secrets = secrets.filter((s) => s.length >= 8).sort((a, b) => b.length - a.length);
    rotate(dir, KEEP_RUN_LOGS);
  }

  /** Mask secrets and password hashes in a text. */
  mask(text: string): string {
    let out = text;
    for (const s of this.secrets) out = out.split(s).join('***');
    return out.replace(/\*[0-9A-F]{40}\b/g, '***');
  }

  readonly record: CommandLogger = (r) => {
    const clip = (s: string | undefined) => (s === undefined ? undefined : this.mask(s.length > MAX_FIELD ? `${s.slice(0, MAX_FIELD)}... (${s.length} bytes)` : s));
    const rec: CommandRecord = {
      ts: new Date().toISOString(), host: r.host, kind: r.kind, command: this.mask(r.command), code: r.code, durationMs: r.durationMs,
      ...(r.stdout !== undefined ? { stdout: clip(r.stdout) } : {}),
      ...(r.stderr !== undefined ? { stderr: clip(r.stderr) } : {}),
      ...(r.facts ? { facts: Object.fromEntries(Object.entries(r.facts).map(([k, v]) => [k, { code: v.code, stdout: clip(v.stdout)! }])) } : {}),
    };
    appendFileSync(this.path, JSON.stringify(rec) + '\n');
    if (this.verbosity > 0) this.err(formatRecord(rec, this.verbosity));
  };
}

/** The -v rendering of one record. */
export function formatRecord(r: CommandRecord, verbosity: number): string {
  const indent = (s: string, n = 40) => {
    const lines = s.replace(/\n$/, '').split('\n');
    const shown = lines.slice(0, n).map((l) => `    ${l}`);
    if (lines.length > n) shown.push(`    ... (${lines.length - n} more lines)`);
    return shown.join('\n');
  };
  const head = `[${r.host}] ${r.kind} (exit ${r.code}, ${r.durationMs} ms)`;
  const out: string[] = [head];
  if (r.kind === 'facts') {
    out.push(`  ${r.command}`);
    if (verbosity >= 2) for (const [k, v] of Object.entries(r.facts ?? {})) out.push(`  fact ${k} (exit ${v.code}):`, ...(v.stdout ? [indent(v.stdout, 20)] : []));
  } else {
    out.push(indent(r.command, 20));
    if (r.stdout?.trim()) out.push('  stdout:', indent(r.stdout));
    if (r.stderr?.trim()) out.push('  stderr:', indent(r.stderr));
  }
  return out.join('\n') + '\n';
}

/** Remove all but the newest `keep` logs (names sort by time). */
export function rotate(dir: string, keep: number): void {
  const logs = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort();
  for (const f of logs.slice(0, Math.max(0, logs.length - keep))) rmSync(join(dir, f), { force: true });
}
