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
