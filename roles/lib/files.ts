// A file a role manages, as a task of its own: one `files` operation (see
// ops.ts) with a single file, its name and handler kept in one declaration.
import type { Task } from '../../core/types.ts';
import { files, type FileSpec, type FilesOptions } from './ops.ts';

export interface ManagedFile extends FileSpec, FilesOptions {
  name: string;
}

export function fileTask(f: ManagedFile): Task {
  return files(f.name, [f], f);
}

/** `a<sep>b` split at the last separator; [text, ''] when there is none. */
function splitLast(text: string, sep: string): [string, string] {
  const i = text.lastIndexOf(sep);
  return i < 0 ? [text.replace(/\n$/, ''), ''] : [text.slice(0, i), text.slice(i + sep.length)];
}
