// Human output: the recap per host, like Ansible's PLAY RECAP.
import { ListrLogger, PRESET_TIMER, ProcessOutput } from 'listr2';
import type { PlanItem, RunReport } from './types.ts';

const color = (code: number, s: string) => (process.stderr.isTTY && !process.env.NO_COLOR ? `\x1b[${code}m${s}\x1b[0m` : s);

export function formatRecap(report: RunReport): string {
  const names = Object.keys(report.hosts);
  const width = Math.max(...names.map((n) => n.length), 4);
  const lines = [`PLAY RECAP${report.check ? ' (check mode: nothing was changed)' : ''} ${'*'.repeat(40)}`];
  for (const name of names) {
    const c = report.hosts[name];
    const col = c.failed || c.unreachable ? 31 : c.changed ? 33 : 32;
    lines.push(
      `${color(col, name.padEnd(width))} : ok=${String(c.ok).padEnd(3)} changed=${String(c.changed).padEnd(3)} ` +
        `unreachable=${c.unreachable ? 1 : 0}  failed=${String(c.failed).padEnd(3)} skipped=${c.skipped}`,
    );
  }
  // grouped by host, in cluster order; within a host, in the order the tasks ran
  const changedOrFailed = report.results
    .filter((r) => r.status === 'changed' || r.status === 'failed')
    .map((r, i) => ({ r, i }))
    .sort((a, b) => names.indexOf(a.r.host) - names.indexOf(b.r.host) || a.i - b.i)
    .map(({ r }) => r);
  if (changedOrFailed.length) {
    lines.push('', report.check ? 'would change:' : 'changes and failures:');
    for (const r of changedOrFailed) {
      lines.push(`  ${r.status === 'failed' ? color(31, 'FAILED ') : ''}${r.host} | ${r.role} | ${r.task}${r.message ? `: ${r.message}` : ''}`);
      if (r.diff) lines.push(...r.diff.replace(/\n$/, '').split('\n').map((l) => `      ${l.startsWith('+') ? color(32, l) : l.startsWith('-') ? color(31, l) : l}`));
    }
  }
  lines.push('', `${(report.durationMs / 1000).toFixed(2)} s`);
  if (report.log) lines.push(`every command sent, with its output: ${report.log}`);
  return lines.join('\n') + '\n';
}

export function formatPlan(items: PlanItem[]): string {
  const todo = items.filter((i) => i.action !== 'ok');
  const info = items.filter((i) => i.info).map((i) => `provider: ${i.resource}: ${i.detail ?? ''}\n`).join('');
  if (!todo.length) return 'provider: nothing to do\n' + info;
  return todo.map((i) => `provider: ${i.action} ${i.resource}${i.detail ? ` (${i.detail})` : ''}`).join('\n') + '\n' + info;
}

/**
 * listr2 options shared by every command: progress on stderr (stdout is for
 * results and --json), a tree in a TTY, plain lines elsewhere (CI), none with --json.
 */
export function listrOptions(show: boolean) {
  const processOutput = new ProcessOutput(process.stderr, process.stderr);
  const logger = new ListrLogger({ processOutput });
  return {
    renderer: show ? (process.stderr.isTTY ? 'default' : 'simple') : 'silent',
    fallbackRenderer: 'simple',
    rendererOptions: { processOutput, logger, collapseSubtasks: false, timer: PRESET_TIMER },
    fallbackRendererOptions: { logger, timer: PRESET_TIMER },
  } as const;
}
