//! Stopping a worker from outside: from any thread, for a reason (a drain's time-out, its
//! limits, a request overdue), with its JavaScript terminated where it is.

use std::sync::{Arc, Mutex};

use deno_runtime::deno_core::v8;

use super::exit::Reason;

/// Asks a running worker to stop at once, from any thread: its event loop is dropped and any
/// JavaScript it is running is terminated.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<StopState>);

#[derive(Default)]
struct StopState {
    requested: tokio::sync::Notify,
    isolate: Mutex<Option<v8::IsolateHandle>>,
    /// Why it was stopped; the first reason given wins.
    reason: Mutex<Option<Reason>>,
}

impl StopHandle {
    /// Stops the worker where it is (a drain's time-out, a second signal).
    pub fn stop(&self) {
        self.terminate(Reason::Stopped);
    }

    /// Ends the worker for `reason`: its JavaScript is terminated and its event loop dropped.
    pub fn terminate(&self, reason: Reason) {
        self.0.reason.lock().unwrap().get_or_insert(reason);
        self.0.requested.notify_one();
        if let Some(isolate) = self.0.isolate.lock().unwrap().as_ref() {
            isolate.terminate_execution();
        }
    }

    /// Resolves once a stop was asked for (for what runs beside isolates: a sync instance).
    pub async fn requested(&self) {
        self.0.requested.notified().await
    }

    /// The isolate `terminate` ends, once the worker has one.
    pub(super) fn attach(&self, isolate: v8::IsolateHandle) {
        *self.0.isolate.lock().unwrap() = Some(isolate);
    }

    pub(super) fn reason(&self) -> Option<Reason> {
        self.0.reason.lock().unwrap().clone()
    }
}
