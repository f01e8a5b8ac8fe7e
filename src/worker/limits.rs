//! What one worker may take from the process it shares: a heap limit per isolate, and a
//! watchdog for JavaScript that never yields. Either ends that worker only, through its
//! [`StopHandle`], with the reason `memory` or `cpu`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use deno_runtime::deno_core::{v8, JsRuntime};

use super::exit::Reason;
use super::StopHandle;

/// One worker's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The V8 heap limit in MiB; `None` leaves V8's own default (`denorun run`).
    pub max_heap_mb: Option<u64>,
    /// How long its JavaScript may hold the thread without yielding; `None` never ends it.
    pub max_block: Option<Duration>,
}

impl Limits {
    /// No limits beyond V8's own, as `deno run` has.
    pub const NONE: Limits = Limits { max_heap_mb: None, max_block: None };

    /// The isolate's creation parameters for the heap limit.
    pub fn create_params(&self) -> Option<v8::CreateParams> {
        self.max_heap_mb.map(|mb| v8::CreateParams::default().heap_limits(0, (mb as usize) << 20))
    }
}

/// Ends the worker when V8 nears the heap limit. V8 would otherwise abort the whole
/// process; instead the worker's JavaScript is terminated and the limit raised by half so
/// that V8 can unwind (raised again if it needs it while unwinding).
pub fn install_heap_guard(runtime: &mut JsRuntime, limits: &Limits, stop: &StopHandle) {
    let Some(limit_mb) = limits.max_heap_mb else { return };
    let stop = stop.clone();
    runtime.add_near_heap_limit_callback(move |current, _initial| {
        stop.terminate(Reason::Memory { limit_mb });
        current + current / 2
    });
}

/// Milliseconds since the process's first use of this clock; never 0.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A future whose polls are timed: while its `poll` runs (JavaScript holding the thread),
/// `busy_since` holds when that poll began; between polls it is 0.
pub struct Timed<F> {
    inner: Pin<Box<F>>,
    busy_since: Arc<AtomicU64>,
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.busy_since.store(now_ms(), Ordering::Relaxed);
        let result = self.inner.as_mut().poll(cx);
        self.busy_since.store(0, Ordering::Relaxed);
        result
    }
}

/// Watches one worker's polls and terminates the worker when one lasts longer than its
/// `maxBlockMs`. One thread watches every worker of the process; dropping this stops
/// watching this one.
pub struct Watchdog {
    id: Option<u64>,
}

/// A watched worker, as the watchdog thread sees it.
struct Watched {
    id: u64,
    busy_since: Arc<AtomicU64>,
    limit: Duration,
    stop: StopHandle,
}

/// The workers being watched.
static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

fn watched() -> MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the watchdog thread, once.
fn start_watching() {
    static THREAD: Once = Once::new();
    THREAD.call_once(|| {
        std::thread::Builder::new()
            .name("denorun-watchdog".into())
            .spawn(|| loop {
                let every = check_every(watched().iter().map(|w| w.limit).min());
                std::thread::sleep(every);
                let now = now_ms();
                watched().retain(|w| {
                    let since = w.busy_since.load(Ordering::Relaxed);
                    let blocked = now.saturating_sub(since);
                    let over = since != 0 && blocked > w.limit.as_millis() as u64;
                    if over {
                        w.stop.terminate(Reason::Cpu { blocked_ms: blocked });
                    }
                    !over
                });
            })
            .expect("cannot start the watchdog thread");
    });
}

/// How often the watchdog looks: a quarter of the shortest limit, between 10 and 250 ms.
fn check_every(shortest: Option<Duration>) -> Duration {
    (shortest.unwrap_or(Duration::MAX) / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

impl Watchdog {
    /// Wraps `future` so that its polls are watched; without a limit it runs as it is.
    pub fn watch<F: Future>(future: F, max_block: Option<Duration>, stop: &StopHandle) -> (Timed<F>, Watchdog) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let busy_since = Arc::new(AtomicU64::new(0));
        let id = max_block.map(|limit| {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            watched().push(Watched { id, busy_since: busy_since.clone(), limit, stop: stop.clone() });
            start_watching();
            id
        });
        (Timed { inner: Box::pin(future), busy_since }, Watchdog { id })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            watched().retain(|w| w.id != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_looks_four_times_per_shortest_limit_within_bounds() {
        assert_eq!(check_every(Some(Duration::from_millis(400))), Duration::from_millis(100));
        assert_eq!(check_every(Some(Duration::from_millis(8))), Duration::from_millis(10));
        assert_eq!(check_every(Some(Duration::from_secs(10))), Duration::from_millis(250));
        assert_eq!(check_every(None), Duration::from_millis(250));
    }
}
