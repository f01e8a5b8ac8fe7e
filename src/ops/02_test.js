// `denorun test`: Deno.test, t.step and the per-test report lines, as `deno test` prints them.
// `install()` replaces deno_runtime's no-op Deno.test before the test module runs; `run()`
// then runs what it registered and hands the counts and failures to Rust
// (src/ops/testing.rs), which prints ERRORS, FAILURES and the summary once every file ran.
import { core } from "ext:core/mod.js";

import { op_denorun_test_error, op_denorun_test_report } from "ext:core/ops";

const tests = [];

/** `file:///dir/x_test.ts:9:6` of the caller of Deno.test or t.step. */
function callSite() {
  const lines = (new Error().stack ?? "").split("\n").slice(1);
  for (const line of lines) {
    if (line.includes("ext:")) continue;
    const match = line.match(/\(?((?:file|https?):\/\/\S+?:\d+:\d+)\)?$/);
    if (match) return match[1];
  }
  return "";
}

/** The forms Deno.test takes: (name, fn), (fn), (options), (name, options, fn), (options, fn). */
function definition(a, b, c) {
  let def;
  if (typeof a === "string") {
    def = typeof b === "function" ? { name: a, fn: b } : { ...b, name: a, fn: c };
  } else if (typeof a === "function") {
    def = { name: a.name, fn: a };
  } else {
    def = typeof b === "function" ? { ...a, fn: b } : { ...a };
  }
  if (!def.name) throw new TypeError("The test name can't be empty");
  if (typeof def.fn !== "function") throw new TypeError("Missing test function");
  return def;
}

function test(a, b, c) {
  tests.push({ ...definition(a, b, c), origin: callSite() });
}
test.ignore = (a, b, c) => tests.push({ ...definition(a, b, c), ignore: true, origin: callSite() });
test.only = (a, b, c) => tests.push({ ...definition(a, b, c), only: true, origin: callSite() });

function elapsed(ms) {
  if (ms < 1) return `${Math.floor(ms * 1000)}\u00b5s`;
  if (ms < 1000) return `${Math.floor(ms)}ms`;
  return `${Math.floor(ms / 1000)}s`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** One run of a file's tests: counts, failures, and the line being written. */
class Run {
  constructor(cwd) {
    this.cwd = cwd;
    this.counts = { passed: 0, failed: 0, ignored: 0, filteredOut: 0, passedSteps: 0, failedSteps: 0, ignoredSteps: 0 };
    this.failures = [];
    /** The test or step whose `name ... ` line is written but not ended. */
    this.open = undefined;
  }

  where(origin) {
    return origin.startsWith(this.cwd) ? `./${origin.slice(this.cwd.length)}` : origin;
  }

  begin(node) {
    if (this.open) {
      core.print("\n");
      this.open.headed = false;
    }
    core.print(`${"  ".repeat(node.depth)}${node.name} ...`);
    node.headed = true;
    this.open = node;
  }

  end(node, result) {
    const head = node.headed ? "" : `${"  ".repeat(node.depth)}${node.name} ...`;
    core.print(`${head} ${result}\n`);
    this.open = undefined;
  }

  fail(node, error) {
    this.failures.push({ name: node.path, origin: this.where(node.origin), error: op_denorun_test_error(error) });
  }

  /** Runs a test or step; true if it passed (or was ignored). */
  async runNode(node) {
    this.begin(node);
    if (node.ignore) {
      this.end(node, "ignored (0ms)");
      return "ignored";
    }
    const started = performance.now();
    const context = new TestContext(this, node);
    let thrown;
    // Called as a plain function, so that stacks name it as `deno test`'s do.
    const fn = node.fn;
    try {
      await fn(context);
    } catch (e) {
      thrown = e;
    }
    const took = elapsed(performance.now() - started);
    const failedSteps = context.failedSteps;
    if (thrown !== undefined) {
      this.fail(node, thrown);
      this.end(node, `FAILED (${took})`);
      return "failed";
    }
    if (failedSteps > 0) {
      this.end(node, `FAILED (due to ${plural(failedSteps, "failed step")}) (${took})`);
      return "failed";
    }
    this.end(node, `ok (${took})`);
    return "ok";
  }
}

class TestContext {
  #run;
  #node;
  failedSteps = 0;

  constructor(run, node) {
    this.#run = run;
    this.#node = node;
    this.name = node.name;
    this.origin = node.origin;
  }

  /** `t.step(name, fn)`, `t.step(options)`, `t.step(fn)`: resolves to whether it passed. */
  async step(a, b) {
    const def = typeof a === "string" ? { name: a, fn: b } : typeof a === "function" ? { name: a.name, fn: a } : a;
    const node = {
      ...def,
      depth: this.#node.depth + 1,
      path: `${this.#node.path} ... ${def.name}`,
      origin: callSite(),
    };
    const counts = this.#run.counts;
    const outcome = await this.#run.runNode(node);
    if (outcome === "failed") {
      this.failedSteps++;
      counts.failedSteps++;
    } else if (outcome === "ignored") {
      counts.ignoredSteps++;
    } else {
      counts.passedSteps++;
    }
    return outcome !== "failed";
  }
}

/** Runs the registered tests of the file shown as `display`, those whose name holds
 * `filter` (all if null), only the `only` ones if any. */
async function run(display, cwd, filter) {
  const matching = tests.filter((t) => filter === null || t.name.includes(filter));
  const only = matching.filter((t) => t.only);
  const selected = only.length > 0 ? only : matching;
  const state = new Run(cwd);
  state.counts.filteredOut = tests.length - selected.length;
  if (selected.length > 0) core.print(`running ${plural(selected.length, "test")} from ${display}\n`);
  for (const t of selected) {
    const outcome = await state.runNode({ ...t, depth: 0, path: t.name });
    state.counts[outcome === "ok" ? "passed" : outcome] += 1;
  }
  op_denorun_test_report({ ...state.counts, usedOnly: only.length > 0, failures: state.failures });
}

function install() {
  Deno.test = test;
}

Object.defineProperty(globalThis, Symbol.for("denorun.test"), { value: { install, run } });
