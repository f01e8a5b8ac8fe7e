//! What `denorun test` and one test file's worker share: what the file's run asks, the
//! results it hands back (`FileReport`), and how its tests' `denorun:testing` workers are run
//! (`Harness`).

use std::sync::{Arc, Mutex};

use deno_runtime::deno_io::Stdio;
use deno_runtime::deno_permissions::PermissionsContainer;
use futures::future::LocalBoxFuture;
use serde::Deserialize;

use crate::worker::stop::StopHandle;

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
#[derive(Debug)]
pub struct TestRun {
    /// `./x_test.ts`, as the report names the file.
    pub display: String,
    /// The current directory as a URL ending in `/`, to name declarations relative to it.
    pub cwd: String,
    pub filter: Option<String>,
    pub report: Mutex<Option<FileReport>>,
    /// How `denorun:testing` runs the workers the file's tests ask for.
    pub harness: Arc<dyn Harness>,
}

/// How the `denorun:testing` harness runs a worker in this process: given by `denorun test`,
/// which knows how a hash becomes a worker, so that the harness's ops need not.
pub trait Harness: std::fmt::Debug + Send + Sync {
    /// Runs the worker of hash `key` on the Redis at `url`, with `stdio`.
    fn spawn(&self, url: String, key: String, stdio: Stdio) -> LocalBoxFuture<'static, anyhow::Result<Spawned>>;
}

/// A worker the harness runs: how to stop it, what it may do, and why it ended (once it has).
pub struct Spawned {
    pub stop: StopHandle,
    pub permissions: PermissionsContainer,
    pub ended: tokio::sync::oneshot::Receiver<String>,
}
