// Liveness and readiness. Readiness is composed from checks the wiring registers
// (stores online, routing table non-empty); each failing check names itself.
export type ReadinessCheck = () => { ok: boolean; reason?: string };

export class Health {
  private readonly checks = new Map<string, ReadinessCheck>();
  private draining = false;

  register(name: string, check: ReadinessCheck): void {
    this.checks.set(name, check);
  }

  /** Shutdown started: readiness fails so load balancers stop sending traffic. */
  drain(): void {
    this.draining = true;
  }

  readiness(): { ready: boolean; failing: Record<string, string> } {
    const failing: Record<string, string> = {};
    if (this.draining) failing.shutdown = "shutting down";
    for (const [name, check] of this.checks) {
      const r = check();
      if (!r.ok) failing[name] = r.reason ?? "not ready";
    }
    return { ready: Object.keys(failing).length === 0, failing };
  }
}
