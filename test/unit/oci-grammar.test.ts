import { describe, expect, test } from "bun:test";
import {
  DigestError,
  formatTagReference,
  isRegistryHost,
  isRepositoryName,
  isTag,
  parseDigest,
  parseReference,
  parsePullRoute,
  parseTagReference,
  ReferenceError,
  RegistryError,
} from "../../src/oci/index.ts";

const HEX64 = "a".repeat(64);
const HEX128 = "0123456789abcdef".repeat(8);

describe("digest grammar", () => {
  test("accepts sha256 and sha512", () => {
    expect(parseDigest(`sha256:${HEX64}`)).toMatchObject({ algorithm: "sha256", hex: HEX64 });
    expect(parseDigest(`sha512:${HEX128}`)).toMatchObject({ algorithm: "sha512", hex: HEX128 });
  });
  test.each([
    ["", "empty"],
    [HEX64, "no algorithm"],
    ["sha256:", "no hex"],
    [":" + HEX64, "empty algorithm"],
    [`sha256:${"a".repeat(63)}`, "short"],
    [`sha256:${"a".repeat(65)}`, "long"],
    [`sha512:${HEX64}`, "sha512 of sha256 length"],
    [`sha256:${"A".repeat(64)}`, "uppercase hex"],
    [`sha256:${"g".repeat(64)}`, "not hex"],
    [`sha256:${"a".repeat(62)}/..`, "path in hex"],
    [`SHA256:${HEX64}`, "uppercase algorithm"],
    [`sha256:${HEX64}\0`, "NUL"],
  ])("refuses %p (%s)", (input) => {
    expect(() => parseDigest(input)).toThrow(DigestError);
  });
  test("a well-formed unknown algorithm is unsupported, not malformed", () => {
    try {
      parseDigest(`md5:${"a".repeat(32)}`);
      throw new Error("accepted");
    } catch (e) {
      expect(e).toBeInstanceOf(DigestError);
      expect((e as DigestError).unsupported).toBe(true);
    }
  });
});

describe("repository names and tags", () => {
  test.each(["library/nginx", "a", "a/b/c", "my-app", "my__app", "my.app", "a--b", "0/1", "foo_bar/baz.qux-1"])("accepts name %p", (n) => {
    expect(isRepositoryName(n)).toBe(true);
  });
  test.each(["", "Library/nginx", "UPPER", "a/../b", "..", "a/./b", "a//b", "/a", "a/", "-a", "a-", "a_", "a___b", "a..b", "a b", "a%2fb", "a\0b", "a".repeat(256)])(
    "refuses name %p",
    (n) => {
      expect(isRepositoryName(n)).toBe(false);
    },
  );
  test("255 characters is the most a name can have", () => {
    expect(isRepositoryName("a".repeat(255))).toBe(true);
    expect(isRepositoryName("a".repeat(256))).toBe(false);
  });
  test.each(["latest", "1.27", "v1.0.0-rc.1", "_x", "A", "a".repeat(128)])("accepts tag %p", (t) => expect(isTag(t)).toBe(true));
  test.each(["", ".x", "-x", "a".repeat(129), "a/b", "a:b", "a@b", "a b"])("refuses tag %p", (t) => expect(isTag(t)).toBe(false));
  test.each(["docker.io", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "registry.k8s.io", "my-host"])("accepts host %p", (h) =>
    expect(isRegistryHost(h)).toBe(true),
  );
  test.each(["", "-bad", "bad-", "a..b", "host:99999", "host/x", "ho st", "a:b:c"])("refuses host %p", (h) => expect(isRegistryHost(h)).toBe(false));
});

describe("reference normalisation", () => {
  test.each([
    ["nginx", "docker.io/library/nginx:latest"],
    ["nginx:1.27", "docker.io/library/nginx:1.27"],
    ["library/nginx", "docker.io/library/nginx:latest"],
    ["bitnami/redis:7", "docker.io/bitnami/redis:7"],
    ["docker.io/nginx", "docker.io/library/nginx:latest"],
    ["index.docker.io/library/nginx:1", "docker.io/library/nginx:1"],
    ["registry-1.docker.io/library/nginx:1", "docker.io/library/nginx:1"],
    ["ghcr.io/org/app:v1", "ghcr.io/org/app:v1"],
    ["localhost/app", "localhost/app:latest"],
    ["localhost:5000/app:2", "localhost:5000/app:2"],
    ["127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"],
  ])("%p -> %p", (input, want) => {
    expect(formatTagReference(parseTagReference(input))).toBe(want);
  });
  test("keeps a digest", () => {
    const r = parseReference(`ghcr.io/org/app@sha256:${HEX64}`);
    expect(r).toEqual({ registry: "ghcr.io", repository: "org/app", digest: `sha256:${HEX64}` as never });
  });
  test.each(["", "UPPER/case", "nginx:", "nginx:-bad", "a/../b", `nginx@sha256:${"z".repeat(64)}`, "host:99999/x", `x/${"a".repeat(260)}`])(
    "refuses %p",
    (input) => {
      expect(() => parseReference(input)).toThrow(ReferenceError);
    },
  );
  test("a tag reference may not carry a digest", () => {
    expect(() => parseTagReference(`nginx@sha256:${HEX64}`)).toThrow(ReferenceError);
  });
});

describe("pull routes", () => {
  test("base", () => {
    expect(parsePullRoute("/v2/")).toEqual({ kind: "base" });
    expect(parsePullRoute("/v2")).toEqual({ kind: "base" });
  });
  test("manifest by tag, by digest, blob", () => {
    expect(parsePullRoute("/v2/library/nginx/manifests/1.27")).toEqual({ kind: "manifest", name: "library/nginx", tag: "1.27" });
    expect(parsePullRoute(`/v2/a/b/manifests/sha256:${HEX64}`)).toEqual({ kind: "manifest", name: "a/b", digest: `sha256:${HEX64}` as never });
    expect(parsePullRoute(`/v2/a/blobs/sha256:${HEX64}`)).toEqual({ kind: "blob", name: "a", digest: `sha256:${HEX64}` as never });
  });
  test.each([
    ["/v2/../etc/passwd/blobs/x", 400],
    [`/v2/a%2fb/blobs/sha256:${HEX64}`, 400],
    [`/v2/a/blobs/sha256:${HEX64}%00`, 400],
    ["/v2/a/blobs/sha256:../../etc/passwd", 404],
    ["/v2/a/blobs/latest", 400],
    [`/v2/a/blobs/md5:${"a".repeat(32)}`, 400],
    ["/v2/a/manifests/..", 404],
    ["/v2/A/manifests/latest", 400],
    ["/v2/a/tags/list", 404],
    ["/v2/a/blobs/uploads/", 404],
    ["/v3/a/manifests/latest", 404],
  ])("%p -> %p", (path, status) => {
    try {
      parsePullRoute(path);
      throw new Error("accepted");
    } catch (e) {
      expect(e).toBeInstanceOf(RegistryError);
      expect((e as RegistryError).status).toBe(status);
    }
  });
});
