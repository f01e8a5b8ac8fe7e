//! `jsr:` packages through the JSR registry protocol, from a loopback registry that serves the
//! fixture packages (`tests/fixtures/jsr`: `@fixture/strings` in four versions, 1.2.0 yanked,
//! and `@fixture/greet`, which imports it). Deno 2.9.6, pointed at the same registry with
//! `JSR_URL`, is the oracle for what a worker gets and for what its lockfile holds.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const YANKED: &[&str] = &["@fixture/strings@1.2.0"];

fn sha256(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// What a JSR registry serves for the packages under `root` (`@scope/name/<version>/…`, each
/// version with a `deno.json` naming its exports): `meta.json`, `<version>_meta.json` with
/// the manifest's checksums, and the files.
fn registry_routes(root: &Path, yanked: &[&str]) -> HashMap<String, Response> {
    let mut routes = HashMap::new();
    for scope in std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()) {
        for package in std::fs::read_dir(&scope).unwrap().map(|e| e.unwrap().path()) {
            let name = format!(
                "{}/{}",
                scope.file_name().unwrap().to_str().unwrap(),
                package.file_name().unwrap().to_str().unwrap()
            );
            let mut versions = serde_json::Map::new();
            for dir in std::fs::read_dir(&package).unwrap().map(|e| e.unwrap().path()) {
                let version = dir.file_name().unwrap().to_str().unwrap().to_string();
                let mut manifest = serde_json::Map::new();
                for file in files_under(&dir) {
                    let bytes = std::fs::read(&file).unwrap();
                    let path = format!("/{}", file.strip_prefix(&dir).unwrap().to_str().unwrap());
                    manifest.insert(
                        path.clone(),
                        json!({"size": bytes.len(), "checksum": format!("sha256-{}", sha256(&bytes))}),
                    );
                    let body = String::from_utf8(bytes).unwrap();
                    routes.insert(format!("/{name}/{version}{path}"), Response::Body("application/typescript", body));
                }
                let config: Value =
                    serde_json::from_str(&std::fs::read_to_string(dir.join("deno.json")).unwrap()).unwrap();
                let meta = json!({"manifest": manifest, "exports": config["exports"]});
                routes.insert(
                    format!("/{name}/{version}_meta.json"),
                    Response::Body("application/json", meta.to_string()),
                );
                let is_yanked = yanked.contains(&format!("{name}@{version}").as_str());
                versions.insert(version, if is_yanked { json!({"yanked": true}) } else { json!({}) });
            }
            let meta = json!({"scope": &name[1..name.find('/').unwrap()], "name": package.file_name().unwrap().to_str().unwrap(), "versions": versions});
            routes.insert(format!("/{name}/meta.json"), Response::Body("application/json", meta.to_string()));
        }
    }
    routes
}

/// A loopback registry serving a copy of the fixture packages, which a test may add to.
struct Registry {
    server: HttpServer,
    packages: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let packages = fixture_copy("jsr");
        let server = HttpServer::start(registry_routes(packages.path(), YANKED));
        Registry { server, packages }
    }

    fn url(&self) -> String {
        self.server.url("/")
    }

    /// Publishes `@fixture/strings@<version>` (a copy of 1.1.0 that says its version).
    fn publish_strings(&self, version: &str) {
        let package = self.packages.path().join("@fixture/strings");
        let dir = package.join(version);
        let copied = Command::new("cp").arg("-r").arg(package.join("1.1.0")).arg(&dir).status().unwrap();
        assert!(copied.success());
        let module = std::fs::read_to_string(dir.join("mod.ts")).unwrap().replace("1.1.0", version);
        std::fs::write(dir.join("mod.ts"), module).unwrap();
        for (path, response) in registry_routes(self.packages.path(), YANKED) {
            self.server.set(&path, response);
        }
    }
}

/// A worker's directory with `main.ts` of `source`, and a module cache of its own.
struct Worker {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    main: PathBuf,
}

fn worker(source: &str) -> Worker {
    let dir = temp_dir();
    let main = write(dir.path(), "main.ts", source);
    Worker { dir, cache: temp_dir(), main }
}

impl Worker {
    /// `denorun run` of the worker against `registry`, with the import permission for it.
    fn denorun(&self, registry: &str, flags: &[&str]) -> Run {
        let host = registry.trim_start_matches("http://").trim_end_matches('/');
        let allow = format!("--allow-import={host}");
        let mut args = vec!["run", allow.as_str()];
        args.extend_from_slice(flags);
        args.push(self.main.to_str().unwrap());
        let mut cmd = denorun(&args);
        cmd.env("JSR_URL", registry).env("DENORUN_DIR", self.cache.path());
        run(cmd, "")
    }

    /// `deno <command>` (Deno 2.9.6) of the worker against `registry`, with a cache of its own.
    fn deno(&self, registry: &str, command: &[&str]) -> Run {
        let host = registry.trim_start_matches("http://").trim_end_matches('/');
        let mut cmd = Command::new(deno_cli());
        cmd.args(command)
            .arg(format!("--allow-import={host}"))
            .arg(&self.main)
            .current_dir(self.dir.path())
            .env("JSR_URL", registry)
            .env("DENO_DIR", self.dir.path().join(".deno"))
            .env("NO_COLOR", "1")
            .env_remove("DENO_NO_UPDATE_CHECK");
        run(cmd, "")
    }
}

fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// Ranges, exports, a subpath export, a package importing another, a yanked version passed
/// over unless nothing else is in range, and a range that an earlier choice satisfies sharing
/// that copy (greet's `^1.0.0` gets the 1.2.0 that `~1.2` chose): the same versions as under
/// Deno.
#[test]
fn jsr_packages_resolve_as_deno_resolves_them() {
    let registry = Registry::start();
    let worker = worker(
        r#"
import { greet } from "jsr:@fixture/greet@^1";
import { loud } from "jsr:@fixture/greet@1.0.0/loud";
import { version as newest } from "jsr:@fixture/strings@^2";
import { version as ones } from "jsr:@fixture/strings@^1.0";
import { pad } from "jsr:@fixture/strings@1/pad";
import { version as only_yanked } from "jsr:@fixture/strings@~1.2";
console.log(JSON.stringify({ greet: greet("deno"), loud: loud("x"), newest, ones, pad: pad("a", 3), only_yanked }));
"#,
    );
    let out = json_of(&worker.denorun(&registry.url(), &[]));
    assert_eq!(
        out,
        json!({
            "greet": "hello deno (strings 1.2.0)",
            "loud": "HELLO X (STRINGS 1.2.0)",
            "newest": "2.0.0",
            "ones": "1.1.0",
            "pad": "..a (strings 1.1.0)",
            "only_yanked": "1.2.0",
        })
    );
    assert_eq!(json_of(&worker.deno(&registry.url(), &["run"])), out, "Deno 2.9.6 resolves the same versions");
}

/// A `deno.json` import map may name JSR packages; the bare name then leads to the registry.
#[test]
fn an_import_map_entry_may_name_a_jsr_package() {
    let registry = Registry::start();
    let worker = worker(
        r#"
import { shout, version } from "strings";
import { pad } from "strings/pad";
import { assertEquals } from "@std/assert";
assertEquals(shout("a"), "A");
console.log(JSON.stringify({ version, pad: pad("b", 2) }));
"#,
    );
    write(
        worker.dir.path(),
        "deno.json",
        r#"{ "imports": { "strings": "jsr:@fixture/strings@^1.0.0", "@std/assert": "jsr:@std/assert@^1.0.0" } }"#,
    );
    let out = json_of(&worker.denorun(&registry.url(), &[]));
    assert_eq!(out, json!({"version": "1.1.0", "pad": ".b (strings 1.1.0)"}));
}

#[test]
fn a_second_start_with_the_registry_down_runs_from_the_cache() {
    let mut registry = Registry::start();
    let worker = worker(r#"import { greet } from "jsr:@fixture/greet"; console.log(greet("cached"));"#);
    let url = registry.url();
    let first = worker.denorun(&url, &[]);
    assert_eq!((first.code, first.stdout.as_str()), (0, "hello cached (strings 1.1.0)\n"), "{first:?}");
    registry.server.stop();
    let second = worker.denorun(&url, &[]);
    assert_eq!((second.code, second.stdout.as_str()), (0, "hello cached (strings 1.1.0)\n"), "{second:?}");
    // --reload asks the registry again; when it cannot be reached, the cache still serves.
    let reload = worker.denorun(&url, &["--reload"]);
    assert_eq!((reload.code, reload.stdout.as_str()), (0, "hello cached (strings 1.1.0)\n"), "{reload:?}");
    assert!(reload.stderr.contains("using the cached copy"), "{reload:?}");
}

#[test]
fn reload_sees_a_version_published_since_the_cache_was_filled() {
    let registry = Registry::start();
    let worker = worker(r#"import { version } from "jsr:@fixture/strings@^1"; console.log(version);"#);
    let url = registry.url();
    assert_eq!(worker.denorun(&url, &[]).stdout, "1.1.0\n");
    registry.publish_strings("1.3.0");
    let cached = worker.denorun(&url, &[]);
    assert_eq!(cached.stdout, "1.1.0\n", "the cached meta.json is used without asking: {cached:?}");
    let reloaded = worker.denorun(&url, &["--reload"]);
    assert_eq!((reloaded.code, reloaded.stdout.as_str()), (0, "1.3.0\n"), "{reloaded:?}");
}

/// A cached meta.json without a version in range is fetched again, as Deno does.
#[test]
fn a_range_the_cached_versions_miss_asks_the_registry_again() {
    let registry = Registry::start();
    let url = registry.url();
    let first = worker(r#"import { version } from "jsr:@fixture/strings@^1"; console.log(version);"#);
    assert_eq!(first.denorun(&url, &[]).stdout, "1.1.0\n");
    registry.publish_strings("3.0.0");
    let second = Worker {
        main: write(
            first.dir.path(),
            "three.ts",
            r#"import { version } from "jsr:@fixture/strings@^3"; console.log(version);"#,
        ),
        ..first
    };
    let run = second.denorun(&url, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "3.0.0\n"), "{run:?}");
}

#[test]
fn a_file_whose_bytes_are_not_the_manifests_is_refused() {
    let registry = Registry::start();
    let tampered = "export const version = 'evil';\nexport function shout(s: string) { return s; }\n";
    registry.server.set("/@fixture/strings/1.1.0/mod.ts", Response::Body("application/typescript", tampered.into()));
    // `pad` is intact; the package's own import of `../mod.ts` is checked as `pad` is.
    let worker = worker(r#"import { pad } from "jsr:@fixture/strings@^1/pad"; console.log(pad("x", 1));"#);
    let run = worker.denorun(&registry.url(), &[]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "{}@fixture/strings/1.1.0/mod.ts does not match the manifest of @fixture/strings@1.1.0",
            registry.url()
        )),
        "{run:?}"
    );
    assert!(run.stderr.contains(&format!("sha256-{}", sha256(tampered.as_bytes()))), "{run:?}");
    assert!(run.stderr.contains("/@fixture/strings/1.1.0/src/pad.ts"), "the importing file is named: {run:?}");
}

#[test]
fn errors_name_the_package_the_specifier_and_the_importing_file() {
    let registry = Registry::start();
    let cases = [
        (
            r#"import "jsr:@fixture/strings@^1/src/pad.ts";"#,
            "@fixture/strings@1.1.0 does not export ./src/pad.ts (it exports ., ./pad)",
        ),
        (r#"import "jsr:@fixture/strings@^4";"#, "no version of @fixture/strings on"),
        (r#"import "jsr:@fixture/strings@^4";"#, "satisfies ^4 (it has 1.0.0, 1.1.0, 1.2.0 (yanked), 2.0.0)"),
        (r#"import "jsr:@fixture/nothing";"#, "@fixture/nothing/meta.json: HTTP 404"),
        (r#"import "jsr:@fixture/strings@>=1 <2";"#, "is not a JSR specifier"),
    ];
    for (source, expected) in cases {
        let worker = worker(source);
        let run = worker.denorun(&registry.url(), &[]);
        assert_eq!(run.code, 1, "{source}: {run:?}");
        assert!(run.stderr.contains(expected), "{source}: {run:?}");
        assert!(run.stderr.contains(worker.main.to_str().unwrap()), "{source}: the importing file is named: {run:?}");
    }
}

/// Asking the registry is an import: without the import permission for its host, nothing is
/// sent to it.
#[test]
fn a_registry_the_worker_may_not_import_from_is_never_asked() {
    let registry = Registry::start();
    let worker = worker(r#"import { version } from "jsr:@fixture/strings@^1"; console.log(version);"#);
    let mut cmd = denorun(&["run", worker.main.to_str().unwrap()]);
    cmd.env("JSR_URL", registry.url()).env("DENORUN_DIR", worker.cache.path());
    let run = run(cmd, "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("Requires import access") && run.stderr.contains("--allow-import"), "{run:?}");
    assert!(run.stderr.contains("cannot import jsr:@fixture/strings@^1") && run.stderr.contains("main.ts"), "{run:?}");
    assert_eq!(registry.server.hits(), 0, "a refused import sends nothing");
}

/// `denorun lock` records what Deno's lockfile records (the version of each `jsr:` request
/// and each version's integrity); a frozen lock pins the versions and refuses a package that
/// changed at the registry, and a request it does not list.
#[test]
fn the_lockfile_pins_jsr_versions_and_refuses_a_changed_package() {
    let registry = Registry::start();
    let url = registry.url();
    let source = r#"import { greet } from "jsr:@fixture/greet@^1"; import { version } from "jsr:@fixture/strings@^1"; console.log(greet("lock"), version);"#;
    let worker = worker(source);
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let lock = worker.dir.path().join("deno.lock");
    let options = format!("--allow-import={host} --lock={}", lock.display());
    let key = local_worker(worker.dir.path(), source, &[("denoOptions", &options)]);
    let denorun = |args: &[&str]| {
        let mut cmd = denorun(args);
        cmd.env("JSR_URL", &url).env("DENORUN_DIR", worker.cache.path());
        run(cmd, "")
    };
    let locked = denorun(&["lock", &key]);
    assert_eq!(locked.code, 0, "{locked:?}");
    assert_eq!(locked.stdout, format!("{key}: 0 remote modules and 2 JSR packages locked in {}\n", lock.display()));
    let ours: Value = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();

    // Deno's own lockfile of the same graph holds the same specifiers and integrities.
    let deno_lock = worker.dir.path().join("deno-own.lock");
    let cached = worker.deno(&url, &["cache", &format!("--lock={}", deno_lock.display())]);
    assert_eq!(cached.code, 0, "{cached:?}");
    let theirs: Value = serde_json::from_str(&std::fs::read_to_string(&deno_lock).unwrap()).unwrap();
    assert_eq!(ours["specifiers"], theirs["specifiers"], "ours: {ours}\ntheirs: {theirs}");
    for (package, info) in theirs["jsr"].as_object().unwrap() {
        assert_eq!(ours["jsr"][package]["integrity"], info["integrity"], "{package}: ours: {ours}");
    }
    assert_eq!(ours["specifiers"]["jsr:@fixture/strings@1"], "1.1.0", "{ours}");

    let ok = denorun(&[&key]);
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "hello lock (strings 1.1.0) 1.1.0\n"), "{ok:?}");

    // A newer version in range: the lock keeps the worker on the one it pins.
    registry.publish_strings("1.3.0");
    let pinned = denorun(&[&key]);
    assert_eq!(pinned.stdout, "hello lock (strings 1.1.0) 1.1.0\n", "{pinned:?}");

    // The same version republished with other bytes is refused, whatever the cache holds.
    let republished = "export const version: string = \"1.1.0\";\nexport function shout(s: string) { return s; }\n";
    registry.server.set("/@fixture/strings/1.1.0/mod.ts", Response::Body("application/typescript", republished.into()));
    let mut routes = registry_routes(registry.packages.path(), YANKED);
    let meta = routes.remove("/@fixture/strings/1.1.0_meta.json").unwrap();
    let Response::Body(_, meta) = meta else { unreachable!() };
    let meta = meta.replace(
        &format!(
            "sha256-{}",
            sha256(&std::fs::read(registry.packages.path().join("@fixture/strings/1.1.0/mod.ts")).unwrap())
        ),
        &format!("sha256-{}", sha256(republished.as_bytes())),
    );
    registry.server.set("/@fixture/strings/1.1.0_meta.json", Response::Body("application/json", meta.clone()));
    let options = format!("{options} --reload");
    let _: () = redis().cmd(&["HSET", &key, "denoOptions", &options]);
    let changed = denorun(&[&key]);
    assert_eq!((changed.code, changed.stdout.as_str()), (1, ""), "{changed:?}");
    assert!(
        changed.stderr.contains("the JSR package @fixture/strings@1.1.0 does not match the lockfile"),
        "{changed:?}"
    );
    assert!(changed.stderr.contains(&sha256(meta.as_bytes())), "{changed:?}");

    // A request the lock does not list is refused before the registry is asked.
    let other = write(
        worker.dir.path(),
        "other.ts",
        r#"import { version } from "jsr:@fixture/strings@^2"; console.log(version);"#,
    );
    let _: () = redis().cmd(&["HSET", &key, "workerUrl", other.to_str().unwrap()]);
    let unlisted = denorun(&[&key]);
    assert_eq!(unlisted.code, 1, "{unlisted:?}");
    assert!(unlisted.stderr.contains("jsr:@fixture/strings@^2 is not in the lockfile"), "{unlisted:?}");
}

/// A `jsr:` name is a JSR name (`@scope/name`): `jsr:http:host` is refused before anything is
/// sent, and cannot reach a host the worker may not import from.
#[test]
fn a_jsr_specifier_cannot_lead_outside_the_registry() {
    let registry = Registry::start();
    let elsewhere = HttpServer::start(registry_routes(registry.packages.path(), &[]));
    let port = elsewhere.port;
    let worker = worker(&format!(
        r#"try {{ await import("jsr:http:127.0.0.1:{port}"); console.log("loaded"); }}
catch (e) {{ console.log((e as Error).message.split("\n")[0]); }}"#
    ));
    let run = worker.denorun(&registry.url(), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("is not a JSR specifier") && run.stdout.contains("not a JSR package name"), "{run:?}");
    assert_eq!(elsewhere.hits(), 0, "nothing is sent elsewhere");
}

/// A registry file imported by its URL is a plain remote module: a frozen lock checks it by its
/// `remote` digest, and a redirect into the registry must be in the lock as any redirect is.
#[test]
fn a_registry_file_imported_by_url_is_locked_as_a_remote_module() {
    let registry = Registry::start();
    let file = format!("{}@fixture/strings/1.1.0/mod.ts", registry.url());
    registry.server.set("/cdn/strings.ts", Response::Redirect(file.clone()));
    let source = std::fs::read(registry.packages.path().join("@fixture/strings/1.1.0/mod.ts")).unwrap();
    let worker = worker(&format!(r#"import {{ version }} from "{file}"; console.log(version);"#));
    let lock = write(
        worker.dir.path(),
        "deno.lock",
        &json!({"version": "5", "remote": {file.clone(): sha256(&source)}}).to_string(),
    );
    let flag = format!("--lock={}", lock.display());
    let direct = worker.denorun(&registry.url(), &[&flag]);
    assert_eq!((direct.code, direct.stdout.as_str()), (0, "1.1.0\n"), "{direct:?}");

    let redirected = Worker {
        main: write(worker.dir.path(), "cdn.ts", &format!(r#"import "{}";"#, registry.server.url("/cdn/strings.ts"))),
        ..worker
    };
    let refused = redirected.denorun(&registry.url(), &[&flag]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("which the lockfile") && refused.stderr.contains("does not record"), "{refused:?}");
}

/// A registry that accepts connections but never answers (a gray failure) holds no start for
/// good: with `--reload`, the fetch gives up and the cache serves.
#[test]
fn a_registry_that_never_answers_falls_back_to_the_cache() {
    let mut registry = Registry::start();
    let url = registry.url();
    let worker = worker(r#"import { version } from "jsr:@fixture/strings@^1"; console.log(version);"#);
    assert_eq!(worker.denorun(&url, &[]).stdout, "1.1.0\n");
    let port = registry.server.port;
    registry.server.stop();
    // The same port, now silent: connections are accepted and never answered.
    let silent = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(4) {
            open.push(stream);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_secs(40));
        drop(open);
    });
    let started = std::time::Instant::now();
    let reload = worker.denorun(&url, &["--reload"]);
    assert_eq!((reload.code, reload.stdout.as_str()), (0, "1.1.0\n"), "{reload:?}");
    assert!(
        reload.stderr.contains("no answer within 15 s") && reload.stderr.contains("using the cached copy"),
        "{reload:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
    drop(held);
}
