//! `denorun test`: what it prints and its exit code match `deno test` (Deno 2.9.6, installed
//! from npm by .ci/test.sh) on the same files, passing, failing, ignored, stepped and `only`
//! tests; and the built-in assertions report a diff.

mod common;

use std::process::{Command, Output};

use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/deno_test");

fn run_in(dir: &str, mut cmd: Command) -> Output {
    cmd.current_dir(dir).env("NO_COLOR", "1").env_remove("RUST_BACKTRACE").output().unwrap()
}

/// Output with timings as `(T)`, and without stack frames inside either runner (`ext:`), or
/// Deno's own backtrace of its exit.
fn normalize(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let text = text.split("\nStack backtrace:").next().unwrap_or_default();
    let mut out = String::new();
    for line in text.lines().filter(|l| !(l.trim_start().starts_with("at ") && l.contains("ext:"))) {
        let mut line = line.to_string();
        while let Some(open) = line.rfind(" (") {
            let inner = &line[open + 2..];
            let Some(close) = inner.find(')') else { break };
            let timing = &inner[..close];
            let digits = timing.trim_end_matches("ms").trim_end_matches("µs").trim_end_matches('s');
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || !timing.ends_with('s') {
                break;
            }
            line = format!("{} (T){}", &line[..open], &inner[close + 1..]);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `denorun test ARGS` and `deno test --no-check ARGS`, both in the fixtures' directory.
fn both(args: &[&str]) -> (Output, Output) {
    let ours = run_in(FIXTURES, denorun(&[&["test"], args].concat()));
    let mut theirs = Command::new(deno_cli());
    theirs.args(["test", "--no-check"]).args(args);
    (ours, run_in(FIXTURES, theirs))
}

#[test]
fn output_and_exit_code_match_deno_test() {
    let (ours, theirs) = both(&[]);
    assert_eq!(normalize(&ours.stdout), normalize(&theirs.stdout), "stdout");
    assert_eq!(normalize(&ours.stderr), normalize(&theirs.stderr), "stderr");
    assert_eq!((ours.status.code(), theirs.status.code()), (Some(1), Some(1)));

    // --filter, and a passing run.
    let (ours, theirs) = both(&["--filter", "one", "a_test.ts", "math_test.ts"]);
    assert_eq!(normalize(&ours.stdout), normalize(&theirs.stdout), "stdout with --filter");
    assert_eq!((ours.status.code(), theirs.status.code()), (Some(0), Some(0)));

    // `only`: the others are filtered out, and the run fails for it.
    let (ours, theirs) = both(&["only_test.ts"]);
    assert_eq!(normalize(&ours.stdout), normalize(&theirs.stdout), "stdout with only");
    assert_eq!(normalize(&ours.stderr), normalize(&theirs.stderr), "stderr with only");
    assert_eq!((ours.status.code(), theirs.status.code()), (Some(1), Some(1)));
}

#[test]
fn built_in_assertions_show_a_diff_and_deny_by_default() {
    let dir = temp_dir();
    write(
        dir.path(),
        "x_test.ts",
        r#"import { assertEquals, assertRejects } from "jsr:@std/assert";
import { assertThrowsAsync } from "https://deno.land/std@0.106.0/testing/asserts.ts";
Deno.test("diff", () => assertEquals({ a: 1, b: [1, 2] }, { a: 1, b: [1, 3] }));
Deno.test("rejects", async () => {
  await assertRejects(() => Promise.reject(new RangeError("r")), RangeError);
  await assertThrowsAsync(async () => { throw new Error("e"); });
});
Deno.test("no read permission", () => { Deno.readTextFileSync("x_test.ts"); });
"#,
    );
    let out = run_in(dir.path().to_str().unwrap(), denorun(&["test"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("rejects ... ok"), "{stdout}");
    assert!(stdout.contains("-       2,\n+       3,"), "{stdout}");
    assert!(stdout.contains("error: NotCapable: Requires read access"), "{stdout}");
    assert!(stdout.contains("FAILED | 1 passed | 2 failed"), "{stdout}");
}

#[test]
fn a_new_worker_passes_its_own_tests_at_once() {
    let dir = temp_dir();
    let root = dir.path().to_str().unwrap();
    let made = run_in(root, denorun(&["new", "greeter"]));
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let tested = run_in(&format!("{root}/greeter"), denorun(&["test"]));
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert_eq!(tested.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&tested.stderr));
    assert!(stdout.contains("running 2 tests from ./greeter_test.ts"), "{stdout}");
    assert!(stdout.contains("ok | 2 passed | 0 failed"), "{stdout}");
    // Never over what is there.
    let again = run_in(root, denorun(&["new", "greeter"]));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"), "{again:?}");
}

#[test]
fn the_demo_handler_passes_its_tests_against_a_throwaway_redis() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/demo");
    let tested = run_in(demo, denorun(&["test"]));
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert_eq!(tested.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&tested.stderr));
    assert!(stdout.contains("running 2 tests from ./handler_test.ts"), "{stdout}");
    assert!(stdout.contains("ok | 2 passed | 0 failed"), "{stdout}");
}

#[test]
fn the_telegram_example_passes_its_tests_against_a_fake_bot_api() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/telegram-bot");
    let tested = run_in(example, denorun(&["test", "--allow-net=127.0.0.1"]));
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert_eq!(tested.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&tested.stderr));
    assert!(stdout.contains("ok | 2 passed | 0 failed"), "{stdout}");
}

#[test]
fn a_request_read_for_a_worker_that_stopped_goes_to_the_next_one_at_once() {
    // The first worker stops while the process's reader may still be waiting in XREADGROUP
    // for it; the request sent then is read under its consumer. The next worker of the type,
    // started after that reader ended, must get it at once, not after `claimIdleMs` (30 s).
    let dir = temp_dir();
    write(dir.path(), "handler.ts", "export default { request(req: any) { return { ok: true, ref: req.ref }; } };\n");
    write(
        dir.path(),
        "relay_test.ts",
        r#"import { assertEquals } from "jsr:@std/assert";
import { withWorker } from "denorun:testing";
const relay = { module: "./handler.ts", type: "relay" };
Deno.test("the next worker gets it", async () => {
  let redis: (...args: Array<string | number>) => Promise<unknown> = () => Promise.resolve(null);
  await withWorker(relay, async (worker) => {
    redis = worker.redis;
    assertEquals((await worker.request({})).ok, true);
  });
  await redis("XADD", "relay:req:x", "*", "ref", "late", "type", "relay", "data", "{}");
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await withWorker(relay, async (worker) => {
    const reply = await worker.redis("BRPOP", "res:late", 10);
    assertEquals(reply === null ? "no reply within 10 s" : "answered", "answered");
  });
});
"#,
    );
    let out = run_in(dir.path().to_str().unwrap(), denorun(&["test"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ok | 1 passed | 0 failed"), "{stdout}");
}
