//! Ops for `denorun test` (`02_test.js`): a failure's error formatted as `deno test` prints
//! it, and a file's results handed back to the command.

use std::sync::{Arc, Mutex};

use deno_core::{op2, v8, OpState};
use serde::Deserialize;

/// One test file's results.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub filtered_out: usize,
    pub passed_steps: usize,
    pub failed_steps: usize,
    pub ignored_steps: usize,
    pub used_only: bool,
    pub failures: Vec<Failure>,
}

/// A failed test or step: `name` (`test ... step` for steps), where it was declared, and its
/// error as `deno test` prints it after `error: `.
#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    pub name: String,
    pub origin: String,
    pub error: String,
}

/// What `denorun test` asks of one file's worker, and where the worker puts its results.
#[derive(Debug, Default)]
pub struct TestRun {
    /// `./x_test.ts`, as the report names the file.
    pub display: String,
    /// The current directory as a URL ending in `/`, to name declarations relative to it.
    pub cwd: String,
    pub filter: Option<String>,
    pub report: Mutex<Option<FileReport>>,
}

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
