// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/trustedhost.json bun services/trustedhost/main.ts
// (imports only the trusted host's app: its bundle holds no database driver and no proxy code)
import { main } from '../serve.ts';
import { buildTrustedHost } from './app.ts';

main('trustedhost', (config) => ({ app: buildTrustedHost(config) }));
