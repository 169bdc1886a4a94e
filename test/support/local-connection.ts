// A real Connection to this machine (bash via child_process), so the engine's
// unit tests run real shell commands without SSH.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import type { Connection, ExecOptions, ExecResult, Host } from '../../core/types.ts';

export class LocalConnection implements Connection {
  public execCount = 0;
  constructor(readonly host: Host) {}

  exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    this.execCount++;
    return new Promise((resolve, reject) => {
      const child = spawn('bash', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => {
        const res = { stdout, stderr, code: code ?? 255 };
        if ((opts.check ?? true) && res.code !== 0) reject(new Error(`exit ${res.code}: ${stderr.trim()}`));
        else resolve(res);
      });
      child.stdin.end(opts.stdin ?? '');
    });
  }

  async writeFile(path: string, content: string | Buffer, opts: { mode?: string } = {}): Promise<void> {
    writeFileSync(path, content, { mode: Number.parseInt(opts.mode ?? '0644', 8) });
  }

  async putFile(localPath: string, remotePath: string): Promise<void> {
    copyFileSync(localPath, remotePath);
  }

  close(): void {}
}

export const sha = (s: string) => createHash('sha256').update(s).digest('hex');
