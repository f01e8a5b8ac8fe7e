// Built-in `jsr:@std/assert` (any version or subpath): the assertions of Deno's standard
// library that tests use most, with its messages and its Actual / Expected line diff.

const INSPECT = {
  depth: Infinity,
  sorted: true,
  trailingComma: true,
  compact: false,
  iterableLimit: Infinity,
  getters: true,
  strAbbreviateSize: Infinity,
};

/** Thrown by every failed assertion. */
export class AssertionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AssertionError";
  }
}

function format(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : Deno.inspect(value, INSPECT);
}

const paint = (code: number, text: string) => (Deno.noColor ? text : `\x1b[${code}m${text}\x1b[39m`);
const bold = (text: string) => (Deno.noColor ? text : `\x1b[1m${text}\x1b[22m`);

/** The lines of `a` and `b` as common (` `), removed from `a` (`-`) or added in `b` (`+`). */
function diffLines(a: string[], b: string[]): Array<[" " | "-" | "+", string]> {
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: Array<[" " | "-" | "+", string]> = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push([" ", a[i]]), i++, j++;
    } else if (j < b.length && (i === a.length || lcs[i][j + 1] > lcs[i + 1][j])) {
      out.push(["+", b[j++]]);
    } else {
      out.push(["-", a[i++]]);
    }
  }
  return out;
}

/** The `[Diff] Actual / Expected` block of a failed equality. */
function diffMessage(actual: unknown, expected: unknown): string {
  const lines = diffLines(format(actual).split("\n"), format(expected).split("\n"));
  const signs = { " ": "    ", "-": "-   ", "+": "+   " };
  const body = lines.map(([sign, line]) => {
    const text = signs[sign] + line;
    return sign === "-" ? paint(31, text) : sign === "+" ? paint(32, text) : text;
  });
  const head = `    ${bold(paint(90, "[Diff]"))} ${paint(31, bold("Actual"))} / ${paint(32, bold("Expected"))}`;
  return ["", "", head, "", "", ...body, ""].join("\n");
}

/** Deep equality, as `@std/assert`'s `equal`: same-valued primitives (NaN equals NaN),
 * dates, regexps, maps, sets, arrays and objects with equal members and the same class. */
export function equal(a: unknown, b: unknown, seen = new Map<unknown, unknown>()): boolean {
  if (Object.is(a, b)) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") {
    return false;
  }
  if (seen.get(a) === b) return true;
  seen.set(a, b);
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (a instanceof Date && b instanceof Date) return Object.is(a.getTime(), b.getTime());
  if (a instanceof RegExp && b instanceof RegExp) return String(a) === String(b);
  if (a instanceof Map && b instanceof Map) {
    if (a.size !== b.size) return false;
    for (const [key, value] of a) {
      if (!b.has(key) || !equal(value, b.get(key), seen)) return false;
    }
    return true;
  }
  if (a instanceof Set && b instanceof Set) {
    if (a.size !== b.size) return false;
    for (const value of a) {
      if (!b.has(value) && ![...b].some((other) => equal(value, other, seen))) return false;
    }
    return true;
  }
  const keysA = Reflect.ownKeys(a).filter((k) => (a as Record<PropertyKey, unknown>)[k] !== undefined);
  const keysB = Reflect.ownKeys(b).filter((k) => (b as Record<PropertyKey, unknown>)[k] !== undefined);
  if (keysA.length !== keysB.length) return false;
  return keysA.every((k) =>
    equal((a as Record<PropertyKey, unknown>)[k], (b as Record<PropertyKey, unknown>)[k], seen)
  );
}

const suffix = (msg?: string) => (msg ? `: ${msg}` : ".");

export function assert(expr: unknown, msg = ""): asserts expr {
  if (!expr) throw new AssertionError(msg);
}

export function assertFalse(expr: unknown, msg = ""): void {
  if (expr) throw new AssertionError(msg);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  if (equal(actual, expected)) return;
  throw new AssertionError(`Values are not equal${suffix(msg)}\n${diffMessage(actual, expected)}`);
}

export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  if (!equal(actual, expected)) return;
  throw new AssertionError(`Expected actual: ${format(actual)} not to be: ${format(expected)}${suffix(msg)}`);
}

export function assertStrictEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  if (Object.is(actual, expected)) return;
  const same = format(actual) === format(expected);
  throw new AssertionError(
    same
      ? `Values have the same structure but are not reference-equal${suffix(msg)}\n\n    ${format(actual)}\n`
      : `Values are not strictly equal${suffix(msg)}\n${diffMessage(actual, expected)}`,
  );
}

export function assertNotStrictEquals<T>(actual: T, expected: T, msg?: string): void {
  if (!Object.is(actual, expected)) return;
  throw new AssertionError(`Expected "actual" to not be strictly equal to: ${format(expected)}${suffix(msg)}\n`);
}

export function assertExists<T>(actual: T, msg?: string): asserts actual is NonNullable<T> {
  if (actual === undefined || actual === null) {
    throw new AssertionError(msg ?? `Expected actual: "${actual}" to not be null or undefined.`);
  }
}

export function assertInstanceOf<T extends abstract new (...args: any[]) => any>(
  actual: unknown,
  expectedType: T,
  msg = "",
): asserts actual is InstanceType<T> {
  if (actual instanceof expectedType) return;
  const got = actual === null ? "null" : typeof actual === "object" ? actual.constructor?.name : typeof actual;
  throw new AssertionError(msg || `Expected object to be an instance of "${expectedType.name}" but was "${got}".`);
}

export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  if (expected.test(actual)) return;
  throw new AssertionError(msg ?? `Expected actual: "${actual}" to match: "${expected}".`);
}

export function assertNotMatch(actual: string, expected: RegExp, msg?: string): void {
  if (!expected.test(actual)) return;
  throw new AssertionError(msg ?? `Expected actual: "${actual}" to not match: "${expected}".`);
}

export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  if (actual.includes(expected)) return;
  throw new AssertionError(msg ?? `Expected actual: "${actual}" to contain: "${expected}".`);
}

export function assertArrayIncludes<T>(actual: ArrayLike<T>, expected: ArrayLike<T>, msg?: string): void {
  const missing = Array.from(expected).filter((e) => !Array.from(actual).some((a) => equal(a, e)));
  if (missing.length === 0) return;
  throw new AssertionError(
    msg ?? `Expected actual: "${format(actual)}" to include: "${format(expected)}".\nmissing: ${format(missing)}`,
  );
}

/** Whether `actual` has every key of `expected`, with values that match the same way. */
function matches(actual: unknown, expected: unknown): boolean {
  if (expected === null || typeof expected !== "object") return equal(actual, expected);
  if (actual === null || typeof actual !== "object") return false;
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length &&
      expected.every((e, i) => matches(actual[i], e));
  }
  return Object.entries(expected).every(([k, v]) => matches((actual as Record<string, unknown>)[k], v));
}

/** The part of `actual` that `expected` describes, for the diff. */
function pick(actual: unknown, expected: unknown): unknown {
  if (expected === null || typeof expected !== "object" || actual === null || typeof actual !== "object") {
    return actual;
  }
  if (Array.isArray(expected) && Array.isArray(actual)) return actual.map((a, i) => pick(a, expected[i]));
  return Object.fromEntries(
    Object.keys(expected).filter((k) => k in actual).map((k) => [k, pick((actual as any)[k], (expected as any)[k])]),
  );
}

export function assertObjectMatch(
  actual: Record<PropertyKey, any>,
  expected: Record<PropertyKey, unknown>,
  msg?: string,
): void {
  if (matches(actual, expected)) return;
  throw new AssertionError(`Values are not equal${suffix(msg)}\n${diffMessage(pick(actual, expected), expected)}`);
}

type ErrorClass<E extends Error = Error> = abstract new (...args: any[]) => E;

function checkError(error: unknown, ErrorClass?: ErrorClass, includes?: string, msg?: string): void {
  const tail = msg ? `: ${msg}` : ".";
  if (ErrorClass && !(error instanceof ErrorClass)) {
    const got = (error as Error)?.constructor?.name ?? typeof error;
    throw new AssertionError(`Expected error to be instance of "${ErrorClass.name}", but was "${got}"${tail}`);
  }
  if (includes !== undefined && !String((error as Error)?.message).includes(includes)) {
    throw new AssertionError(
      `Expected error message to include ${JSON.stringify(includes)}, but got ${
        JSON.stringify((error as Error)?.message)
      }${tail}`,
    );
  }
}

export function assertThrows(
  fn: () => unknown,
  ErrorClassOrMsg?: ErrorClass | string,
  msgIncludes?: string,
  msg?: string,
): unknown {
  const ErrorClass = typeof ErrorClassOrMsg === "function" ? ErrorClassOrMsg : undefined;
  if (typeof ErrorClassOrMsg === "string") msg = ErrorClassOrMsg;
  try {
    fn();
  } catch (error) {
    checkError(error, ErrorClass, msgIncludes, msg);
    return error;
  }
  throw new AssertionError(`Expected function to throw${msg ? `: ${msg}` : "."}`);
}

export async function assertRejects(
  fn: () => PromiseLike<unknown>,
  ErrorClassOrMsg?: ErrorClass | string,
  msgIncludes?: string,
  msg?: string,
): Promise<unknown> {
  const ErrorClass = typeof ErrorClassOrMsg === "function" ? ErrorClassOrMsg : undefined;
  if (typeof ErrorClassOrMsg === "string") msg = ErrorClassOrMsg;
  let promise;
  try {
    promise = fn();
  } catch (error) {
    throw new AssertionError(`Function throws when expected to reject${msg ? `: ${msg}` : "."}`, { cause: error });
  }
  try {
    await promise;
  } catch (error) {
    checkError(error, ErrorClass, msgIncludes, msg);
    return error;
  }
  throw new AssertionError(`Expected function to reject${msg ? `: ${msg}` : "."}`);
}

export function fail(msg?: string): never {
  throw new AssertionError(`Failed assertion${msg ? `: ${msg}` : "."}`);
}

export function unreachable(msg?: string): never {
  throw new AssertionError(msg ?? "Unreachable.");
}

export function unimplemented(msg?: string): never {
  throw new AssertionError(msg ?? "Unimplemented.");
}
