// ContainerdStore against a real containerd (a plain process with its own root and socket):
// the store conformance suite, with images put in through containerd's content and image
// services (the path `ctr images import` takes).
import { formatTagReference } from "../../src/oci/index.ts";
import { ContainerdStore } from "../../src/store/containerd/index.ts";
import { teardown } from "../../scripts/e2e/cleanup.ts";
import { startContainerd } from "../../scripts/e2e/containerd.ts";
import { deleteImage, seedImage } from "../../scripts/e2e/containerd-seed.ts";
import { storeConformance } from "../store-conformance.ts";

storeConformance("containerd", async () => {
  const containerd = await startContainerd({ name: "store-conformance" });
  const client = containerd.client("k8s.io");
  const store = await ContainerdStore.open({ socket: containerd.socket, namespace: "k8s.io" });
  return {
    store,
    seed: (image) => seedImage(client, formatTagReference(image.reference), image.root, image.blobs),
    remove: (reference) => deleteImage(client, formatTagReference(reference)),
    cleanup: async () => {
      await store.close();
      await teardown();
    },
  };
});
