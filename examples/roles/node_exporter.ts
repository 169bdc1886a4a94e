// node_exporter: Prometheus' node exporter (Debian's prometheus-node-exporter)
// on every node that lists the role, listening on `node_exporter.port`. Who may
// scrape it is cluster.yaml's business: a `security.flows` entry to the port
// (the iptables role, which runs first, drops everything else).
//
// A user role: keep it in a folder next to cluster.yaml and name the folder in
// `roleDirs:`. The file exports a function of the role kit (the manifest API
// and the operations), so it needs no import path into rampart at run time;
// the type import below is for the editor only.
import type { RoleManifest } from '../../core/roles.ts';
import type { RoleKit } from '../../roles/lib/kit.ts';

interface Settings {
  port: number;
}

const PACKAGE = 'prometheus-node-exporter';
const UNIT = 'prometheus-node-exporter.service';
/** Read by the packaged unit (ExecStart=... $ARGS). */
const OPTIONS = '/etc/default/prometheus-node-exporter';

export default ({ defineRole, packages, files, unitRunning, restartUnit }: RoleKit): RoleManifest<Settings> => {
  const role: RoleManifest<Settings> = defineRole<Settings>({
    name: 'node_exporter',
    // the firewall first: the port is never open wider than the flows say
    after: ['iptables'],
    // installed by base, with every other role's packages, in one apt transaction
    packages: [PACKAGE],
    // cluster.yaml's `node_exporter:` section
    settings: {
      schema: {
        type: 'object',
        additionalProperties: false,
        default: {},
        description: 'node_exporter role (examples/roles/node_exporter.ts): Prometheus node exporter.',
        properties: {
          port: { type: 'integer', minimum: 1, maximum: 65535, default: 9100, description: 'Port it listens on (open it to the scraper with a security.flows entry).' },
        },
      },
    },
    tasks: [
      packages('node exporter package', () => [PACKAGE]),
      files('node exporter options', [{
        path: () => OPTIONS,
        content: ({ cluster }) => `# managed by rampart (node_exporter role)\nARGS="--web.listen-address=:${role.settingsOf(cluster).port}"\n`,
        mode: '0644',
        owner: 'root:root',
      }], { notify: `restart ${UNIT}` }),
      unitRunning(UNIT, { name: 'node exporter enabled and running' }),
    ],
    // a changed option file restarts it (once, at the end of the role)
    handlers: [restartUnit(UNIT)],
  });
  return role;
};
