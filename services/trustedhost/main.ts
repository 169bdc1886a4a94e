// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/trustedhost.json bun services/trustedhost/main.ts
import { main } from '../serve.ts';

main('trustedhost');
