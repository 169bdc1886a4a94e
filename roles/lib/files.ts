// A file a role manages: its state is read in the host's fact round trip
// (sha256, mode, owner), compared with the wanted content, and written (as
// root, content over stdin) only when it differs.
import { fileFactCommand, fileState } from '../../core/ssh.ts';
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
    check: (ctx) => {
      const content = f.content(ctx);
      return ctx.facts.file.stdout === fileState(content, f.mode, f.owner) ? null : { message: `write ${f.path(ctx)}`, data: content };
    },
    apply: async (ctx, diff) => {
      await ctx.conn.writeFile(f.path(ctx), diff.data as string | Buffer, { mode: f.mode, owner: f.owner });
      await f.after?.(ctx);
      if (f.notify) ctx.notify(f.notify);
    },
  };
}
