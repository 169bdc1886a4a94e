// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/gatekeeper.json bun services/gatekeeper/main.ts
// (imports only the gatekeeper's app: its bundle holds no database driver and no proxy code)
import { main } from '../serve.ts';
import { buildGatekeeper } from './app.ts';

main('gatekeeper', (config) => ({ app: buildGatekeeper(config) }));
