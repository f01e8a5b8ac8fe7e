//! The V8 inspector of one worker, on a server of its own: two workers of one supervisor
//! with `--inspect` on different ports each get theirs, as two `deno run` processes would.
//! (deno_runtime's global server is one per process; denorun never creates it.)

use std::sync::Arc;

use anyhow::Context;
use deno_runtime::deno_core::ModuleSpecifier;
use deno_runtime::deno_inspector_server::{InspectPublishUid, InspectorServer};
use deno_runtime::worker::MainWorker;

use crate::flags::{Inspect, InspectMode};

/// Whoever connects to an inspector runs code as the worker, so a non-loopback address needs
/// `allow_remote`, which only denorun's own command line can give (not a hash, which anyone
/// with Redis can write).
pub fn check_address(inspect: Option<Inspect>, allow_remote: bool) -> anyhow::Result<()> {
    match inspect {
        Some(inspect) if !inspect.addr.ip().is_loopback() && !allow_remote => anyhow::bail!(
            "refusing to serve the inspector on {}, which is not a loopback address: whoever connects \
             runs code as the worker. Use 127.0.0.1 in denoOptions, or start denorun with \
             --allow-remote-inspect if you mean it",
            inspect.addr
        ),
        _ => Ok(()),
    }
}

/// Binds the worker's inspector server, before its runtime exists, so that a busy port is
/// an error before any of the worker's code runs.
pub fn bind(inspect: Option<Inspect>) -> anyhow::Result<Option<Arc<InspectorServer>>> {
    let Some(inspect) = inspect else { return Ok(None) };
    let server = InspectorServer::new(inspect.addr, "denorun", InspectPublishUid::default())
        .with_context(|| format!("cannot start the inspector on {}; is the port in use?", inspect.addr))?;
    Ok(Some(Arc::new(server)))
}

/// Lists the worker on its server (`/json/list`) and prints the `Debugger listening on`
/// lines; with `--inspect-brk` or `--inspect-wait` the worker then waits for a debugger.
pub fn register(server: &InspectorServer, worker: &mut MainWorker, main: &ModuleSpecifier, mode: InspectMode) {
    let wait = matches!(mode, InspectMode::Break | InspectMode::Wait);
    let url = server.register_inspector(main.to_string(), worker.js_runtime.inspector(), wait);
    worker.js_runtime.op_state().borrow_mut().put(url);
}
