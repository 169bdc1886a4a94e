// What the engine reports while it runs (after pulumi automation's event
// stream): typed events, emitted in order by core/run.ts. The progress tree,
// the plain CI lines and --json are renderers of them (core/render.ts and the
// recap); a caller may subscribe too (RunOptions.onEvent).
import type { RunReport, TaskResult } from './types.ts';

export type EngineEvent =
  /** A host's connection is open (or failed: `error`). */
  | { type: 'connect'; host: string; error?: string }
  /** A host's facts are read: `count` commands in one round trip. */
  | { type: 'facts'; host: string; count: number }
  /** A role starts on these hosts (none: no host has it). */
  | { type: 'role'; role: string; hosts: string[] }
  /** A task or handler starts on a host. */
  | { type: 'task'; host: string; role: string; task: string }
  /** A task or handler finished (results of skipped tasks too). */
  | { type: 'result'; result: TaskResult }
  /** A host finished a role (`skipped`: not run after an earlier failure). */
  | { type: 'host'; host: string; role: string; failed: boolean; skipped?: string }
  /** The run is over. */
  | { type: 'recap'; report: RunReport };

export type EngineListener = (event: EngineEvent) => void;
