//! What the handler workers of one process share: a thread, and on it one reader per request
//! stream (`feed`) for all of them.

pub mod feed;

use std::sync::OnceLock;

/// The shared thread: a current-thread tokio runtime, started with the first worker that
/// needs it and kept for the life of the process.
fn runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("denorun-shared".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread for what workers share");
        handle
    })
}
