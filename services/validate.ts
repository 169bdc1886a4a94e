// Request checks every hop repeats after the body schema: the SQL policy and
// the placeholder count. Never trust the hop before.

import type { QueryRequest } from './schemas.ts';
import { HttpError } from './http.ts';
import type { PolicyCheck } from './sql/policy.ts';
import type { QueryType } from './sql/classifier.ts';

export interface ValidQuery extends QueryRequest {
  /** Classification from the same token stream as the policy. */
  type: QueryType;
  statement: string;
}

/** Applies the policy (403/400) and checks `params` against the `?` count (422). Returns only the validated fields. */
export function validateQuery(body: QueryRequest, check: PolicyCheck): ValidQuery {
  const verdict = check(body.sql);
  if (!verdict.ok) throw new HttpError(verdict.status, verdict.code, verdict.message);
  const given = body.params?.length ?? 0;
  if (given !== verdict.placeholders) {
    throw new HttpError(422, 'PARAMS_MISMATCH', `sql has ${verdict.placeholders} placeholder(s) but ${given} param(s) were given`);
  }
  const out: ValidQuery = { sql: verdict.sql, type: verdict.type, statement: verdict.statement };
  if (body.params !== undefined) out.params = body.params;
  if (body.mode !== undefined) out.mode = body.mode;
  if (body.request_id !== undefined) out.request_id = body.request_id;
  return out;
}
