//! denorun's own ops: the Rust side of the built-in modules in `js/`.
//!
//! One `extension!` holds every op. It is in the startup snapshot (`build.rs`): its entry
//! point (`00_denorun.js`) ran there, before Deno's bootstrap removes ops from `Deno.core`,
//! and kept the ones the built-in modules need on `globalThis[Symbol.for("denorun.ops")]`.
//! User code cannot import `ext:` modules, so that symbol is how `js/deno.land/...` reaches
//! Rust.

pub mod crypto;
pub mod encoding;
pub mod handler;
pub mod pubsub;
pub mod redis;
pub mod reply;
pub mod resume;
pub mod testing;

use std::sync::Arc;

use deno_core::{op2, v8, OpState};

use crate::metrics::WorkerStats;

/// Whether this worker serves the inspector (`--inspect*`).
struct Inspecting(bool);

#[op2(fast)]
fn op_denorun_inspecting(state: &mut OpState) -> bool {
    state.borrow::<Inspecting>().0
}

/// Records the isolate's heap use, if the worker's numbers are kept (`00_denorun.js` calls it
/// every second); returns whether they are.
#[op2(fast)]
fn op_denorun_heap_sample(scope: &mut v8::PinScope<'_, '_>, state: &mut OpState) -> bool {
    let Some(stats) = state.try_borrow::<Arc<WorkerStats>>() else { return false };
    let heap = scope.get_heap_statistics();
    stats.heap(heap.used_heap_size(), heap.heap_size_limit());
    true
}

/// Stands in for Deno's `op_create_worker`: `new Worker()` throws a JS error that the worker
/// can catch, where deno_runtime without a web-worker factory would panic its thread.
#[op2(nofast)]
fn op_denorun_no_web_workers() -> Result<(), deno_error::JsErrorBox> {
    Err(deno_error::JsErrorBox::generic("denorun workers cannot start Web Workers"))
}

deno_core::extension!(
    denorun,
    ops = [
        encoding::op_denorun_hex_encode,
        encoding::op_denorun_hex_decode,
        encoding::op_denorun_base64_encode,
        encoding::op_denorun_base64_decode,
        crypto::op_denorun_aes,
        redis::op_denorun_redis_connect,
        redis::op_denorun_redis_close,
        redis::op_denorun_redis_call,
        redis::op_denorun_redis_pipeline,
        pubsub::op_denorun_redis_pubsub_open,
        pubsub::op_denorun_redis_pubsub_command,
        pubsub::op_denorun_redis_pubsub_next,
        pubsub::op_denorun_redis_pubsub_close,
        handler::op_denorun_handler_open,
        handler::op_denorun_handler_next,
        handler::op_denorun_handler_done,
        handler::op_denorun_handler_close,
        handler::op_denorun_handler_overdue,
        testing::op_denorun_test_error,
        testing::op_denorun_test_report,
        testing::op_denorun_testing_redis,
        testing::op_denorun_testing_command,
        testing::op_denorun_testing_spawn,
        testing::op_denorun_testing_stop,
        testing::op_denorun_testing_logs,
        testing::op_denorun_testing_net,
        op_denorun_inspecting,
        op_denorun_heap_sample,
    ],
    options = {
        inspecting: bool,
        stats: Option<Arc<WorkerStats>>,
        test: Option<Arc<crate::test_report::TestRun>>,
        redis_url: Option<String>,
    },
    middleware = |op| match op.name {
        "op_create_worker" => op.with_implementation_from(&op_denorun_no_web_workers()),
        _ => op,
    },
    state = |state, options| {
        state.put(Inspecting(options.inspecting));
        if let Some(stats) = options.stats {
            state.put(stats);
        }
        if let Some(test) = options.test {
            state.put(test);
        }
        if let Some(url) = options.redis_url {
            state.put(handler::RedisUrl(url));
        }
    },
    customizer = |ext: &mut deno_core::Extension| {
        ext.esm_files.to_mut().push(deno_core::ExtensionFileSource::new(
            "ext:denorun/00_denorun.js",
            deno_core::ascii_str_include!("00_denorun.js"),
        ));
        ext.esm_files.to_mut().push(deno_core::ExtensionFileSource::new(
            "ext:denorun/01_handler.js",
            deno_core::ascii_str_include!("01_handler.js"),
        ));
        ext.esm_files.to_mut().push(deno_core::ExtensionFileSource::new(
            "ext:denorun/02_test.js",
            deno_core::ascii_str_include!("02_test.js"),
        ));
        ext.esm_entry_point = Some("ext:denorun/00_denorun.js");
    },
);
