// `npm run schema`: writes schema/cluster.schema.json, the schema editors read
// (yaml-language-server), from schema/cluster.base.json and the built-in roles'
// manifests (role list + role sections). A unit test fails when it is stale.
import '../roles/index.ts'; // registers the built-in roles (core/ never imports roles/)
import { writeFileSync } from 'node:fs';
import { clusterSchema, schemaPath } from '../core/spec.ts';

export const schemaText = (): string => `${JSON.stringify(clusterSchema(), null, 2)}\n`;

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  writeFileSync(schemaPath, schemaText());
  process.stderr.write(`wrote ${schemaPath}\n`);
}
