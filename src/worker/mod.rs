//! The worker runtime: one module running in a deno_runtime `MainWorker`, on a thread of its
//! own with a current-thread tokio runtime, started from the snapshot made by `build.rs`.
//! Its limits (`limits`), its inspector (`inspector`) and why it ended (`exit`) are
//! submodules.

pub mod exit;
pub mod inspector;
pub mod limits;
pub mod stop;

use std::rc::Rc;

use anyhow::Context;
use std::sync::Arc;

use deno_resolver::npm::{DenoInNpmPackageChecker, NpmResolver};
use deno_runtime::deno_core::error::{CoreError, CoreErrorKind};
use deno_runtime::deno_core::{JsRuntime, ModuleSpecifier};
use deno_runtime::deno_inspector_server::InspectorServer;
use deno_runtime::deno_io::Stdio;
use deno_runtime::deno_os::{WatcherExitHandle, WatcherExited};
use deno_runtime::deno_permissions::PermissionsContainer;
use deno_runtime::fmt_errors::format_js_error;
use deno_runtime::worker::{MainWorker, WorkerOptions, WorkerServiceOptions};
use deno_runtime::{BootstrapOptions, FeatureChecker, WorkerExecutionMode};
use sys_traits::impls::RealSys;

pub use self::exit::{Exit, Reason};
pub use self::limits::Limits;
pub use self::stop::StopHandle;
use crate::code_cache::CodeCache;
use crate::flags::{DenoFlags, InspectMode};
use crate::loader::{Loader, Provenance};
use crate::npm::Project;
use crate::remote::{denorun_dir, RemoteModules};

/// The startup snapshot every worker starts from: deno_runtime's JavaScript and denorun's
/// extension (`crate::snapshot_extensions`), evaluated by the binary's build script, and the
/// lazily loaded runtime sources the snapshot does not hold, by specifier.
#[derive(Clone, Copy)]
pub struct Snapshot {
    pub bytes: &'static [u8],
    pub lazy_js: &'static [(&'static str, &'static str)],
    pub lazy_esm: &'static [(&'static str, &'static str)],
}

static SNAPSHOT: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();

/// Sets the snapshot workers start from; the binary calls it first of all.
pub fn use_snapshot(snapshot: Snapshot) {
    let _ = SNAPSHOT.set(snapshot);
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything needed to run one worker.
pub struct WorkerSpec {
    /// What logs and the inspector call this worker: its key, or the script for `denorun run`.
    pub name: String,
    pub main_module: ModuleSpecifier,
    /// `Deno.args`.
    pub args: Vec<String>,
    pub flags: DenoFlags,
    pub permissions: PermissionsContainer,
    pub stdio: Stdio,
    pub limits: Limits,
    /// What is done with the module once it is loaded.
    pub mode: Mode,
    /// Where its code may come from and which bytes it must have.
    pub provenance: Provenance,
    /// Its live numbers (requests, heap), when they are kept: supervised, or `--metrics`.
    pub stats: Option<Arc<crate::metrics::WorkerStats>>,
    /// The Redis its handler loop uses, when not the process's `REDIS_URL` (a worker that
    /// `denorun:testing` runs).
    pub redis_url: Option<String>,
    /// Under `--watch`: where the local files of its module graph are noted as they are read.
    pub watched: Option<crate::watch::ModuleFiles>,
}

/// What a worker does with its main module.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `denorun run`: the module runs as it is.
    Script,
    /// A worker named by a key: a default-exported handler is served (`ops/01_handler.js`).
    Worker,
    /// `denorun test`: its `Deno.test`s run (`ops/02_test.js`) and report to the command.
    Test(Arc<crate::test_report::TestRun>),
}

/// Sets the process-wide V8 options (flags, seed) and starts V8. Call once, before the first
/// worker.
pub fn init_engine(flags: &DenoFlags) -> anyhow::Result<()> {
    let mut v8_flags = vec!["denorun".to_string()];
    v8_flags.extend(flags.v8_flags.iter().cloned());
    if let Some(seed) = flags.seed {
        v8_flags.push(format!("--random-seed={seed}"));
    }
    let unknown: Vec<String> = deno_runtime::deno_core::v8_set_flags(v8_flags).into_iter().skip(1).collect();
    if !unknown.is_empty() {
        anyhow::bail!("unknown V8 flags in --v8-flags: {}; `--v8-flags=--help` lists V8's flags", unknown.join(" "));
    }
    JsRuntime::init_platform(None);
    Ok(())
}

/// Starts a worker on a thread named after it (the inspector shows that name). When the
/// worker ends, even by a panic in the runtime (e.g. `new Worker()`, which denorun does not
/// offer), the thread calls `done` with how it ended, and returns that.
pub fn spawn(
    spec: WorkerSpec,
    stop: StopHandle,
    done: impl FnOnce(&Exit) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Exit>> {
    std::thread::Builder::new().name(spec.name.clone()).stack_size(8 << 20).spawn(move || {
        let name = spec.name.clone();
        let runtime =
            std::panic::AssertUnwindSafe(|| deno_runtime::tokio_util::create_and_run_current_thread(run(spec, stop)));
        let exit = std::panic::catch_unwind(runtime).unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown");
            log::error!("{name}: the worker's runtime panicked: {reason}");
            Exit::new(Reason::Uncaught(format!("the runtime panicked: {reason}")))
        });
        done(&exit);
        exit
    })
}

/// Runs one worker on its own thread and waits for it: `denorun <key>` and `denorun run`.
/// An uncaught error is printed as `deno run` prints it; the exit code is the worker's.
pub fn run_to_end(spec: WorkerSpec) -> i32 {
    let name = spec.name.clone();
    match spawn(spec, StopHandle::default(), |_| {}).map(|t| t.join()) {
        Ok(Ok(exit)) => {
            report(&name, &exit);
            exit.reason.code()
        }
        Ok(Err(_)) => 1, // a panic after the worker ended; already reported
        Err(e) => {
            log::error!("{name}: cannot start a worker thread: {e}");
            1
        }
    }
}

/// Says how a worker that ran alone ended, when something went wrong: an uncaught error as
/// `deno run` prints it, else the reason.
pub fn report(name: &str, exit: &Exit) {
    match (&exit.report, &exit.reason) {
        (Some(report), _) => eprintln!("error: {report}"),
        (None, Reason::StartFailed(message)) => log::error!("{name}: {message}"),
        (None, Reason::Memory { .. } | Reason::Cpu { .. } | Reason::Timeout { .. }) => {
            log::error!("{name}: {}", exit.reason)
        }
        _ => {}
    }
}

/// Loads a worker's module graph without running it (`denorun lock`): each static import is
/// resolved, fetched and checked as a run would, and nothing is evaluated. Also `--watch`'s
/// check of a changed graph.
pub fn load_graph(spec: WorkerSpec) -> anyhow::Result<()> {
    deno_runtime::tokio_util::create_and_run_current_thread(async move {
        let (mut worker, _server) = create(&spec).await?;
        worker.preload_main_module(&spec.main_module).await.map_err(|e| anyhow::anyhow!(format_error(&e)))?;
        Ok(())
    })
}

/// Runs a worker to its end: `Deno.exit(n)` gives n, an uncaught error gives its report,
/// and a stop request, the heap guard or the watchdog end it where it is.
pub async fn run(spec: WorkerSpec, stop: StopHandle) -> Exit {
    let (mut worker, server) = match create(&spec).await {
        Ok(created) => created,
        Err(e) => return Exit::new(Reason::StartFailed(format!("{e:#}"))),
    };
    stop.attach(worker.js_runtime.v8_isolate().thread_safe_handle());
    // Ops may end their worker too (a handler request far past its time-out).
    worker.js_runtime.op_state().borrow_mut().put(stop.clone());
    limits::install_heap_guard(&mut worker.js_runtime, &spec.limits, &stop);
    if let (Some(server), Some(inspect)) = (&server, spec.flags.inspect) {
        inspector::register(server, &mut worker, &spec.main_module, inspect.mode);
    }
    let inspecting = spec.flags.inspect.is_some();
    let result = {
        let (execution, _watchdog) =
            limits::Watchdog::watch(execute(&mut worker, &spec, inspecting), spec.limits.max_block, &stop);
        tokio::select! {
            result = execution => Some(result),
            _ = stop.requested() => None,
        }
    };
    let state = worker.js_runtime.op_state();
    let exited = state.borrow().try_borrow::<WatcherExited>().is_some();
    let redis_lost = state.borrow().try_borrow::<exit::RedisLost>().map(|lost| lost.0.clone());
    let exit = match (stop.reason(), result) {
        (Some(reason), _) => Exit::new(reason),
        _ if exited => Exit::new(Reason::Exited(worker.exit_code())),
        (None, None) => Exit::new(Reason::Stopped),
        (None, Some(Ok(code))) => Exit::new(Reason::Exited(code)),
        (None, Some(Err(e))) => {
            let report = format_error(&e);
            let place = match e.as_kind() {
                CoreErrorKind::Js(js_error) => thrown_at(js_error),
                _ => exit::place_in_text(&report),
            };
            let reason = match redis_lost {
                Some(lost) => Reason::RedisLost(lost),
                None => Reason::Uncaught(exit::headline(&report, place.as_deref())),
            };
            Exit { reason, report: Some(report) }
        }
    };
    drop(worker);
    drop(server);
    exit
}

async fn create(spec: &WorkerSpec) -> anyhow::Result<(MainWorker, Option<Arc<InspectorServer>>)> {
    let snapshot = SNAPSHOT.get().expect("the binary sets the startup snapshot before any worker starts");
    let server = inspector::bind(spec.flags.inspect)?;
    let remote = RemoteModules::new(spec.flags.reload)?;
    let code_cache = (!spec.flags.no_code_cache).then(|| CodeCache::new(denorun_dir().join("code_cache")));
    let config =
        spec.flags.config.as_ref().map(|file| std::env::current_dir().map(|cwd| cwd.join(file))).transpose()?;
    let project = Project::discover(&spec.main_module, config.as_deref())
        .await
        .with_context(|| format!("finding the project of {} (its deno.json and package.json)", spec.main_module))?
        .map(Rc::new);
    let node_services = project.as_ref().map(|project| project.node_services(spec.provenance.origins.clone()));
    let has_node_modules_dir = project.as_ref().is_some_and(|project| project.has_node_modules_dir());
    let (permissions, provenance, watched) = (spec.permissions.clone(), spec.provenance.clone(), spec.watched.clone());
    let loader = Loader::new(remote, permissions, provenance, code_cache, project, watched)?;
    let services = WorkerServiceOptions::<DenoInNpmPackageChecker, NpmResolver<RealSys>, RealSys> {
        blob_store: deno_runtime::deno_web::BlobStore::default_arc(),
        broadcast_channel: Default::default(),
        deno_rt_native_addon_loader: None,
        feature_checker: Arc::new(FeatureChecker::default()),
        fs: Arc::new(deno_runtime::deno_fs::RealFs),
        module_loader: Rc::new(loader),
        node_services,
        npm_process_state_provider: None,
        permissions: spec.permissions.clone(),
        root_cert_store_provider: None,
        fetch_dns_resolver: Default::default(),
        shared_array_buffer_store: None,
        compiled_wasm_module_store: None,
        v8_code_cache: None,
        bundle_provider: None,
    };
    let inspect = spec.flags.inspect.map(|i| i.mode);
    let options = WorkerOptions {
        bootstrap: BootstrapOptions {
            args: spec.args.clone(),
            mode: WorkerExecutionMode::Run,
            inspect: inspect.is_some(),
            user_agent: format!("denorun/{VERSION}"),
            deno_version: VERSION.to_string(),
            has_node_modules_dir,
            ..Default::default()
        },
        extensions: vec![crate::ops::denorun::init(
            inspect.is_some(),
            spec.stats.clone(),
            spec.mode.test_run(),
            spec.redis_url.clone(),
        )],
        startup_snapshot: Some(snapshot.bytes),
        residual_lazy_js_sources: snapshot.lazy_js,
        residual_lazy_esm_sources: snapshot.lazy_esm,
        // Every op, denorun's too, is bound in the snapshot already.
        skip_op_registration: true,
        seed: spec.flags.seed,
        should_break_on_first_statement: inspect == Some(InspectMode::Break),
        should_wait_for_inspector_session: inspect == Some(InspectMode::Wait),
        stdio: spec.stdio.clone(),
        create_params: spec.limits.create_params(),
        // Permission-checking ops then tell the audit log where in the worker's code they are.
        enable_stack_trace_arg_in_ops: crate::audit::enabled(),
        ..Default::default()
    };
    let mut worker = MainWorker::bootstrap_from_options(&spec.main_module, services, options);
    // What the extension's JavaScript could not do in the snapshot: this worker's heap samples,
    // and the inspector's console wrap when it has --inspect.
    worker.js_runtime.execute_script("ext:denorun/start.js", "globalThis[Symbol.for(\"denorun.start\")]();")?;
    if crate::audit::enabled() {
        worker.js_runtime.op_state().borrow_mut().op_stack_trace_callback = Some(crate::audit::stack_trace_callback());
    }
    // `Deno.exit(n)` ends this worker (not the whole process) and cannot be caught in JS.
    let isolate = worker.js_runtime.v8_isolate().thread_safe_handle();
    worker.js_runtime.op_state().borrow_mut().put(WatcherExitHandle(isolate));
    Ok((worker, server))
}

impl Mode {
    fn test_run(&self) -> Option<Arc<crate::test_report::TestRun>> {
        match self {
            Mode::Test(run) => Some(run.clone()),
            _ => None,
        }
    }
}

/// Runs the main module and the event loop, with the load/unload events `deno run` sends.
/// A worker whose module's default export has a `request` function is then served as a
/// handler worker; a test module's tests then run; any other module runs as it is.
async fn execute(worker: &mut MainWorker, spec: &WorkerSpec, inspecting: bool) -> Result<i32, CoreError> {
    let main = &spec.main_module;
    let json = |value: &str| serde_json::to_string(value).expect("a string");
    if let Mode::Test(_) = &spec.mode {
        worker
            .js_runtime
            .execute_script("ext:denorun/test.js", "globalThis[Symbol.for(\"denorun.test\")].install();")?;
    }
    worker.execute_main_module(main).await?;
    match &spec.mode {
        Mode::Script => {}
        Mode::Worker => {
            let serve = format!("globalThis[Symbol.for(\"denorun.serve\")]({});", json(main.as_str()));
            worker.js_runtime.execute_script("ext:denorun/serve.js", serve)?;
        }
        Mode::Test(run) => {
            let filter = run.filter.as_deref().map_or("null".to_string(), json);
            let start = format!(
                "globalThis[Symbol.for(\"denorun.test\")].run({}, {}, {filter});",
                json(&run.display),
                json(&run.cwd)
            );
            worker.js_runtime.execute_script("ext:denorun/test.js", start)?;
        }
    }
    worker.dispatch_load_event()?;
    loop {
        worker.run_event_loop(inspecting).await?;
        if !worker.dispatch_beforeunload_event()? && !worker.dispatch_process_beforeexit_event()? {
            break;
        }
    }
    worker.dispatch_unload_event()?;
    worker.dispatch_process_exit_event()?;
    Ok(worker.exit_code())
}

/// Where an uncaught JavaScript error was thrown: its first stack frame outside deno_runtime's
/// own code (`ext:`), as `url:line:column`.
fn thrown_at(error: &deno_core::error::JsError) -> Option<String> {
    error.frames.iter().find_map(|frame| {
        let file = frame.file_name.as_deref().filter(|file| !file.starts_with("ext:"))?;
        Some(format!("{file}:{}:{}", frame.line_number?, frame.column_number?))
    })
}

/// An error the way `deno run` prints it after `error: ` (`Uncaught ...` with the stack).
fn format_error(error: &CoreError) -> String {
    match error.as_kind() {
        CoreErrorKind::Js(js_error) => format_js_error(js_error, None),
        _ => error.to_string(),
    }
}
