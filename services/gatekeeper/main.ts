// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/gatekeeper.json bun services/gatekeeper/main.ts
import { main } from '../serve.ts';

main('gatekeeper');
