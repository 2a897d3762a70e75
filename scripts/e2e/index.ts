// The e2e/integration test rig. Tests import from here; see each module for details.
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
