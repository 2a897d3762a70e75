import { describe, expect, test } from "bun:test";
import { BudgetQueueFullError, ByteBudget } from "../../src/governor/budget.ts";

// Lets pending promise callbacks run.
const settle = () => new Promise((r) => setTimeout(r, 0));

describe("ByteBudget", () => {
  test("grants within the total at once and makes the rest wait until bytes are released", async () => {
    const budget = new ByteBudget({ total: 100 });
    expect(await budget.acquire(60)).toBe(60);
    let granted = false;
    const pending = budget.acquire(50).then(() => (granted = true));
    await settle();
    expect(granted).toBe(false);
    expect(budget.waiters).toBe(1);
    budget.release(60);
    await pending;
    expect(budget.inUse).toBe(50);
    expect(budget.waiters).toBe(0);
  });

  test("grants in FIFO order: a large request is not overtaken by later small ones", async () => {
    const budget = new ByteBudget({ total: 100 });
    await budget.acquire(90);
    const order: string[] = [];
    const big = budget.acquire(80).then(() => order.push("big"));
    // Each of these would fit next to the 90 held, but they queued after the big one.
    const small = [1, 2, 3].map((i) => budget.acquire(5).then(() => order.push(`small${i}`)));
    await settle();
    expect(order).toEqual([]);
    budget.release(90);
    await big;
    await settle();
    expect(order).toEqual(["big", "small1", "small2", "small3"]);
    await Promise.all(small);
    expect(budget.inUse).toBe(95);
  });

  test("a request larger than the whole budget is granted alone", async () => {
    const budget = new ByteBudget({ total: 100 });
    await budget.acquire(10);
    let granted = false;
    const huge = budget.acquire(500).then(() => (granted = true));
    await settle();
    expect(granted).toBe(false);
    budget.release(10);
    await huge;
    expect(budget.inUse).toBe(500);
    let next = false;
    const after = budget.acquire(1).then(() => (next = true));
    await settle();
    expect(next).toBe(false);
    budget.release(500);
    await after;
    expect(budget.inUse).toBe(1);
  });

  test("an aborted acquire leaves the queue, holds nothing and unblocks those behind it", async () => {
    const budget = new ByteBudget({ total: 100 });
    await budget.acquire(50);
    const ac = new AbortController();
    const blocked = budget.acquire(80, ac.signal);
    const behind = budget.acquire(40);
    await settle();
    expect(budget.waiters).toBe(2);
    ac.abort(new Error("client went away"));
    await expect(blocked).rejects.toThrow("client went away");
    expect(await behind).toBe(40);
    expect(budget.inUse).toBe(90);
    expect(budget.waiters).toBe(0);
  });

  test("an already aborted signal rejects at once without taking bytes", async () => {
    const budget = new ByteBudget({ total: 100 });
    await expect(budget.acquire(10, AbortSignal.abort(new Error("gone")))).rejects.toThrow("gone");
    expect(budget.inUse).toBe(0);
  });

  test("refuses to queue past maxWaiters", async () => {
    const budget = new ByteBudget({ total: 10, maxWaiters: 2 });
    await budget.acquire(10);
    const queued = [budget.acquire(5), budget.acquire(5)];
    expect(budget.full).toBe(true);
    await expect(budget.acquire(5)).rejects.toBeInstanceOf(BudgetQueueFullError);
    budget.release(10);
    await Promise.all(queued);
    expect(budget.full).toBe(false);
  });

  test("release of more than is in use is a bug and throws", async () => {
    const budget = new ByteBudget({ total: 10 });
    await budget.acquire(4);
    expect(() => budget.release(5)).toThrow(RangeError);
    expect(() => budget.acquire(-1)).toThrow(RangeError);
  });

  test("resize to a larger total grants waiting requests", async () => {
    const budget = new ByteBudget({ total: 10 });
    await budget.acquire(10);
    const waiting = budget.acquire(10);
    budget.resize(20);
    expect(await waiting).toBe(10);
    expect(budget.inUse).toBe(20);
  });

  test("an unbounded budget grants everything and still counts it", async () => {
    const budget = new ByteBudget({ total: Infinity });
    await Promise.all([budget.acquire(2 ** 40), budget.acquire(2 ** 40)]);
    expect(budget.inUse).toBe(2 ** 41);
    expect(budget.waiters).toBe(0);
  });
});
