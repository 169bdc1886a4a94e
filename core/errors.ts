// Typed errors: each carries what a user needs to act on it.

export class RampartError extends Error {
  /** The command's exit code for this error when it is not the default (4, README's "Exit codes"). */
  readonly exitCode?: number;
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Exit code 1 (README: "a task failed or a host was unreachable"): the cluster, not the tool or its input, is in the way. */
const HOST_FAILURE = 1;

/** cluster.yaml is invalid: one entry per problem, each `file:line:col: path problem`. */
export class SpecError extends RampartError {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

export class SshError extends RampartError {
  override readonly exitCode = HOST_FAILURE;
  constructor(readonly host: string, message: string, hint?: string) {
    super(`${host}: ${message}`, hint);
  }
}

export class ProviderError extends RampartError {}

export class HostError extends RampartError {
  override readonly exitCode = HOST_FAILURE;
}
