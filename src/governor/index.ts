// The memory governor: one byte budget for userspace buffers, the cgroup's limit read live,
// page cache dropped under pressure, new buffered work shed above a hard threshold.
export { BudgetQueueFullError, ByteBudget } from "./budget.ts";
export { budgetedStream, DEFAULT_CHUNK_BYTES, SOURCE_BUFFER_BYTES } from "./budget-stream.ts";
export { findMemoryCgroup, readMemory, type MemoryCgroup, type MemorySample } from "./cgroup.ts";
export { registerGovernorMetrics } from "./metrics.ts";
export { dropFileCache, ServedFiles } from "./pagecache.ts";
export type { PressureLevel, ShedReason } from "./policy.ts";
export { createGovernor, type Governor, type GovernorConfig, type GovernorOptions, type GovernorState } from "./pressure.ts";
