//! `denorun <WORKER_KEY> --watch`: one worker, restarted when a local file of its module graph
//! changes.
//!
//! A change is first checked: the new graph is loaded (every import resolved, read and parsed,
//! nothing run) beside the running worker. A graph that does not load is reported, and the
//! running worker keeps serving until the next change. A graph that loads replaces the running
//! worker: it is drained as a supervisor drains it (its `pid` field cleared, so a handler or
//! 2021 worker stops after its current requests), stopped where it is after [`DRAIN`], and
//! only then is the new one started, reading its hash afresh. Old and new never run at once,
//! so they never both claim the hash's `pid`, and what the old one had read but not finished
//! is still pending for the new one (the same consumer): nothing is lost, and a request runs
//! twice only if the old worker had to be stopped where it was (after [`DRAIN`], or when its
//! `pid` could not be cleared). The files are read again when the new one starts: a save
//! between the check and that start is what runs, checked or not (the next change checks
//! it). A worker that ended by itself is started again on the next change.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{check_graph, describe, ModuleFiles, Watcher};
use crate::config::RedisTarget;
use crate::keys::WorkerKey;
use crate::worker::{self, Exit, StopHandle, WorkerSpec};

/// How long a worker asked to stop for a change may take to finish its current requests.
pub const DRAIN: Duration = Duration::from_secs(10);

/// What ended a run of the worker.
enum Next {
    /// It ended by itself.
    Ended(Exit),
    /// Its files changed, and the new version loads: its spec and files.
    Changed(Box<WorkerSpec>, ModuleFiles),
}

/// Runs the worker that `make` assembles (from its hash, read again on each call) until the
/// process is ended, restarting it on each change that loads.
pub fn run(
    key: &WorkerKey,
    redis: &RedisTarget,
    mut make: impl FnMut() -> anyhow::Result<WorkerSpec>,
) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut watcher = Watcher::new()?;
    let mut spec = make()?;
    // The files of the graph running now (a checked version's from the check on).
    let mut files = ModuleFiles::default();
    loop {
        spec.watched = Some(files.clone());
        let stop = StopHandle::default();
        let (sender, mut ended) = oneshot::channel();
        worker::spawn(spec, stop.clone(), move |exit| {
            let _ = sender.send(exit.clone());
        })?;
        log::info!("{key}: watching the local files of its module graph; a change restarts it");
        let next = loop {
            let changed = runtime.block_on(async {
                tokio::select! {
                    exit = &mut ended => Err(exit.unwrap_or_else(|_| Exit::new(worker::Reason::Stopped))),
                    changed = watcher.changed(&files) => Ok(changed),
                }
            });
            match changed {
                Err(exit) => break Next::Ended(exit),
                Ok(changed) => {
                    log::info!("{key}: {} changed; checking that the new version loads", describe(&changed));
                    // A version that does not load is reported, and the running one goes on.
                    if let Ok((next, checked)) = check(key, &mut make, &files) {
                        break Next::Changed(Box::new(next), checked);
                    }
                }
            }
        };
        spec = match next {
            Next::Changed(next, checked) => {
                runtime.block_on(drain(key, redis, &stop, ended));
                log::info!("{key}: starting the new version");
                files = checked;
                *next
            }
            Next::Ended(exit) => {
                worker::report(key.as_str(), &exit);
                watcher.follow(&files);
                log::info!("{key}: {}; it starts again on a change to its files", exit.reason);
                loop {
                    let changed = runtime.block_on(watcher.changed(&files));
                    log::info!("{key}: {} changed; starting it again", describe(&changed));
                    runtime.block_on(clear_pid(redis, key));
                    match make() {
                        Ok(next) => break next,
                        Err(e) => log::error!("{key}: cannot start it: {e:#}; waiting for the next change"),
                    }
                }
            }
        };
    }
}

/// Loads the changed graph without running it. Returns the spec to run it with and the files
/// it read, or `Err` once the failure is reported; then the files the check read are watched
/// too, so that a fix to a file only the new version imports is seen.
fn check(
    key: &WorkerKey,
    make: &mut impl FnMut() -> anyhow::Result<WorkerSpec>,
    files: &ModuleFiles,
) -> Result<(WorkerSpec, ModuleFiles), ()> {
    let (loaded, checked) = match make() {
        Ok(probe) => check_graph(probe),
        Err(e) => (Err(e), ModuleFiles::default()),
    };
    match loaded.and_then(|()| make()) {
        Ok(spec) => Ok((spec, checked)),
        Err(e) => {
            files.extend(&checked);
            log::error!("{key}: the new version does not load, so the running one goes on: {e:#}");
            Err(())
        }
    }
}

/// Asks the worker to stop after its current requests, and waits for it; after [`DRAIN`] it
/// is stopped where it is.
async fn drain(key: &WorkerKey, redis: &RedisTarget, stop: &StopHandle, mut ended: oneshot::Receiver<Exit>) {
    clear_pid(redis, key).await;
    if tokio::time::timeout(DRAIN, &mut ended).await.is_err() {
        log::warn!("{key}: still running {}s after it was asked to stop; stopping it where it is", DRAIN.as_secs());
        stop.stop();
        let _ = ended.await;
    }
    // A worker that claims `pid` itself (a 2021 worker) starts only where none is set.
    clear_pid(redis, key).await;
}

/// Clears the worker's `pid`; a failure is logged (the worker then runs until [`DRAIN`]).
async fn clear_pid(redis: &RedisTarget, key: &WorkerKey) {
    let cleared = async {
        let mut conn = redis.connect().await?;
        redis::cmd("HDEL").arg(key.as_str()).arg("pid").query_async::<()>(&mut conn).await?;
        anyhow::Ok(())
    };
    if let Err(e) = cleared.await {
        log::warn!("{key}: cannot clear its pid field: {e:#}");
    }
}
