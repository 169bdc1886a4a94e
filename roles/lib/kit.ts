// What a user role's file receives (`export default (kit) => kit.defineRole({...})`):
// the manifest API and the operations, so a role kept next to its cluster.yaml,
// outside the tool, needs no import path into the tool at run time (its
// `import type` of RoleKit is for the editor only).
import { defineRole } from '../../core/roles.ts';
import { shq } from '../../core/ssh.ts';
import { aptInstall } from './apt.ts';
import { fact, files, onlyOn, packages, restartUnit, systemUser, task, unitRunning, unitStates } from './ops.ts';

export const roleKit = { defineRole, fact, task, onlyOn, packages, files, unitRunning, unitStates, restartUnit, systemUser, aptInstall, shq };

export type RoleKit = typeof roleKit;
