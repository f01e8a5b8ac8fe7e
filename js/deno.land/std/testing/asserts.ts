// Built-in `https://deno.land/std/testing/asserts.ts` (any 2021 version): the assertions of
// `jsr:@std/assert`, with the names they had then.
export * from "https://jsr.io/@std/assert/mod.ts";
export {
  assertArrayIncludes as assertArrayContains,
  assertRejects as assertThrowsAsync,
  assertStringIncludes as assertStringContains,
} from "https://jsr.io/@std/assert/mod.ts";
