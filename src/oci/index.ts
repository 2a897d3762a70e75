export * from "./digest.ts";
export * from "./reference.ts";
export * from "./media-types.ts";
export * from "./descriptor.ts";
export * from "./errors.ts";
export * from "./range.ts";
export * from "./route.ts";
