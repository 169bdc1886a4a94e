// Log accounting: every hop writes one JSON line per request (request_id,
// hop, mode, type, node, status). Each request we sent must appear exactly
// once on every hop, with the status the client saw and (at the proxy) the
// node the response named.
import { percentile } from './stats.ts';
import type { HopAccounting, RequestRecord } from './types.ts';

export interface LogLine {
  request_id: string;
  hop?: string;
  mode?: string;
  type?: string;
  node?: string;
  status?: number;
  code?: string;
  duration_ms?: number;
}

/** The JSON lines of a service log; other lines (start-up messages, journald notes) are skipped. */
export function parseLogLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const v = JSON.parse(t) as Record<string, unknown>;
      if (typeof v.request_id === 'string') out.push(v as unknown as LogLine);
    } catch {
      /* not a log record */
    }
  }
  return out;
}

/** How many ids a report lists before saying "and N more". */
const LIST_MAX = 20;

/**
 * Account for `records` in one hop's log. Requests that never got an HTTP
 * answer (status 0) may legitimately be absent, so they are not counted missing
 * when absent; a logged one must still match.
 */
export function accountHop(hop: string, lines: readonly LogLine[], records: readonly RequestRecord[], checkNode: boolean): HopAccounting {
  const byId = new Map<string, LogLine[]>();
  for (const l of lines) {
    const list = byId.get(l.request_id);
    if (list) list.push(l);
    else byId.set(l.request_id, [l]);
  }
  const acc: HopAccounting = { hop, found: 0, missing: [], duplicates: [], statusMismatch: [], nodeMismatch: [], byNode: {}, durationP50: 0, durationP99: 0 };
  const durations: number[] = [];
  for (const r of records) {
    const logged = byId.get(r.id);
    if (!logged) {
      if (r.status !== 0) acc.missing.push(r.id);
      continue;
    }
    acc.found += 1;
    if (logged.length > 1) acc.duplicates.push(r.id);
    const l = logged[logged.length - 1];
    if (r.status !== 0 && l.status !== r.status) acc.statusMismatch.push(r.id);
    if (checkNode && r.ok && l.node !== r.node) acc.nodeMismatch.push(r.id);
    if (l.status === 200 && l.node) acc.byNode[l.node] = (acc.byNode[l.node] ?? 0) + 1;
    if (typeof l.duration_ms === 'number') durations.push(l.duration_ms);
  }
  durations.sort((a, b) => a - b);
  acc.durationP50 = percentile(durations, 50);
  acc.durationP99 = percentile(durations, 99);
  return acc;
}

export function hopComplete(acc: HopAccounting): boolean {
  return acc.missing.length + acc.duplicates.length + acc.statusMismatch.length + acc.nodeMismatch.length === 0;
}

/** One line per hop, e.g. `proxy: 4000/4000 logged` or `gatekeeper: 3998/4000 logged, 2 missing (a, b)`. */
export function describeHop(acc: HopAccounting, total: number): string {
  const list = (ids: string[]) => `${ids.slice(0, LIST_MAX).join(', ')}${ids.length > LIST_MAX ? `, and ${ids.length - LIST_MAX} more` : ''}`;
  const parts = [`${acc.hop}: ${acc.found}/${total} logged`];
  if (acc.missing.length) parts.push(`${acc.missing.length} missing (${list(acc.missing)})`);
  if (acc.duplicates.length) parts.push(`${acc.duplicates.length} logged twice (${list(acc.duplicates)})`);
  if (acc.statusMismatch.length) parts.push(`${acc.statusMismatch.length} with another status (${list(acc.statusMismatch)})`);
  if (acc.nodeMismatch.length) parts.push(`${acc.nodeMismatch.length} with another node (${list(acc.nodeMismatch)})`);
  return parts.join(', ');
}

/** Response counts per node vs the proxy log's: a line per disagreement. */
export function crossCheckNodes(fromResponses: Record<string, number>, fromLog: Record<string, number>): string[] {
  const nodes = [...new Set([...Object.keys(fromResponses), ...Object.keys(fromLog)])].sort();
  return nodes
    .filter((n) => (fromResponses[n] ?? 0) !== (fromLog[n] ?? 0))
    .map((n) => `${n}: ${fromResponses[n] ?? 0} by the responses, ${fromLog[n] ?? 0} by the proxy log`);
}
