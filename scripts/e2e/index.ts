// The e2e/integration test rig. Tests import from here; see each module for details.
//
//   afterAll(() => teardown());                       // stops/deletes everything below, also on failure
//   requireTools("skopeo", "umoci", "docker-registry"); // fails (never skips) when missing
//   const image = await buildIndex({ dir: join(tempDir("t"), "layout"), tag: "v1",
//     images: ["linux/amd64", "linux/arm64"].map((platform) => ({ platform, layers: [{ files: { "big.bin": 64 << 20 } }] })) });
//   const upstream = await startRegistry();           // or { tokenAuth: await startTokenServer({ users }) }
//   await pushImage(image, { registry: upstream.host, repo: "test/app" });
//   const node = await startKagami({ flags: { ... } });
//   const mark = await upstream.mark();
//   const pulled = await pullImage({ registry: node.host, repo: "test/app", reference: "v1" });
//   expect(digestsOf(pulled)).toEqual(digestsOf(image));
//   expect(await upstream.count({ since: mark })).toBe(0);
//   const net = await createNetwork({ nodes: ["registry", "node1", "node2"] }); // then { node: net.node("node1") }
export { rootScope, Scope, teardown, tempDir } from "./cleanup.ts";
export { createMemoryCgroup, type MemoryCgroup, type MemoryCgroupOptions } from "./cgroup.ts";
export {
  buildImage,
  buildIndex,
  digestsOf,
  formatPlatform,
  parsePlatform,
  readLayout,
  type BlobRef,
  type Built,
  type BuiltImage,
  type BuiltIndex,
  type FileContent,
  type ImageSpec,
  type LayerSpec,
  type Platform,
} from "./image.ts";
export { formatFlags, kagamiCommand, REPO_ROOT, startKagami, type Kagami, type KagamiOptions } from "./kagami.ts";
export { createNetwork, listRigObjects, type NetNode, type Network, type NetworkOptions, type Rate, type RateLimit } from "./netns.ts";
export {
  freePort,
  httpStatus,
  inNetns,
  run,
  spawnProcess,
  waitFor,
  waitForHttp,
  waitForPort,
  type ExitStatus,
  type Proc,
  type RunOptions,
  type RunResult,
  type SpawnOptions,
} from "./proc.ts";
export {
  parseRegistryLog,
  startRegistry,
  waitForRequests,
  type LogMark,
  type NsTarget,
  type Registry,
  type RegistryOptions,
  type RegistryRequest,
  type RequestFilter,
} from "./registry.ts";
export { MissingPrerequisiteError, requireMemoryCgroup, requireNetns, requireRoot, requireTool, requireTools } from "./require.ts";
export { pullImage, pushImage, skopeoCopy, type CopyOptions, type Credentials, type PullOptions, type PushOptions } from "./skopeo.ts";
export { startTokenServer, type TokenRequest, type TokenServer, type TokenServerOptions } from "./token-server.ts";
