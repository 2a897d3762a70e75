// The router conformance suite against the in-memory router and against three real libp2p
// nodes on 127.0.0.2-4 (one port, static bootstrap to the first, mDNS off).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryNetwork } from "../../src/routing/memory.ts";
import { routerConformance, startP2PNodes, testPort } from "../router-conformance.ts";

routerConformance("memory", async () => {
  const net = new MemoryNetwork();
  const urls = ["http://10.0.0.1:5000", "http://10.0.0.2:5000", "http://10.0.0.3:5000"];
  const routers = urls.map((u, i) => net.join(`node-${i}`, u));
  return { routers, urls, immediateWithdraw: true, close: async () => void (await Promise.all(routers.map((x) => x.close()))) };
});

routerConformance("libp2p", async () => {
  const dir = mkdtempSync(join(tmpdir(), "kagami-router-"));
  const hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
  const routers = await startP2PNodes(hosts, { routerPort: testPort(21000), registryPort: 5000, dir });
  return {
    routers,
    urls: hosts.map((h) => `http://${h}:5000`),
    immediateWithdraw: false,
    close: async () => {
      await Promise.all(routers.map((r) => r.close()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
