// Tags cached from upstream follow the upstream, with a real distribution registry, real
// kagami processes and skopeo: within --tag-ttl the cached tag is served without a request
// upstream; past it, a tag pushed anew upstream is followed after one HEAD; when the upstream
// is gone the cached tag is still served; imported tags are never rechecked.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildImage,
  digestsOf,
  kagamiCommand,
  pullImage,
  pushImage,
  requireTools,
  run,
  startKagami,
  startRegistry,
  teardown,
  tempDir,
  type BuiltImage,
  type Kagami,
  type Registry,
} from "../../scripts/e2e/index.ts";

let registry: Registry;
let first: BuiltImage;
let second: BuiltImage;
/** Rechecks on every pull. */
let eager: Kagami;
/** The default TTL (5m): never rechecks within this test. */
let patient: Kagami;

beforeAll(async () => {
  requireTools("docker-registry", "skopeo", "umoci");
  const dir = tempDir("upstream-tags");
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  first = await buildImage({ dir: join(dir, "layout"), tag: "first", layers: [{ files: { "data/a.bin": random(300_000) } }] });
  second = await buildImage({ dir: join(dir, "layout"), tag: "second", layers: [{ files: { "data/b.bin": random(300_000) } }] });
  registry = await startRegistry({ name: "tags-upstream" });
  await pushImage(first, { registry: registry.host, repo: "team/app", tag: "v1" });
  const upstreamFlags = { "default-registry": registry.host, "insecure-registries": registry.host, "pull-through": "true" };
  eager = await startKagami({ name: "kagami-eager", flags: { ...upstreamFlags, "tag-ttl": "0s" } });
  patient = await startKagami({ name: "kagami-patient", flags: upstreamFlags });
});

afterAll(() => teardown());

const pull = (k: Kagami, reference = "v1", repo = "team/app") => pullImage({ registry: k.host, repo, reference });

describe("tags cached from upstream", () => {
  test("both nodes cache the tag as first pushed", async () => {
    expect(digestsOf(await pull(eager))).toEqual(digestsOf(first));
    expect(digestsOf(await pull(patient))).toEqual(digestsOf(first));
  });

  test("the tag is pushed anew upstream: within its TTL a node serves the cached image and asks nothing", async () => {
    await pushImage(second, { registry: registry.host, repo: "team/app", tag: "v1" });
    const mark = await registry.mark();
    expect(digestsOf(await pull(patient))).toEqual(digestsOf(first));
    expect(await registry.requests({ since: mark })).toEqual([]);
  });

  test("past its TTL a node asks upstream with one HEAD of the tag and follows it", async () => {
    const mark = await registry.mark();
    expect(digestsOf(await pull(eager))).toEqual(digestsOf(second));
    const tagRequests = await registry.requests({ since: mark, kind: "manifest", reference: "v1" });
    expect(tagRequests.map((r) => `${r.method} ${r.status}`)).toEqual(["HEAD 200"]);
    // The new image's blobs came from upstream once each; the next pull rechecks but fetches nothing.
    const again = await registry.mark();
    expect(digestsOf(await pull(eager))).toEqual(digestsOf(second));
    expect((await registry.requests({ since: again })).map((r) => `${r.method} ${r.kind} ${r.reference}`)).toEqual(["HEAD manifest v1"]);
  });

  test("a tag imported into the store is the operator's: never rechecked", async () => {
    const imported = await run([...kagamiCommand(), "import", `--data-dir=${eager.dataDir}`, first.ref.replace(/^oci:/, ""), `${registry.host}/team/app:pinned`]);
    expect(imported.code).toBe(0);
    const mark = await registry.mark();
    expect(digestsOf(await pull(eager, "pinned"))).toEqual(digestsOf(first));
    expect(await registry.requests({ since: mark })).toEqual([]);
  });

  test("with the upstream gone, the cached tag is still served, and the node says why", async () => {
    await registry.stop();
    expect(digestsOf(await pull(eager))).toEqual(digestsOf(second));
    expect(digestsOf(await pull(eager))).toEqual(digestsOf(second));
    const log = readFileSync(eager.proc.logPath, "utf8");
    expect(log).toContain("tag not rechecked upstream; serving the cached one");
    const metrics = await (await fetch(`http://${eager.args.find((a) => a.startsWith("--metrics-addr="))!.split("=")[1]}/metrics`)).text();
    expect(metrics).toMatch(/kagami_upstream_tag_checks_total\{outcome="moved"\} 1\b/);
    expect(metrics).toMatch(/kagami_upstream_tag_checks_total\{outcome="failed"\} [1-9]/);
  });
});
