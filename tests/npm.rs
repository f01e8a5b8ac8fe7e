//! Workers written for Deno 2: npm packages from the project's own `node_modules` (Deno's
//! BYONM), through `denorun run` and a worker named by its key. The packages are hand-written
//! fixtures (`tests/fixtures/npm`), so nothing here needs the network.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A copy of the fixture project in a temporary directory, with `main.ts` of `source`.
fn project(source: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = fixture_copy("npm");
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
fn an_import_map_does_not_redirect_the_built_in_modules() {
    let (_dir, main) = project(
        r#"import { connect } from "https://deno.land/x/redis/mod.ts"; console.log(JSON.stringify(typeof connect));"#,
    );
    assert_eq!(json_of(&run_main(&main, &[])), json!("function"));
}

#[test]
fn require_cannot_read_past_node_modules_with_dot_dot() {
    let (_dir, main) = project(
        r#"
import Module from "node:module";
const dir = new URL(".", import.meta.url).pathname;
let result = "read";
try {
  (Module as any)._extensions[".cjs"]({ _compile: () => {} }, dir + "node_modules/../package.json");
} catch (e) {
  result = (e as Error).constructor.name;
}
console.log(JSON.stringify(result));
"#,
    );
    assert_eq!(json_of(&run_main(&main, &[])), json!("NotCapable"));
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
    let mut audited = denorun(&["run", main.to_str().unwrap()]);
    audited.env("DENORUN_AUDIT", "1");
    let denied = run(audited, "");
    let out = json_of(&denied);
    assert_eq!(out["error"], "NotCapable", "{out}");
    assert!(out["message"].as_str().unwrap().contains("package.json"), "{out}");
    // The audit line names the package whose code asked, and its line.
    let line: Value = denied
        .stderr
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no audit line: {denied:?}"));
    assert_eq!(
        (&line["event"], &line["kind"], &line["package"]),
        (&json!("denied"), &json!("read"), &json!("reads-files"))
    );
    assert!(line["module"].as_str().unwrap().ends_with("node_modules/reads-files/index.js"), "{line}");
    let allowed = format!("--allow-read={}", dir.path().display());
    let out = json_of(&run_main(&main, &[&allowed]));
    assert_eq!(out, json!({ "read": true }));
}

/// A module using the project's `deno.json`: an alias, a prefix, an `npm:` mapping and a scope.
const IMPORT_MAP_MAIN: &str = r#"
import { greeting } from "greeting";
import { twice } from "@/util.ts";
import { greet } from "cjs";
import { scoped } from "./scoped/mod.ts";
console.log(JSON.stringify({ greeting: greeting("map"), twice: twice("ab"), cjs: greet("alias"), scoped }));
"#;

#[test]
fn deno_json_imports_and_scopes_resolve_as_under_deno() {
    let (dir, main) = project(IMPORT_MAP_MAIN);
    let ours = json_of(&run_main(&main, &[]));
    assert_eq!(
        ours,
        json!({ "greeting": "hello map", "twice": "abab", "cjs": "hello alias", "scoped": "HELLO SCOPE" })
    );
    let deno = std::process::Command::new(deno_cli())
        .args(["run", "--node-modules-dir=manual", "main.ts"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(deno.status.success(), "{}", String::from_utf8_lossy(&deno.stderr));
    let theirs: Value = serde_json::from_slice(&deno.stdout).unwrap();
    assert_eq!(ours, theirs, "Deno 2.9.6 resolves the same module the same way");
}

#[test]
fn a_config_the_worker_names_replaces_the_one_found() {
    let (dir, main) = project(IMPORT_MAP_MAIN);
    let mut cmd = denorun(&["run", "--config=alt.json", main.to_str().unwrap()]);
    cmd.current_dir(dir.path());
    assert_eq!(json_of(&run(cmd, ""))["greeting"], "alt map");
    // In a worker hash, `denoConfig` is relative to the worker's module.
    let key = local_worker(dir.path(), IMPORT_MAP_MAIN, &[("denoConfig", "alt.json")]);
    let out = json_of(&run(denorun(&[&key]), ""));
    assert_eq!(out["greeting"], "alt map", "{out}");
    let key = local_worker(dir.path(), IMPORT_MAP_MAIN, &[("denoConfig", "missing.json")]);
    let failed = run(denorun(&[&key]), "");
    assert_ne!(failed.code, 0, "{failed:?}");
    assert!(failed.stderr.contains("missing.json"), "{failed:?}");
}

#[test]
fn denorun_test_resolves_through_the_projects_import_map() {
    let (dir, _main) = project("");
    let test = write(
        dir.path(),
        "alias_test.ts",
        r#"import { greeting } from "greeting";
import { greet } from "cjs";
Deno.test("the alias and the npm mapping", () => {
  if (greeting("t") !== "hello t" || greet("t") !== "hello t") throw new Error("wrong module");
});
"#,
    );
    let mut cmd = denorun(&["test", test.to_str().unwrap()]);
    cmd.current_dir(dir.path());
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("the alias and the npm mapping ... ok"), "{out:?}");
}

/// `npm install [packages]` in `dir`; fails, saying so, when npm or its registry cannot be
/// reached.
fn npm_install(dir: &Path, packages: &[&str]) {
    let install = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .args(packages)
        .current_dir(dir)
        .output();
    match install {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            panic!("npm install failed; this test needs the npm registry: {}", String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => panic!("cannot run npm ({e}); this test needs Node.js's npm and its registry"),
    }
}

/// A project with real packages from the npm registry (`npm install`, once per run): zod,
/// date-fns, lodash and ioredis. Fails, saying so, when npm or its registry cannot be reached.
fn real_packages() -> &'static Path {
    static PROJECT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    PROJECT
        .get_or_init(|| {
            let dir = temp_dir();
            write(dir.path(), "package.json", r#"{ "name": "real-npm-worker", "private": true, "type": "module" }"#);
            npm_install(dir.path(), &["zod@4", "date-fns@4", "lodash@4", "ioredis@5"]);
            dir
        })
        .path()
}

const ORDERS: &str = r#"
import { z } from "npm:zod@4";
import { format } from "date-fns";
import _ from "lodash";
import Redis from "ioredis";

const Order = z.object({ id: z.string(), qty: z.number().int().positive() });
const redis = new Redis(Deno.env.get("REDIS_URL")!);

export default {
  async request(req: any) {
    const order = Order.safeParse(req.data);
    if (!order.success) return { code: 400, issues: order.error.issues.map((i) => i.path.join(".")) };
    const count = await redis.incr(`orders:count:${order.data.id}`);
    return {
      code: 200,
      day: format(new Date(2026, 11, 7), "yyyy-MM-dd"),
      chunks: _.chunk([1, 2, 3], 2),
      count,
    };
  },
};
"#;

#[test]
fn a_handler_worker_serves_with_zod_date_fns_lodash_and_ioredis_from_npm() {
    use redis::Commands;
    let dir = real_packages();
    let db = 1;
    let mut c = redis().db(db);
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let path = write(dir, "orders.ts", ORDERS);
    let net = format!("--allow-env --allow-net=127.0.0.1:{}", redis().port);
    let fields = [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local"), ("denoOptions", net.as_str())];
    let _: () = c.hset_multiple("orders:1:h", &fields).unwrap();
    let mut cmd = denorun(&["orders:1:h"]);
    cmd.env("REDIS_URL", redis().db_url(db)).stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let worker = Killed::new(cmd.spawn().unwrap());
    let ask = |c: &mut redis::Connection, reference: &str, data: &str| -> Value {
        let _: String = c.xadd("orders:req:x", "*", &[("type", "orders"), ("ref", reference), ("data", data)]).unwrap();
        let popped: Option<(String, String)> = c.brpop(format!("res:{reference}"), 30.0).unwrap();
        serde_json::from_str(&popped.expect("a reply within 30 s").1).unwrap()
    };
    let ok = ask(&mut c, "o1", r#"{ "id": "a1", "qty": 3 }"#);
    assert_eq!(ok["code"], 200, "{ok}");
    assert_eq!((&ok["day"], &ok["chunks"], &ok["count"]), (&json!("2026-12-07"), &json!([[1, 2], [3]]), &json!(1)));
    let again = ask(&mut c, "o2", r#"{ "id": "a1", "qty": 1 }"#);
    assert_eq!(again["count"], 2, "ioredis counted in the same Redis: {again}");
    let refused = ask(&mut c, "o3", r#"{ "id": 7, "qty": -1 }"#);
    assert_eq!(refused, json!({ "code": 400, "issues": ["id", "qty"] }), "zod refused it");
    drop(worker);
}

/// The benchmark's worker for Node's ioredis (`bench/workers/ioredis-worker.mjs`), unchanged,
/// serves the demo's requests under denorun's supervisor.
#[test]
fn the_benchmarks_node_ioredis_worker_runs_unchanged() {
    let dir = real_packages();
    let worker = dir.join("ioredis-worker.mjs");
    std::fs::copy(Path::new(ROOT).join("bench/workers/ioredis-worker.mjs"), &worker).unwrap();
    let url = redis().db_url(2);
    common::demo::setup(&url, &worker, &[], 0);
    common::demo::add_worker(&url, "1", 0, &[("denoOptions", "--allow-env")]);
    let supervisor = common::demo::Supervisor::start(&url, &["--heartbeat", "0.3"]);
    for n in 0..5 {
        let reply = common::demo::request(&url, &format!("ioredis-{n}"));
        assert_eq!(reply["code"], 200, "{reply}");
        assert_eq!(reply["worker"]["workerKey"], "demo-worker:1:h", "{reply}");
    }
    drop(supervisor);
}

#[test]
fn denorun_new_npm_makes_a_worker_that_passes_its_tests_after_npm_install() {
    let root = temp_dir();
    let dir = root.path().join("orders");
    let made = run(denorun(&["new", "orders", "--npm", "--dir", dir.to_str().unwrap()]), "");
    assert_eq!(made.code, 0, "{made:?}");
    assert!(made.stdout.contains("npm install && denorun test"), "{made:?}");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("npm install"), "{readme}");
    let package: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    assert!(package["dependencies"]["zod"].is_string(), "{package}");
    // Before `npm install`, the error says what to do.
    let mut early = denorun(&["test"]);
    early.current_dir(&dir);
    let early = run(early, "");
    assert_ne!(early.code, 0, "{early:?}");
    assert!(early.stdout.contains("zod") || early.stderr.contains("zod"), "{early:?}");
    npm_install(&dir, &[]);
    let mut cmd = denorun(&["test"]);
    cmd.current_dir(&dir);
    let out = run(cmd, "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("greets by name ... ok"), "{out:?}");
}
