//! The permission audit log (`--audit`, `DENORUN_AUDIT`): one JSON line for each permission
//! check a worker is denied, with the worker, the kind, the value, the API and the line of
//! the worker's code that asked, so an operator sees what a worker tried; one for each
//! change made from the web console (`denorun console`), with who asked from where; and one
//! for each step of a rollout (`denorun rollout`).
//!
//! Denials reach it through deno_permissions' prompter: workers' permissions prompt, and the
//! prompter, which never asks anyone (a worker's stdin carries its secret, not answers),
//! denies, as Deno does without a terminal. Deno then remembers the denial, so a worker
//! asking again for the same thing is denied without a second line. The line of code comes
//! from the stack trace Deno's permission-checking ops capture (on while auditing), or from
//! the module loader for an import. When that code is a file of an npm package, the line
//! names the package too.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use deno_runtime::deno_core::error::JsStackFrame;
use deno_runtime::deno_core::{ModuleSpecifier, OpStackTraceCallback};
use deno_runtime::deno_permissions::prompter::{GetFormattedStackFn, PermissionPrompter, PromptResponse};
use serde::Serialize;

use crate::builtins;

static SINK: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

/// Where the worker on this thread is in its code: its latest call into a checking op, or
/// the import being loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Location {
    pub module: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<i64>,
}

thread_local! {
    static HERE: RefCell<Option<Location>> = const { RefCell::new(None) };
}

/// Starts the log: `1`, `true` or `-` write to stderr; anything else names a file to append to.
pub fn init(dest: Option<&str>) -> anyhow::Result<()> {
    let sink: Box<dyn Write + Send> = match dest.map(str::trim) {
        None | Some("" | "0" | "false") => return Ok(()),
        Some("1" | "true" | "-") => Box::new(std::io::stderr()),
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the audit log {path}: {e}"))?,
        ),
    };
    let _ = SINK.set(Mutex::new(sink));
    Ok(())
}

pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Records where the worker on this thread stands; the loader calls it before checking an import.
pub fn at(location: Option<Location>) {
    HERE.with(|here| *here.borrow_mut() = location);
}

/// The op stack-trace callback for an audited worker: keeps the first frame in the worker's
/// own code (not denorun's or Deno's built-in modules).
pub fn stack_trace_callback() -> OpStackTraceCallback {
    Box::new(|frames: Vec<JsStackFrame>| at(frames.iter().find_map(user_frame)))
}

fn user_frame(frame: &JsStackFrame) -> Option<Location> {
    let file = frame.file_name.as_deref()?;
    let url = ModuleSpecifier::parse(file).ok()?;
    let ours = matches!(url.scheme(), "ext" | "node") || builtins::source(&url).is_some();
    (!ours).then(|| Location { module: file.to_string(), line: frame.line_number, column: frame.column_number })
}

#[derive(Serialize)]
struct Denial<'a> {
    ts: String,
    event: &'static str,
    worker: &'a str,
    kind: &'a str,
    value: Option<&'a str>,
    api: Option<&'a str>,
    #[serde(flatten)]
    at: Option<Location>,
    /// The npm package whose code asked (`at` is inside its `node_modules` folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<String>,
}

/// The npm package a module belongs to: the name after its last `node_modules/`.
fn package_of(module: &str) -> Option<String> {
    let (_, rest) = module.rsplit_once("/node_modules/")?;
    let mut parts = rest.split('/');
    let first = parts.next().filter(|part| !part.is_empty())?;
    match first.starts_with('@') {
        true => Some(format!("{first}/{}", parts.next().filter(|part| !part.is_empty())?)),
        false => Some(first.to_string()),
    }
}

/// The prompter of every worker's permissions: it denies, and logs the denial if auditing.
pub struct Prompter;

impl PermissionPrompter for Prompter {
    fn prompt(
        &mut self,
        message: &str,
        name: &str,
        api_name: Option<&str>,
        _is_unary: bool,
        _get_stack: Option<GetFormattedStackFn>,
    ) -> PromptResponse {
        if let Some(sink) = SINK.get() {
            let thread = std::thread::current();
            let at = HERE.with(|here| here.borrow_mut().take());
            let package = at.as_ref().and_then(|at| package_of(&at.module));
            let denial = Denial {
                ts: now(),
                event: "denied",
                worker: thread.name().unwrap_or("?"),
                kind: name,
                value: value_of(message, name),
                api: api_name,
                at,
                package,
            };
            write(sink, &denial);
        }
        PromptResponse::Deny
    }
}

fn write(sink: &Mutex<Box<dyn Write + Send>>, record: &impl Serialize) {
    let mut line = serde_json::to_string(record).expect("an audit record serialises");
    line.push('\n');
    let _ = sink.lock().unwrap().write_all(line.as_bytes());
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize)]
struct ConsoleAction<'a> {
    ts: String,
    event: &'static str,
    action: &'a str,
    r#type: &'a str,
    ids: &'a [String],
    from: &'a str,
}

/// Logs a change made from the web console: `action` on the dead letters `ids` of
/// `worker_type`, asked from the address `from`.
pub fn console_action(action: &str, worker_type: &str, ids: &[String], from: &str) {
    if let Some(sink) = SINK.get() {
        write(sink, &ConsoleAction { ts: now(), event: "console", action, r#type: worker_type, ids, from });
    }
}

#[derive(Serialize)]
struct RolloutStep<'a> {
    ts: String,
    event: &'static str,
    step: &'a str,
    r#type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<&'a str>,
    to: &'a str,
    detail: &'a str,
}

/// Logs a step of `denorun rollout`: `step` (`start`, `restart`, `up`, `failed`, `rollback`,
/// `rolled back`, `done`) of the rollout of `worker_type` to the version `to`.
pub fn rollout(step: &str, worker_type: &str, worker: Option<&str>, to: &str, detail: &str) {
    if let Some(sink) = SINK.get() {
        write(sink, &RolloutStep { ts: now(), event: "rollout", step, r#type: worker_type, worker, to, detail });
    }
}

/// The value in a prompt's message (`net access to "example.com:443"`), without its quotes.
fn value_of<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let info = message.strip_prefix(name)?.strip_prefix(" access to ")?;
    Some(info.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_in_node_modules_names_its_package() {
        assert_eq!(package_of("file:///w/node_modules/reads-files/index.js").as_deref(), Some("reads-files"));
        assert_eq!(package_of("file:///w/node_modules/@scope/pkg/lib/main.js").as_deref(), Some("@scope/pkg"));
        let nested = "file:///w/node_modules/a/node_modules/debug/src/node.js";
        assert_eq!(package_of(nested).as_deref(), Some("debug"), "the innermost package");
        assert_eq!(package_of("file:///w/main.ts"), None);
        assert_eq!(package_of("file:///w/node_modules/@scope"), None);
    }

    #[test]
    fn the_value_is_the_quoted_part_of_the_message() {
        assert_eq!(value_of("net access to \"example.com:443\"", "net"), Some("example.com:443"));
        assert_eq!(value_of("env access to \"HOME\"", "env"), Some("HOME"));
        assert_eq!(value_of("sys access", "sys"), None);
        assert_eq!(value_of("read access to <CWD>", "read"), Some("<CWD>"));
    }

    #[test]
    fn frames_of_builtins_and_extensions_are_skipped() {
        let frame = |file: &str, line| JsStackFrame::from_location(Some(file.to_string()), Some(line), Some(3));
        let frames = [
            frame("ext:deno_net/01_net.js", 10),
            frame("https://deno.land/x/redis/mod.ts", 20),
            frame("file:///srv/w.ts", 7),
        ];
        let found = frames.iter().find_map(user_frame).unwrap();
        assert_eq!(found, Location { module: "file:///srv/w.ts".into(), line: Some(7), column: Some(3) });
    }
}
