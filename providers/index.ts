// Pick the provider cluster.yaml asks for.
import type { Cluster, Provider } from '../core/types.ts';

export async function providerFor(cluster: Cluster): Promise<Provider> {
  if (cluster.provider.type === 'aws') {
    const { AwsProvider } = await import('./aws.ts');
    return new AwsProvider(cluster);
  }
  const { LocalProvider } = await import('./local.ts');
  return new LocalProvider(cluster);
}
