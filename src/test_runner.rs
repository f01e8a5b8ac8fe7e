//! `denorun test [FLAGS] [PATHS]... [--filter TEXT]`: finds test files, runs each in a worker
//! of its own (its `Deno.test`s, `ops/02_test.js`), and prints what `deno test` prints after
//! them: the errors, the failures and the summary line. Exit code 1 when a test failed or
//! `only` was used. With `--watch`, it then waits for a change to a local file a test file's
//! graph read, finds the test files again, and runs those whose graphs read it (and new ones),
//! until it is ended.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deno_runtime::deno_core::ModuleSpecifier;

use crate::flags::DenoFlags;
use crate::loader::Provenance;
use crate::lock::Lock;
use crate::permissions;
use crate::test_report::{FileReport, Harness, Spawned, TestRun};
use crate::watch::{describe, ModuleFiles, Watcher};
use crate::worker::{self, Limits, Mode, WorkerSpec};

const SUFFIXES: [&str; 6] = [".ts", ".js", ".mjs", ".mts", ".tsx", ".jsx"];

/// Whether a file name is a test file's: `x_test.ts`, `x.test.ts`, `test.ts` (and the other
/// extensions), as `deno test` finds them.
pub fn is_test_file(name: &str) -> bool {
    SUFFIXES.iter().any(|ext| {
        name.strip_suffix(ext).is_some_and(|stem| stem == "test" || stem.ends_with("_test") || stem.ends_with(".test"))
    })
}

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Options {
    flags: DenoFlags,
    paths: Vec<PathBuf>,
    filter: Option<String>,
    watch: bool,
}

/// The flags, paths, filter and `--watch` of the command line.
fn parse(argv: &[String]) -> anyhow::Result<Options> {
    let (mut flags, mut paths, mut filter, mut watch) = (DenoFlags::default(), Vec::new(), None, false);
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "--watch" {
            watch = true;
        } else if arg == "--filter" {
            filter = Some(args.next().ok_or_else(|| anyhow::anyhow!("--filter needs a text"))?.clone());
        } else if let Some(text) = arg.strip_prefix("--filter=") {
            filter = Some(text.to_string());
        } else if arg.starts_with('-') {
            flags.apply(arg)?;
        } else {
            paths.push(PathBuf::from(arg));
        }
    }
    Ok(Options { flags, paths, filter, watch })
}

/// The test files under `paths` (files as given, directories searched), sorted, skipping
/// hidden directories and `node_modules`.
fn find(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && name != "node_modules" {
                    walk(&path, found)?;
                }
            } else if is_test_file(&name) {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    for path in paths {
        match path.is_dir() {
            true => walk(path, &mut found)?,
            false if path.is_file() => found.push(path.clone()),
            false => anyhow::bail!("{} does not exist", path.display()),
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// `./x_test.ts` for a file under the current directory, else its path.
fn display(path: &Path, cwd: &Path) -> String {
    match path.strip_prefix(cwd) {
        Ok(relative) => format!("./{}", relative.display()),
        Err(_) => path.display().to_string(),
    }
}

pub fn run(argv: &[String]) -> anyhow::Result<i32> {
    let Options { flags, paths, filter, watch } = parse(argv)?;
    let cwd = std::env::current_dir()?.canonicalize()?;
    let paths = if paths.is_empty() { vec![cwd.clone()] } else { paths };
    let files = find(&paths)?;
    if files.is_empty() {
        anyhow::bail!("no test modules found (*_test.ts, *.test.ts and the like) under the given paths");
    }
    let cwd_url = ModuleSpecifier::from_directory_path(&cwd).map_err(|_| anyhow::anyhow!("bad directory"))?;
    worker::init_engine(&flags)?;
    let run = Run { flags: &flags, filter: &filter, cwd: &cwd, cwd_url: &cwd_url };
    if !watch {
        return run.files(&files, None);
    }
    // Each test file's graph, as its last run read it.
    let mut graphs: HashMap<PathBuf, ModuleFiles> = HashMap::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut watcher = Watcher::new()?;
    let mut selected = files;
    loop {
        let watched: Vec<ModuleFiles> = selected.iter().map(|_| ModuleFiles::default()).collect();
        graphs.extend(selected.iter().cloned().zip(watched.iter().cloned()));
        // A file that is gone, or a graph that does not load, is reported; the watch goes on.
        if let Err(e) = run.files(&selected, Some(&watched)) {
            eprintln!("error: {e:#}");
        }
        let every = ModuleFiles::default();
        graphs.values().for_each(|graph| every.extend(graph));
        watcher.follow(&every);
        println!("Watcher Waiting for a change to {} file(s)...", every.len());
        let changed = runtime.block_on(watcher.changed(&every));
        let now = find(&paths).unwrap_or_default();
        graphs.retain(|file, _| now.contains(file));
        selected = now
            .into_iter()
            .filter(|file| graphs.get(file).is_none_or(|graph| graph.paths().iter().any(|p| changed.contains(p))))
            .collect();
        println!("Watcher {} changed; running {} test file(s) again", describe(&changed), selected.len());
    }
}

/// What every test file of a run shares.
struct Run<'a> {
    flags: &'a DenoFlags,
    filter: &'a Option<String>,
    cwd: &'a Path,
    cwd_url: &'a ModuleSpecifier,
}

impl Run<'_> {
    /// Runs test files, each in its own worker (its graph's files noted in `watched`, the
    /// same order), and prints the summary; returns the exit code.
    fn files(&self, files: &[PathBuf], watched: Option<&[ModuleFiles]>) -> anyhow::Result<i32> {
        let Run { flags, filter, cwd, cwd_url } = *self;
        let started = Instant::now();
        let mut total = FileReport::default();
        let mut unloaded = Vec::new();
        for (n, file) in files.iter().enumerate() {
            let Ok(file) = file.canonicalize() else {
                // Gone since it was found (a checkout under --watch).
                unloaded.push(display(file, cwd));
                continue;
            };
            let main_module = ModuleSpecifier::from_file_path(&file).map_err(|_| anyhow::anyhow!("bad path"))?;
            let test = Arc::new(TestRun {
                display: display(&file, cwd),
                cwd: cwd_url.to_string(),
                filter: filter.clone(),
                report: Default::default(),
                harness: Arc::new(WorkerHarness),
            });
            let spec = WorkerSpec {
                name: test.display.clone(),
                main_module,
                args: Vec::new(),
                flags: flags.clone(),
                permissions: permissions::build(flags, None)?,
                stdio: Default::default(),
                limits: Limits::NONE,
                mode: Mode::Test(test.clone()),
                provenance: Provenance { locks: Lock::from_flags(flags)?, ..Default::default() },
                stats: None,
                redis_url: None,
                watched: watched.map(|graphs| graphs[n].clone()),
            };
            worker::run_to_end(spec);
            let report = test.report.lock().unwrap_or_else(|e| e.into_inner()).take();
            match report {
                Some(report) => add(&mut total, report),
                None => unloaded.push(test.display.clone()),
            }
        }
        print!("{}", summary(&total, &unloaded, started.elapsed()));
        let failed = total.failed > 0 || !unloaded.is_empty();
        if failed {
            eprintln!("error: Test failed");
        } else if total.used_only {
            eprintln!("error: Test failed because the \"only\" option was used");
        }
        Ok(i32::from(failed || total.used_only))
    }
}

fn add(total: &mut FileReport, file: FileReport) {
    total.passed += file.passed;
    total.failed += file.failed;
    total.ignored += file.ignored;
    total.filtered_out += file.filtered_out;
    total.passed_steps += file.passed_steps;
    total.failed_steps += file.failed_steps;
    total.ignored_steps += file.ignored_steps;
    total.used_only |= file.used_only;
    total.failures.extend(file.failures);
}

/// ERRORS, FAILURES and the summary line, as `deno test` prints them (without colours).
pub fn summary(total: &FileReport, unloaded: &[String], took: Duration) -> String {
    let mut out = String::new();
    if !total.failures.is_empty() {
        out.push_str("\n ERRORS \n\n");
        for failure in &total.failures {
            let error = failure.error.strip_prefix("Uncaught ").unwrap_or(&failure.error);
            out.push_str(&format!("{} => {}\nerror: {error}\n\n", failure.name, failure.origin));
        }
        out.push_str(" FAILURES \n\n");
        for failure in &total.failures {
            out.push_str(&format!("{} => {}\n", failure.name, failure.origin));
        }
    }
    for file in unloaded {
        out.push_str(&format!("\n{file} could not be loaded (see the error above)\n"));
    }
    let steps = |n: usize| if n > 0 { format!(" ({n} step{})", if n == 1 { "" } else { "s" }) } else { String::new() };
    let failed = total.failed + unloaded.len();
    let mut line = format!(
        "{} | {} passed{} | {} failed{}",
        if failed > 0 { "FAILED" } else { "ok" },
        total.passed,
        steps(total.passed_steps),
        failed,
        steps(total.failed_steps)
    );
    if total.ignored > 0 {
        line.push_str(&format!(" | {} ignored{}", total.ignored, steps(total.ignored_steps)));
    }
    if total.filtered_out > 0 {
        line.push_str(&format!(" | {} filtered out", total.filtered_out));
    }
    out.push_str(&format!("\n{line} ({}ms)\n\n", took.as_millis()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_are_named_as_deno_finds_them() {
        for yes in ["a_test.ts", "a.test.ts", "test.ts", "b_test.mjs", "c.test.tsx"] {
            assert!(is_test_file(yes), "{yes}");
        }
        for no in ["a.ts", "atest.ts", "a_test.json", "a_tests.ts", "test_a.ts"] {
            assert!(!is_test_file(no), "{no}");
        }
    }

    #[test]
    fn the_command_line_takes_watch_and_filter_among_flags_and_paths() {
        let argv: Vec<String> =
            ["--allow-read", "--watch", "a_test.ts", "--filter", "adds", "dir"].map(String::from).into();
        let options = parse(&argv).unwrap();
        assert!(options.watch && options.flags.permissions.allow_read == Some(vec![]));
        assert_eq!(options.paths, [PathBuf::from("a_test.ts"), PathBuf::from("dir")]);
        assert_eq!(options.filter.as_deref(), Some("adds"));
        assert!(!parse(&["x_test.ts".to_string()]).unwrap().watch);
    }

    #[test]
    fn the_summary_counts_like_deno_test() {
        let ok = FileReport { passed: 2, ..Default::default() };
        assert_eq!(summary(&ok, &[], Duration::from_millis(5)), "\nok | 2 passed | 0 failed (5ms)\n\n");
        let mixed = FileReport {
            passed: 4,
            failed: 2,
            ignored: 1,
            filtered_out: 1,
            passed_steps: 2,
            failed_steps: 1,
            ..Default::default()
        };
        assert_eq!(
            summary(&mixed, &[], Duration::from_millis(148)),
            "\nFAILED | 4 passed (2 steps) | 2 failed (1 step) | 1 ignored | 1 filtered out (148ms)\n\n"
        );
    }
}

/// The `denorun:testing` harness's workers: each runs as `denorun <key>` would, on the test
/// file's throwaway Redis, in this process.
#[derive(Debug)]
struct WorkerHarness;

impl Harness for WorkerHarness {
    fn spawn(
        &self,
        url: String,
        key: String,
        stdio: deno_runtime::deno_io::Stdio,
    ) -> futures::future::LocalBoxFuture<'static, anyhow::Result<Spawned>> {
        Box::pin(async move {
            let redis = crate::config::RedisTarget::parse(&url)?;
            let (config, _) = crate::config::load(&redis, &crate::keys::WorkerKey::parse(&key)?).await?;
            let trust = crate::spec::Trust::host_defaults()?;
            let limits = crate::spec::LimitDefaults::STANDARD;
            let host = crate::spec::Host { redis: &redis, limits, allow_remote_inspect: false, trust: &trust };
            let mut spec = crate::spec::assemble(&config, &host, stdio)?;
            spec.redis_url = Some(url);
            let permissions = spec.permissions.clone();
            let stop = worker::StopHandle::default();
            let (ended, receiver) = tokio::sync::oneshot::channel();
            worker::spawn(spec, stop.clone(), move |exit| {
                let _ = ended.send(exit.reason.to_string());
            })?;
            Ok(Spawned { stop, permissions, ended: receiver })
        })
    }
}
