// --diff renderings: a unified diff of two texts (managed files, firewall
// rulesets) and `name: old -> new` lines, as the result of a task carries them.
import { createTwoFilesPatch } from 'diff';

/** Unified diff of `have` (the node) -> `want` (rampart), 3 lines of context; '' when equal. */
export function unifiedDiff(label: string, have: string, want: string): string {
  if (have === want) return '';
  const patch = createTwoFilesPatch(`${label} (node)`, `${label} (rampart)`, have, want, '', '', { context: 3 });
  // drop the ===== line the library puts first
  return patch.split('\n').filter((l) => !/^=+$/.test(l)).join('\n').replace(/\n*$/, '\n');
}
