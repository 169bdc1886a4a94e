// Typed errors: each carries what a user needs to act on it.

export class RampartError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** cluster.yaml is invalid: one entry per problem, each `file:line:col: path problem`. */
export class SpecError extends RampartError {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

export class SshError extends RampartError {
  constructor(readonly host: string, message: string, hint?: string) {
    super(`${host}: ${message}`, hint);
  }
}

export class ProviderError extends RampartError {}

export class HostError extends RampartError {}
