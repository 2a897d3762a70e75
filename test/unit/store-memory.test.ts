import { MemoryStore } from "../../src/store/memory.ts";
import { storeConformance } from "../store-conformance.ts";

storeConformance("MemoryStore", async () => {
  const store = new MemoryStore();
  return {
    store,
    seed: async (image) => {
      for (const [digest, blob] of image.blobs) {
        await store.ingest({ mediaType: blob.mediaType, digest, size: blob.bytes.byteLength }, blob.bytes);
      }
      await store.tag(image.reference, image.root);
    },
    remove: (ref) => store.untag(ref),
    cleanup: () => store.close(),
  };
});
