//! Ops for `denorun test` (`02_test.js`): a failure's error formatted as `deno test` prints
//! it, and a file's results handed back to the command; and the harness behind
//! `denorun:testing` (`js/denorun/testing.ts`): a throwaway redis-server per test file,
//! commands on it, and workers run in this process against it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use deno_core::{op2, v8, OpState};
use deno_error::JsErrorBox;

use crate::test_report::{FileReport, Spawned, TestRun};
use crate::topology::silence::{self, Deadline};

/// An error or thrown value as `deno test` prints it: message, source line, caret, stack.
#[op2]
#[string]
pub fn op_denorun_test_error<'s>(scope: &mut v8::PinScope<'s, '_>, error: v8::Local<'s, v8::Value>) -> String {
    let error = deno_core::error::JsError::from_v8_exception(scope, error);
    deno_runtime::fmt_errors::format_js_error(&error, None)
}

/// A file's results, at the end of its run.
#[op2]
pub fn op_denorun_test_report(state: &mut OpState, #[serde] report: FileReport) {
    if let Some(run) = state.try_borrow::<Arc<TestRun>>() {
        *run.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }
}

/// The throwaway redis-server of one test file's worker (`denorun:testing`), killed with it.
struct Throwaway {
    child: std::process::Child,
    url: String,
    conn: redis::aio::MultiplexedConnection,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn harness_error(message: impl std::fmt::Display) -> JsErrorBox {
    JsErrorBox::generic(format!("denorun:testing: {message}"))
}

fn under_test(state: &OpState) -> Result<(), JsErrorBox> {
    match state.has::<Arc<TestRun>>() {
        true => Ok(()),
        false => Err(harness_error("works under `denorun test` only")),
    }
}

/// Starts the test file's throwaway redis-server (once), and returns its URL.
#[op2]
#[string]
pub async fn op_denorun_testing_redis(state: Rc<RefCell<OpState>>) -> Result<String, JsErrorBox> {
    under_test(&state.borrow())?;
    if let Some(redis) = state.borrow().try_borrow::<Throwaway>() {
        return Ok(redis.url.clone());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(harness_error)?.port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            harness_error(format!("cannot start redis-server ({e}); install it (apt-get install redis-server)"))
        })?;
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).map_err(harness_error)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Each command has its own deadline (a BRPOP waits its own time-out), so none here.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let conn = loop {
        match client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(conn) => break conn,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => return Err(harness_error(format!("redis-server did not answer: {e}"))),
        }
    };
    state.borrow_mut().put(Throwaway { child, url: url.clone(), conn });
    Ok(url)
}

/// A command on the throwaway Redis (and no other): its reply as JSON (nil as null).
#[op2]
#[serde]
pub async fn op_denorun_testing_command(
    state: Rc<RefCell<OpState>>,
    #[serde] args: Vec<String>,
) -> Result<serde_json::Value, JsErrorBox> {
    let mut conn = state
        .borrow()
        .try_borrow::<Throwaway>()
        .map(|r| r.conn.clone())
        .ok_or_else(|| harness_error("no Redis yet: call withWorker (or redis()) first"))?;
    let mut cmd = redis::Cmd::new();
    for arg in &args {
        cmd.arg(arg);
    }
    let sent = cmd.query_async::<redis::Value>(&mut conn);
    let deadline = silence::deadline(args.iter().map(|a| a.as_bytes()), silence::response_timeout());
    let value = match deadline {
        Deadline::After(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| {
            harness_error(format!("no answer from the throwaway Redis within {} ms", limit.as_millis()))
        })?,
        Deadline::Never => sent.await,
    };
    Ok(json(value.map_err(harness_error)?))
}

fn json(value: redis::Value) -> serde_json::Value {
    use redis::Value;
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Int(i) => i.into(),
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned().into(),
        Value::SimpleString(s) => s.into(),
        Value::Okay => "OK".into(),
        Value::Array(items) | Value::Set(items) => items.into_iter().map(json).collect(),
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [json(k), json(v)]).collect(),
        Value::Double(d) => d.into(),
        Value::Boolean(b) => b.into(),
        other => format!("{other:?}").into(),
    }
}

/// A worker `denorun:testing` runs in this process, on the throwaway Redis, and the lines
/// it has written (stdout and stderr).
struct TestWorker {
    stop: crate::worker::stop::StopHandle,
    ended: RefCell<Option<tokio::sync::oneshot::Receiver<String>>>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Its permissions (shared with the running worker).
    permissions: deno_runtime::deno_permissions::PermissionsContainer,
}

/// A pipe whose lines go to `lines`.
fn collect(lines: &Arc<Mutex<Vec<String>>>) -> std::io::Result<deno_runtime::deno_io::StdioPipe> {
    use std::io::BufRead;
    let (reader, writer) = std::io::pipe()?;
    let lines = lines.clone();
    std::thread::Builder::new().name("denorun:testing output".into()).spawn(move || {
        for line in std::io::BufReader::new(reader).lines().map_while(Result::ok) {
            lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    })?;
    Ok(deno_runtime::deno_io::StdioPipe::file(std::fs::File::from(std::os::fd::OwnedFd::from(writer))))
}

impl deno_core::Resource for TestWorker {}

/// Runs the worker of hash `key` on the throwaway Redis, as `denorun <key>` would, with
/// `secret` as its stdin line.
#[op2]
#[smi]
pub async fn op_denorun_testing_spawn(
    state: Rc<RefCell<OpState>>,
    #[string] key: String,
    #[string] secret: String,
) -> Result<u32, JsErrorBox> {
    let url =
        state.borrow().try_borrow::<Throwaway>().map(|r| r.url.clone()).ok_or_else(|| harness_error("no Redis"))?;
    let harness = state.borrow().try_borrow::<Arc<TestRun>>().map(|run| run.harness.clone());
    let harness = harness.ok_or_else(|| harness_error("works under `denorun test` only"))?;
    let stdin = crate::secret::pipe(&secret).map_err(harness_error)?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (stdout, stderr) = (collect(&lines).map_err(harness_error)?, collect(&lines).map_err(harness_error)?);
    let stdio = deno_runtime::deno_io::Stdio { stdin, stdout, stderr };
    let Spawned { stop, permissions, ended: receiver } =
        harness.spawn(url, key, stdio).await.map_err(|e| harness_error(format!("{e:#}")))?;
    let worker = TestWorker { stop, ended: RefCell::new(Some(receiver)), lines, permissions };
    Ok(state.borrow_mut().resource_table.add(worker))
}

/// Whether a worker `denorun:testing` runs may reach `host` (`host[:port]`): `granted`, or
/// `prompt` / `denied` (either way, a `fetch` there fails with `NotCapable`).
#[op2]
#[string]
pub fn op_denorun_testing_net(
    state: &mut OpState,
    #[smi] rid: u32,
    #[string] host: &str,
) -> Result<String, JsErrorBox> {
    use deno_runtime::deno_permissions::PermissionState;
    let worker = state.resource_table.get::<TestWorker>(rid).map_err(JsErrorBox::from_err)?;
    let query = worker.permissions.query_net(Some(host)).map_err(harness_error)?;
    Ok(match query {
        PermissionState::Granted => "granted",
        PermissionState::GrantedPartial => "granted-partial",
        PermissionState::Prompt => "prompt",
        PermissionState::Denied => "denied",
        PermissionState::DeniedPartial => "denied-partial",
        PermissionState::Ignored => "ignored",
    }
    .to_string())
}

/// The lines a worker `denorun:testing` runs has written so far.
#[op2]
#[serde]
pub fn op_denorun_testing_logs(state: &mut OpState, #[smi] rid: u32) -> Result<Vec<String>, JsErrorBox> {
    let worker = state.resource_table.get::<TestWorker>(rid).map_err(JsErrorBox::from_err)?;
    let lines = worker.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(lines)
}

/// Stops a worker `denorun:testing` runs, and waits for its end; returns why it ended.
#[op2]
#[string]
pub async fn op_denorun_testing_stop(state: Rc<RefCell<OpState>>, #[smi] rid: u32) -> Result<String, JsErrorBox> {
    let worker = state.borrow_mut().resource_table.take::<TestWorker>(rid).map_err(JsErrorBox::from_err)?;
    worker.stop.stop();
    let ended = worker.ended.borrow_mut().take();
    match ended {
        Some(ended) => Ok(ended.await.unwrap_or_else(|_| "gone".to_string())),
        None => Ok("stopped".to_string()),
    }
}
