// A file a role manages: its state is read in the host's fact round trip
// (sha256, mode, owner), compared with the wanted content, and written (as
// root, content over stdin) only when it differs.
import { unifiedDiff } from '../../core/diff.ts';
import { fileFactCommand, fileState, shq } from '../../core/ssh.ts';
import type { Task, TaskContext } from '../../core/types.ts';

type Ctx = Omit<TaskContext, 'facts'>;

export interface ManagedFile {
  name: string;
  when?: Task['when'];
  path(ctx: Ctx): string;
  content(ctx: Ctx): string | Buffer;
  mode: string;
  owner: string;
  /** Handler to notify after a write. */
  notify?: string;
  /** Run after a write (e.g. systemctl daemon-reload). */
  after?(ctx: Ctx): Promise<void>;
}

export function fileTask(f: ManagedFile): Task {
  return {
    name: f.name,
    when: f.when,
    facts: (ctx) => ({ file: fileFactCommand(f.path(ctx)) }),
    notifies: f.notify ? [f.notify] : [],
    check: (ctx) => {
      const content = f.content(ctx);
      if (ctx.facts.file.stdout === fileState(content, f.mode, f.owner)) return null;
      return {
        message: `write ${f.path(ctx)}`,
        data: content,
        // --diff only: the node's copy is read then (the fact round trip carries only its sha256)
        detail: async () => {
          const have = await ctx.conn.exec(`cat ${shq(f.path(ctx))} 2>/dev/null; stat -c 'mode %a owner %U:%G' ${shq(f.path(ctx))} 2>/dev/null`, { check: false });
          const [body, meta = ''] = splitLast(have.stdout, '\nmode ');
          const text = unifiedDiff(f.path(ctx), body ? `${body}\n` : '', String(content));
          const want = `mode ${Number.parseInt(f.mode, 8).toString(8)} owner ${f.owner}`;
          return `${text}${meta && `mode ${meta.trim()}` !== want ? `${meta ? `mode ${meta.trim()}` : 'absent'} -> ${want}\n` : ''}`;
        },
      };
    },
    apply: async (ctx, diff) => {
      await ctx.conn.writeFile(f.path(ctx), diff.data as string | Buffer, { mode: f.mode, owner: f.owner });
      await f.after?.(ctx);
      if (f.notify) ctx.notify(f.notify);
    },
  };
}

/** `a<sep>b` split at the last separator; [text, ''] when there is none. */
function splitLast(text: string, sep: string): [string, string] {
  const i = text.lastIndexOf(sep);
  return i < 0 ? [text.replace(/\n$/, ''), ''] : [text.slice(0, i), text.slice(i + sep.length)];
}
