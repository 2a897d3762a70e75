// Teardown of everything a test or benchmark created: processes, namespaces, cgroups, temp
// dirs. Each resource registers an async undo (used by teardown(), from afterAll) and a
// synchronous one (used when the process exits or is interrupted before afterAll ran), so
// nothing outlives the run even when a test throws or the runner is killed with SIGINT.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Every name the rig gives to host-wide objects starts with this, then the owner's pid. */
export const RIG_PREFIX = "kgr";

interface Entry {
  name: string;
  undo: () => Promise<void> | void;
  undoSync: () => void;
  done: boolean;
}

const scopes = new Set<Scope>();
let hooked = false;

/** A LIFO stack of undo actions. Most callers use the default scope via `teardown()`. */
export class Scope {
  private stack: Entry[] = [];
  private tempRoot: string | undefined;

  constructor(readonly name: string) {
    scopes.add(this);
    hookProcessExit();
  }

  /**
   * Registers an undo. Returns `release`, to call when the resource was already
   * undone by its owner (e.g. a process stopped by the test), so teardown skips it.
   */
  defer(name: string, undo: () => Promise<void> | void, undoSync: () => void): () => void {
    const entry: Entry = { name, undo, undoSync, done: false };
    this.stack.push(entry);
    return () => {
      entry.done = true;
      this.stack = this.stack.filter((e) => e !== entry);
    };
  }

  /** A fresh directory under this scope's temp root, removed at teardown. */
  tempDir(label: string): string {
    if (!this.tempRoot) {
      const root = mkdtempSync(join(tmpdir(), `${RIG_PREFIX}-${process.pid}-${safeLabel(this.name)}-`));
      this.tempRoot = root;
      this.defer(
        `temp dir ${root}`,
        () => removeTemp(root),
        () => removeTemp(root),
      );
    }
    return mkdtempSync(join(this.tempRoot, `${safeLabel(label)}-`));
  }

  /** Undoes everything in reverse order; every undo runs even if an earlier one failed. */
  async teardown(): Promise<void> {
    const errors: Error[] = [];
    while (this.stack.length > 0) {
      const entry = this.stack.pop()!;
      if (entry.done) continue;
      entry.done = true;
      try {
        await entry.undo();
      } catch (e) {
        errors.push(new Error(`teardown of ${entry.name} failed: ${(e as Error).message}`));
      }
    }
    this.tempRoot = undefined;
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, errors.map((e) => e.message).join("; "));
  }

  teardownSync(): void {
    while (this.stack.length > 0) {
      const entry = this.stack.pop()!;
      if (entry.done) continue;
      entry.done = true;
      try {
        entry.undoSync();
      } catch {
        // Best effort: the process is exiting; keep undoing the rest.
      }
    }
    this.tempRoot = undefined;
  }
}

/** The scope every rig function uses unless given another. */
export const rootScope = new Scope("rig");

/** Tears down the default scope. Call it in afterAll (tests) or finally (benchmarks). */
export function teardown(): Promise<void> {
  return rootScope.teardown();
}

/** A fresh temp directory removed at teardown. */
export function tempDir(label: string, scope: Scope = rootScope): string {
  return scope.tempDir(label);
}

/** Lowercase [a-z0-9-] only, so labels are safe inside file and interface names. */
export function safeLabel(label: string, max = 24): string {
  const s = label.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "");
  return (s || "x").slice(0, max);
}

function removeTemp(path: string): void {
  if (process.env.KAGAMI_RIG_KEEP === "1") {
    console.error(`[rig] keeping ${path} (KAGAMI_RIG_KEEP=1)`);
    return;
  }
  rmSync(path, { recursive: true, force: true });
}

function hookProcessExit(): void {
  if (hooked) return;
  hooked = true;
  const sync = () => {
    for (const s of [...scopes].reverse()) s.teardownSync();
  };
  process.on("exit", sync);
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const) {
    process.once(signal, () => {
      sync();
      process.exit(code);
    });
  }
}
