// Entry point: RAMPART_SERVICE_CONFIG=/etc/rampart/proxy.json bun services/proxy/main.ts
import { main } from '../serve.ts';
import { createProxy } from './app.ts';

main('proxy', async (config) => {
  const proxy = createProxy(config);
  await proxy.start(); // first probe round before listening, so routing starts informed
  return { app: proxy.app, stop: () => proxy.stop() };
});
