// AWS failures turned into ProviderErrors that name the call, the AWS error
// code and what to do about it.
import { ProviderError } from '../../core/errors.ts';
import type { UbuntuRelease } from '../../core/types.ts';

/** What a hint may depend on in cluster.yaml. */
export interface HintContext {
  ubuntu?: UbuntuRelease;
}

const CREDENTIALS_HINT =
  'set AWS_PROFILE (or provider.aws.profile in cluster.yaml) to a configured profile, ' +
  'or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws sso login --profile <name>`; check with `aws sts get-caller-identity`';

/** What to do, by AWS error code (prefix match for families like InvalidKeyPair.*). */
const HINTS: [RegExp, string | ((ctx: HintContext) => string)][] = [
  [/^(InstanceLimitExceeded|VcpuLimitExceeded|MaxSpotInstanceCountExceeded)$/,
    'the account quota for this instance family is reached: terminate unused instances, pick smaller types in cluster.yaml, or request a higher "Running On-Demand Standard instances" quota in the Service Quotas console'],
  [/^(SecurityGroupLimitExceeded|RulesPerSecurityGroupLimitExceeded|KeyPairLimitExceeded|AddressLimitExceeded)$/,
    'an account/VPC limit is reached: delete unused resources or request a quota increase in the Service Quotas console'],
  [/^UnauthorizedOperation$/,
    'the IAM identity lacks this EC2 permission: grant it (ec2:Describe*, RunInstances, TerminateInstances, CreateTags, *SecurityGroup*, ImportKeyPair, DeleteKeyPair, ModifyInstanceAttribute, StartInstances); decode the details with `aws sts decode-authorization-message --encoded-message <msg>`'],
  [/^(AuthFailure|InvalidClientTokenId|SignatureDoesNotMatch|UnrecognizedClientException)$/,
    'AWS rejected the credentials: check the access key / profile, and that the system clock is right'],
  [/^(ExpiredToken|ExpiredTokenException|RequestExpired)$/,
    'the session token expired: run `aws sso login` (or refresh the temporary credentials)'],
  [/^OptInRequired$/, 'the account is not subscribed to EC2 in this region (or the AMI needs a Marketplace opt-in): check the region and account'],
  [/^(InsufficientInstanceCapacity|Unsupported)$/, 'this instance type is not available in the chosen zone: set provider.aws.subnetId to a subnet in another zone, or change the type'],
  [/^(RequestLimitExceeded|Throttling)$/, 'AWS throttled the API calls: wait a minute and apply again'],
  [/^InvalidGroup\.Duplicate$/, 'a security group with this name exists without rampart tags: delete it or tag it rampart:cluster/rampart:node'],
  [/^InvalidKeyPair\./, 'check provider.aws.keyName; delete a conflicting key pair in the EC2 console if needed'],
  [/^InvalidAMIID\./, (ctx) => `the AMI id is wrong for this region: fix provider.aws.ami, or remove it to use the newest Ubuntu ${ctx.ubuntu ?? '26.04'} image from Canonical (provider.aws.ubuntu)`],
  [/^InvalidSubnetID\.|^InvalidVpcID\./, 'check provider.aws.subnetId / vpcId for this region'],
  [/^DependencyViolation$/, 'a resource still uses it (an instance or another group\'s rule): run teardown again once instances are terminated'],
];

function isCredentialsError(err: { name?: string; message?: string }): boolean {
  return err.name === 'CredentialsProviderError' || /could not load credentials|credential.*(missing|not found)/i.test(err.message ?? '');
}

/** Wrap any error thrown by an EC2 call. */
export function awsError(call: string, err: unknown, ctx: HintContext = {}): ProviderError {
  if (err instanceof ProviderError) return err;
  const e = (err ?? {}) as { name?: string; Code?: string; message?: string };
  const code = e.Code ?? e.name ?? 'Error';
  const message = e.message ?? String(err);
  if (isCredentialsError(e)) return noCredentials(message);
  if (/region is missing/i.test(message)) {
    return new ProviderError(`no AWS region for ${call}`, 'set provider.aws.region in cluster.yaml, AWS_REGION, or a region in the AWS profile');
  }
  if (/^(SSO|TokenProvider)/.test(code) || /sso.*(expired|token)/i.test(message)) {
    return new ProviderError(`AWS ${call} failed: ${code}: ${message}`, 'run `aws sso login`');
  }
  const found = HINTS.find(([re]) => re.test(code))?.[1];
  const hint = typeof found === 'function' ? found(ctx) : found ?? 'see the AWS message above';
  return new ProviderError(`AWS ${call} failed: ${code}: ${message}`, hint);
}

export function noCredentials(detail?: string): ProviderError {
  return new ProviderError(`no AWS credentials: set AWS_PROFILE or run aws sso login${detail ? ` (${detail})` : ''}`, CREDENTIALS_HINT);
}
