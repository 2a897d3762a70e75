// ContainerdStore against a real containerd (a plain process with its own root and socket):
// the store conformance suite, with images put in through containerd's content and image
// services (the path `ctr images import` takes). Run twice: with containerd's content
// directory readable (blobs as files, for sendfile) and without it (Content/Read streams).
import { join } from "node:path";
import { formatTagReference } from "../../src/oci/index.ts";
import { ContainerdStore } from "../../src/store/containerd/index.ts";
import { Scope } from "../../scripts/e2e/cleanup.ts";
import { startContainerd } from "../../scripts/e2e/containerd.ts";
import { deleteImage, seedImage } from "../../scripts/e2e/containerd-seed.ts";
import { storeConformance, type StoreFixture } from "../store-conformance.ts";

async function fixture(name: string, contentMounted: boolean): Promise<StoreFixture> {
  const scope = new Scope(name);
  const containerd = await startContainerd({ name, scope });
  const client = containerd.client("k8s.io");
  const store = await ContainerdStore.open({
    socket: containerd.socket,
    namespace: "k8s.io",
    contentPath: contentMounted ? undefined : join(containerd.dir, "not-mounted"),
  });
  return {
    store,
    seed: (image) => seedImage(client, formatTagReference(image.reference), image.root, image.blobs),
    remove: (reference) => deleteImage(client, formatTagReference(reference)),
    cleanup: async () => {
      await store.close();
      await scope.teardown();
    },
  };
}

storeConformance("containerd", () => fixture("containerd-files", true));
storeConformance("containerd-grpc", () => fixture("containerd-grpc", false));
