// The local provider's resources, each declared once: what it is (its plan
// line), how to read whether it is as wanted (check: reads only) and how to
// make it so (apply). plan() runs the checks; up() runs the same checks and
// applies what they found, the same split the roles' tasks follow. So plan()
// is up() without applying, by construction.
import type { PlanItem } from '../../core/types.ts';

/** What a check found: as wanted, or what apply has to do (`data`: what the check read, for apply). */
export type Drift<D = unknown> =
  | { action: 'ok'; detail?: string }
  | { action: 'create' | 'change' | 'delete'; detail?: string; data: D };

export type Todo<D> = Extract<Drift<D>, { data: D }>;

export interface Resource<D = unknown> {
  /** The plan line's name, e.g. `bridge rpt0`, `container rpt-n1`. */
  resource: string;
  /** Read the host; change nothing. */
  check(): Promise<Drift<D>>;
  /**
   * Make it as wanted; what it returns amends the reported line (e.g. a
   * detail of what was done, `newNode`). Absent: up() leaves it alone and
   * only reports it (a container down removes).
   */
  apply?(todo: Todo<D>): Promise<Partial<PlanItem> | void>;
}

/**
 * The resources in order. A step is a resource or a group known only once the
 * steps before it are in place (the containers: listing them needs LXC
 * installed); a group's resources are checked and applied in parallel.
 */
export type Step = Resource | (() => Promise<Resource[]>);

/** A resource with typed check/apply (the Step list holds them erased). */
export function resource<D>(r: Resource<D>): Resource {
  return r as Resource;
}

async function one(r: Resource, apply: boolean): Promise<PlanItem> {
  const drift = await r.check();
  const item: PlanItem = { action: drift.action, resource: r.resource, ...(drift.detail ? { detail: drift.detail } : {}) };
  if (!apply || drift.action === 'ok' || !r.apply) return item;
  const done = await r.apply(drift);
  return { ...item, ...(done ?? {}) };
}

/** Check every resource in order; with apply, make each as wanted before checking the next. */
export async function converge(steps: Step[], apply: boolean): Promise<PlanItem[]> {
  const items: PlanItem[] = [];
  for (const step of steps) {
    const group = typeof step === 'function' ? await step() : [step];
    items.push(...(await Promise.all(group.map((r) => one(r, apply)))));
  }
  return items;
}
