// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/proxy.json bun services/proxy/main.ts
import { main } from '../serve.ts';
import { createProxy } from './app.ts';
import { WriteGate } from './hold.ts';

// one write hold for the process: a reload builds a new app, the held writes carry over to it
const gate = new WriteGate();

main('proxy', async (config) => {
  const proxy = createProxy(config, gate);
  await proxy.start(); // first probe round before listening, so routing starts informed
  return { app: proxy.app, stop: () => proxy.stop() };
});
