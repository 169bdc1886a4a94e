// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/proxy.json bun services/proxy/main.ts
import { main } from '../serve.ts';

main('proxy');
