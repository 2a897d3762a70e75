import { describe, expect, test } from "bun:test";
import { contentRange, parseRange, RangeError416, resolveRange } from "../../src/oci/index.ts";

describe("Range parsing", () => {
  test("single ranges", () => {
    expect(parseRange("bytes=0-99")).toEqual({ kind: "range", first: 0, last: 99 });
    expect(parseRange("bytes=100-")).toEqual({ kind: "range", first: 100 });
    expect(parseRange(" bytes = 5-5 ")).toEqual({ kind: "range", first: 5, last: 5 });
  });
  test("suffix ranges", () => {
    expect(parseRange("bytes=-500")).toEqual({ kind: "suffix", length: 500 });
  });
  test.each([
    ["bytes=0-1,5-6", "multiple"],
    ["bytes=0-1, -5", "multiple"],
    ["items=0-1", "malformed"],
    ["bytes=", "malformed"],
    ["bytes=-", "malformed"],
    ["bytes=a-b", "malformed"],
    ["bytes=5-1", "malformed"],
    ["bytes=1-2-3", "malformed"],
    ["bytes=99999999999999999999-", "malformed"],
    ["0-1", "malformed"],
  ])("%p is %p", (header, reason) => {
    try {
      parseRange(header);
      throw new Error("accepted");
    } catch (e) {
      expect(e).toBeInstanceOf(RangeError416);
      expect((e as RangeError416).reason).toBe(reason as never);
    }
  });
});

describe("Range resolution", () => {
  test("clamps the end to the content", () => {
    expect(resolveRange({ kind: "range", first: 10, last: 5000 }, 100)).toEqual({ start: 10, end: 99 });
    expect(resolveRange({ kind: "range", first: 10 }, 100)).toEqual({ start: 10, end: 99 });
  });
  test("suffix longer than the content is the whole content", () => {
    expect(resolveRange({ kind: "suffix", length: 500 }, 100)).toEqual({ start: 0, end: 99 });
    expect(resolveRange({ kind: "suffix", length: 30 }, 100)).toEqual({ start: 70, end: 99 });
  });
  test("unsatisfiable ranges", () => {
    expect(() => resolveRange({ kind: "range", first: 100 }, 100)).toThrow(RangeError416);
    expect(() => resolveRange({ kind: "suffix", length: 0 }, 100)).toThrow(RangeError416);
    expect(() => resolveRange({ kind: "suffix", length: 1 }, 0)).toThrow(RangeError416);
  });
  test("Content-Range", () => {
    expect(contentRange({ start: 0, end: 9 }, 100)).toBe("bytes 0-9/100");
  });
});
