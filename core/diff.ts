// --diff renderings: a unified diff of two texts (managed files, firewall
// rulesets) and `name: old -> new` lines, as the result of a task carries them.
// (the diff library is loaded only when a --diff is asked for: every command starts faster)

/** Unified diff of `have` (the node) -> `want` (rampart), 3 lines of context; '' when equal. */
export async function unifiedDiff(label: string, have: string, want: string): Promise<string> {
  if (have === want) return '';
  const { createTwoFilesPatch } = await import('diff');
  const patch = createTwoFilesPatch(`${label} (node)`, `${label} (rampart)`, have, want, '', '', { context: 3 });
  // drop the ===== line the library puts first
  return patch.split('\n').filter((l) => !/^=+$/.test(l)).join('\n').replace(/\n*$/, '\n');
}
