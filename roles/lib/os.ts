// Which OS and which database engine a node runs, from its facts.
import type { Cluster } from '../../core/types.ts';

export type { Dialect } from '../../core/roles.ts';
import type { Dialect } from '../../core/roles.ts';

/** Shell command printing the node's /etc/os-release ID (debian, ubuntu). */
export const OS_ID_FACT = `. /etc/os-release && echo "$ID"`;

/** cluster.yaml's database.engine wins; `auto` = MariaDB on Debian, MySQL 8 on Ubuntu. */
export function dialectFor(cluster: Cluster, osId: string): Dialect {
  if (cluster.database.engine !== 'auto') return cluster.database.engine;
  return osId.trim() === 'ubuntu' ? 'mysql' : 'mariadb';
}
