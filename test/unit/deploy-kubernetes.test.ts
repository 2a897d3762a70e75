// Every manifest under deploy/kubernetes against the Kubernetes schemas (kubernetes-models:
// the ServiceMonitor through its prometheus-operator CRD model), every field: validate()
// checks types, required fields and formats; the models' TypeScript interfaces, applied to
// each document by the compiler, reject any field the API does not have (a typo would be
// silently dropped by the API server). Then the manifests must agree with each other and
// with kagami's own flags.
import { beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Service } from "kubernetes-models/v1/Service";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { parseArgs } from "../../src/cli/flags.ts";
import { COMMANDS, FLAGS, type Command } from "../../src/config.ts";
import { parseBytes, parseDuration } from "../../src/units.ts";

const ROOT = resolve(import.meta.dir, "../..");
const DIR = join(ROOT, "deploy/kubernetes");
const MODULES = join(ROOT, "node_modules");

interface Doc {
  file: string;
  index: number;
  value: Record<string, unknown>;
}

/** The model (runtime validator) and the interface (compile-time field check) of each kind. */
const MODELS: Record<string, { validate: (v: unknown) => void; iface: string; module: string }> = {
  "v1/Namespace": { validate: (v) => new Namespace(v as never).validate(), iface: "INamespace", module: "kubernetes-models/v1/Namespace" },
  "v1/Service": { validate: (v) => new Service(v as never).validate(), iface: "IService", module: "kubernetes-models/v1/Service" },
  "apps/v1/DaemonSet": { validate: (v) => new DaemonSet(v as never).validate(), iface: "IDaemonSet", module: "kubernetes-models/apps/v1/DaemonSet" },
  "monitoring.coreos.com/v1/ServiceMonitor": {
    validate: (v) => new ServiceMonitor(v as never).validate(),
    iface: "IServiceMonitor",
    module: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
  },
};

/** The fields of a kustomization these manifests may use (kustomize has no model package). */
const KUSTOMIZATION_TYPE = `interface Kustomization {
  apiVersion: "kustomize.config.k8s.io/v1beta1";
  kind: "Kustomization";
  namespace?: string;
  resources: string[];
  images?: { name: string; newName?: string; newTag?: string; digest?: string }[];
}`;

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(name) ? [path] : [];
  });
}

const files = yamlFiles(DIR);
const docs: Doc[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(file, "utf8")).map((d, index) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0]!.message}`);
    return { file: relative(ROOT, file), index, value: d.toJSON() as Record<string, unknown> };
  }),
);
const keyOf = (d: Doc) => `${d.value.apiVersion}/${d.value.kind}`;
const objects = docs.filter((d) => d.value.kind !== "Kustomization");
const kustomizations = docs.filter((d) => d.value.kind === "Kustomization");

describe("schemas", () => {
  test("there are manifests, each of a known kind", () => {
    expect(objects.length).toBeGreaterThanOrEqual(6);
    for (const d of objects) expect(`${d.file}: ${keyOf(d)}`).toBe(`${d.file}: ${MODELS[keyOf(d)] ? keyOf(d) : "a kind with a model"}`);
  });

  for (const d of objects) {
    test(`${d.file} ${d.value.kind} validates`, () => {
      expect(() => MODELS[keyOf(d)]!.validate(d.value)).not.toThrow();
    });
  }

  let tscOutput = "";
  let tscCode = 0;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "kagami-manifests-"));
    try {
      const imports = Object.values(MODELS).map((m) => `import type { ${m.iface} } from ${JSON.stringify(join(MODULES, m.module))};`);
      const consts = docs.map((d, i) => {
        const type = d.value.kind === "Kustomization" ? "Kustomization" : MODELS[keyOf(d)]!.iface;
        return `// ${d.file} #${d.index}\nexport const doc${i}: ${type} = ${JSON.stringify(d.value, null, 2)};`;
      });
      await Bun.write(join(dir, "manifests.ts"), [...imports, KUSTOMIZATION_TYPE, ...consts].join("\n"));
      await Bun.write(
        join(dir, "tsconfig.json"),
        JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: "preserve", moduleResolution: "bundler", skipLibCheck: true, types: [] }, files: ["manifests.ts"] }),
      );
      const tsc = Bun.spawn([join(MODULES, ".bin/tsc"), "-p", join(dir, "tsconfig.json")], { stdout: "pipe", stderr: "pipe" });
      tscOutput = (await new Response(tsc.stdout).text()) + (await new Response(tsc.stderr).text());
      tscCode = await tsc.exited;
      // Errors name lines of manifests.ts: show the document each one is in.
      const source = readFileSync(join(dir, "manifests.ts"), "utf8").split("\n");
      tscOutput = tscOutput.replace(/manifests\.ts\((\d+),\d+\)/g, (m, line: string) => {
        const header = source.slice(0, Number(line)).findLast((l) => l.startsWith("// deploy/"));
        return `${m} [${header?.slice(3)}]`;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("every field of every manifest and kustomization is one the API defines", () => {
    expect(tscOutput.trim()).toBe("");
    expect(tscCode).toBe(0);
  });
});

// Typed access to the parts the cross-checks read.
type Json = Record<string, any>;
const find = (kind: string, name: string): Json => {
  const d = objects.find((o) => o.value.kind === kind && (o.value.metadata as Json).name === name);
  if (!d) throw new Error(`no ${kind} ${name}`);
  return d.value;
};
const flagValue = (args: string[], flag: string) => args.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
const portOf = (addr: string | undefined) => Number(addr?.split(":").at(-1));

describe("the DaemonSet", () => {
  const ds = find("DaemonSet", "kagami");
  const pod = ds.spec.template.spec as Json;
  const kagami = (pod.containers as Json[]).find((c) => c.name === "kagami")!;
  const configure = (pod.initContainers as Json[]).find((c) => c.name === "configure")!;
  const args = kagami.args as string[];
  const ports = Object.fromEntries((kagami.ports as Json[]).map((p) => [p.name, p.containerPort]));

  test("container args are kagami commands with valid flags", () => {
    for (const d of objects.filter((o) => o.value.kind === "DaemonSet")) {
      const spec = (d.value as Json).spec.template.spec as Json;
      for (const c of [...(spec.initContainers ?? []), ...spec.containers] as Json[]) {
        if (!String(c.image).startsWith("kagami:")) continue;
        const [command, ...flags] = c.args as string[];
        expect(COMMANDS).toContain(command as Command);
        expect(() => parseArgs(command as Command, flags, {})).not.toThrow();
      }
    }
  });

  test("the ports in the flags are the container ports the probes and Services use", () => {
    expect(ports).toEqual({ registry: portOf(flagValue(args, "registry-addr")), router: portOf(flagValue(args, "router-addr")), metrics: portOf(flagValue(args, "metrics-addr")) });
    for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) expect(Object.keys(ports)).toContain(kagami[probe].httpGet.port);
    expect(kagami.livenessProbe.httpGet.path).toBe("/livez");
    expect(kagami.readinessProbe.httpGet.path).toBe("/readyz");
    expect(portOf(flagValue(configure.args, "mirror-targets"))).toBe(ports.registry);
  });

  test("memory requests equal limits (128Mi); critical priority; every taint tolerated", () => {
    expect(kagami.resources.requests.memory).toBe("128Mi");
    expect(kagami.resources.limits.memory).toBe("128Mi");
    expect(pod.priorityClassName).toBe("system-node-critical");
    expect(pod.tolerations).toContainEqual({ operator: "Exists" });
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(parseDuration(flagValue(args, "shutdown-timeout") ?? String(FLAGS["shutdown-timeout"].default)));
    expect(parseBytes(kagami.resources.limits.memory)).toBe(128 * 2 ** 20);
  });

  test("containerd's socket and content, the data dir and certs.d are host paths at the paths the flags name", () => {
    const volumes = Object.fromEntries((pod.volumes as Json[]).map((v) => [v.name, v]));
    const mountAt = (c: Json, path: string) => (c.volumeMounts as Json[]).find((m) => m.mountPath === path);
    const hostPathAt = (c: Json, path: string) => volumes[mountAt(c, path)?.name]?.hostPath?.path;
    expect(hostPathAt(kagami, flagValue(args, "containerd-sock")!)).toBe("/run/containerd/containerd.sock");
    expect(hostPathAt(kagami, flagValue(args, "containerd-content-path")!)).toBe("/var/lib/containerd/io.containerd.content.v1.content");
    expect(mountAt(kagami, flagValue(args, "containerd-content-path")!)?.readOnly).toBe(true);
    expect(hostPathAt(kagami, flagValue(args, "data-dir")!)).toBe("/var/lib/kagami");
    expect(hostPathAt(configure, flagValue(configure.args, "containerd-registry-config-path")!)).toBe("/etc/containerd/certs.d");
    for (const c of [kagami, configure]) for (const m of c.volumeMounts as Json[]) expect(Object.keys(volumes)).toContain(m.name);
  });

  test("configure mirrors the registries serve serves", () => {
    expect(flagValue(configure.args, "mirrored-registries")).toBe(flagValue(args, "mirrored-registries")!);
  });

  test("no capability, no privilege escalation, read-only root file system", () => {
    for (const c of [kagami, configure]) {
      expect(c.securityContext.capabilities.drop).toEqual(["ALL"]);
      expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
      expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    }
  });

  test("DNS bootstrap names the headless Service, which publishes unready pods and selects these pods", () => {
    const svc = find("Service", "kagami-bootstrap");
    expect(svc.spec.clusterIP).toBe("None");
    expect(svc.spec.publishNotReadyAddresses).toBe(true);
    expect(flagValue(args, "bootstrap-kind")).toBe("dns");
    expect(flagValue(args, "dns-bootstrap-domain")).toBe(`${svc.metadata.name}.${ds.metadata.namespace}.svc.cluster.local.`);
    expect(ds.spec.template.metadata.labels).toMatchObject(svc.spec.selector);
    expect(ds.spec.selector.matchLabels).toEqual(svc.spec.selector);
    for (const p of svc.spec.ports as Json[]) expect(ports[p.targetPort]).toBe(p.port);
  });

  test("the ServiceMonitor selects that Service and scrapes its metrics port", () => {
    const svc = find("Service", "kagami-bootstrap");
    const sm = find("ServiceMonitor", "kagami");
    expect(svc.metadata.labels).toMatchObject(sm.spec.selector.matchLabels);
    expect(sm.metadata.namespace).toBe(svc.metadata.namespace);
    for (const e of sm.spec.endpoints as Json[]) {
      expect((svc.spec.ports as Json[]).map((p) => p.name)).toContain(e.port);
      expect(e.path).toBe("/metrics");
    }
  });
});

describe("kustomizations", () => {
  test("every resource they list exists, and every manifest is listed by one", () => {
    const listed = new Set<string>();
    for (const k of kustomizations) {
      for (const r of (k.value.resources as string[]) ?? []) {
        const path = resolve(ROOT, dirname(k.file), r);
        const isDir = statSync(path).isDirectory();
        if (isDir) expect(statSync(join(path, "kustomization.yaml")).isFile()).toBe(true);
        else listed.add(relative(ROOT, path));
      }
    }
    expect([...listed].sort()).toEqual(objects.map((d) => d.file).sort());
  });

  test("the image they set is the one the manifests use", () => {
    for (const k of kustomizations.filter((k) => k.value.images)) {
      for (const image of k.value.images as Json[]) {
        expect(image.name).toBe("kagami");
        const dir = dirname(k.file);
        const used = objects
          .filter((o) => o.file.startsWith(`${dir}/`) && o.value.kind === "DaemonSet")
          .flatMap((o) => [...((o.value as Json).spec.template.spec.initContainers ?? []), ...(o.value as Json).spec.template.spec.containers].map((c: Json) => String(c.image).split(":")[0]));
        expect(used).toContain("kagami");
      }
    }
  });
});
