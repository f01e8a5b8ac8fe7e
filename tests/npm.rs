//! Workers written for Deno 2: npm packages from the project's own `node_modules` (Deno's
//! BYONM), through `denorun run` and a worker named by its key. The packages are hand-written
//! fixtures (`tests/fixtures/npm`), so nothing here needs the network.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A copy of the fixture project in a temporary directory, with `main.ts` of `source`.
fn project(source: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(Path::new(ROOT).join("tests/fixtures/npm/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let main = write(dir.path(), "main.ts", source);
    (dir, main)
}

fn run_main(main: &Path, flags: &[&str]) -> Run {
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.push(main.to_str().unwrap());
    run(denorun(&args), "")
}

fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// The same module prints the same under `deno run --node-modules-dir=manual` (Deno 2.9.6):
/// the `deno` condition for imports, `node` then `require` for `require()`.
#[test]
fn packages_resolve_from_node_modules_as_deno_resolves_them() {
    let (_dir, main) = project(
        r#"
import { greet, version, kind } from "cjs-named";
import cjs from "npm:cjs-named@^1";
import { condition } from "cond-esm";
import { sub } from "cond-esm/sub";
import { scoped } from "@scope/pkg";
import other from "needs-other";
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const required = require("cond-esm");
console.log(JSON.stringify({
  named: [greet("deno"), version, kind],
  default: cjs.greet("default"),
  condition,
  sub,
  scoped,
  other: [other.twice("x"), other.joined],
  required: required.condition,
  createRequire: require("cjs-named").greet("require"),
}));
"#,
    );
    let out = json_of(&run_main(&main, &[]));
    assert_eq!(
        out,
        json!({
            "named": ["hello deno", "1.4.2", "cjs"],
            "default": "hello default",
            "condition": "deno",
            "sub": "sub+internal",
            "scoped": "@scope/pkg",
            "other": ["hello x!", "a/b"],
            "required": "node+require",
            "createRequire": "hello require",
        })
    );
}

#[test]
fn a_version_mismatch_names_both_versions() {
    let (_dir, main) = project(r#"import { greet } from "npm:cjs-named@2"; console.log(greet("x"));"#);
    let run = run_main(&main, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("cjs-named 1.4.2 is installed") && run.stderr.contains("does not satisfy 2"),
        "{run:?}"
    );
    assert!(run.stderr.contains("main.ts"), "the importing file is named: {run:?}");
}

#[test]
fn npm_without_node_modules_says_to_run_npm_install() {
    let dir = temp_dir();
    let main = write(dir.path(), "main.ts", r#"import { z } from "npm:zod"; console.log(z);"#);
    let run = run_main(&main, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("zod") && run.stderr.contains("npm install"), "{run:?}");
}

#[test]
fn a_path_a_package_does_not_export_is_refused_with_the_package_named() {
    let (_dir, main) = project(r#"import { hidden } from "cond-esm/lib/hidden.js"; console.log(hidden);"#);
    let run = run_main(&main, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("cond-esm") && run.stderr.contains("./lib/hidden.js"), "{run:?}");
    assert!(run.stderr.contains("main.ts"), "the importing file is named: {run:?}");
}

#[test]
fn typescript_inside_node_modules_is_refused_as_deno_refuses_it() {
    let (_dir, main) = project(r#"import { typed } from "ts-inside"; console.log(typed);"#);
    let run = run_main(&main, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("node_modules/ts-inside/index.ts"), "{run:?}");
    assert!(run.stderr.contains("Stripping types is currently unsupported"), "{run:?}");
    assert!(run.stderr.contains("main.ts"), "the importing file is named: {run:?}");
}

#[test]
fn a_packages_file_reads_need_the_workers_read_permission() {
    let source = r#"
import { read } from "reads-files";
try {
  console.log(JSON.stringify({ read: read(new URL("./package.json", import.meta.url).pathname).length > 0 }));
} catch (e) {
  console.log(JSON.stringify({ error: e.constructor.name, message: e.message }));
}
"#;
    let (dir, main) = project(source);
    let out = json_of(&run_main(&main, &[]));
    assert_eq!(out["error"], "NotCapable", "{out}");
    assert!(out["message"].as_str().unwrap().contains("package.json"), "{out}");
    let allowed = format!("--allow-read={}", dir.path().display());
    let out = json_of(&run_main(&main, &[&allowed]));
    assert_eq!(out, json!({ "read": true }));
}
