export { ContainerdStore, containerdAnswers, type ContainerdStoreOptions } from "./store.ts";
export { ContainerdClient, type ImageRecord, type ContentInfo } from "./client.ts";
export { DEFAULT_CONTENT_PATH } from "./blobs.ts";
